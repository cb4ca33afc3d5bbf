"""Where the cores go: CPU seconds per process of a benchmark's process trees, from /proc.

A snapshot maps each live process under the given roots (children and their children: the
supervisor's components, a runner's warm workers) to a label and its CPU time so far (user +
system). The difference of two snapshots, per label, divided by the wall time between them, is the
cores each part used. Linux only; a process that ended between the snapshots counts up to its last
snapshot.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds) of a live process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()  # after "pid (comm) ": state, ppid, ...
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / TICKS


def label(pid: int) -> str:
    """A short name: the cdcflow command a process runs, `plugin worker`, or its program name."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return "?"
    if "console.cli" in argv:
        words = [a for a in argv[argv.index("console.cli") + 1 :] if a and not a.startswith("-") and "/" not in a]
        return "cdcflow " + " ".join(w for w in words if w in {"run", "cdc", "streams", "worker", "runners"})
    if any("worker_main" in a for a in argv):
        return "plugin worker"
    return Path(argv[0]).name if argv and argv[0] else "?"


def snapshot(roots: dict[str, int]) -> dict[int, tuple[str, float]]:
    """Every live process under `roots` (label -> pid; the roots keep their given labels)."""
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (st := _stat(int(entry))) is not None:
            parents[int(entry)], cpu[int(entry)] = st
    names = {pid: name for name, pid in roots.items()}
    out: dict[int, tuple[str, float]] = {}
    for pid in cpu:
        at = pid
        while at in parents and at not in names:
            at = parents[at]
        if at in names:
            out[pid] = (names[pid] if pid in names else label(pid), cpu[pid])
    return out


def cores_used(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]], seconds: float
) -> dict[str, float]:
    """Cores per label between two snapshots, most first."""
    used: defaultdict[str, float] = defaultdict(float)
    for pid, (name, cpu) in after.items():
        used[name] += (cpu - before.get(pid, (name, 0.0))[1]) / seconds
    return dict(sorted(used.items(), key=lambda kv: -kv[1]))
