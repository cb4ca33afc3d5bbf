"""Errors the reader cannot retry its way out of: they stop it with a message saying what to do."""

from __future__ import annotations

from typing import Any

import pymysql

from cdc.checkpoint import Position

# ER_MASTER_FATAL_ERROR_READING_BINLOG: the server cannot serve the requested file/pos or GTID
# (purged, never existed, diverged). Retrying would spin forever; skipping would lose rows.
ER_SOURCE_CANNOT_SERVE = 1236


class PositionLost(RuntimeError):
    """The checkpointed binlog position is no longer (or never was) on the source server."""

    def __init__(self, position: Position, server_message: str):
        self.position = position
        self.server_message = server_message
        super().__init__(
            f"the checkpointed binlog position {position.describe()} is not available on the source server "
            f"(server said: {server_message}). Rows between that position and the oldest binlog the server "
            "still has cannot be read, and the reader will not skip them silently. Two ways out:\n"
            "  1. re-snapshot every table the reader reads: `cdcflow cdc snapshot` (no TABLE, no --where; it\n"
            "     replaces the checkpoint with the snapshot's position), or\n"
            "  2. accept the gap and start from the current end of the binlog: `cdcflow cdc run --from-now` "
            "(overwrites this reader's checkpoint; changes made before now are not sent)."
        )


def position_lost(error: BaseException, position: Position) -> PositionLost | None:
    """The PositionLost this pymysql error means, or None for a transient error worth a retry."""
    if isinstance(error, pymysql.err.OperationalError) and error.args and error.args[0] == ER_SOURCE_CANNOT_SERVE:
        return PositionLost(position, str(error.args[1]) if len(error.args) > 1 else "")
    return None


class GtidDomainUnknown(PositionLost):
    """A MariaDB checkpoint names a GTID domain the server's binlogs do not hold.

    MariaDB accepts such a position without complaint: it ignores the unknown domain and serves the
    domains it knows from the start of their binlogs. A checkpoint taken on another server (failover
    to a primary with other domains) or before RESET MASTER would then re-send or skip rows silently.
    """

    def __init__(self, position: Position, domains: list[str], server_state: str):
        self.domains = domains
        self.server_state = server_state
        named = ", ".join(g for g in (position.gtid_set or "").split(",") if g.split("-", 1)[0] in domains)
        message = (
            f"GTID domain {', '.join(domains)} of the checkpoint ({named}) is unknown to the source server, "
            f"whose binlogs hold {server_state or 'no GTIDs'}: the checkpoint was taken on another server, "
            "or before its binlogs were reset, so resuming from it would re-send or skip rows"
        )
        super().__init__(position, message)
        self.args = (str(self).replace(f"(server said: {message})", f"({message})"),)


def unknown_gtid_domain(connection_settings: dict[str, Any], position: Position) -> GtidDomainUnknown | None:
    """The GtidDomainUnknown of a MariaDB checkpoint whose domains the server does not know, else None."""
    wanted = {g.strip().split("-", 1)[0] for g in (position.gtid_set or "").split(",") if g.strip()}
    if not wanted:
        return None
    conn = pymysql.connect(**connection_settings)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT @@global.gtid_binlog_state")
            state = cur.fetchone()[0] or ""
    finally:
        conn.close()
    known = {g.strip().split("-", 1)[0] for g in state.split(",") if g.strip()}
    missing = sorted(wanted - known, key=int)
    return GtidDomainUnknown(position, missing, state) if missing else None
