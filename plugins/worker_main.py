"""One warm plugin worker process: imports the plugin's entry point, then serves calls over a pipe.

Run by the plugin venv's python, never imported by the plugin code:

    <venv>/bin/python -s -P worker_main.py <plugin_dir> <module.function | --command=JSON> [<memory_limit_mb>]

A command plugin's worker (`--command=["python", "tool.py", "{id}"]`) runs that program once per call
(plugins/worker_command.py): it is the worker's child, so it inherits the worker's scrubbed
environment, memory limit and process group (a timeout kill reaches it too).

This file must stay stdlib-only: the plugin venv does not have cdcflow's dependencies installed
(that is the point of the isolation). The runner imports the framing helpers below from it, so
both ends of the pipe share one definition of the wire format.

Wire format, both directions: a 4-byte big-endian length, then that many bytes of UTF-8 JSON.
  worker -> runner, once at start:  {"type": "hello", "ok", "pid", "python", "prefix", "error"?, "unhealthy"}
                                    (unhealthy: why the environment check failed, or null)
  runner -> worker, per call:       {"invocation_id", "params", "context": {...}}
  worker -> runner, per call:       {"type": "result", "ok", "output", "error", "note",
                                     "started_at", "entry_called_at", "finished_at"}
"""

from __future__ import annotations

import faulthandler
import importlib
import json
import os
import resource
import struct
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any, Protocol

HEADER = struct.Struct(">I")
COMMAND_ARG_PREFIX = "--command="
# The error type of every call to a plugin whose environment check failed: the runner neither retries
# it (it would fail the same way until the plugin or its host is fixed) nor waits for a worker to run it.
UNHEALTHY_ERROR_TYPE = "PluginUnhealthy"
ENVIRONMENT_CHECK = "validate_execution_environment"
# A frame this large is a corrupted stream (e.g. something wrote to the protocol fd), not a payload.
MAX_FRAME_BYTES = 512 * 1024 * 1024
READ_CHUNK = 1 << 16


class ProtocolError(Exception):
    """The byte stream on the pipe is not valid framing."""


def encode_frame(payload: bytes) -> bytes:
    if len(payload) > MAX_FRAME_BYTES:
        raise ProtocolError(f"frame of {len(payload)} bytes exceeds the {MAX_FRAME_BYTES} byte limit")
    return HEADER.pack(len(payload)) + payload


class FrameDecoder:
    """Incremental decoder: feed() whatever a read returned, then take complete frames with next_frame()."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> None:
        self._buf += data

    def next_frame(self) -> bytes | None:
        buf = self._buf
        if len(buf) < HEADER.size:
            return None
        (size,) = HEADER.unpack_from(buf)
        if size > MAX_FRAME_BYTES:
            raise ProtocolError(f"announced frame of {size} bytes exceeds the {MAX_FRAME_BYTES} byte limit")
        end = HEADER.size + size
        if len(buf) < end:
            return None
        frame = bytes(buf[HEADER.size : end])
        del buf[:end]
        return frame

    @property
    def buffered(self) -> int:
        return len(self._buf)


def command_argument(command: list[str]) -> str:
    """The worker's target argument for a command plugin (the other kind is module.function)."""
    return COMMAND_ARG_PREFIX + json.dumps(command)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def error_info(exc: BaseException, skip_frames: int = 0) -> dict[str, Any]:
    """type/message/traceback of an exception, without the worker's own frames when asked."""
    tb = exc.__traceback__
    for _ in range(skip_frames):
        if tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
    cls = type(exc)
    name = cls.__qualname__ if cls.__module__ in ("builtins", "__main__") else f"{cls.__module__}.{cls.__qualname__}"
    return {
        "type": name,
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(cls, exc, tb)),
    }


def limit_memory(limit_mb: int) -> None:
    """Cap this process's data memory (heap and private anonymous mappings) at limit_mb, for good.

    RLIMIT_DATA rather than RLIMIT_AS: the address-space limit also counts shared libraries, file
    mappings and glibc's reserved-but-unused (PROT_NONE) per-thread malloc arenas, so a modest AS
    limit breaks ordinary threaded code; RLIMIT_DATA (Linux >= 4.7) counts only memory actually made
    writable. An allocation over the limit fails at once (MemoryError in Python) instead of the
    process growing until a watchdog or the kernel OOM killer notices. Hard limit too: an
    unprivileged plugin cannot raise it back. Set here, before the plugin is imported, rather than in
    a preexec_fn: the runner is multi-threaded and fork+preexec_fn is not safe there.
    """
    limit = limit_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))


