"""Warm worker pools running real plugins in their own venvs (real processes, real pipes)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from plugins.pool import WorkerPool, WorkerSpec
from plugins.registry import load_plugin
from plugins.venvs import ensure_venv, venv_python
from tests.support import TEST_VENV_DIR, example_plugin, plugin_pool
from tests.support.plugins import worker_request


@pytest.fixture(scope="module")
def echo_pool():
    with plugin_pool(example_plugin("echo"), size=2) as pool:
        assert pool.startup_error is None
        yield pool


def test_success_returns_output_and_timings(echo_pool):
    out = echo_pool.call(worker_request({"message": "hi", "data": {"n": [1, 2]}}), timeout=5)
    assert out.status == "success", out.error
    assert out.output["message"] == "hi" and out.output["data"] == {"n": [1, 2]}
    assert out.output["invocation_id"] == "inv-1"  # the plugin asked for context and got it
    assert out.sent_at <= out.started_at <= out.entry_called_at <= out.finished_at <= out.received_at
    assert out.worker_pid in echo_pool.pids()


def test_exception_is_a_failed_outcome_with_traceback(echo_pool):
    out = echo_pool.call(worker_request({"mode": "raise", "message": "boom"}), timeout=5)
    assert out.status == "failed"
    assert out.error["type"] == "ValueError"
    assert "boom" in out.error["message"]
    assert "main.py" in out.error["traceback"] and "worker_main" not in out.error["traceback"]


def test_print_does_not_corrupt_the_protocol(echo_pool):
    out = echo_pool.call(worker_request({"mode": "print", "message": "noise"}), timeout=5)
    assert out.status == "success" and out.output["message"] == "noise"


def test_sys_exit_is_a_crash_and_the_worker_is_replaced(echo_pool):
    before = set(echo_pool.pids())
    out = echo_pool.call(worker_request({"mode": "exit"}), timeout=5)
    assert out.status == "crashed"
    assert out.error["type"] == "WorkerCrashed" and "exited with code 3" in out.error["message"]
    assert out.worker_pid in before and out.worker_pid not in echo_pool.pids()
    assert len(echo_pool.pids()) == 2
    for _ in range(4):  # both slots work again, including the replacement
        assert echo_pool.call(worker_request({"message": "again"}), timeout=10).status == "success"


def test_hang_times_out_kills_the_worker_and_the_pool_still_works(echo_pool):
    started = time.monotonic()
    out = echo_pool.call(worker_request({"mode": "hang"}), timeout=0.5)
    assert out.status == "timeout"
    assert 0.5 <= time.monotonic() - started < 5
    assert "did not finish within 0.5s" in out.error["message"]
    assert out.worker_pid not in echo_pool.pids()
    for _ in range(4):
        assert echo_pool.call(worker_request({"message": "after"}), timeout=10).status == "success"


def test_calls_run_concurrently_up_to_pool_size(echo_pool):
    import threading

    results = []
    threads = [
        threading.Thread(
            target=lambda: results.append(echo_pool.call(worker_request({"mode": "sleep", "seconds": 0.5}), 5))
        )
        for _ in range(2)
    ]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.status for r in results] == ["success", "success"]
    assert time.monotonic() - started < 0.95  # two workers: in parallel, not one after the other
    assert len({r.worker_pid for r in results}) == 2


def test_round_trip_is_fast(echo_pool):
    samples = []
    for i in range(2000):
        t0 = time.perf_counter()
        out = echo_pool.call(worker_request({}, invocation_id=str(i)), timeout=5)
        samples.append(time.perf_counter() - t0)
        assert out.status == "success"
    samples.sort()
    p50 = samples[len(samples) // 2]
    assert p50 < 0.002, f"p50 round trip {p50 * 1e6:.0f}us"  # typically ~100us; generous for slow CI


def test_worker_environment_is_scrubbed(tmp_path, monkeypatch):
    monkeypatch.setenv("CDCFLOW_REDIS__URL", "redis://:secret@host/0")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "shh")
    d = tmp_path / "envdump"
    d.mkdir()
    (d / "plugin.json").write_text(json.dumps({"name": "envdump", "entry_point": "main.run"}))
    (d / "main.py").write_text("import os\ndef run():\n    return {'env': dict(os.environ), 'cwd': os.getcwd()}\n")
    with plugin_pool(load_plugin(d), size=1) as pool:
        out = pool.call(worker_request({}), timeout=10)
    assert out.status == "success", out.error
    env = out.output["env"]
    assert not any(k.startswith("CDCFLOW_") or "SECRET" in k for k in env), sorted(env)
    assert env["VIRTUAL_ENV"] and env["PATH"].startswith(env["VIRTUAL_ENV"])
    assert out.output["cwd"] == str(d.resolve())


def test_import_error_is_reported_at_startup_and_on_each_call(tmp_path):
    d = tmp_path / "broken"
    d.mkdir()
    (d / "plugin.json").write_text(json.dumps({"name": "broken", "entry_point": "main.run"}))
    (d / "main.py").write_text("import no_such_module_xyz\ndef run():\n    return 1\n")
    with plugin_pool(load_plugin(d), size=1) as pool:
        assert pool.startup_error is not None
        assert "no_such_module_xyz" in pool.startup_error["message"]
        out = pool.call(worker_request({}), timeout=10)
    assert out.status == "failed"
    assert out.error["type"] == "ModuleNotFoundError" and "no_such_module_xyz" in out.error["message"]


def test_hooks_and_context_and_plain_functions(tmp_path):
    d = tmp_path / "hooks"
    d.mkdir()
    (d / "plugin.json").write_text(json.dumps({"name": "hooks", "entry_point": "pkg.mod.run"}))
    (d / "pkg").mkdir()
    (d / "pkg" / "__init__.py").write_text("")
    (d / "pkg" / "mod.py").write_text(
        "import sys\n"
        "CALLS = []\n"
        "def before_execution(params, context):\n    CALLS.append(('before', dict(params), context.invocation_id))\n"
        "def after_execution(result, context):\n    CALLS.append(('after', result))\n"
        "def on_failure(error, context):\n    CALLS.append(('failure', str(error)))\n"
        "def run(x, fail=False):\n"
        "    if fail:\n        raise RuntimeError('asked to')\n"
        "    return {'x': x, 'calls': list(CALLS), 'module_path': [p for p in sys.path][:1]}\n"
        "def report():\n    return list(CALLS)\n"
    )
    with plugin_pool(load_plugin(d), size=1) as pool:
        ok = pool.call({"invocation_id": "i1", "params": {"x": 1}, "context": {"invocation_id": "i1"}}, timeout=10)
        failed = pool.call(
            {"invocation_id": "i2", "params": {"x": 2, "fail": True}, "context": {"invocation_id": "i2"}}, 10
        )
        after = pool.call({"invocation_id": "i3", "params": {"x": 3}, "context": {"invocation_id": "i3"}}, 10)
    assert ok.status == "success", ok.error
    assert ok.output["calls"] == [["before", {"x": 1}, "i1"]]  # `context` was not passed: run() does not take it
    assert ok.output["module_path"] == [str(d.resolve())]
    assert failed.status == "failed" and failed.error["type"] == "RuntimeError"
    calls = after.output["calls"]
    assert ["after", {"x": 1, "calls": [["before", {"x": 1}, "i1"]], "module_path": [str(d.resolve())]}] in calls
    assert ["failure", "asked to"] in calls


def test_segfault_is_a_crash_with_the_signal(tmp_path):
    d = tmp_path / "segv"
    d.mkdir()
    (d / "plugin.json").write_text(json.dumps({"name": "segv", "entry_point": "main.run"}))
    (d / "main.py").write_text("import ctypes\ndef run():\n    ctypes.string_at(0)\n")
    with plugin_pool(load_plugin(d), size=1) as pool:
        out = pool.call(worker_request({}), timeout=10)
        assert out.status == "crashed"
        assert "SIGSEGV" in out.error["message"]
        assert "Fatal Python error" in (out.error["traceback"] or "")  # faulthandler's report, from stderr
        assert (
            pool.call(worker_request({}), timeout=10).status == "crashed"
        )  # the replacement works (and crashes again)


def test_data_processor_runs_in_its_own_venv_with_its_dependency():
    plugin = example_plugin("data_processor")
    venv = ensure_venv(TEST_VENV_DIR, plugin.manifest.dependencies)
    with plugin_pool(plugin) as pool:
        out = pool.call(
            {
                "invocation_id": "d1",
                "params": {"operation": "report", "lessons": 1234567, "teacher_id": "7"},
                "context": {"invocation_id": "d1"},
            },
            timeout=30,
        )
    assert out.status == "success", out.error
    assert out.output["humanize_version"].startswith("4.")
    assert out.output["lessons_in_words"] == "1.2 million"
    assert out.output["python_prefix"] == str(venv)
    assert out.output["runner_packages_visible"] == []  # pydantic, redis, confluent_kafka... are not importable
    # and the runner itself does not have the plugin's dependency
    import importlib.util

    assert importlib.util.find_spec("humanize") is None


def test_closing_the_pool_aborts_a_running_call(tmp_path):
    import threading

    plugin = example_plugin("echo")
    venv = ensure_venv(TEST_VENV_DIR, [])
    pool = WorkerPool(WorkerSpec("echo", venv_python(venv), plugin.path, plugin.manifest.entry_point), 1)
    pool.start()
    box = []
    t = threading.Thread(target=lambda: box.append(pool.call(worker_request({"mode": "hang"}), timeout=30)))
    t.start()
    time.sleep(0.3)
    pool.close()
    t.join(10)
    assert box and box[0].status == "aborted"
    assert pool.call(worker_request({}), timeout=1).status == "aborted"


def test_missing_interpreter_is_a_startup_error(tmp_path):
    plugin = example_plugin("echo")
    pool = WorkerPool(
        WorkerSpec("echo", tmp_path / "nope" / "bin" / "python", plugin.path, plugin.manifest.entry_point), 1
    )
    pool.start()
    assert pool.startup_error["type"] == "WorkerStartError"
    assert pool.call(worker_request({}), timeout=1).status == "aborted"


# -- pipelining ------------------------------------------------------------------------------------
RECORDER = """import os, sys, time


