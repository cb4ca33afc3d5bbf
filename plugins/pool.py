"""A warm pool of worker processes for one plugin, and the call protocol over their pipes.

Each worker is `<venv python> worker_main.py <plugin_dir> <entry_point>`, started once and reused:
the interpreter start and the plugin import are paid once, a call is one pipe round trip. The
calling thread blocks on its worker's pipe (poll + read), so a call costs two syscalls a side.

Outcomes: success, failed (the plugin raised), timeout (the worker is killed and replaced),
crashed (the worker died: sys.exit, segfault, OOM kill — replaced), cancelled (`cancel(id)` stopped
it: its worker is killed and replaced), aborted (the pool was closed while the call ran: the caller
must not record it as a result).
"""

from __future__ import annotations

import collections
import fcntl
import logging
import os
import select
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson

from plugins.worker_main import READ_CHUNK, FrameDecoder, ProtocolError, encode_frame, write_all

log = logging.getLogger(__name__)

WORKER_MAIN = Path(__file__).with_name("worker_main.py")
# The only variables a plugin inherits from the runner's environment: no CDCFLOW_*, no credentials.
SAFE_ENV_VARS = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "TERM")
STDERR_TAIL_LINES = 40

OutcomeStatus = Literal["success", "failed", "timeout", "crashed", "cancelled", "aborted"]


@dataclass(slots=True)
class CallOutcome:
    status: OutcomeStatus
    output: Any = None
    error: dict[str, Any] | None = None
    note: str | None = None
    worker_pid: int | None = None
    sent_at: float = 0.0  # time.time() when the request was written to the pipe
    received_at: float = 0.0  # time.time() when the response (or the failure) was seen
    started_at: float | None = None  # the worker's clock, from here on
    entry_called_at: float | None = None
    finished_at: float | None = None
    # A batch call's answer per item ({"ok", "output", "error", "note"?}), in the request's order.
    items: list[dict[str, Any]] | None = None

    @property
    def duration_ms(self) -> float:
        start = self.started_at if self.started_at is not None else self.sent_at
        end = self.finished_at if self.finished_at is not None else self.received_at
        return max(0.0, (end - start) * 1000.0)


@dataclass(frozen=True)
class WorkerSpec:
    """How to start one worker of a plugin."""

    plugin: str
    python: Path
    plugin_dir: Path
    entry_point: str  # module.function, or `--command=JSON` for a command plugin: registry.worker_target
    extra_env: tuple[tuple[str, str], ...] = ()
    memory_limit_mb: int | None = None

    def command(self) -> list[str]:
        # -s: no user site-packages; -P: the script's folder (plugins/) is not put on sys.path.
        cmd = [str(self.python), "-s", "-P", str(WORKER_MAIN), str(self.plugin_dir), self.entry_point]
        return cmd + [str(self.memory_limit_mb)] if self.memory_limit_mb is not None else cmd

    def environment(self) -> dict[str, str]:
        env = {k: os.environ[k] for k in SAFE_ENV_VARS if k in os.environ}
        venv_bin = str(self.python.parent)
        env["PATH"] = venv_bin + os.pathsep + env.get("PATH", os.defpath)
        env["VIRTUAL_ENV"] = str(self.python.parent.parent)
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONIOENCODING"] = "utf-8"
        # No __pycache__ in the plugin's folder: a .pyc is trusted by its source's size and mtime in whole
        # seconds, so a hot reload whose new main.py has the old one's size and second would import the old
        # code (seen in tests: a reload a second after the first start). Its source is compiled at each start.
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env.update(self.extra_env)
        return env


def _request_write_limit(fd: int) -> int:
    """How many bytes of calls one write may carry to a worker: half its request pipe, asked to be 1 MiB
    (Linux's default maximum; 64 kB if refused). A write no larger than the pipe never blocks for good:
    what the worker has not read yet fits (see WorkerPool._call_on)."""
    try:
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, REQUEST_PIPE_BYTES)
    except OSError:
        pass
    try:
        return max(PIPELINE_MAX_REQUEST_BYTES, fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ) // 2)
    except OSError:
        return PIPELINE_MAX_REQUEST_BYTES


