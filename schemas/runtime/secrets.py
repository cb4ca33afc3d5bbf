"""Keeping secrets out of what cdcflow prints: config dumps, error messages and log lines.

Two tools, both driven by the loaded Settings:
- `masked_settings` turns the settings into plain data with every secret replaced by `****`:
  SecretStr fields, keys that name a secret (password, sasl.*, ssl.key.*, token, api_key...), and the
  secret parts of URLs (the password of `redis://user:pw@host`, token-like query values and path
  segments of webhook URLs), so `config show` still shows hosts and ports.
- `install_log_masking` makes every log record (message and traceback) replace the literal secret
  values of the loaded config, as a last line of defence for a library error that quotes one.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from pydantic import BaseModel, SecretStr

from schemas.settings import Settings

MASK = "****"
# Keys whose value is a secret. Not every `sasl.*`/`ssl.key.*` key is one: sasl.username and
# ssl.key.location (a path) are shown, so an operator can see which account and files are used.
SECRET_KEY = re.compile(
    r"(password|passwd|secret|token|sha256|api[_-]?key|private|credential|ssl\.key\.pem|sasl\.jaas)", re.I
)
# Query parameters of webhook/API URLs that carry credentials.
SECRET_QUERY_PATTERN = re.compile(r"(token|key|secret|sig|signature|password|pass|auth|code|credential)", re.I)
# A path segment that looks like a credential (Slack/Discord/Teams webhook paths carry them): long,
# mixed letters and digits.
TOKEN_SEGMENT = re.compile(r"^(?=.*\d)(?=.*[A-Za-z])[A-Za-z0-9_\-]{20,}$")
URL_PATTERN = re.compile(r"^[a-z][a-z0-9+.\-]*://", re.I)


def is_secret_key(key: str) -> bool:
    return bool(SECRET_KEY.search(key))


def mask_url(url: str) -> str:
    """The URL with its password, credential-like query values and token-like path segments masked."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        port = parts.port
    except ValueError:
        return MASK
    netloc = parts.netloc
    if parts.password is not None or (parts.username and "@" in netloc and not parts.password):
        user = parts.username or ""
        hostport = (f"[{host}]" if host and ":" in host else (host or "")) + (f":{port}" if port else "")
        # `user@` alone may itself be a token (e.g. https://TOKEN@host); keep only a plain user name.
        if parts.password is not None:
            netloc = f"{quote(user)}:{MASK}@{hostport}" if user else f":{MASK}@{hostport}"
        elif TOKEN_SEGMENT.match(user):
            netloc = f"{MASK}@{hostport}"
    path = "/".join(MASK if TOKEN_SEGMENT.match(seg) else seg for seg in parts.path.split("/"))
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, MASK if SECRET_QUERY_PATTERN.search(k) and v else v) for k, v in pairs], safe="*")
    return urlunsplit((parts.scheme, netloc, path, query, parts.fragment))