class Context(dict[str, Any]):
    """The invocation context handed to the plugin: usable as context["attempt"] and context.attempt."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def accepts_context(func: Callable[..., Any]) -> bool:
    import inspect  # lazy: a few ms, paid once per worker at load, never by the runner (which imports this file)

    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):
        return False
    for p in sig.parameters.values():
        if p.kind is p.VAR_KEYWORD:
            return True
        if p.name == "context" and p.kind is not p.POSITIONAL_ONLY:
            return True
    return False


class Servable(Protocol):
    """What the serve loop needs of a plugin: a Python one (Plugin) or a command (worker_command.py)."""

    load_error: dict[str, Any] | None
    unhealthy: str | None
    takes_context: bool
    hooks: dict[str, Callable[..., Any]]

    def check_environment(self) -> None: ...

    def call(self, request: dict[str, Any]) -> dict[str, Any]: ...


class Plugin:
    """The loaded entry point and its optional hooks (or the error that prevented loading them)."""

    def __init__(self, plugin_dir: str, entry_point: str, memory_limit_mb: int | None = None):
        self.memory_limit_mb = memory_limit_mb
        self.func: Callable[..., Any] | None = None
        self.takes_context = False
        self.hooks: dict[str, Callable[..., Any]] = {}
        self.load_error: dict[str, Any] | None = None
        self.unhealthy: str | None = None
        self._check: Callable[[], Any] | None = None
        module_name, _, func_name = entry_point.rpartition(".")
        try:
            # The plugin folder first, so `import helpers` inside the plugin finds its own files.
            sys.path.insert(0, plugin_dir)
            module = importlib.import_module(module_name)
            func = getattr(module, func_name, None)
            if func is None:
                raise AttributeError(
                    f"module {module_name!r} ({getattr(module, '__file__', '?')}) has no attribute {func_name!r}"
                )
            if not callable(func):
                raise TypeError(f"{entry_point} is a {type(func).__name__}, not a function")
            self.func = func
            self.takes_context = accepts_context(func)
            for hook in ("before_execution", "after_execution", "on_failure"):
                fn = getattr(module, hook, None)
                if callable(fn):
                    self.hooks[hook] = fn
            check = getattr(module, ENVIRONMENT_CHECK, None)
            self._check = check if callable(check) else None
        except KeyboardInterrupt:
            raise
        except BaseException as e:  # SystemExit at import time is a load error too, not a silent exit
            self.load_error = error_info(e)
            self.load_error["message"] = f"cannot load {entry_point} from {plugin_dir}: {self.load_error['message']}"

    def check_environment(self) -> None:
        """Run the module's validate_execution_environment() once: False (or 0, "") or an exception
        makes the plugin unhealthy, with the reason; None or anything true passes."""
        if self._check is None or self.load_error is not None:
            return
        try:
            ok = self._check()
        except KeyboardInterrupt:
            raise
        except BaseException as e:
            self.unhealthy = f"{ENVIRONMENT_CHECK}() raised {type(e).__name__}: {e}"
            return
        if ok is not None and not ok:
            self.unhealthy = f"{ENVIRONMENT_CHECK}() returned {ok!r}"

    def call(self, request: dict[str, Any]) -> dict[str, Any]:
        if request.get("batch") is not None:
            return self._call_batch(request["batch"])
        started_at = time.time()
        resp: dict[str, Any] = {
            "type": "result",
            "invocation_id": request.get("invocation_id"),
            "started_at": started_at,
            "entry_called_at": None,
        }
        func = self.func
        if self.load_error is not None or func is None:
            resp.update(ok=False, output=None, error=self.load_error, finished_at=time.time())
            return resp
        params = request.get("params") or {}
        context = Context(request.get("context") or {})
        kwargs = dict(params)
        if self.takes_context and "context" not in kwargs:
            kwargs["context"] = context
        # Exceptions are results; SystemExit/KeyboardInterrupt deliberately escape and end the process,
        # which the pool reports as a crash and replaces the worker.
        try:
            before = self.hooks.get("before_execution")
            if before is not None:
                before(params, context)
            resp["entry_called_at"] = time.time()
            output = func(**kwargs)
            if hasattr(output, "__await__"):
                import asyncio  # lazy: heavy, and needed only by plugins with an async entry point

                output = asyncio.run(_awaited(output))
            after = self.hooks.get("after_execution")
            if after is not None:
                after(output, context)
            resp.update(ok=True, output=output, error=None)
        except Exception as e:  # MemoryError included
            resp.update(self._failure(e, context))
        resp["finished_at"] = time.time()
        return resp

    def _call_batch(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        """A batch plugin's call: the entry point gets [{"params", "context"}, ...] and returns one
        output per item (an exception instance fails its item); raising fails them all. Hooks are
        per-invocation, so a batch call runs none but on_failure (with the first item's context)."""
        resp: dict[str, Any] = {"type": "result", "invocation_id": None, "started_at": time.time()}
        resp["entry_called_at"] = None
        if self.load_error is not None or self.func is None:
            resp.update(ok=False, output=None, error=self.load_error, finished_at=time.time())
            return resp
        contexts = [Context(item.get("context") or {}) for item in items]
        batch = [{"params": item.get("params") or {}, "context": c} for item, c in zip(items, contexts, strict=True)]
        try:
            resp["entry_called_at"] = time.time()
            outputs = self.func(batch)
            if hasattr(outputs, "__await__"):
                import asyncio  # lazy, as in call()

                outputs = asyncio.run(_awaited(outputs))
            resp.update(ok=True, output=None, error=None, items=batch_items(outputs, len(batch)))
        except Exception as e:
            resp.update(self._failure(e, contexts[0] if contexts else Context()))
        resp["finished_at"] = time.time()
        return resp

    def _failure(self, e: Exception, context: Context) -> dict[str, Any]:
        """The response fields of a call that raised."""
        err = error_info(e, skip_frames=1)
        if isinstance(e, MemoryError):
            # Over the limit: report it as such and let this worker go (its heap may be fragmented or
            # half-built objects may linger); the pool starts a clean one.
            if self.memory_limit_mb is not None:
                err["type"] = "MemoryLimitExceeded"
                err["message"] = f"the plugin exceeded its memory limit of {self.memory_limit_mb} MB" + (
                    f" ({err['message']})" if err["message"] else ""
                )
            return {"ok": False, "output": None, "error": err, "retire": True}
        on_failure = self.hooks.get("on_failure")
        if on_failure is not None:
            try:
                on_failure(e, context)
            except Exception as hook_error:
                err["message"] += f" (and on_failure raised {type(hook_error).__name__}: {hook_error})"
        return {"ok": False, "output": None, "error": err}


class BatchResultError(Exception):
    """A batch plugin's entry point did not return one result per item."""


def batch_items(outputs: Any, expected: int) -> list[dict[str, Any]]:
    """Each item's part of a batch response; BatchResultError unless `outputs` is a list of `expected`."""
    if not isinstance(outputs, list | tuple) or len(outputs) != expected:
        got = f"a {type(outputs).__name__} of {len(outputs)}" if isinstance(outputs, list | tuple) else repr(outputs)
        raise BatchResultError(
            f"a batch plugin returns a list with one result per item: got {got[:200]} for {expected} item(s)"
        )
    return [
        {"ok": False, "output": None, "error": error_info(out)}
        if isinstance(out, BaseException)
        else {"ok": True, "output": out}
        for out in outputs
    ]


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


def dump_response(resp: dict[str, Any]) -> bytes:
    """JSON of a response; an output that JSON cannot carry exactly to the runner (NaN, an integer past
    64 bits, which orjson reads as a float, nesting past MAX_OUTPUT_NESTING) is replaced by its repr()
    plus a note (in a batch response, per item)."""
    if "items" in resp:
        return _dump_batch(resp)
    try:
        data = json.dumps(resp, allow_nan=False, separators=(",", ":")).encode()
        problem = _carry_problem(resp.get("output"), data)
        if problem is None:
            return data
        raise ValueError(problem)
    except (TypeError, ValueError, OverflowError, RecursionError) as e:
        output = resp.get("output")
        try:
            text = repr(output)
        except Exception as repr_error:  # RecursionError, or ValueError for an int past 4300 digits
            text = f"<unrepresentable {type(output).__name__}: {repr_error}>"
        resp = dict(
            resp,
            output=text,
            note=f"output of type {type(output).__name__} is not JSON-serializable ({e}); stored its repr()",
        )
        return json.dumps(resp, allow_nan=False, separators=(",", ":"), default=repr).encode()


def _dump_batch(resp: dict[str, Any]) -> bytes:
    items = resp["items"]
    try:
        data = json.dumps(resp, allow_nan=False, separators=(",", ":")).encode()
        if _carry_problem([item["output"] for item in items], data) is None:
            return data
    except (TypeError, ValueError, OverflowError, RecursionError):
        pass
    # Some item cannot travel as it is: each output through the single-call path, which repairs it.
    carried = [dict(item, **json.loads(dump_response({"output": item["output"]}))) for item in items]
    return json.dumps(dict(resp, items=carried), allow_nan=False, separators=(",", ":")).encode()


# The same as schemas.values.MAX_NESTING (this file cannot import it; a unit test keeps them equal):
# a result's output must still be readable, storable and shown by every part.
MAX_OUTPUT_NESTING = 128
_INT_MIN, _INT_END = -(2**63), 2**64  # what orjson, the runner's reader, reads exactly
_DIGITS_ONLY = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))


