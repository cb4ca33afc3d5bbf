"""Settings: every server address and topic name in one place, from one config file plus environment.

Environment variables override the file (`CDCFLOW_KAFKA__BOOTSTRAP_SERVERS=...`), so the same file
serves the local stack and docker-compose.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, AliasChoices, BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from schemas.debezium import DebeziumOptions, Format


class KafkaSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bootstrap_servers: str = "127.0.0.1:9092"
    # Passed as-is to every client (librdkafka names), e.g. security.protocol, sasl.mechanism.
    client_options: dict[str, str | int | bool] = Field(default_factory=dict)
    partitions: int = Field(default=4, ge=1, description="partitions for topics cdcflow creates")
    replication_factor: int = Field(default=1, ge=1)


class MySQLTLS(BaseModel):
    """TLS to the server (mysql.ssl). Set at all, it is required: a server without TLS is refused."""

    model_config = ConfigDict(extra="forbid")

    ca: Path | None = Field(default=None, description="CA bundle; none = the system's CAs")
    cert: Path | None = Field(default=None, description="client certificate (mutual TLS)")
    key: Path | None = None
    key_password: SecretStr | None = None
    verify_cert: bool = True
    verify_identity: bool = Field(default=True, description="the certificate must name mysql.host")

    def pymysql_ssl(self) -> dict[str, Any]:
        """pymysql's `ssl` argument (also what BinLogStreamReader passes on)."""
        out: dict[str, Any] = {
            "verify_mode": self.verify_cert,
            "check_hostname": self.verify_cert and self.verify_identity,
        }
        if self.ca is not None:
            out["ca"] = str(self.ca)
        if self.cert is not None:
            out["cert"] = str(self.cert)
        if self.key is not None:
            out["key"] = str(self.key)
        if self.key_password is not None:
            out["password"] = self.key_password.get_secret_value()
        return out


class MySQLSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=3307, ge=1, le=65535)
    user: str = "cdcflow_reader"
    password: SecretStr = SecretStr("cdcflow_reader")
    database: str = Field(default="cdcflow_demo", description="db of rules that name a bare table")
    server_id: int = Field(default=4711, description="this reader's replica server_id; unique per reader")
    is_mariadb: bool | None = Field(default=None, description="None = detect from the server version")
    # The binlog connection gets a heartbeat every second when idle, so silence this long means the
    # network dropped without closing the connection: the read fails and the reader reconnects.
    read_timeout_s: float = Field(default=15.0, gt=1.0, description="seconds of silence before reconnecting")
    ssl: MySQLTLS | None = Field(default=None, description="TLS settings; unset = no TLS")


def _redis_url(value: SecretStr) -> SecretStr:
    """Every option of the URL checked when the config is read, not when a command first connects (the
    URL may hold a password: the reason never quotes it)."""
    from schemas.runtime.redis_url import redis_url_problem

    if (problem := redis_url_problem(value.get_secret_value())) is not None:
        raise ValueError(problem)
    return value


class RedisSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: Annotated[SecretStr, AfterValidator(_redis_url)] = SecretStr("redis://127.0.0.1:6380/0")
    key_prefix: str = "cdcflow"


class TopicSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cdc_prefix: str = "cdc"
    invoke_prefix: str = "cdcflow.invoke"
    triggers: str = "cdcflow.triggers"
    results: str = "cdcflow.results"
    dlq: str = "cdcflow.dlq"
    cdc_checkpoints: str = "cdcflow.cdc.checkpoints"

    def row_changes(self, db: str, table: str) -> str:
        return f"{self.cdc_prefix}.{db}.{table}"

    def invoke(self, plugin: str, priority: str = "normal") -> str:
        # High priority has its own topic, consumed ahead of the normal one, so a high invocation
        # never waits behind a backlog in the same partition (see plugins/README.md).
        suffix = ".high" if priority == "high" else ""
        return f"{self.invoke_prefix}.{plugin}{suffix}"

    def parse_row_changes(self, topic: str) -> tuple[str, str] | None:
        prefix = self.cdc_prefix + "."
        if not topic.startswith(prefix):
            return None
        db, _, table = topic[len(prefix) :].partition(".")
        return (db, table) if db and table else None


class CdcSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(default="cdcflow", description="source.name in envelopes; checkpoint key")
    linger_ms: float = 2.0
    checkpoint_interval_ms: int = Field(default=200, ge=0, description="0 = after every batch")
    # db.table globs: selected = (rules' tables + include) - exclude; exclude wins (cdc/filters.py)
    include: list[str] = Field(
        default_factory=list,
        validation_alias=AliasChoices("include", "include_tables"),
        description="db.table globs read beyond the rules' tables",
    )
    exclude: list[str] = Field(default_factory=list, description="db.table globs never read")
    # What row changes look like on Kafka: cdcflow's envelope, or Debezium's (schemas/debezium.py).
    format: Format = "cdcflow"
    debezium: DebeziumOptions = Field(default_factory=DebeziumOptions)


class StreamsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    app_id: str = "cdcflow-streams"
    state_dir: Path = Path(".state/streams")
    web_port: int = 6066

    @property
    def rows_group_id(self) -> str:
        """The consumer group of the worker's row-change consumer (streams/row_changes.py)."""
        return f"{self.app_id}-rows"


class RunnerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    group_id: str = "cdcflow-runners"
    plugin_dirs: list[Path] = Field(default_factory=lambda: [Path("plugins/examples")])
    venv_dir: Path = Path(".state/venvs")
    result_ttl_seconds: int = Field(default=7 * 24 * 3600, ge=60)
    # librdkafka's default session is 45 s: a kill -9'd runner's partitions would wait that long.
    session_timeout_ms: int = Field(
        default=6000,
        ge=1,
        le=3_600_000,
        description=(
            "a runner with no heartbeat for this long is dropped from the group and its partitions move "
            "to the others (librdkafka's session.timeout.ms); the broker only takes values within its "
            "group.min.session.timeout.ms..group.max.session.timeout.ms (6000..1800000 by default)"
        ),
    )
    heartbeat_interval_ms: int = Field(
        default=1000,
        ge=1,
        description=(
            "how often a runner heartbeats to the group coordinator (heartbeat.interval.ms); also how soon "
            "the surviving runners hear of a rebalance. Below session_timeout_ms, best at most a third of it"
        ),
    )
    partition_assignment: Literal["cooperative-sticky", "roundrobin"] = Field(
        default="cooperative-sticky",
        description=(
            "cooperative-sticky: a rebalance moves only the partitions that change owner, the other runners "
            "keep theirs and their running calls; it balances partition counts, so one plugin's partitions "
            "may all stay on one runner. roundrobin: every plugin's partitions spread over all runners, but "
            "each rebalance takes every partition from every runner first (see revoke_wait_seconds). All "
            "runners of a group must use the same"
        ),
    )
    revoke_wait_seconds: float = Field(
        default=5.0,
        ge=0,
        le=60,
        description=(
            "when a rebalance takes partitions from a runner, how long it waits for their calls already "
            "running to end (and their results to be recorded and committed) before letting them go; the "
            "partitions' queued invocations are left to the new owner at once. A call still running after "
            "this runs again on the new owner. The rebalance waits meanwhile; 0 = let go at once"
        ),
    )

    @model_validator(mode="after")
    def _heartbeat_within_session(self) -> RunnerSettings:
        if self.heartbeat_interval_ms >= self.session_timeout_ms:
            raise ValueError(
                f"heartbeat_interval_ms ({self.heartbeat_interval_ms}) must be below session_timeout_ms "
                f"({self.session_timeout_ms}): a runner would be dropped between two heartbeats"
            )
        return self

    def group_options(self) -> dict[str, Any]:
        """The runner consumer's group membership, in librdkafka's keys."""
        return {
            "group.id": self.group_id,
            "session.timeout.ms": self.session_timeout_ms,
            "heartbeat.interval.ms": self.heartbeat_interval_ms,
            "partition.assignment.strategy": self.partition_assignment,
        }


