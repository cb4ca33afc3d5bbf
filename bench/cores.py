"""Where the cores go: CPU seconds per process of a benchmark's process trees, from /proc.

A snapshot maps each live process under the given roots (children and their children: the
supervisor's components, a runner's warm workers) to a label and its CPU time so far (user +
system). The difference of two snapshots, per label, divided by the wall time between them, is the
cores each part used. Linux only; a process that ended between the snapshots counts up to its last
snapshot.

The whole machine's busy time is read too (/proc/stat): a latency figure means little without
knowing whether the cores were free, and on a 2-core box the pipeline alone can fill them.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

from bench.common import ROOT

TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat from its third field on (state, ppid, ...): the command name before it may hold
    spaces and parentheses."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds) of a live process."""
    fields = _stat_fields(pid)
    return None if fields is None else (int(fields[1]), (int(fields[11]) + int(fields[12])) / TICKS)


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


def stack_pids() -> dict[str, int]:
    """Kafka, MariaDB and Redis of the local stack (stack/stack.py writes their pid files)."""
    out = {}
    for name in ("kafka", "mariadb", "redis"):
        pid_file = ROOT / ".state" / name / f"{name}.pid"
        if pid_file.exists():
            out[f"{name} (shared)"] = int(pid_file.read_text().split()[0])
    return out


def machine_busy_seconds() -> float:
    """CPU seconds all cores have spent busy since boot: user, nice, system, irq, softirq and steal (a
    neighbour's time on a shared host is a core this one could not have). Not idle or iowait; not
    guest time either, which the kernel already counts in user and nice."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = (
        int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    )
    return (user + nice + system + irq + softirq + steal) / TICKS


def age_seconds(pid: int) -> float | None:
    """How long a live process has run."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    started = int(fields[19]) / TICKS  # field 22 of stat: its start, in ticks after boot
    return float(Path("/proc/uptime").read_text().split()[0]) - started


def print_cores(used: dict[str, float], seconds: float, rows: int, during: str) -> None:
    """The cores each part used, and the same as CPU time per row change: what a row costs each part,
    comparable across machines of different speed and load (the rate alone is not)."""
    shown = {name: cores for name, cores in used.items() if cores >= 0.005}
    parts = ", ".join(f"{name} {cores:.2f}" for name, cores in shown.items())
    print(f"cores used {during}: {parts}; load average {os.getloadavg()[0]:.1f}")
    per_row = {name: cores * seconds / rows * 1e6 for name, cores in shown.items()}
    costs = ", ".join(f"{name} {us:.0f}" for name, us in per_row.items())
    total = sum(per_row.values())
    print(f"CPU per row change (us): {costs}; all parts {total:.0f}")
    if total > 0:
        # The rate no tuning of how the parts share the cores can pass while each row costs this much
        # (at a low rate much of the cost is per request, not per row: the bound holds only at that rate).
        usable = len(os.sched_getaffinity(0))
        most = usable * 1e6 / total
        print(f"at these costs {usable} core(s) carry at most {most:,.0f} row changes/s through these parts")


def cores_used(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]], seconds: float
) -> dict[str, float]:
    """Cores per label between two snapshots, most first."""
    used: defaultdict[str, float] = defaultdict(float)
    for pid, (name, cpu) in after.items():
        used[name] += (cpu - before.get(pid, (name, 0.0))[1]) / seconds
    return dict(sorted(used.items(), key=lambda kv: -kv[1]))