def run(mode="ok", context=None):
    with open("calls.log", "a") as fh:
        fh.write(context["invocation_id"] + "\\n")
    if mode != "ok":
        time.sleep(0.5)  # long enough for the next request to be queued behind this one
    if mode == "hang":
        time.sleep(3600)
    if mode == "exit":
        sys.exit(4)
    if mode == "hog":
        raise MemoryError("pretend")
    return os.getpid()
"""


@pytest.fixture
def recorder(tmp_path):
    d = tmp_path / "recorder"
    d.mkdir()
    (d / "plugin.json").write_text(json.dumps({"name": "recorder", "entry_point": "main.run", "memory_limit_mb": 512}))
    (d / "main.py").write_text(RECORDER)
    return d


def _calls(d) -> list[str]:
    return (d / "calls.log").read_text().splitlines()


def test_a_fast_plugin_is_pipelined_and_calls_stay_correct(echo_pool):
    import threading

    for i in range(50):  # measured: calls are short
        assert echo_pool.call(worker_request({"message": str(i)}), timeout=5).status == "success"
    assert echo_pool.pipelined
    outs: dict[int, object] = {}

    def caller(n: int) -> None:
        for k in range(100):
            out = echo_pool.call(worker_request({"message": f"{n}-{k}"}, invocation_id=f"{n}-{k}"), timeout=5)
            outs[n * 1000 + k] = out

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(4)]  # 2 per worker
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(outs) == 400
    for key, out in outs.items():  # every answer is the answer to its own request
        assert out.status == "success" and out.output["message"] == f"{key // 1000}-{key % 1000}", out


def test_large_requests_and_answers_pipelined_by_reserving_lanes_never_deadlock(echo_pool):
    """As the lanes call: reserve() a place (before the payload is known), then call() with a 900 kB
    message, echoed back. A request written behind a call whose large answer is still being read once
    blocked the thread at the head of the line from seeing its turn: every thread hung (CI, session 5)."""
    import threading

    for i in range(50):  # measured: calls are short, so the pool pipelines
        assert echo_pool.call(worker_request({"message": str(i)}), timeout=5).status == "success"
    assert echo_pool.pipelined
    big = "x" * 900_000
    outs: list[tuple[str, object]] = []

    def lane(n: int) -> None:
        for k in range(40):
            assert echo_pool.reserve() is not None
            message = big + f"{n}-{k}" if k % 2 == 0 else f"{n}-{k}"
            outs.append((message, echo_pool.call(worker_request({"message": message}), timeout=10)))

    threads = [threading.Thread(target=lane, args=(n,), daemon=True) for n in range(4)]  # 2 per worker
    for t in threads:
        t.start()
    deadline = time.monotonic() + 90
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "calls hung"
    assert len(outs) == 160
    for message, out in outs:
        assert out.status == "success" and out.output["message"] == message, out


def test_a_call_whose_reserved_worker_retired_runs_even_when_every_other_place_is_reserved():
    """As in the dashboard test that failed in CI: the lane threads hold every place while they wait for
    jobs; the worker under one reservation is killed (a call on it timed out, or was cancelled) and its
    replacement's one place is reserved at once by the thread whose call failed. The call then made on
    the lost reservation waited for a free place until some other job came along (30 s in CI)."""
    import threading

    with plugin_pool(example_plugin("echo"), size=2) as pool:
        pool._avg_call_seconds = 0.0001  # as if measured: a fast plugin, pipelined (2 places per worker)
        hold, go = threading.Event(), threading.Event()
        pids: dict[str, int | None] = {}
        outcomes: dict[str, Any] = {}

        def lane(name: str, request: dict | None = None) -> None:
            assert pool.reserve() is not None
            pids[name] = pool.reserved_pid()
            if name == "hang":  # its call times out: the worker is killed and replaced
                outcomes[name] = pool.call(request or {}, timeout=1.0)
                assert pool.reserve() is not None  # the place it waits in next: the replacement's
                pids["hang-again"] = pool.reserved_pid()
            else:
                go.wait(60)
                if pids[name] == pids["hang"]:  # its job comes after the kill; its place was on the killed worker
                    outcomes["lost"] = pool.call(worker_request({"message": "late"}), timeout=10)
            hold.wait(60)
            pool.release()

        def started(*names: str) -> None:
            deadline = time.monotonic() + 20
            while not all(n in pids for n in names) and time.monotonic() < deadline:
                time.sleep(0.01)
            assert all(n in pids for n in names), pids

        threads = [threading.Thread(target=lane, args=("hang", worker_request({"mode": "hang"})), daemon=True)]
        threads[0].start()
        started("hang")
        for name in ("x", "y", "z"):  # every other place: one of them on hang's worker
            threads.append(threading.Thread(target=lane, args=(name,), daemon=True))
            threads[-1].start()
            started(name)
        try:
            first = [pids[n] for n in ("hang", "x", "y", "z")]
            assert sorted(first.count(p) for p in set(first)) == [2, 2], pids  # every place is held
            started("hang-again")
            assert outcomes["hang"].status == "timeout" and pids["hang-again"] not in first, pids
            go.set()
            deadline = time.monotonic() + 15
            while "lost" not in outcomes and time.monotonic() < deadline:
                time.sleep(0.05)
            assert "lost" in outcomes, "the call on the lost place waited for a free place"
            assert outcomes["lost"].status == "success" and outcomes["lost"].output["message"] == "late"
        finally:
            hold.set()
            go.set()


@pytest.mark.parametrize("mode,status", [("hang", "timeout"), ("exit", "crashed"), ("hog", "failed")])
def test_a_request_queued_behind_a_failing_call_runs_once_elsewhere(recorder, mode, status):
    """size 1: the second request sits in the worker's pipe behind the first; the first times out /
    crashes / makes the worker retire, and the second runs once, on the replacement."""
    import threading

    with plugin_pool(load_plugin(recorder), size=1) as pool:
        pool._avg_call_seconds = 0.0001  # as if measured: a fast plugin, pipelined
        first: list = []
        t = threading.Thread(
            target=lambda: first.append(
                pool.call(
                    {"invocation_id": "first", "params": {"mode": mode}, "context": {"invocation_id": "first"}},
                    timeout=2,
                )
            )
        )
        t.start()
        deadline = time.monotonic() + 10
        while not (recorder / "calls.log").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        before = pool.pids()
        second = pool.call(
            {"invocation_id": "second", "params": {}, "context": {"invocation_id": "second"}}, timeout=10
        )
        t.join(15)
    assert first[0].status == status, first[0]
    assert second.status == "success", second.error
    assert second.output != first[0].worker_pid and before == [first[0].worker_pid]
    assert _calls(recorder) == ["first", "second"]  # the second ran once, after the failure


def _recorded(iid: str, mode: str = "ok") -> dict[str, Any]:
    return {"invocation_id": iid, "params": {"mode": mode}, "context": {"invocation_id": iid}}


def test_calls_written_together_each_get_their_own_outcome(echo_pool):
    """call_many: one write, an answer each in order; a plugin exception fails only its own call."""
    requests = [worker_request({"message": "a"}, "a"), worker_request({"mode": "raise"}, "b")]
    requests += [worker_request({"message": "c"}, "c")]
    outs = echo_pool.call_many(requests, timeout=5)
    assert [o.status for o in outs] == ["success", "failed", "success"]
    assert outs[0].output["message"] == "a" and outs[2].output["message"] == "c"
    assert outs[1].error["type"] == "ValueError"
    assert outs[0].worker_pid == outs[1].worker_pid == outs[2].worker_pid  # one worker, not replaced
    assert outs[0].finished_at <= outs[1].started_at and outs[1].finished_at <= outs[2].started_at


@pytest.mark.parametrize("mode,status", [("hang", "timeout"), ("exit", "crashed"), ("hog", "failed")])
def test_calls_written_together_behind_a_failing_one_run_once_on_the_replacement(recorder, mode, status):
    """size 1: b times out / crashes / retires its worker; a keeps its result, c and d (in the dead
    worker's pipe, never started) run once on the replacement; the timeout counts per call."""
    with plugin_pool(load_plugin(recorder), size=1) as pool:
        requests = [_recorded("a"), _recorded("b", mode), _recorded("c"), _recorded("d")]
        started = time.monotonic()
        outs = pool.call_many(requests, timeout=2)
        elapsed = time.monotonic() - started
    assert [o.status for o in outs] == ["success", status, "success", "success"], [o.error for o in outs]
    assert outs[0].worker_pid == outs[1].worker_pid and outs[0].output == outs[0].worker_pid
    assert outs[2].worker_pid == outs[3].worker_pid != outs[1].worker_pid
    assert _calls(recorder) == ["a", "b", "c", "d"]  # each ran once
    assert elapsed < 10


def test_a_cancel_stops_only_its_own_call_of_those_written_together(recorder):
    import threading

    with plugin_pool(load_plugin(recorder), size=1) as pool:
        requests = [_recorded("a", "slow"), _recorded("b", "slow"), _recorded("c")]
        outs: list = []
        t = threading.Thread(target=lambda: outs.extend(pool.call_many(requests, timeout=10)))
        t.start()
        deadline = time.monotonic() + 10
        while not (recorder / "calls.log").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert pool.cancel("b")  # queued behind a: its worker is stopped as it starts b
        t.join(20)
    assert [o.status for o in outs] == ["success", "cancelled", "success"], [o.error for o in outs]
    assert outs[2].worker_pid != outs[1].worker_pid == outs[0].worker_pid  # c ran on the replacement
    assert _calls(recorder) in (["a", "b", "c"], ["a", "c"])  # b killed as it started (or before)


def test_many_calls_written_together_with_large_answers_never_deadlock(echo_pool):
    """call_many of 64 calls of 4 kB each, echoed back: 256 kB of requests, as many of answers. Its thread
    is first in line to read, so while it writes nobody reads the answers: written in one go, the worker
    blocked on a full answer pipe and stopped reading, and the write blocked on a full request pipe."""
    import threading

    messages = [f"{i}-" + "x" * 4000 for i in range(64)]
    outs: list = []
    t = threading.Thread(
        target=lambda: outs.extend(
            echo_pool.call_many([worker_request({"message": m}, f"big-{i}") for i, m in enumerate(messages)], 10)
        ),
        daemon=True,
    )
    t.start()
    t.join(30)
    assert not t.is_alive(), "the write and the worker wait for each other"
    assert [o.status for o in outs] == ["success"] * 64
    assert [o.output["message"] for o in outs] == messages