def _carry_problem(output: Any, data: bytes) -> str | None:
    """Why `data` (JSON of a response) would not bring `output` to the runner as it is, or None. The
    output is walked only when the text could hold the problem: 19 digits in a row, or more
    brackets than the nesting limit (C-speed scans of the text first)."""
    deep = data.count(b"[") + data.count(b"{") > MAX_OUTPUT_NESTING
    long_int = b"0" * 19 in data.translate(_DIGITS_ONLY)
    if not (deep or long_int):
        return None
    stack = [(output, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list | tuple):
            if depth == MAX_OUTPUT_NESTING:
                return f"nested more than {MAX_OUTPUT_NESTING} levels deep"
            stack.extend((child, depth + 1) for child in (value.values() if isinstance(value, dict) else value))
        elif isinstance(value, int) and not isinstance(value, bool) and not _INT_MIN <= value < _INT_END:
            return "an integer beyond 64 bits, which would not arrive as it is"
    return None


def _watch_parent(parent_pid: int) -> None:
    # If the runner dies without closing our stdin (or we are stuck in plugin code), do not linger.
    while True:
        time.sleep(1.0)
        if os.getppid() != parent_pid:
            os._exit(70)


def main(argv: list[str]) -> int:
    if len(argv) not in (3, 4):
        print(
            "usage: worker_main.py <plugin_dir> <module.function | --command=JSON> [<memory_limit_mb>]",
            file=sys.stderr,
        )
        return 2
    plugin_dir, entry_point = os.path.abspath(argv[1]), argv[2]
    memory_limit_mb = int(argv[3]) if len(argv) == 4 else None
    proto_in, proto_out = _take_protocol_pipes()
    faulthandler.enable(file=sys.stderr)  # a segfault leaves a Python traceback in the crash report
    threading.Thread(target=_watch_parent, args=(os.getppid(),), name="parent-watch", daemon=True).start()

    # The runner starts us with -P, but never let this file's folder (plugins/) shadow plugin modules.
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]

    if memory_limit_mb is not None:
        limit_memory(memory_limit_mb)
    plugin = load_servable(plugin_dir, entry_point, memory_limit_mb)
    plugin.check_environment()
    write_all(proto_out, encode_frame(json.dumps(hello_message(plugin)).encode()))
    return serve(plugin, proto_in, proto_out)


