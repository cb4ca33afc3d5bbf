#!/usr/bin/env python3
"""Local service stack for cdcflow: Kafka (KRaft), MariaDB (row binlog) and Redis.

No Docker: each server runs as a plain detached process on 127.0.0.1, with all of its
config, data, logs and pid file under one state folder, so the stack can be wiped with
`rm -rf .state`. Stdlib only, so it runs with the system python3 before any pip install.

    python3 stack/stack.py install [SERVICE...]   # apt packages + Kafka jars (idempotent)
    python3 stack/stack.py up      [SERVICE...]   # install, then start what is not running
    python3 stack/stack.py down    [SERVICE...]   # SIGTERM, then SIGKILL after 30 s
    python3 stack/stack.py status  [SERVICE...]   # exit 0 only if all are running
    python3 stack/stack.py wait    [SERVICE...]   # block until all answer (120 s max)
    python3 stack/stack.py install-connect        # Kafka Connect + Debezium jars (idempotent)

SERVICE is kafka, mariadb or redis (default: all three).
State folder: $CDCFLOW_STATE_DIR, else <repo>/.state.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import hashlib
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

# --------------------------------------------------------------------------- settings

STACK_DIR = Path(__file__).resolve().parent
REPO_DIR = STACK_DIR.parent
STATE_DIR = Path(os.environ.get("CDCFLOW_STATE_DIR") or REPO_DIR / ".state").resolve()

HOST = "127.0.0.1"
KAFKA_PORT = 9092
KAFKA_CONTROLLER_PORT = 9093
MARIADB_PORT = 3307  # not 3306, so a system MySQL/MariaDB never collides with ours
REDIS_PORT = 6380  # not 6379, for the same reason

# Accounts and database created in MariaDB on first start (tests and services log in with these).
MARIADB_ADMIN_USER, MARIADB_ADMIN_PASSWORD = "cdcflow", "cdcflow"
MARIADB_READER_USER, MARIADB_READER_PASSWORD = "cdcflow_reader", "cdcflow_reader"
MARIADB_DEMO_DB = "cdcflow_demo"

STOP_TIMEOUT = 30.0
WAIT_TIMEOUT = 120.0
KAFKA_POM = STACK_DIR / "kafka" / "pom.xml"
# Kafka Connect and Debezium's MySQL connector, only for tests/integration/test_debezium_compat.py.
CONNECT_POM = STACK_DIR / "connect" / "pom.xml"
LOG_TAIL_LINES = 30


class StackError(Exception):
    """A failure with a message meant for the user (no traceback)."""

    def __init__(self, message: str, show_logs: bool = True) -> None:
        super().__init__(message)
        self.show_logs = show_logs  # False when the server's logs cannot explain it


# --------------------------------------------------------------------------- small helpers


def log(msg: str) -> None:
    print(msg, flush=True)


def find_binary(*names: str) -> str | None:
    """First of `names` found on PATH or in the sbin dirs (not on a non-root PATH)."""
    extra = os.pathsep.join(["/usr/sbin", "/usr/local/sbin", "/sbin"])
    search = os.environ.get("PATH", "") + os.pathsep + extra
    for name in names:
        found = shutil.which(name, path=search)
        if found:
            return found
    return None


def need_binary(*names: str) -> str:
    found = find_binary(*names)
    if not found:
        raise StackError(f"none of {', '.join(names)} found; run `python3 stack/stack.py install`")
    return found


def write_if_changed(path: Path, text: str) -> None:
    """Rewriting identical files would only bump mtimes; keep warm runs side-effect free."""
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def tail(path: Path, lines: int = LOG_TAIL_LINES, since: int = 0) -> str:
    """Last `lines` lines of `path`, ignoring everything before byte offset `since`."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(since, f.tell() - 64 * 1024))
            data = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


def run(
    cmd: list[str],
    *,
    log_file: Path | None = None,
    input_text: str = "",
    env: dict[str, str] | None = None,
    timeout: float = 600,
) -> None:
    """Run a setup command; on failure raise with the end of its output. With `log_file`
    the output is streamed there (appended), so a slow apt/Maven run can be followed."""
    if log_file:
        since = log_file.stat().st_size if log_file.exists() else 0
        with log_file.open("a") as out:
            out.write(f"\n$ {' '.join(cmd)}\n")
            out.flush()
            returncode = subprocess.run(
                cmd, input=input_text, text=True, stdout=out, stderr=subprocess.STDOUT, env=env, timeout=timeout
            ).returncode
        output = tail(log_file, since=since)
    else:
        proc = subprocess.run(
            cmd, input=input_text, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, timeout=timeout
        )
        returncode, output = proc.returncode, "\n".join(proc.stdout.splitlines()[-LOG_TAIL_LINES:])
    if returncode != 0:
        raise StackError(f"command failed ({returncode}): {' '.join(cmd)}\n{output}")