def mask_value(key: str, value: Any) -> Any:
    """Plain data (from a model dump) with secrets masked, judged by key name and by value."""
    if isinstance(value, SecretStr):
        raw = value.get_secret_value()
        if not raw:
            return raw
        return mask_url(raw) if URL_PATTERN.match(raw) and not is_secret_key(key) else MASK
    if isinstance(value, dict):
        return {k: mask_value(str(k), v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [mask_value(key, v) for v in value]
    if is_secret_key(key) and value not in (None, "", False):
        return MASK
    if isinstance(value, str) and URL_PATTERN.match(value):
        return mask_url(value)
    return value


def masked_settings(settings: BaseModel) -> dict[str, Any]:
    """The settings as JSON-able data, secrets masked (paths as strings)."""
    dumped = settings.model_dump(mode="python")
    masked: dict[str, Any] = _jsonable(mask_value("", dumped))
    return masked


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def secret_values(settings: BaseModel) -> set[str]:
    """Every literal secret in the settings (SecretStr values, URL passwords, values under secret keys)."""
    found: set[str] = set()

    def walk(key: str, value: Any) -> None:
        if isinstance(value, SecretStr):
            raw = value.get_secret_value()
            if URL_PATTERN.match(raw) and not is_secret_key(key):
                found.update(url_secrets(raw))
            elif raw:
                found.add(raw)
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(str(k), v)
        elif isinstance(value, (list, tuple)):
            for v in value:
                walk(key, v)
        elif isinstance(value, str):
            if is_secret_key(key) and value:
                found.add(value)
            elif URL_PATTERN.match(value):
                found.update(url_secrets(value))

    walk("", settings.model_dump(mode="python"))
    # Very short values would mask ordinary words in log lines; they are no secret worth the name.
    return {s for s in found if len(s) >= 4}


def url_secrets(url: str) -> set[str]:
    try:
        parts = urlsplit(url)
    except ValueError:
        return {url}
    out = {parts.password} if parts.password else set()
    if parts.username and TOKEN_SEGMENT.match(parts.username):
        out.add(parts.username)
    out.update(seg for seg in parts.path.split("/") if TOKEN_SEGMENT.match(seg))
    out.update(v for k, v in parse_qsl(parts.query) if SECRET_QUERY_PATTERN.search(k) and v)
    return out


def redact(text: str, secrets: Iterable[str]) -> str:
    # Longest first, so a secret containing another is masked whole.
    for secret in sorted(secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    return text


_lock = threading.Lock()
_masked: set[str] = set()
_installed = False


def install_log_masking(settings: Settings) -> None:
    """From now on, every log record of this process has the settings' secret values masked.

    A record factory (not a handler filter) so it covers every handler, including ones added later
    (pytest's caplog, Faust's). Records without a secret are left untouched.
    """
    global _installed
    with _lock:
        _masked.update(secret_values(settings))
        if _installed or not _masked:
            return
        _installed = True
        previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        secrets = _masked
        try:
            message = record.getMessage()
        except Exception:
            return record  # a broken format string: leave it for logging to report as usual
        if any(s in message for s in secrets):
            record.msg, record.args = redact(message, secrets), None
        if record.exc_info and record.exc_info[1] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            if any(s in text for s in secrets):
                # Formatters use a record's exc_text when set, instead of formatting exc_info again.
                record.exc_text = redact(text, secrets)
        return record

    logging.setLogRecordFactory(factory)


def secrets_in_data(data: Any, key: str = "") -> set[str]:
    """Literal secrets in raw (unvalidated) config data: values under secret keys, secret parts of URLs."""
    found: set[str] = set()
    if isinstance(data, dict):
        for k, v in data.items():
            found |= secrets_in_data(v, str(k))
    elif isinstance(data, list):
        for v in data:
            found |= secrets_in_data(v, key)
    elif data is not None and not isinstance(data, bool):
        text = str(data)
        if is_secret_key(key) and text:
            found.add(text)
        elif URL_PATTERN.match(text):
            found |= url_secrets(text)
    return {s for s in found if len(s) >= 4}


def secrets_in_file_and_env(path: str | Path | None, environ: Mapping[str, str]) -> set[str]:
    """For messages about a config that failed to load: the secrets its file and CDCFLOW_* env hold."""
    import yaml

    found: set[str] = set()
    if path is not None:
        try:
            found |= secrets_in_data(yaml.safe_load(Path(path).read_text(encoding="utf-8")))
        except (OSError, yaml.YAMLError, ValueError, RecursionError):
            pass  # a file that cannot be read has no secrets to hide: its error quotes none of its values
    for name, value in environ.items():
        if name.upper().startswith("CDCFLOW_"):
            found |= secrets_in_data(value, name.lower().replace("__", "."))
            try:
                found |= secrets_in_data(yaml.safe_load(value), name.lower())
            except (yaml.YAMLError, ValueError, RecursionError):
                pass
    return found