class ObservabilitySettings(BaseModel):
    """Each long-running component serves /metrics, /healthz and /readyz and heartbeats to Redis."""

    model_config = ConfigDict(extra="forbid")

    bind: str = Field(default="127.0.0.1", description="address the components' HTTP servers listen on")
    reader_port: int = Field(default=9464, ge=0, le=65535, description="0 = no HTTP server")
    streams_port: int = Field(default=9465, ge=0, le=65535, description="0 = no HTTP server")
    runners_port: int = Field(default=9466, ge=0, le=65535, description="0 = no HTTP server")
    heartbeat_seconds: float = Field(default=1.0, gt=0)
    stale_after_seconds: float = Field(default=5.0, gt=0, description="no heartbeat for this long = down")


def _mail_address(value: str) -> str:
    """One address (`ops@example.com` or `Ops <ops@example.com>`), as smtplib sends it without checking."""
    from email.utils import parseaddr

    _, address = parseaddr(value)
    if "\n" in value or "\r" in value or address.count("@") != 1 or not all(address.split("@")):
        raise ValueError(f"not an email address: {value!r}")
    return value


def _smtp_host(value: str) -> str:
    ipv6 = value.count(":") > 1 and all(c in "0123456789abcdefABCDEF:." for c in value)
    if not value or any(c.isspace() or c in "/@" for c in value) or (":" in value and not ipv6):
        raise ValueError(f"not a host name or address: {value!r} (give the port as port:, no scheme)")
    return value


class SmtpSettings(BaseModel):
    """Checked when the config is read: the alert sender would otherwise fail only at the first alert."""

    model_config = ConfigDict(extra="forbid")

    host: Annotated[str, AfterValidator(_smtp_host)] = Field(description="a host name or address, no scheme or port")
    port: int = Field(default=25, ge=1, le=65535)
    starttls: bool = False
    ssl: bool = False
    username: str | None = None
    password: SecretStr | None = None
    sender: Annotated[str, AfterValidator(_mail_address)] = "cdcflow@localhost"
    to: list[Annotated[str, AfterValidator(_mail_address)]] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> SmtpSettings:
        if self.starttls and self.ssl:
            raise ValueError(
                "starttls and ssl exclude each other: ssl is TLS from the start (port 465), starttls "
                "upgrades a plain connection (port 587)"
            )
        if self.password is not None and not self.username:
            raise ValueError("a password without a username is never sent: give username too")
        return self


def _http_url(value: SecretStr) -> SecretStr:
    """A webhook URL is a secret (it often holds a token): the error names its problem, never its text."""
    parts = urlsplit(value.get_secret_value())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    return value


WebhookUrl = Annotated[SecretStr, AfterValidator(_http_url)]


class WebhookChannel(BaseModel):
    """The generic JSON webhook: the alert's own fields (kind, subject, message, details...) POSTed as is."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["webhook"]
    url: WebhookUrl


class SlackChannel(BaseModel):
    """A Slack incoming webhook: `text` (the fallback) and `blocks`."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["slack"]
    webhook_url: WebhookUrl


class DingTalkChannel(BaseModel):
    """A DingTalk custom robot (`msgtype: markdown`); with `secret` (SEC...), requests are signed."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["dingtalk"]
    webhook_url: WebhookUrl
    secret: SecretStr | None = None


class FeishuChannel(BaseModel):
    """A Feishu/Lark custom bot (`msg_type: post`); with `secret`, the body carries timestamp and sign."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["feishu", "lark"]
    webhook_url: WebhookUrl
    secret: SecretStr | None = None


class EmailChannel(SmtpSettings):
    type: Literal["email"]


AlertChannel = Annotated[
    WebhookChannel | SlackChannel | DingTalkChannel | FeishuChannel | EmailChannel, Field(discriminator="type")
]