def load_servable(plugin_dir: str, target: str, memory_limit_mb: int | None) -> Servable:
    """The Python plugin, or for a `--command=` target the command runner of worker_command.py.

    That file is loaded by its path: this folder is deliberately not on sys.path (see main)."""
    if not target.startswith(COMMAND_ARG_PREFIX):
        return Plugin(plugin_dir, target, memory_limit_mb)
    import importlib.util  # lazy: only command plugins need it

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "worker_command.py")
    spec = importlib.util.spec_from_file_location("cdcflow_worker_command", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    servable: Servable = module.CommandPlugin(plugin_dir, json.loads(target[len(COMMAND_ARG_PREFIX) :]))
    return servable


def unhealthy_response(request: dict[str, Any], reason: str) -> dict[str, Any]:
    """A call to a plugin whose environment check failed: it fails at once, naming the reason."""
    now = time.time()
    return {
        "type": "result",
        "invocation_id": request.get("invocation_id"),
        "ok": False,
        "output": None,
        "started_at": now,
        "entry_called_at": None,
        "finished_at": now,
        "error": {
            "type": UNHEALTHY_ERROR_TYPE,
            "message": f"the plugin is unhealthy: {reason} (fix it and reload the plugin)",
            "traceback": None,
        },
    }


def _take_protocol_pipes() -> tuple[int, int]:
    """Private copies of the protocol pipes (stdin, stdout); fds 0/1 then point elsewhere.

    The plugin's print(), input() and even C-level writes to fd 1 can no longer corrupt the protocol stream.
    """
    proto_in, proto_out = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return proto_in, proto_out


def hello_message(plugin: Servable) -> dict[str, Any]:
    return {
        "type": "hello",
        "ok": plugin.load_error is None,
        "unhealthy": plugin.unhealthy,
        "pid": os.getpid(),
        "python": sys.version.split()[0],
        "prefix": sys.prefix,
        "error": plugin.load_error,
        "takes_context": plugin.takes_context,
        "hooks": sorted(plugin.hooks),
    }


def serve(plugin: Servable, proto_in: int, proto_out: int) -> int:
    """Answer requests one after the other until the runner closes our stdin (or we must retire)."""
    decoder = FrameDecoder()
    while True:
        frame = decoder.next_frame()
        if frame is None:
            data = os.read(proto_in, READ_CHUNK)
            if not data:  # the runner closed our stdin: orderly shutdown
                return 0
            decoder.feed(data)
            continue
        resp = handle_frame(plugin, frame)
        write_all(proto_out, encode_frame(dump_response(resp)))
        if resp.get("retire"):
            # Leave without reading on: a request the runner pipelined behind this one must not
            # start here (the runner sends it to the replacement).
            return 0


def handle_frame(plugin: Servable, frame: bytes) -> dict[str, Any]:
    """The response to one frame: the call's, or a ProtocolError for a frame that is not a request."""
    try:
        request = json.loads(frame)
    except (ValueError, RecursionError) as e:  # not UTF-8 or JSON; nested past the recursion limit
        return _bad_request(f"{type(e).__name__}: {e}")
    problem = _request_problem(request)
    if problem is not None:
        return _bad_request(problem)
    return plugin.call(request) if plugin.unhealthy is None else unhealthy_response(request, plugin.unhealthy)


def _request_problem(request: Any) -> str | None:
    """What makes a parsed frame no request (Plugin.call and the response rely on these types)."""
    if not isinstance(request, dict):
        return f"a request is a JSON object, not {type(request).__name__}"
    if not isinstance(request.get("invocation_id"), str | None):
        return "invocation_id is not a string"
    for key in ("params", "context"):
        if not isinstance(request.get(key), dict | None):
            return f"{key} is a {type(request[key]).__name__}, not an object"
    batch = request.get("batch")
    if batch is not None:
        if not isinstance(batch, list):
            return f"batch is a {type(batch).__name__}, not a list"
        for i, item in enumerate(batch):
            if (problem := _request_problem(item) if isinstance(item, dict) else "not an object") is not None:
                return f"batch[{i}]: {problem}"
    return None


def _bad_request(reason: str) -> dict[str, Any]:
    return {
        "type": "result",
        "ok": False,
        "output": None,
        "started_at": time.time(),
        "finished_at": time.time(),
        "entry_called_at": None,
        "error": {"type": "ProtocolError", "message": f"bad request: {reason[:300]}", "traceback": None},
    }


if __name__ == "__main__":
    sys.exit(main(sys.argv))