@contextlib.contextmanager
def state_lock() -> Iterator[None]:
    """Serialize install/up/down between concurrent invocations (e.g. two test runs)."""
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    with (STATE_DIR / "stack.lock").open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# --------------------------------------------------------------------------- probes


def recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf


def port_open(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def kafka_probe() -> bool:
    """Send an ApiVersions (v0) request. In KRaft the listener port is bound early but
    requests are only served once the broker has caught up with the metadata log and
    is unfenced, so an answer here means clients can really produce/consume."""
    client_id = b"cdcflow-stack"
    correlation_id = 0x5AC
    request = struct.pack(">hhih", 18, 0, correlation_id, len(client_id)) + client_id
    try:
        with socket.create_connection((HOST, KAFKA_PORT), timeout=2) as s:
            s.settimeout(2)
            s.sendall(struct.pack(">i", len(request)) + request)
            (size,) = struct.unpack(">i", recv_exact(s, 4))
            corr, error_code = struct.unpack(">ih", recv_exact(s, size)[:6])
            return bool(corr == correlation_id and error_code == 0)
    except (OSError, struct.error):
        return False


def mariadb_probe() -> bool:
    """Read the server greeting: protocol version 10 means it accepts logins. Error 1130
    ('Host is not allowed to connect') counts as up too: before the bootstrap SQL has
    created the @'127.0.0.1' accounts, that is what a healthy fresh server answers over
    TCP. Any other error packet (0xff, e.g. 'too many connections') is not ready."""
    try:
        with socket.create_connection((HOST, MARIADB_PORT), timeout=2) as s:
            s.settimeout(2)
            header = recv_exact(s, 4)
            length = header[0] | header[1] << 8 | header[2] << 16
            payload = recv_exact(s, length)
            if payload[:1] == b"\xff":
                return bool(struct.unpack("<H", payload[1:3])[0] == 1130)
            return payload[:1] == b"\x0a"
    except (OSError, struct.error):
        return False


def redis_probe() -> bool:
    """PING; a server still loading its dataset answers -LOADING instead of +PONG."""
    try:
        with socket.create_connection((HOST, REDIS_PORT), timeout=2) as s:
            s.settimeout(2)
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


# --------------------------------------------------------------------------- services


@dataclass
class Service:
    name: str
    port: int
    cmdline_hint: str  # must appear in /proc/<pid>/cmdline: guards against pid reuse
    prepare: Callable[[], None]  # write config, initialize data (idempotent)
    command: Callable[[], list[str]]
    probe: Callable[[], bool]
    after_start: Callable[[], None] = lambda: None
    start_timeout: float = 60.0
    log_names: list[str] = field(default_factory=list)
    data_subdir: str = "data"
    # Log sizes when this run launched the server: failure reports show only newer lines.
    log_offsets: dict[Path, int] = field(default_factory=dict)

    @property
    def dir(self) -> Path:
        return STATE_DIR / self.name

    @property
    def pid_file(self) -> Path:
        return self.dir / f"{self.name}.pid"

    @property
    def data_dir(self) -> Path:
        return self.dir / self.data_subdir

    @property
    def console_log(self) -> Path:
        return self.dir / "console.log"

    def logs(self) -> list[Path]:
        return [self.dir / n for n in self.log_names] + [self.console_log]

    def pid(self) -> int | None:
        """Pid from the pid file if that process is alive and is really ours."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if pid_alive(pid, self.cmdline_hint) else None


def pid_alive(pid: int, cmdline_hint: str) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return False
    # A zombie (state Z) is dead but still in /proc until its parent reaps it.
    state = stat.rsplit(")", 1)[1].split()[0]
    return state != "Z" and cmdline_hint in cmdline


# ---- Kafka ------------------------------------------------------------------------

KAFKA_DIR = STATE_DIR / "kafka"
KAFKA_LIBS = KAFKA_DIR / "libs"
CONNECT_DIR = STATE_DIR / "connect"


def kafka_classpath() -> str:
    return str(KAFKA_LIBS / "*")  # expanded by java itself, not by a shell


def kafka_java_opts() -> list[str]:
    return [
        # Keep temp files (snappy/zstd native libs) under state; no hsperfdata in /tmp.
        f"-Djava.io.tmpdir={KAFKA_DIR / 'tmp'}",
        "-XX:-UsePerfData",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={KAFKA_DIR / 'log4j2.properties'}",
    ]


def kafka_prepare() -> None:
    need_binary("java")
    if not any(KAFKA_LIBS.glob("kafka_2.13-*.jar")):
        raise StackError(f"Kafka jars missing in {KAFKA_LIBS}; run `python3 stack/stack.py install`")
    data = KAFKA_DIR / "data"
    for d in (data, KAFKA_DIR / "tmp"):
        d.mkdir(parents=True, exist_ok=True)
    write_if_changed(
        KAFKA_DIR / "server.properties",
        f"""\
# Generated by stack/stack.py; edits are overwritten on the next `up`.
# Single node acting as both KRaft controller and broker.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@{HOST}:{KAFKA_CONTROLLER_PORT}
listeners=PLAINTEXT://{HOST}:{KAFKA_PORT},CONTROLLER://{HOST}:{KAFKA_CONTROLLER_PORT}
advertised.listeners=PLAINTEXT://{HOST}:{KAFKA_PORT}
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs={data}

# One broker: every internal topic must accept replication factor 1.
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# Fewer internal partitions: a faster first group join / first transaction on a dev box.
offsets.topic.num.partitions=4
transaction.state.log.num.partitions=4

# Tests and the demo create topics implicitly.
auto.create.topics.enable=true
num.partitions=1
delete.topic.enable=true

# Low latency: consumer groups form at once instead of waiting 3 s for more members.
group.initial.rebalance.delay.ms=0

# Sized for a 2-core machine.
num.network.threads=2
num.io.threads=4
background.threads=4
num.recovery.threads.per.data.dir=1
log.cleaner.threads=1
log.cleaner.dedupe.buffer.size=33554432

log.retention.hours=168
log.segment.bytes=268435456
""",
    )
    write_if_changed(
        KAFKA_DIR / "log4j2.properties",
        f"""\
# Generated by stack/stack.py. Broker log at INFO, rolled at 50 MB (3 kept).
status = warn
name = cdcflow-kafka
appender.file.type = RollingFile
appender.file.name = file
appender.file.fileName = {KAFKA_DIR / "server.log"}
appender.file.filePattern = {KAFKA_DIR / "server.log"}.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 50MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
# Per-request noise that would drown the interesting lines.
logger.reqlog.name = kafka.request.logger
logger.reqlog.level = WARN
logger.netclient.name = org.apache.kafka.clients.NetworkClient
logger.netclient.level = WARN
""",
    )
    if not (data / "meta.properties").exists():
        # Format the log dir once. The voters are static (controller.quorum.voters), so
        # no --standalone. A Kafka cluster id is a base64url 16-byte uuid; Kafka's own
        # generator also avoids ids starting with '-' (they look like CLI flags).
        cluster_id = "-"
        while cluster_id.startswith("-"):
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        run(
            [
                "java",
                *kafka_java_opts(),
                "-cp",
                kafka_classpath(),
                "kafka.tools.StorageTool",
                "format",
                "-t",
                cluster_id,
                "-c",
                str(KAFKA_DIR / "server.properties"),
            ],
            log_file=KAFKA_DIR / "format.log",
            timeout=120,
        )


def kafka_command() -> list[str]:
    return [
        "java",
        "-Xms512m",
        "-Xmx1g",
        # GC settings from Kafka's own kafka-run-class.sh (short pauses -> low latency).
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-XX:InitiatingHeapOccupancyPercent=35",
        "-XX:+ExplicitGCInvokesConcurrent",
        *kafka_java_opts(),
        "-cp",
        kafka_classpath(),
        "kafka.Kafka",
        str(KAFKA_DIR / "server.properties"),
    ]


def libs_current(pom: Path, libs: Path) -> bool:
    stamp = libs / ".pom.sha256"
    return stamp.exists() and stamp.read_text().strip() == hashlib.sha256(pom.read_bytes()).hexdigest()


def kafka_libs_current() -> bool:
    return libs_current(KAFKA_POM, KAFKA_LIBS)


def kafka_install_libs() -> None:
    maven_install_libs(KAFKA_POM, KAFKA_DIR, "Kafka")


def maven_install_libs(pom: Path, where: Path, what: str) -> None:
    """Fetch the jars `pom` depends on into where/libs with Maven, through a temp folder swapped in
    when complete, so an interrupted download never leaves a half-filled libs/ that looks current."""
    libs = where / "libs"
    if libs_current(pom, libs):
        return
    mvn = need_binary("mvn")
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()
    where.mkdir(parents=True, exist_ok=True)
    staging = where / "libs.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    log(f"install: fetching {what} jars with Maven into {libs}")
    (where / "tmp").mkdir(parents=True, exist_ok=True)
    # Maven's own JVM would otherwise leave hsperfdata/temp files in /tmp.
    maven_opts = f"-XX:-UsePerfData -Djava.io.tmpdir={where / 'tmp'}"
    env = dict(os.environ, MAVEN_OPTS=(os.environ.get("MAVEN_OPTS", "") + " " + maven_opts).strip())
    run(
        [
            mvn,
            "-B",
            "-q",
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={staging}",
        ],
        log_file=where / "maven.log",
        env=env,
        timeout=900,
    )
    shutil.rmtree(libs, ignore_errors=True)
    staging.rename(libs)
    (libs / ".pom.sha256").write_text(digest + "\n")


def install_connect() -> None:
    """Kafka Connect (standalone worker, JsonConverter) and Debezium's MySQL connector, for the
    Debezium compatibility test only: not part of `install`, which every run needs."""
    missing = [p for p, b in (("openjdk-17-jre-headless", "java"), ("maven", "mvn")) if not find_binary(b)]
    if missing and not libs_current(CONNECT_POM, CONNECT_DIR / "libs"):
        apt_install(missing)
    maven_install_libs(CONNECT_POM, CONNECT_DIR, "Kafka Connect + Debezium")


# ---- MariaDB ----------------------------------------------------------------------

MARIADB_DIR = STATE_DIR / "mariadb"
MARIADB_SOCKET = MARIADB_DIR / "mysqld.sock"
MARIADB_CNF = MARIADB_DIR / "my.cnf"
MARIADB_BOOTSTRAP_STAMP = MARIADB_DIR / "bootstrap.sha256"

# Run over the root socket after every start, but only when it changed since the last
# successful run (stamp). sql_log_bin=0: our admin statements stay out of the binlog, so
# CDC consumers reading it from the start only see the tests' own events.
MARIADB_BOOTSTRAP_SQL = f"""\
SET SESSION sql_log_bin = 0;
CREATE USER IF NOT EXISTS '{MARIADB_ADMIN_USER}'@'127.0.0.1' IDENTIFIED BY '{MARIADB_ADMIN_PASSWORD}';
CREATE USER IF NOT EXISTS '{MARIADB_ADMIN_USER}'@'localhost' IDENTIFIED BY '{MARIADB_ADMIN_PASSWORD}';
ALTER USER '{MARIADB_ADMIN_USER}'@'127.0.0.1' IDENTIFIED BY '{MARIADB_ADMIN_PASSWORD}';
ALTER USER '{MARIADB_ADMIN_USER}'@'localhost' IDENTIFIED BY '{MARIADB_ADMIN_PASSWORD}';
-- Tests create and drop their own databases.
GRANT ALL PRIVILEGES ON *.* TO '{MARIADB_ADMIN_USER}'@'127.0.0.1' WITH GRANT OPTION;
GRANT ALL PRIVILEGES ON *.* TO '{MARIADB_ADMIN_USER}'@'localhost' WITH GRANT OPTION;
CREATE USER IF NOT EXISTS '{MARIADB_READER_USER}'@'127.0.0.1' IDENTIFIED BY '{MARIADB_READER_PASSWORD}';
CREATE USER IF NOT EXISTS '{MARIADB_READER_USER}'@'localhost' IDENTIFIED BY '{MARIADB_READER_PASSWORD}';
ALTER USER '{MARIADB_READER_USER}'@'127.0.0.1' IDENTIFIED BY '{MARIADB_READER_PASSWORD}';
ALTER USER '{MARIADB_READER_USER}'@'localhost' IDENTIFIED BY '{MARIADB_READER_PASSWORD}';
-- What a binlog reader (python-mysql-replication) needs on MariaDB 10.5+:
--   REPLICATION SLAVE  -> COM_BINLOG_DUMP (stream the binlog)
--   BINLOG MONITOR     -> SHOW MASTER STATUS / SHOW BINARY LOGS (REPLICATION CLIENT is
--                         its old alias; granted too for tools that check for that name)
--   SELECT             -> information_schema column names + initial snapshots
--   RELOAD, LOCK TABLES-> FLUSH TABLES WITH READ LOCK / LOCK TABLES for consistent snapshots
GRANT SELECT, RELOAD, SHOW DATABASES, LOCK TABLES, REPLICATION SLAVE, REPLICATION CLIENT,
      BINLOG MONITOR ON *.* TO '{MARIADB_READER_USER}'@'127.0.0.1';
GRANT SELECT, RELOAD, SHOW DATABASES, LOCK TABLES, REPLICATION SLAVE, REPLICATION CLIENT,
      BINLOG MONITOR ON *.* TO '{MARIADB_READER_USER}'@'localhost';
CREATE DATABASE IF NOT EXISTS {MARIADB_DEMO_DB}
    CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
-- install-db adds a proxy grant for root@<hostname>, which skip-name-resolve reports
-- as an ignored entry on every start; only the localhost one is of use.
DELETE FROM mysql.proxies_priv WHERE Host NOT IN ('localhost', '127.0.0.1', '::1');
FLUSH PRIVILEGES;
"""


def mariadb_prepare() -> None:
    install_db = need_binary("mariadb-install-db", "mysql_install_db")
    need_binary("mariadbd", "mysqld")
    # Unix socket paths are limited to 107 bytes (sun_path).
    if len(str(MARIADB_SOCKET).encode()) > 107:
        raise StackError(f"socket path too long ({MARIADB_SOCKET}); use a shorter CDCFLOW_STATE_DIR")
    data = MARIADB_DIR / "data"
    for d in (MARIADB_DIR / "binlog", MARIADB_DIR / "tmp"):
        d.mkdir(parents=True, exist_ok=True)
    # --defaults-file (below) makes the server read only this file: Debian's
    # /etc/mysql config (datadir /var/lib/mysql, port 3306, ...) never leaks in.
    write_if_changed(
        MARIADB_CNF,
        f"""\
# Generated by stack/stack.py; edits are overwritten on the next `up`.
# Human use: mariadb --defaults-file={MARIADB_CNF} -uroot
[client]
socket = {MARIADB_SOCKET}
port = {MARIADB_PORT}
default-character-set = utf8mb4

[mysqld]
user = root
datadir = {data}
port = {MARIADB_PORT}
bind-address = {HOST}
socket = {MARIADB_SOCKET}
pid-file = {MARIADB_DIR / "mariadb.pid"}
log-error = {MARIADB_DIR / "error.log"}
tmpdir = {MARIADB_DIR / "tmp"}
skip-name-resolve
# The readiness probe opens and drops TCP connections; never block 127.0.0.1 for that.
max_connect_errors = 1000000
# ... and keep those probe connections ("closed normally without authentication") out
# of error.log; level 2 (the default) logs every one of them.
log_warnings = 1
max_connections = 200
performance_schema = OFF

# Binlog as the CDC reader needs it: row events with full before/after images and
# column names/types (binlog_row_metadata=FULL) so no information_schema race.
server_id = 1
log_bin = {MARIADB_DIR / "binlog" / "mysql-bin"}
binlog_format = ROW
binlog_row_image = FULL
binlog_row_metadata = FULL
gtid_strict_mode = ON
binlog_expire_logs_seconds = 604800
max_binlog_size = 100M

character-set-server = utf8mb4
collation-server = utf8mb4_unicode_ci
# UTC, so TIMESTAMP values in events do not depend on the machine's time zone.
default-time-zone = +00:00
max_allowed_packet = 64M

# Dev speed over durability: no fsync per commit.
innodb_buffer_pool_size = 256M
innodb_flush_log_at_trx_commit = 2
sync_binlog = 0
""",
    )
    if not (data / "mysql").is_dir():
        shutil.rmtree(data, ignore_errors=True)  # a half-initialized dir from a failed try
        MARIADB_BOOTSTRAP_STAMP.unlink(missing_ok=True)
        try:
            # --skip-log-bin (passed through to mariadbd --bootstrap): the system tables'
            # creation would otherwise be the first thing in our binlog.
            run(
                [
                    install_db,
                    f"--defaults-file={MARIADB_CNF}",
                    "--user=root",
                    f"--datadir={data}",
                    "--auth-root-authentication-method=socket",
                    "--skip-test-db",
                    "--skip-name-resolve",
                    "--skip-log-bin",
                    "--binlog-expire-logs-seconds=0",
                ],
                log_file=MARIADB_DIR / "install-db.log",
                timeout=300,
            )
        except StackError:
            shutil.rmtree(data, ignore_errors=True)
            raise


def mariadb_command() -> list[str]:
    # --defaults-file must be the first option.
    return [need_binary("mariadbd", "mysqld"), f"--defaults-file={MARIADB_CNF}", "--user=root"]


def mariadb_after_start() -> None:
    digest = hashlib.sha256(MARIADB_BOOTSTRAP_SQL.encode()).hexdigest()
    if MARIADB_BOOTSTRAP_STAMP.exists() and MARIADB_BOOTSTRAP_STAMP.read_text().strip() == digest:
        return
    client = need_binary("mariadb", "mysql")
    run(
        [client, "--no-defaults", "--protocol=socket", f"--socket={MARIADB_SOCKET}", "-uroot"],
        input_text=MARIADB_BOOTSTRAP_SQL,
        timeout=60,
    )
    MARIADB_BOOTSTRAP_STAMP.write_text(digest + "\n")


# ---- Redis ------------------------------------------------------------------------

REDIS_DIR = STATE_DIR / "redis"


def redis_prepare() -> None:
    need_binary("redis-server")
    REDIS_DIR.mkdir(parents=True, exist_ok=True)
    write_if_changed(
        REDIS_DIR / "redis.conf",
        f"""\
# Generated by stack/stack.py; edits are overwritten on the next `up`.
port {REDIS_PORT}
bind {HOST}
protected-mode yes
dir {REDIS_DIR}
# stack.py detaches the process itself and writes the pid file.
daemonize no
supervised no
logfile {REDIS_DIR / "redis.log"}
loglevel notice
# Pure cache for the plugins and tests: no persistence at all.
appendonly no
save ""
""",
    )


def redis_command() -> list[str]:
    return [need_binary("redis-server"), str(REDIS_DIR / "redis.conf")]


SERVICES: dict[str, Service] = {
    s.name: s
    for s in (
        Service(
            "kafka",
            KAFKA_PORT,
            "kafka.Kafka",
            kafka_prepare,
            kafka_command,
            kafka_probe,
            start_timeout=90.0,
            log_names=["server.log"],
        ),
        Service(
            "mariadb",
            MARIADB_PORT,
            "mariadbd" if find_binary("mariadbd") else "mysqld",
            mariadb_prepare,
            mariadb_command,
            mariadb_probe,
            mariadb_after_start,
            start_timeout=60.0,
            log_names=["error.log"],
        ),
        Service(
            "redis",
            REDIS_PORT,
            "redis-server",
            redis_prepare,
            redis_command,
            redis_probe,
            start_timeout=20.0,
            log_names=["redis.log"],
            data_subdir=".",
        ),
    )
}


# --------------------------------------------------------------------------- install


def apt_install(packages: list[str]) -> None:
    if os.geteuid() != 0:
        raise StackError(
            f"missing system packages; run as root: apt-get update && apt-get install -y {' '.join(packages)}"
        )
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    # Another apt/dpkg may be running (e.g. a provisioning script): wait for its lock.
    lock_wait = ["-o", "DPkg::Lock::Timeout=600"]
    log(f"install: apt-get install {' '.join(packages)}")
    apt_log = STATE_DIR / "apt.log"
    run(["apt-get", *lock_wait, "update"], log_file=apt_log, env=env, timeout=900)
    run(
        ["apt-get", *lock_wait, "install", "-y", "--no-install-recommends", *packages],
        log_file=apt_log,
        env=env,
        timeout=1800,
    )
    # Debian packages start their system service where they can; we run our own instances
    # on other ports, so stop and disable those (harmless when none was started).
    system_pid_files = {"mariadb": "/run/mysqld/mysqld.pid", "redis-server": "/run/redis/redis-server.pid"}
    for unit, pid_file in system_pid_files.items():
        if Path("/run/systemd/system").is_dir():
            subprocess.run(["systemctl", "disable", "--now", unit], capture_output=True)
        elif Path(pid_file).exists() and shutil.which("service"):
            # Only when that service really runs: Debian's mariadb init script falls back to
            # `killall mariadbd`, which would take our own instance down too.
            subprocess.run(["service", unit, "stop"], capture_output=True)


def install(names: list[str]) -> None:
    missing: list[str] = []
    if "mariadb" in names and not (
        find_binary("mariadbd", "mysqld")
        and find_binary("mariadb-install-db", "mysql_install_db")
        and find_binary("mariadb", "mysql")
    ):
        missing += ["mariadb-server", "mariadb-client"]
    if "redis" in names and not (find_binary("redis-server") and find_binary("redis-cli")):
        missing += ["redis-server", "redis-tools"]
    if "kafka" in names:
        if not find_binary("java"):
            missing.append("openjdk-17-jre-headless")
        if not kafka_libs_current() and not find_binary("mvn"):
            missing.append("maven")
    if missing:
        apt_install(missing)
    if "kafka" in names:
        if not find_binary("java"):
            raise StackError("java not found: apt-get install openjdk-17-jre-headless")
        kafka_install_libs()


# --------------------------------------------------------------------------- up / down


@dataclass
class Outcome:
    service: Service
    status: str
    seconds: float
    error: str | None = None
    show_logs: bool = False


def start_service(svc: Service) -> Outcome:
    t0 = time.monotonic()
    svc.dir.mkdir(parents=True, exist_ok=True)
    pid = svc.pid()
    if pid and svc.probe():
        return Outcome(svc, "already running", time.monotonic() - t0)
    proc: subprocess.Popen[bytes] | None = None
    if pid is None:
        if port_open(svc.port):
            raise StackError(
                f"port {svc.port} is taken by a process stack.py did not start "
                f"(another state dir or a system service?)",
                show_logs=False,
            )
        svc.pid_file.unlink(missing_ok=True)
        svc.log_offsets = {p: p.stat().st_size for p in svc.logs() if p.exists()}
        svc.prepare()
        with svc.console_log.open("ab") as out:
            out.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting\n".encode())
            out.flush()
            # New session: the server survives this script and the caller's Ctrl-C.
            proc = subprocess.Popen(
                svc.command(),
                cwd=svc.dir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        svc.pid_file.write_text(f"{proc.pid}\n")
        pid = proc.pid
    # else: our process is alive but not answering yet (still starting): wait for it.
    deadline = t0 + svc.start_timeout
    while not svc.probe():
        exited = proc.poll() is not None if proc else not pid_alive(pid, svc.cmdline_hint)
        if exited:
            svc.pid_file.unlink(missing_ok=True)
            raise StackError(f"{svc.name} exited during startup")
        if time.monotonic() > deadline:
            raise StackError(
                f"{svc.name} did not answer on port {svc.port} within {svc.start_timeout:.0f}s (pid {pid} left running)"
            )
        time.sleep(0.2)
    svc.after_start()
    return Outcome(svc, "started", time.monotonic() - t0)


def stop_service(svc: Service) -> Outcome:
    t0 = time.monotonic()
    pid = svc.pid()
    if pid is None:
        svc.pid_file.unlink(missing_ok=True)
        if port_open(svc.port):
            return Outcome(svc, "not ours", 0.0, f"port {svc.port} answers but no pid file in {svc.dir}: left alone")
        return Outcome(svc, "already stopped", 0.0)

    def signal_group(sig: int) -> None:
        # Each server leads its own session/group (start_new_session), so signal the group
        # to catch any helper processes too.
        with contextlib.suppress(ProcessLookupError):
            if os.getpgid(pid) == pid:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)

    # SIGTERM is a clean shutdown for all three: Kafka's controlled shutdown, mariadbd's
    # normal shutdown (same as mariadb-admin shutdown), Redis' shutdown.
    signal_group(signal.SIGTERM)
    deadline = t0 + STOP_TIMEOUT
    status = "stopped"
    while pid_alive(pid, svc.cmdline_hint):
        if time.monotonic() > deadline:
            signal_group(signal.SIGKILL)
            status = "killed (no exit after SIGTERM)"
            while pid_alive(pid, svc.cmdline_hint) and time.monotonic() < deadline + 10:
                time.sleep(0.1)
            break
        time.sleep(0.1)
    svc.pid_file.unlink(missing_ok=True)
    return Outcome(svc, status, time.monotonic() - t0)


def run_parallel(services: list[Service], action: Callable[[Service], Outcome]) -> list[Outcome]:
    """Run `action` for every service at once (the JVM start dominates; no reason to start
    MariaDB after it) and print each line as soon as that service is done."""
    outcomes: list[Outcome] = []
    lock = threading.Lock()

    def worker(svc: Service) -> None:
        t0 = time.monotonic()
        try:
            outcome = action(svc)
        except StackError as e:
            outcome = Outcome(svc, "FAILED", time.monotonic() - t0, str(e), e.show_logs)
        except Exception as e:  # keep the other services' lines; report this one
            outcome = Outcome(svc, "FAILED", time.monotonic() - t0, f"{type(e).__name__}: {e}", True)
        with lock:
            outcomes.append(outcome)
            log(f"{svc.name:<8} {outcome.status:<16} {HOST}:{svc.port:<6} {outcome.seconds:5.1f}s")

    threads = [threading.Thread(target=worker, args=(s,)) for s in services]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcomes


def show_logs(svc: Service) -> None:
    for path in svc.logs():
        text = tail(path, 2000, svc.log_offsets.get(path, 0))
        if not text.strip():
            continue
        lines = text.splitlines()
        # A Java stack trace easily fills the tail; the ERROR line that started it is what
        # explains the failure, so show the last few of those first.
        errors = [line for line in lines if " ERROR " in line or "[ERROR]" in line][-5:]
        if errors:
            log(f"--- last ERROR lines of {path}\n" + "\n".join(errors))
        log(f"--- last {LOG_TAIL_LINES} lines of {path}\n" + "\n".join(lines[-LOG_TAIL_LINES:]))


def cmd_up(services: list[Service]) -> int:
    t0 = time.monotonic()
    with state_lock():
        install([s.name for s in services])
        outcomes = run_parallel(services, start_service)
    failed = [o for o in outcomes if o.error]
    for o in failed:
        log(f"\n{o.service.name}: {o.error}")
        if o.show_logs:
            show_logs(o.service)
    log(f"total    {time.monotonic() - t0:.1f}s   (state: {STATE_DIR})")
    return 1 if failed else 0


def cmd_down(services: list[Service]) -> int:
    with state_lock():
        outcomes = run_parallel(services, stop_service)
    for o in outcomes:
        if o.error:
            log(f"{o.service.name}: {o.error}")
    return 1 if any(o.error for o in outcomes) else 0


def cmd_status(services: list[Service]) -> int:
    all_up = True
    for svc in services:
        pid = svc.pid()
        answering = svc.probe()
        if pid and answering:
            state = "running"
        elif pid:
            state = "starting"  # alive but not answering (yet)
        elif answering:
            state = "foreign"  # something else serves the port
        else:
            state = "stopped"
        all_up &= state == "running"
        log(f"{svc.name:<8} {state:<9} pid {str(pid or '-'):<8} {HOST}:{svc.port:<6} {svc.data_dir}")
    return 0 if all_up else 1


def cmd_wait(services: list[Service]) -> int:
    t0 = time.monotonic()
    pending = list(services)
    while pending:
        pending = [s for s in pending if not s.probe()]
        if not pending:
            break
        if time.monotonic() - t0 > WAIT_TIMEOUT:
            log(
                f"timed out after {WAIT_TIMEOUT:.0f}s waiting for: "
                f"{', '.join(f'{s.name} ({HOST}:{s.port})' for s in pending)}"
            )
            return 1
        time.sleep(0.25)
    log(f"ready: {', '.join(s.name for s in services)} ({time.monotonic() - t0:.1f}s)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["install", "install-connect", "up", "down", "status", "wait"])
    parser.add_argument("services", nargs="*", metavar="SERVICE", help=f"one of {', '.join(SERVICES)} (default: all)")
    args = parser.parse_args(argv)
    unknown = [n for n in args.services if n not in SERVICES]
    if unknown:
        parser.error(f"unknown service(s): {', '.join(unknown)}; choose from {', '.join(SERVICES)}")
    # Keep the canonical order whatever order they were given in; drop duplicates.
    services = [SERVICES[n] for n in SERVICES if not args.services or n in args.services]
    try:
        if args.command == "install":
            t0 = time.monotonic()
            with state_lock():
                install([s.name for s in services])
            log(f"install: ok ({time.monotonic() - t0:.1f}s)")
            return 0
        if args.command == "install-connect":
            with state_lock():
                install_connect()
            return 0
        return {"up": cmd_up, "down": cmd_down, "status": cmd_status, "wait": cmd_wait}[args.command](services)
    except StackError as e:
        log(f"error: {e}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
