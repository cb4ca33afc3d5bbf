"""A warm pool of worker processes for one plugin, and the call protocol over their pipes.

Each worker is `<venv python> worker_main.py <plugin_dir> <entry_point>`, started once and reused:
the interpreter start and the plugin import are paid once, a call is one pipe round trip. The
calling thread blocks on its worker's pipe (poll + read), so a call costs two syscalls a side.

Outcomes: success, failed (the plugin raised), timeout (the worker is killed and replaced),
crashed (the worker died: sys.exit, segfault, OOM kill — replaced), aborted (the pool was closed
while the call ran: the caller must not record it as a result).
"""
from __future__ import annotations

import collections
import logging
import os
import queue
import select
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson

from plugins.worker_main import FrameDecoder, ProtocolError, READ_CHUNK, encode_frame, write_all

log = logging.getLogger(__name__)

WORKER_MAIN = Path(__file__).with_name("worker_main.py")
# The only variables a plugin inherits from the runner's environment: no CDCFLOW_*, no credentials.
SAFE_ENV_VARS = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "TERM")
STDERR_TAIL_LINES = 40

OutcomeStatus = Literal["success", "failed", "timeout", "crashed", "aborted"]


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
    entry_point: str
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
        env.update(self.extra_env)
        return env


class WorkerDied(Exception):
    """The worker's pipe hit EOF or broke."""