def _writes(payloads: list[bytes], limit: int) -> list[tuple[int, int]]:
    """(start, end) of consecutive payloads whose frames together stay within `limit` bytes, or of a
    single larger one."""
    writes: list[tuple[int, int]] = []
    start, size = 0, 0
    for i, payload in enumerate(payloads):
        if i > start and size + len(payload) + 4 > limit:
            writes.append((start, i))
            start, size = i, 0
        size += len(payload) + 4
    writes.append((start, len(payloads)))
    return writes


def response_problem(resp: dict[str, Any]) -> str | None:
    """What in a worker's answer the runner could not use as it is, or None: the types Plugin.call
    writes (times are numbers, an error names its type and message). Checked per call, cheaply."""
    for key in ("started_at", "entry_called_at", "finished_at"):
        value = resp.get(key)
        if value is not None and type(value) is not float and type(value) is not int:
            return f"{key} is not a time but a {type(value).__name__}"
    if (problem := _answer_problem(resp)) is not None:
        return problem
    items = resp.get("items")
    if items is not None:
        if type(items) is not list:
            return "items is not a list"
        for i, item in enumerate(items):
            if (problem := _answer_problem(item) if type(item) is dict else "not an object") is not None:
                return f"items[{i}]: {problem}"
    return None


def _answer_problem(answer: dict[str, Any]) -> str | None:
    """The error and note of a call's answer, or of one item of a batch call's."""
    error = answer.get("error")
    if error is not None and not (
        type(error) is dict
        and type(error.get("type")) is str
        and type(error.get("message")) is str
        and isinstance(error.get("traceback"), str | None)
    ):
        return "error is not an object with a type and a message"
    if not isinstance(answer.get("note"), str | None):
        return "note is not a string"
    return None


class WorkerDied(Exception):
    """The worker's pipe hit EOF or broke."""