class AlertSettings(BaseModel):
    """Where alerts go and when; with no channel (nor the `webhook_url`/`smtp` shorthands), none is sent."""

    model_config = ConfigDict(extra="forbid")

    webhook_url: WebhookUrl | None = Field(default=None, description="shorthand for a `webhook` channel")
    smtp: SmtpSettings | None = Field(default=None, description="shorthand for an `email` channel")
    channels: list[AlertChannel] = Field(default_factory=list)
    on_failure: bool = True
    on_dead_letter: bool = True
    on_component_down: bool = Field(default=True, description="a component without heartbeat for stale_after_seconds")
    on_schedule_skip: bool = Field(default=True, description="a schedule slot missed or skipped by max_instances")
    long_run_seconds: float | None = Field(default=None, gt=0, description="alert on a run longer than this")
    reader_lag_ms: int | None = Field(default=None, gt=0, description="alert when the reader lags more")
    window_seconds: float = Field(default=60.0, gt=0, description="rate-limit window per alert kind and subject")
    max_per_window: int = Field(default=3, ge=1, description="sent one by one per window; the rest as a summary")
    timeout_seconds: float = Field(default=5.0, gt=0)

    def all_channels(self) -> list[WebhookChannel | SlackChannel | DingTalkChannel | FeishuChannel | EmailChannel]:
        """`channels` plus the shorthands, as channels."""
        out: list[WebhookChannel | SlackChannel | DingTalkChannel | FeishuChannel | EmailChannel] = []
        if self.webhook_url is not None:
            out.append(WebhookChannel(type="webhook", url=self.webhook_url))
        if self.smtp is not None:
            out.append(EmailChannel(type="email", **self.smtp.model_dump()))
        return out + list(self.channels)


class ApiToken(BaseModel):
    """A token given in the config file, by the sha256 of its text only (`cdcflow api token hash`)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$")
    scopes: list[Literal["read", "trigger", "admin"]] = Field(min_length=1)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="hex sha256 of the token text")


class ApiSettings(BaseModel):
    """The HTTP API and dashboard (`cdcflow api serve`, or `cdcflow run` when enabled)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=False, description="`cdcflow run` starts the API server too")
    bind: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    tokens: list[ApiToken] = Field(default_factory=list, description="tokens besides those made with `api token`")
    cors_origins: list[str] = Field(default_factory=list, description="empty = CORS off")
    rate_limit_per_second: float = Field(default=50.0, gt=0, description="requests per token, sustained")
    rate_limit_burst: int = Field(default=200, ge=1, description="requests per token, at once")
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    wait_max_seconds: float = Field(default=300.0, gt=0, description="longest `?wait=` of a trigger")


class Settings(BaseSettings):
    """Infrastructure settings. Relative paths are relative to the config file's folder."""

    model_config = SettingsConfigDict(env_prefix="CDCFLOW_", env_nested_delimiter="__", extra="ignore")

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    mysql: MySQLSettings = Field(default_factory=MySQLSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    topics: TopicSettings = Field(default_factory=TopicSettings)
    cdc: CdcSettings = Field(default_factory=CdcSettings)
    streams: StreamsSettings = Field(default_factory=StreamsSettings)
    runners: RunnerSettings = Field(default_factory=RunnerSettings)
    observability: ObservabilitySettings = Field(default_factory=ObservabilitySettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment beats the file (passed as init values): deployments override addresses.
        return (env_settings, init_settings)

    def kafka_config(self, **extra: Any) -> dict[str, Any]:
        """librdkafka config for a confluent-kafka client."""
        # librdkafka's own messages go through Python logging (served on poll), not straight to
        # stderr, so they carry the component and honour --log-format json and secret masking.
        return {
            "bootstrap.servers": self.kafka.bootstrap_servers,
            "logger": logging.getLogger("cdcflow.kafka"),
            **self.kafka.client_options,
            **extra,
        }

    def resolve_paths(self, base: Path) -> Settings:
        def absolute(p: Path) -> Path:
            return p if p.is_absolute() else (base / p).resolve()

        self.streams.state_dir = absolute(self.streams.state_dir)
        self.runners.venv_dir = absolute(self.runners.venv_dir)
        self.runners.plugin_dirs = [absolute(p) for p in self.runners.plugin_dirs]
        if self.mysql.ssl is not None:
            for name in ("ca", "cert", "key"):
                if getattr(self.mysql.ssl, name) is not None:
                    setattr(self.mysql.ssl, name, absolute(getattr(self.mysql.ssl, name)))
        return self


SECRET_KEY_PATTERN = re.compile(r"(password|secret|token|sasl\.|ssl\.key|api[_-]?key)", re.I)
