"""The bad-input corpus (tests/bad_inputs/*.yaml): each case run through the real `cdcflow` command.

A case is a mapping:

    id: config-is-a-directory          # unique over the corpus
    args: [-c, conf, config, check]    # after `cdcflow`; @DIR@ is the case's own folder
    env: {CDCFLOW_KAFKA: "{oops"}      # added to a clean environment (no CDCFLOW_* of the caller)
    config: {kafka: {partitions: 0}}   # merged over an isolated config written as ./cdcflow.yaml
    files: {conf/: "", bad.json: "{"}  # more files; a name ending in / is a folder; !!binary for bytes
    links: {loop.yaml: loop.yaml}      # symbolic links: name -> target (unreadable files)
    stdin: "..."                       # optional
    expect: ["conf", "is a directory"] # every one must be in the output: the error names the place
    absent: ["cdcflow.yaml"]           # optional: texts the error must not contain (who is NOT to blame)
    max_lines: 5                       # optional: longest acceptable error (non-blank lines)

Without `cdcflow.yaml` in `files`, the case gets an isolated config (own topics, Redis prefix),
so a command that wrongly accepts its input touches nothing another test uses. Each outcome is
one of: clear (exit code not 0, no traceback, every expected text, short), wrong (exit code 0: the
input was accepted), unclear (anything else). `python -m tests.support.bad_inputs` prints them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.support import REPO_ROOT, isolated_config_data

CORPUS_DIR = REPO_ROOT / "tests" / "bad_inputs"
DIR_TOKEN = "@DIR@"
MAX_LINES = 5
TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Case:
    id: str
    source: str
    args: list[str]
    expect: list[str]
    env: dict[str, str] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str | bytes] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)
    absent: list[str] = field(default_factory=list)
    stdin: str | None = None
    max_lines: int = MAX_LINES


@dataclass(frozen=True)
class Outcome:
    case: Case
    returncode: int
    output: str
    verdict: str  # clear | wrong | unclear
    why: str
    seconds: float = 0.0


def load_corpus(directory: Path = CORPUS_DIR) -> list[Case]:
    cases: list[Case] = []
    for path in sorted(directory.glob("*.yaml")):
        for raw in yaml.safe_load(path.read_text(encoding="utf-8")) or []:
            cases.append(Case(source=path.name, **raw))
    ids = Counter(c.id for c in cases)
    dupes = [i for i, n in ids.items() if n > 1]
    if dupes:
        raise ValueError(f"duplicate case ids in {directory}: {', '.join(dupes)}")
    return cases


def _merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def materialize(case: Case, directory: Path) -> None:
    """The case's files in `directory`: its own, and the isolated config unless it brings one."""
    if "cdcflow.yaml" not in case.files:
        data = _merged(isolated_config_data("bad"), case.config)
        (directory / "cdcflow.yaml").write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    for name, content in case.files.items():
        path = directory / name
        if name.endswith("/"):
            path.mkdir(parents=True, exist_ok=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content.replace(DIR_TOKEN, str(directory)), encoding="utf-8")
    for name, target in case.links.items():
        (directory / name).symlink_to(target)


def _command() -> list[str]:
    script = Path(sys.executable).with_name("cdcflow")
    return [str(script)] if script.is_file() else [sys.executable, "-c", "from console.cli import main; main()"]


def _env(case: Case, directory: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDCFLOW_")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    env["COLUMNS"] = "200"
    env.update({k: v.replace(DIR_TOKEN, str(directory)) for k, v in case.env.items()})
    return env


def judge(case: Case, returncode: int, output: str, directory: str) -> tuple[str, str]:
    if returncode == 0:
        return "wrong", "exit code 0: the bad input was accepted"
    if "Traceback" in output:
        return "unclear", "a traceback"
    missing = [e for e in (x.replace(DIR_TOKEN, directory) for x in case.expect) if e not in output]
    if missing:
        return "unclear", f"does not name {missing}"
    blamed = [a for a in case.absent if a in output]
    if blamed:
        return "unclear", f"blames {blamed}"
    lines = [line for line in output.splitlines() if line.strip()]
    if len(lines) > case.max_lines:
        return "unclear", f"{len(lines)} lines (at most {case.max_lines})"
    return "clear", ""


def run_case(case: Case) -> Outcome:
    with tempfile.TemporaryDirectory(prefix=f"bad-{case.id[:40]}-") as tmp:
        directory = Path(tmp)
        started = time.monotonic()
        materialize(case, directory)
        args = [a.replace(DIR_TOKEN, tmp) for a in case.args]
        try:
            done = subprocess.run(
                [*_command(), *args],
                cwd=tmp,
                env=_env(case, directory),
                input=case.stdin if case.stdin is not None else "",
                capture_output=True,
                text=True,
                errors="replace",
                timeout=TIMEOUT_S,
            )
        except subprocess.TimeoutExpired:
            return Outcome(case, -1, "", "unclear", f"still running after {TIMEOUT_S:.0f}s")
        output = done.stdout + done.stderr
        verdict, why = judge(case, done.returncode, output, tmp)
        return Outcome(case, done.returncode, output, verdict, why, time.monotonic() - started)


def run_corpus(cases: list[Case], workers: int = 4) -> dict[str, Outcome]:
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return {o.case.id: o for o in pool.map(run_case, cases)}


def main() -> None:
    only = sys.argv[1:]
    cases = [c for c in load_corpus() if not only or any(c.id.startswith(p) or c.source == p for p in only)]
    outcomes = run_corpus(cases)
    for o in outcomes.values():
        if o.verdict != "clear" or only:
            print(f"--- {o.verdict:7} {o.case.id} ({o.case.source}): {o.why} rc={o.returncode} {o.seconds:.1f}s")
            print("    " + "\n    ".join(o.output.strip().splitlines()[-8:]))
    counts = Counter(o.verdict for o in outcomes.values())
    print(f"{len(outcomes)} case(s): " + ", ".join(f"{k} {counts[k]}" for k in ("clear", "wrong", "unclear")))


if __name__ == "__main__":
    main()