class Worker:
    """One worker process and the runner's end of its pipes. Used by one thread at a time."""

    def __init__(self, spec: WorkerSpec):
        self.spec = spec
        self.proc = subprocess.Popen(
            spec.command(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=spec.plugin_dir,
            env=spec.environment(),
            bufsize=0,
            close_fds=True,
            # Own process group: Ctrl-C in the runner's terminal does not hit the workers (the
            # runner stops them itself), and a timeout kill reaches the plugin's children too.
            start_new_session=True,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None and self.proc.stderr is not None
        self.pid = self.proc.pid
        self._in_fd = self.proc.stdin.fileno()
        self._out_fd = self.proc.stdout.fileno()
        self.write_limit = _request_write_limit(self._in_fd)
        self._decoder = FrameDecoder()
        self._poller = select.poll()
        self._poller.register(self._out_fd, select.POLLIN | select.POLLHUP | select.POLLERR)
        self.hello: dict[str, Any] | None = None
        # Pipelining state, owned by the pool: requests written and not answered, in order (the
        # thread at the head reads the pipe), the pool's count of places taken, and retirement.
        self.cond = threading.Condition()
        # Held while a request is written, never together with `cond` across the write: a write
        # blocks while the worker is busy answering the call ahead (it reads its next request only
        # after writing that answer), and the thread waiting to read that answer needs `cond` to see
        # its turn. Taken before a ticket joins `order`, so frames reach the worker in that order.
        self.send_lock = threading.Lock()
        self.order: collections.deque[_Ticket] = collections.deque()
        self.inflight = 0
        self.retired = False
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self._stderr_thread = threading.Thread(
            target=self._pump_stderr, name=f"{spec.plugin}-{self.pid}-stderr", daemon=True
        )
        self._stderr_thread.start()

    def _pump_stderr(self) -> None:
        # The plugin's prints and logs: forwarded to the runner's log, last lines kept for crash reports.
        plog = logging.getLogger(f"cdcflow.plugin.{self.spec.plugin}")
        assert self.proc.stderr is not None
        for raw in iter(self.proc.stderr.readline, b""):
            line = raw.decode(errors="replace").rstrip("\n")
            self.stderr_tail.append(line)
            plog.info("[%s] %s", self.pid, line)

    def read_frame(self, deadline: float) -> dict[str, Any]:
        """The next message; TimeoutError at the deadline (time.monotonic), WorkerDied on EOF."""
        while True:
            frame = self._decoder.next_frame()
            if frame is not None:
                message = orjson.loads(frame)
                if type(message) is not dict:
                    raise ProtocolError(f"a message is a JSON object, not {type(message).__name__}")
                return message
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            if not self._poller.poll(remaining * 1000.0):
                continue
            try:
                data = os.read(self._out_fd, READ_CHUNK)
            except OSError as e:
                raise WorkerDied(str(e)) from None
            if not data:
                raise WorkerDied("end of stream")
            self._decoder.feed(data)

    def send(self, frames: bytes) -> None:
        """Write whole frames (encode_frame's)."""
        try:
            write_all(self._in_fd, frames)
        except (BrokenPipeError, OSError) as e:
            raise WorkerDied(str(e)) from None

    def wait_hello(self, deadline: float) -> dict[str, Any]:
        if self.hello is None:
            self.hello = self.read_frame(deadline)
        return self.hello

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self._reap(5.0)

    def signal_kill(self) -> None:
        """SIGKILL the worker's process group; whoever reads its pipe sees the end and reaps it."""
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def stop(self, grace: float = 1.0) -> None:
        """Close stdin (the worker exits when idle), then kill whatever is left."""
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
        self.kill()

    def _reap(self, timeout: float) -> None:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("worker %s of %s did not exit after SIGKILL", self.pid, self.spec.plugin)
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        self._stderr_thread.join(1.0)

    def exit_description(self) -> str:
        code = self.proc.poll()
        if code is None:
            return "is still running"
        if code < 0:
            try:
                return f"was killed by signal {signal.Signals(-code).name}"
            except ValueError:
                return f"was killed by signal {-code}"
        return f"exited with code {code}"


# Pipelining: a worker of a plugin whose calls are short gets its next request while it still runs
# the current one, so it never waits for the runner's round trip (wake-up, result bookkeeping,
# next job) between calls. The worker handles requests strictly one after the other, so a request
# queued behind a call that times out or crashes has not started: it is sent again to another
# worker, never reported. Slow plugins are not pipelined: a request must not wait behind a long call
# while another worker is free.
PIPELINE_DEPTH = 2
PIPELINE_MAX_CALL_SECONDS = 0.005  # average call duration (EWMA) under which a plugin is pipelined
PIPELINE_MAX_REQUEST_BYTES = 16 * 1024  # larger requests wait for an idle worker (no blocking write)
REQUEST_PIPE_BYTES = 1024 * 1024  # a worker's request pipe (F_SETPIPE_SZ): room for many calls per write
MAX_CANCELLED_IDS = 10_000  # cancel requests a pool remembers for calls that have not reached a worker
_CALL_EWMA_WEIGHT = 0.05


@dataclass(eq=False, slots=True)
class _Ticket:
    """One request written to a worker's pipe, waiting for its turn to read the answer."""

    invocation_id: str | None = None
    resend: bool = False  # the worker failed before starting it: send it again elsewhere
    cancelled: bool = False  # cancel() asked to stop it: its worker is killed when it runs it
    # The last request of a write (call_many's): its answer frees the write's place on the worker. A place
    # per write, not per call: a worker busy with one write of 64 calls still takes the next write behind it.
    frees_place: bool = True


class WorkerPool:
    """N warm workers of one plugin; call() runs a request on one (blocking until one has room).

    A thread may reserve() a place first (the lane does, before it takes a job from its queue, so a
    job is never taken only to wait for a worker); its next call() then uses that place.
    """

    def __init__(self, spec: WorkerSpec, size: int, *, startup_timeout: float = 60.0):
        if size < 1:
            raise ValueError("pool size must be >= 1")
        self.spec = spec
        self.size = size
        self.startup_timeout = startup_timeout
        self._live: list[Worker] = []  # workers taking calls; their `inflight` is guarded by _cond
        self._all: set[Worker] = set()
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._closed = False
        self._missing = 0  # slots whose replacement worker could not be started
        self._avg_call_seconds: float | None = None  # unknown until measured: no pipelining before
        self._reserved = threading.local()
        # ids cancel() was asked for: a call that reaches its worker after the request is stopped there
        self._cancelled: dict[str, None] = {}
        self.startup_error: dict[str, Any] | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Start all workers and wait for their hello; sets startup_error if the plugin cannot load.

        The workers of a plugin that failed to import are kept: each call then answers with the
        import error (a clear failed result) instead of crashing.
        """
        try:
            workers = [self._spawn() for _ in range(self.size)]
        except OSError as e:
            self.startup_error = {
                "type": "WorkerStartError",
                "traceback": None,
                "message": f"cannot start {self.spec.python} for {self.spec.plugin}: {e}",
            }
            self.close()
            return
        deadline = time.monotonic() + self.startup_timeout
        for w in workers:
            try:
                hello = w.wait_hello(deadline)
            except TimeoutError:
                self.startup_error = {
                    "type": "WorkerStartTimeout",
                    "traceback": None,
                    "message": f"worker {w.pid} of {self.spec.plugin} did not start within {self.startup_timeout:.0f}s",
                }
            except WorkerDied:
                w._reap(2.0)
                self.startup_error = {
                    "type": "WorkerCrashed",
                    "traceback": "\n".join(w.stderr_tail) or None,
                    "message": f"worker {w.pid} of {self.spec.plugin} {w.exit_description()} during startup",
                }
            else:
                if not hello.get("ok") and self.startup_error is None:
                    self.startup_error = hello.get("error") or {
                        "type": "LoadError",
                        "message": "unknown",
                        "traceback": None,
                    }
            with self._cond:
                if w in self._all:
                    self._live.append(w)
                self._cond.notify_all()

    def close(self, grace: float = 1.0) -> None:
        """Stop all workers. Calls still running return an `aborted` outcome."""
        with self._cond:
            self._closed = True
            workers = list(self._all)
            self._cond.notify_all()
        threads = [threading.Thread(target=w.stop, args=(grace,), daemon=True) for w in workers]
        for t in threads:
            t.start()
        for t in threads:
            t.join(grace + 6.0)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def avg_call_seconds(self) -> float | None:
        """The plugin's call duration as its workers measure it (an EWMA), None before the first call."""
        return self._avg_call_seconds

    @property
    def pipelined(self) -> bool:
        avg = self._avg_call_seconds
        return avg is not None and avg < PIPELINE_MAX_CALL_SECONDS

    def unhealthy_reason(self) -> str | None:
        """Why the plugin's environment check failed in a started worker (from its hello), or None."""
        with self._lock:
            hellos = [w.hello for w in self._all if w.hello is not None]
        return next((str(h["unhealthy"]) for h in hellos if h.get("unhealthy")), None)

    def pids(self) -> list[int]:
        with self._lock:
            return sorted(w.pid for w in self._all)

    def _spawn(self) -> Worker:
        w = Worker(self.spec)
        with self._lock:
            self._all.add(w)
            if self._closed:  # close() raced with a replacement: do not leak the new process
                self._all.discard(w)
                closed = True
            else:
                closed = False
        if closed:
            w.kill()
        return w

    def _retire(self, w: Worker) -> None:
        """Take a worker out of service, kill it and start its replacement (its hello is awaited by
        the first call it gets). Requests queued behind the failed one are marked for resending."""
        with self._cond:
            self._all.discard(w)
            if w in self._live:
                self._live.remove(w)
        with w.cond:
            w.retired = True
            for ticket in w.order:
                ticket.resend = True
            w.order.clear()
            w.cond.notify_all()
        w.kill()
        if self._closed:
            return
        try:
            replacement = self._spawn()
        except OSError as e:  # e.g. the venv was deleted: keep the slot, retry on a later call
            log.error("cannot start a worker of %s: %s", self.spec.plugin, e)
            with self._cond:
                self._missing += 1
                self._cond.notify_all()
            return
        with self._cond:
            if replacement in self._all:
                self._live.append(replacement)
            self._cond.notify_all()

    # -- places ------------------------------------------------------------------------------
    def reserve(self, small: bool = True, stop: threading.Event | None = None) -> Worker | None:
        """Wait for room on a worker and hold it for this thread's next call(); None if closed or `stop` is set."""
        self.release()
        w = self._acquire(small, stop)
        self._reserved.worker = w
        return w

    def release(self) -> None:
        """Give back this thread's reservation, if it holds one."""
        w = getattr(self._reserved, "worker", None)
        if w is not None:
            self._reserved.worker = None
            self._done_with(w)

    def reserved_pid(self) -> int | None:
        """The pid of the worker this thread holds a place on (its next call most likely runs there)."""
        w: Worker | None = getattr(self._reserved, "worker", None)
        return w.pid if w is not None else None

    def cancel(self, invocation_id: str) -> bool:
        """Stop the call of this invocation: its worker is killed (and replaced) if it runs it now, or as
        soon as it starts it; the call returns a `cancelled` outcome. True if the call was found here."""
        with self._lock:
            self._cancelled[invocation_id] = None
            while len(self._cancelled) > MAX_CANCELLED_IDS:
                del self._cancelled[next(iter(self._cancelled))]
            workers = list(self._all)
        found = False
        for w in workers:
            with w.cond:
                for position, ticket in enumerate(w.order):
                    if ticket.invocation_id == invocation_id:
                        ticket.cancelled = found = True
                        if position == 0:  # the one the worker runs; a later one is stopped on its turn
                            w.signal_kill()
        return found

    def interrupt(self) -> None:
        """Wake the threads waiting in reserve(), so they see their stop event."""
        with self._cond:
            self._cond.notify_all()

    def _acquire(self, small: bool, stop: threading.Event | None = None) -> Worker | None:
        """A worker with room for one more request (counted in its `inflight`); None if closed or stopping."""
        while True:
            with self._cond:
                while True:
                    if self._closed or (stop is not None and stop.is_set()):
                        return None
                    depth = PIPELINE_DEPTH if small and self.pipelined else 1
                    best: Worker | None = None
                    for w in self._live:
                        room = (depth if w.hello is not None else 1) - w.inflight
                        if room > 0 and (best is None or w.inflight < best.inflight):
                            best = w
                    if best is not None:
                        best.inflight += 1
                        return best
                    if self._missing > 0:
                        self._missing -= 1
                        break
                    self._cond.wait(0.5)
            try:  # a slot whose replacement could not be started earlier: try again now
                w = self._spawn()
            except OSError as e:
                log.error("cannot start a worker of %s: %s", self.spec.plugin, e)
                with self._cond:
                    self._missing += 1
                time.sleep(0.5)
                continue
            with self._cond:
                if w in self._all:
                    self._live.append(w)
                self._cond.notify_all()

    def _done_with(self, w: Worker) -> None:
        with self._cond:
            w.inflight -= 1
            self._cond.notify_all()

    # -- calls -------------------------------------------------------------------------------
    def call(self, request: dict[str, Any], timeout: float) -> CallOutcome:
        return self.call_many([request], timeout)[0]

    def call_many(self, requests: list[dict[str, Any]], timeout: float) -> list[CallOutcome]:
        """Several calls on one worker, written in one go (a fast plugin's queued jobs); an outcome each,
        in order. Each stays a call of its own: its timeout counts from the answer before it, a cancel
        or a crash ends only it, and those its worker never started are sent again elsewhere. Saves a
        write, a wake-up and a place per call, which is most of what a fast plugin's call costs here."""
        payloads = [orjson.dumps(request) for request in requests]
        ids = [request.get("invocation_id") for request in requests]
        outcomes: list[CallOutcome | None] = [None] * len(requests)
        reserved: Worker | None = getattr(self._reserved, "worker", None)
        self._reserved.worker = None
        small = max(map(len, payloads), default=0) <= PIPELINE_MAX_REQUEST_BYTES  # each write is, then (_call_on)
        moved = False
        todo = list(range(len(requests)))
        while todo:
            w: Worker | None = reserved
            reserved = None
            if w is None and not self._closed:
                w = (self._moved_place() if moved else None) or self._acquire(small)
            if w is None or self._closed:
                if w is not None:
                    self._done_with(w)
                for i in todo:
                    outcomes[i] = CallOutcome("aborted", note="pool is closed")
                break
            answers = self._call_on(w, [payloads[i] for i in todo], timeout, [ids[i] for i in todo])
            for i, outcome in zip(todo, answers, strict=True):
                outcomes[i] = outcome
            # those that never started (their worker retired first, e.g. a call ahead failed): send again
            todo = [i for i in todo if outcomes[i] is None]
            moved = True
        return [o for o in outcomes if o is not None]

    def _moved_place(self) -> Worker | None:
        """A place for a call whose place was on a worker that retired before the call started there: on
        the least busy live worker, past its room if need be. Waiting for room could wait forever: the
        lane threads hold every other place while they wait for jobs (plugins/lane.py reserves first),
        and the replacement's place may be taken already. None if there is no live worker."""
        with self._cond:
            if self._closed or not self._live:
                return None
            best = min(self._live, key=lambda w: (w.inflight, w.hello is None))
            best.inflight += 1
            return best

    def _call_on(
        self, w: Worker, payloads: list[bytes], timeout: float, invocation_ids: list[str | None]
    ) -> list[CallOutcome | None]:
        """The calls' outcomes on worker w; None for each that never started there (to be sent again).

        Written in writes of at most w.write_limit bytes (or one call), each after the answers to the one
        before. This thread may be the first in line to read w's answers, and nobody reads them while it
        writes: a write larger than the request pipe could block while the worker blocks on its answers
        (64 calls of 4 kB each, echoed, in one write to a 64 kB pipe: hung). One no larger than the pipe
        always completes: what the worker has not read of it fits in the pipe."""
        outcomes: list[CallOutcome | None] = []
        for start, end in _writes(payloads, w.write_limit):
            tickets = [_Ticket(invocation_id, frees_place=False) for invocation_id in invocation_ids[start:end]]
            tickets[-1].frees_place = end == len(payloads)  # the place is this thread's until its last answer
            sent_at = time.time()
            with w.send_lock:
                with w.cond:
                    if w.retired:  # retired between being chosen and now (or by a call before): never got these
                        return outcomes + [None] * (len(payloads) - start)
                    w.order.extend(tickets)
                    for ticket in tickets:  # cancel() came before the ticket
                        ticket.cancelled = ticket.invocation_id in self._cancelled
                try:
                    w.send(b"".join(map(encode_frame, payloads[start:end])))
                except WorkerDied:
                    pass  # the reader at the head of the line sees the death and retires the worker
            outcomes += [self._await_answer(w, ticket, timeout, sent_at) for ticket in tickets]
        return outcomes

    def _await_answer(self, w: Worker, ticket: _Ticket, timeout: float, sent_at: float) -> CallOutcome | None:
        """Wait for the ticket's turn on w, then read its answer; None if the worker retired before it started."""
        with w.cond:
            while w.order and w.order[0] is not ticket and not ticket.resend:
                w.cond.wait()
        if ticket.resend:
            return None
        if ticket.cancelled:  # asked to stop before its turn: the worker has just started it
            w.signal_kill()
        # Our turn: the worker starts our request as it finishes the one before, so the timeout
        # counts from now (or from the send, when nothing was ahead).
        deadline = time.monotonic() + timeout
        try:
            if w.hello is None:  # a replacement worker: its start-up counts against this call's timeout
                w.wait_hello(deadline)
            resp = w.read_frame(deadline)
        except TimeoutError:
            return self._timed_out(w, timeout, sent_at)
        except (WorkerDied, ProtocolError, orjson.JSONDecodeError) as e:
            return self._stopped(w, sent_at) if ticket.cancelled else self._crashed(w, e, sent_at)
        if (problem := response_problem(resp)) is not None:  # a worker that broke the protocol is replaced
            return self._stopped(w, sent_at) if ticket.cancelled else self._crashed(w, ProtocolError(problem), sent_at)
        return self._answered(w, resp, sent_at, ticket)

    def _stopped(self, w: Worker, sent_at: float) -> CallOutcome:
        """The call was cancelled: its worker was killed; it is replaced."""
        message = f"cancelled while running: worker {w.pid} of {self.spec.plugin} was stopped and replaced"
        return self._replaced(
            w, sent_at, "cancelled", lambda: {"type": "Cancelled", "traceback": None, "message": message}
        )

    def _answered(self, w: Worker, resp: dict[str, Any], sent_at: float, ticket: _Ticket) -> CallOutcome:
        """The outcome of a call the worker answered; frees its place (or retires it when it asks)."""
        received_at = time.time()
        started, finished = resp.get("started_at"), resp.get("finished_at")
        if started is not None and finished is not None:
            elapsed = max(0.0, finished - started)
            avg = self._avg_call_seconds
            self._avg_call_seconds = elapsed if avg is None else avg + _CALL_EWMA_WEIGHT * (elapsed - avg)
        if resp.get("retire"):  # the worker asks to be replaced (it hit its memory limit) and exits
            self._retire(w)
            log.warning(
                "worker %s of %s retired after %s; replaced",
                w.pid,
                self.spec.plugin,
                (resp.get("error") or {}).get("type"),
            )
        else:
            with w.cond:
                killed = ticket.cancelled  # a cancel that came as the call ended: its kill is on the way
                if not killed:
                    w.order.popleft()
                    w.cond.notify_all()
            if killed:  # no other call may be sent to a dying worker
                self._retire(w)
            elif ticket.frees_place:
                self._done_with(w)
        return CallOutcome(
            status="success" if resp.get("ok") else "failed",
            output=resp.get("output"),
            error=resp.get("error"),
            note=resp.get("note"),
            worker_pid=w.pid,
            sent_at=sent_at,
            received_at=received_at,
            started_at=started,
            entry_called_at=resp.get("entry_called_at"),
            finished_at=finished,
            items=resp.get("items"),
        )

    def _timed_out(self, w: Worker, timeout: float, sent_at: float) -> CallOutcome:
        """The call ran past its timeout: the worker is killed and replaced."""
        message = f"{self.spec.plugin} did not finish within {timeout:g}s; worker {w.pid} was killed and replaced"
        return self._replaced(
            w,
            sent_at,
            "timeout",
            lambda: {"type": "Timeout", "traceback": "\n".join(w.stderr_tail) or None, "message": message},
        )

    def _replaced(
        self, w: Worker, sent_at: float, status: OutcomeStatus, error: Callable[[], dict[str, Any]]
    ) -> CallOutcome:
        """The outcome of a call whose worker was killed (retired and replaced); `aborted` while closing.
        `error` is built after the kill, when the worker's last stderr lines are in its tail."""
        pid = w.pid
        self._retire(w)
        if self._closed:
            return CallOutcome("aborted", worker_pid=pid, sent_at=sent_at, received_at=time.time())
        return CallOutcome(status, worker_pid=pid, sent_at=sent_at, received_at=time.time(), error=error())

    def _crashed(self, w: Worker, e: Exception, sent_at: float) -> CallOutcome:
        """The worker died or broke the protocol during the call: it is replaced."""
        received_at = time.time()
        pid = w.pid
        self._retire(w)  # kill (a no-op for a dead one) and reap, so the exit code is known
        if self._closed:
            return CallOutcome("aborted", worker_pid=pid, sent_at=sent_at, received_at=received_at)
        what = w.exit_description() if isinstance(e, WorkerDied) else f"broke the protocol ({e})"
        if self.spec.memory_limit_mb is not None and isinstance(e, WorkerDied):
            # C code that cannot allocate may abort or segfault instead of raising MemoryError.
            what += f" (its memory limit is {self.spec.memory_limit_mb} MB)"
        return CallOutcome(
            "crashed",
            worker_pid=pid,
            sent_at=sent_at,
            received_at=received_at,
            error={
                "type": "WorkerCrashed",
                "traceback": "\n".join(w.stderr_tail) or None,
                "message": f"worker {pid} of {self.spec.plugin} {what} during the call; it was replaced",
            },
        )