class Worker:
    """One worker process and the runner's end of its pipes. Used by one thread at a time."""

    def __init__(self, spec: WorkerSpec):
        self.spec = spec
        self.proc = subprocess.Popen(
            spec.command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            cwd=spec.plugin_dir, env=spec.environment(), bufsize=0, close_fds=True,
            # Own process group: Ctrl-C in the runner's terminal does not hit the workers (the
            # runner stops them itself), and a timeout kill reaches the plugin's children too.
            start_new_session=True,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None and self.proc.stderr is not None
        self.pid = self.proc.pid
        self._in_fd = self.proc.stdin.fileno()
        self._out_fd = self.proc.stdout.fileno()
        self._decoder = FrameDecoder()
        self._poller = select.poll()
        self._poller.register(self._out_fd, select.POLLIN | select.POLLHUP | select.POLLERR)
        self.hello: dict[str, Any] | None = None
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self._stderr_thread = threading.Thread(target=self._pump_stderr, name=f"{spec.plugin}-{self.pid}-stderr",
                                               daemon=True)
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
                return orjson.loads(frame)
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

    def send(self, payload: bytes) -> None:
        try:
            write_all(self._in_fd, encode_frame(payload))
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


class WorkerPool:
    """N warm workers of one plugin; call() runs a request on an idle one (blocking until one is free)."""

    def __init__(self, spec: WorkerSpec, size: int, *, startup_timeout: float = 60.0):
        if size < 1:
            raise ValueError("pool size must be >= 1")
        self.spec = spec
        self.size = size
        self.startup_timeout = startup_timeout
        self._idle: queue.LifoQueue[Worker] = queue.LifoQueue()  # LIFO: the hottest worker is reused first
        self._all: set[Worker] = set()
        self._lock = threading.Lock()
        self._closed = False
        self._missing = 0  # slots whose replacement worker could not be started
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
            self.startup_error = {"type": "WorkerStartError", "traceback": None,
                                  "message": f"cannot start {self.spec.python} for {self.spec.plugin}: {e}"}
            self.close()
            return
        deadline = time.monotonic() + self.startup_timeout
        for w in workers:
            try:
                hello = w.wait_hello(deadline)
            except TimeoutError:
                self.startup_error = {"type": "WorkerStartTimeout", "traceback": None,
                                      "message": f"worker {w.pid} of {self.spec.plugin} did not start within {self.startup_timeout:.0f}s"}
            except WorkerDied:
                w._reap(2.0)
                self.startup_error = {"type": "WorkerCrashed", "traceback": "\n".join(w.stderr_tail) or None,
                                      "message": f"worker {w.pid} of {self.spec.plugin} {w.exit_description()} during startup"}
            else:
                if not hello.get("ok") and self.startup_error is None:
                    self.startup_error = hello.get("error") or {"type": "LoadError", "message": "unknown", "traceback": None}
            self._idle.put(w)

    def close(self, grace: float = 1.0) -> None:
        """Stop all workers. Calls still running return an `aborted` outcome."""
        with self._lock:
            self._closed = True
            workers = list(self._all)
        threads = [threading.Thread(target=w.stop, args=(grace,), daemon=True) for w in workers]
        for t in threads:
            t.start()
        for t in threads:
            t.join(grace + 6.0)

    @property
    def closed(self) -> bool:
        return self._closed

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

    def _retire(self, w: Worker) -> Worker | None:
        """Kill a worker and start its replacement (whose hello is awaited lazily by the next call)."""
        with self._lock:
            self._all.discard(w)
        w.kill()
        if self._closed:
            return None
        return self._respawn()

    def _respawn(self) -> Worker | None:
        try:
            return self._spawn()
        except OSError as e:  # e.g. the venv was deleted: keep the slot, retry on a later call
            log.error("cannot start a worker of %s: %s", self.spec.plugin, e)
            with self._lock:
                self._missing += 1
            return None

    def _claim_missing_slot(self) -> bool:
        with self._lock:
            if self._missing <= 0:
                return False
            self._missing -= 1
            return True

    # -- calls -------------------------------------------------------------------------------
    def call(self, request: dict[str, Any], timeout: float) -> CallOutcome:
        if self._closed:
            return CallOutcome("aborted", note="pool is closed")
        while True:
            try:
                worker = self._idle.get(timeout=0.5)
                break
            except queue.Empty:
                if self._closed:
                    return CallOutcome("aborted", note="pool is closed")
                if self._missing and self._claim_missing_slot():
                    replacement = self._respawn()
                    if replacement is not None:
                        worker = replacement
                        break
        keep: Worker | None = worker
        try:
            outcome, keep = self._call_on(worker, request, timeout)
            return outcome
        finally:
            if keep is not None and not self._closed:
                self._idle.put(keep)

    def _call_on(self, w: Worker, request: dict[str, Any], timeout: float) -> tuple[CallOutcome, Worker | None]:
        deadline = time.monotonic() + timeout
        sent_at = time.time()
        try:
            if w.hello is None:  # a replacement worker: its start-up counts against this call's timeout
                w.wait_hello(deadline)
            w.send(orjson.dumps(request))
            resp = w.read_frame(deadline)
        except TimeoutError:
            pid = w.pid
            replacement = self._retire(w)
            if self._closed:
                return CallOutcome("aborted", worker_pid=pid, sent_at=sent_at, received_at=time.time()), None
            return CallOutcome("timeout", worker_pid=pid, sent_at=sent_at, received_at=time.time(), error={
                "type": "Timeout", "traceback": "\n".join(w.stderr_tail) or None,
                "message": f"{self.spec.plugin} did not finish within {timeout:g}s; worker {pid} was killed and replaced",
            }), replacement
        except (WorkerDied, ProtocolError, orjson.JSONDecodeError) as e:
            received_at = time.time()
            pid = w.pid
            replacement = self._retire(w)  # kill (a no-op for a dead one) and reap, so the exit code is known
            if self._closed:
                return CallOutcome("aborted", worker_pid=pid, sent_at=sent_at, received_at=received_at), None
            what = w.exit_description() if isinstance(e, WorkerDied) else f"broke the protocol ({e})"
            if self.spec.memory_limit_mb is not None and isinstance(e, WorkerDied):
                # C code that cannot allocate may abort or segfault instead of raising MemoryError.
                what += f" (its memory limit is {self.spec.memory_limit_mb} MB)"
            return CallOutcome("crashed", worker_pid=pid, sent_at=sent_at, received_at=received_at, error={
                "type": "WorkerCrashed", "traceback": "\n".join(w.stderr_tail) or None,
                "message": f"worker {pid} of {self.spec.plugin} {what} during the call; it was replaced",
            }), replacement
        if resp.get("retire"):  # the worker asks to be replaced (it hit its memory limit)
            pid = w.pid
            replacement = self._retire(w)
            log.warning("worker %s of %s retired after %s; replaced", pid, self.spec.plugin,
                        (resp.get("error") or {}).get("type"))
        else:
            replacement = w
        return CallOutcome(
            status="success" if resp.get("ok") else "failed",
            output=resp.get("output"),
            error=resp.get("error"),
            note=resp.get("note"),
            worker_pid=w.pid,
            sent_at=sent_at,
            received_at=time.time(),
            started_at=resp.get("started_at"),
            entry_called_at=resp.get("entry_called_at"),
            finished_at=resp.get("finished_at"),
        ), replacement
