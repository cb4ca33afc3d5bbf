"""The web dashboard (console/web, served by the API server at /) in a real headless chromium
against the real pipeline (`cdcflow run --only streams --only runners`) and a real API server: every
page shows what the stack holds, and what is done in a page is what the CLI and the API then report.

Screenshots of each page land in .state/screenshots/ (1280x800, and Overview at 420x800)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from plugins.store import RunStore
from tests.support import REPO_ROOT, isolated_config_data, remove_test_resources, wait_for, write_config
from tests.support.access import focused_id, press, unlabelled_controls, unreached_by_tab
from tests.support.api import RULES, ApiServer, api_server, pipeline_running
from tests.support.browser import Browser, Locator, browser, by_id, by_testid, css
from tests.support.results import a_result

EXAMPLE_PLUGINS = {"data_processor", "echo", "es_indexer", "hot_reload_demo"}
LIVE_WITHIN = 2.0  # seconds from the API reporting a run done to its row in an open Runs page


@pytest.fixture(scope="module")
def directory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("dashboard")


@pytest.fixture(scope="module")
def api(directory: Path) -> Iterator[ApiServer]:
    config = write_config(directory, isolated_config_data("dash", RULES))
    try:
        with pipeline_running(config, directory / "run.log"), api_server(config, directory / "api.log") as server:
            yield server
    finally:
        remove_test_resources(config.settings, [])


@pytest.fixture
def page(api: ApiServer, directory: Path) -> Iterator[Browser]:
    """A fresh browser (own profile, no cookies) on the API server."""
    with browser(api.base_url, log_path=directory / "chromedriver.log") as session:
        yield session
        errors = session.console_errors()
    assert not errors, f"the browser console reported errors: {errors}"


@pytest.fixture
def admin(page: Browser, api: ApiServer) -> Browser:
    """The fresh browser, signed in with the admin token through the sign-in form."""
    page.sign_in(api.tokens["admin"])
    return page


def trigger(api: ApiServer, params: dict[str, Any]) -> dict[str, Any]:
    """Runs echo over the API and waits for its result."""
    with api.client("trigger") as client:
        done = client.post("/api/plugins/echo/invocations", params={"wait": 60}, json={"params": params})
    assert done.status_code == 200 and done.json()["status"] in ("success", "failed"), done.text
    return dict(done.json())


def done_at(api: ApiServer, invocation_id: str) -> float:
    """Polls the API until it reports the invocation done; the monotonic time it first did."""
    with api.client("read") as reader:

        def finished() -> float | None:
            status = reader.get(f"/api/invocations/{invocation_id}").json()["status"]
            return time.monotonic() if status not in ("pending", "queued", "running") else None

        return float(wait_for(finished, 60, interval=0.02, what=f"{invocation_id} done"))


def row(invocation_id: str) -> tuple[str, str]:
    return css(f'[data-testid="run-row"][data-invocation-id="{invocation_id}"]')


def test_the_browser_opens_the_api_docs(page: Browser) -> None:
    """Debian's headless chromium through Debian's chromedriver renders a page of the real server
    (Swagger UI, which builds the operations list from /openapi.json in the browser)."""
    page.open("/docs")
    page.wait(lambda d: d.title.startswith("cdcflow API"), what="the /docs title")
    page.wait_text("/api/health", css(".opblock"))
    assert page.driver.capabilities["browserName"] == "chrome"
    assert page.driver.execute_script("return [innerWidth, innerHeight]") == [1280, 800]


def test_a_bad_token_is_refused_at_sign_in(page: Browser, api: ApiServer) -> None:
    page.submit_sign_in("cdcf_0123456789ab_" + "x" * 43, "/runs")
    error = page.element(by_id("login-error"))
    assert "unknown or revoked" in error.text
    assert page.path.startswith("/login") and page.session_cookie() is None
    assert not page.exists(by_id("signed-in-as"))
    page.screenshot("sign-in-refused")
    page.console_errors()  # the refused sign-in answers 401: chromium logs that as a failed load
    page.open("/runs")
    page.wait_path("/login")  # still signed out
    page.fill(by_id("token"), api.tokens["read"])
    page.click(by_id("login-submit"))
    assert "test-read" in page.element(by_id("signed-in-as")).text
    page.wait_path("/runs")  # back where it was sent to sign in


def test_overview_shows_the_running_pipeline(admin: Browser) -> None:
    admin.open("/")
    summary = admin.element(by_id("health-summary"))
    for kind in ("streams", "runner", "api"):
        admin.wait(
            lambda d, kind=kind: d.find_element(*by_testid(f"component-{kind}")).get_attribute("data-liveness") == "up",
            what=f"{kind} up in the components table",
        )
    # the stack runs without a reader (`--only streams --only runners`) while the config has a rule: said so
    assert summary.get_attribute("data-healthy") == "false" and "reader" in summary.text, summary.text
    assert admin.element(by_testid("component-reader")).get_attribute("data-liveness") == "missing"
    assert admin.exists(by_id("charts"))
    admin.screenshot("overview")
    admin.resize(420, 800)
    admin.element(by_id("health-summary"))
    admin.screenshot("overview-narrow")
    overflow = admin.horizontal_overflow()
    assert overflow == 0, f"at 420 px the Overview is {overflow} px wider than the screen"


def test_plugins_page_lists_the_example_plugins(admin: Browser) -> None:
    admin.open("/plugins")
    admin.element(by_id("plugins"))
    rows = {r.get_attribute("data-plugin"): r for r in admin.elements(by_testid("plugin-row"))}
    assert EXAMPLE_PLUGINS <= set(rows), sorted(rows)
    admin.wait(
        lambda d: (
            d.find_element(*css('[data-testid="plugin-row"][data-plugin="echo"]')).get_attribute("data-state")
            == "serving"
        ),
        what="echo serving",
    )
    admin.screenshot("plugins")
    # hot_reload_demo, the plugin made for reloads, not echo: a reload swaps the plugin's workers for new
    # ones, and every other test here runs echo on its warm workers. (The runner bug this also once
    # avoided, a reloaded plugin's next invocation left unrun, is fixed since e78dd85 and covered by
    # tests/integration/test_plugins_reload.py; this test only checks the page's button and answer.)
    admin.click(css('[data-testid="reload-hot_reload_demo"] button'))
    admin.wait_text("Reload requested", by_testid("reload-result-hot_reload_demo"))
    admin.click(css('[data-testid="plugin-row"][data-plugin="echo"] [data-testid="plugin-link"]'))
    admin.wait_path("/plugins/echo")
    params = admin.element(by_id("plugin-parameters")).text
    for name in ("message", "data", "mode", "seconds"):
        assert name in params
        assert admin.exists(by_id(f"param-{name}")), f"the trigger form has no field for {name}"
    admin.screenshot("plugin-echo")


def test_bad_parameters_show_the_apis_errors_next_to_their_fields(admin: Browser) -> None:
    admin.open("/plugins/echo")
    admin.fill(by_id("param-seconds"), "soon")
    admin.click(by_id("trigger-submit"))
    slot = css('[data-error-for="params.seconds"]')
    message = admin.wait(lambda d: d.find_element(*slot).text.strip(), what="the error next to seconds")
    assert "number" in message.lower(), message
    assert admin.element(by_id("param-seconds")).get_attribute("aria-invalid") == "true"
    assert "nothing was sent" in admin.element(by_id("trigger-result")).text
    assert not admin.exists(by_testid("invocation-link"))
    admin.console_errors()  # the refused POST (422) is logged by chromium as a failed load


def test_a_trigger_from_the_form_appears_live_in_runs(admin: Browser, api: ApiServer, directory: Path) -> None:
    admin.open("/runs")
    admin.element(by_id("runs"))
    assert "appear at the top" in admin.element(by_id("live-status")).text
    admin.wait_event_source("/ui/runs/stream")
    was_empty = admin.exists(by_id("runs-empty"))
    message = f"live-{uuid.uuid4().hex[:6]}"
    with browser(api.base_url, log_path=directory / "chromedriver-2.log") as other:
        other.sign_in(api.tokens["trigger"], "/plugins/echo")
        other.fill(by_id("param-message"), message)
        other.click(by_id("trigger-submit"))
        link = other.element(by_testid("invocation-link"))
        invocation_id = link.text.strip()
        assert invocation_id
        finished = done_at(api, invocation_id)
        remaining = max(0.0, finished + LIVE_WITHIN - time.monotonic())
        new_row = admin.element(row(invocation_id), timeout=remaining)
        appeared = time.monotonic() - finished
        print(f"run row shown {appeared:.3f}s after the API reported it done")
        admin.screenshot("runs-live")
        assert new_row.get_attribute("data-status") == "success"
        assert admin.path == "/runs", "the row must arrive without a reload"
        if was_empty:  # the table had no row: its "No runs match." must not stay under the new one
            admin.wait(
                lambda d: not any(e.is_displayed() for e in d.find_elements(*by_id("runs-empty"))),
                1,
                what='"No runs match." gone once a run is listed',
            )
        other.console_errors()
    admin.click(css(f'[data-invocation-id="{invocation_id}"] [data-testid="run-link"]'))
    admin.wait_path(f"/runs/{invocation_id}")
    assert admin.element(by_id("run-status")).get_attribute("data-status") == "success"
    output = json.loads(admin.element(by_id("run-output")).text)
    assert output["message"] == message and output["invocation_id"] == invocation_id
    assert json.loads(admin.element(by_id("run-params")).text)["message"] == message
    admin.screenshot("run")


def test_runs_filters_are_kept_in_the_url(admin: Browser, api: ApiServer) -> None:
    failed = trigger(api, {"mode": "raise", "message": "filtered"})
    ok = trigger(api, {"message": "filtered-ok"})
    admin.open("/runs")
    admin.choose(by_id("filter-status"), "failed")
    admin.choose(by_id("filter-plugin"), "echo")
    admin.click(by_id("filter-apply"))
    path = admin.wait_path("/runs?")
    assert "status=failed" in path and "plugin=echo" in path
    admin.element(row(failed["invocation_id"]))
    assert all(r.get_attribute("data-status") == "failed" for r in admin.elements(by_testid("run-row")))
    assert not admin.exists(row(ok["invocation_id"]))
    admin.driver.refresh()  # the URL alone gives the same page
    assert admin.element(by_id("filter-status")).get_attribute("value") == "failed"
    admin.element(row(failed["invocation_id"]))


def test_a_failing_run_shows_its_traceback(admin: Browser) -> None:
    admin.open("/plugins/echo")
    admin.fill(by_id("param-mode"), "raise")
    admin.fill(by_id("param-message"), "boom")
    admin.click(by_id("trigger-submit"))
    link = admin.element(by_testid("invocation-link"))
    invocation_id = link.text.strip()
    link.click()
    admin.wait_path(f"/runs/{invocation_id}")
    # a run not recorded yet shows as pending and refreshes itself until it lands
    status = admin.element(by_id("run-status"), timeout=60)
    assert status.get_attribute("data-status") == "failed"
    traceback = admin.element(by_id("run-traceback")).text
    assert "Traceback (most recent call last)" in traceback
    assert "ValueError: echo was asked to fail (message='boom')" in traceback
    assert "ValueError" in admin.element(by_id("run-error")).text
    admin.screenshot("run-failed")
    admin.click(by_id("run-again-submit"))
    again = admin.element(css('#run-again-result [data-testid="invocation-link"]')).text.strip()
    assert again and again != invocation_id


def test_dead_letters_are_listed_and_replayed_from_the_page(admin: Browser, api: ApiServer) -> None:
    dead = trigger(api, {"mode": "raise", "message": "dead"})["invocation_id"]
    entry = wait_dead_letter(admin, dead)
    assert admin.element(entry).get_attribute("data-replayed") == "false"
    assert "echo was asked to fail" in admin.element(entry).text
    admin.screenshot("dlq")
    admin.click(css(f'[data-dlq-id="{dead}"] input[name="dlq_id"]'))
    admin.click(by_id("dlq-replay-submit"))
    admin.wait_text("Replayed 1 of 1", by_id("dlq-result"))
    admin.driver.refresh()
    assert admin.element(entry).get_attribute("data-replayed") == "true"
    with api.client("read") as reader:
        entries = {e["dlq_id"]: e for e in reader.get("/api/dlq", params={"plugin": "echo"}).json()["entries"]}
    assert entries[dead]["replayed"], entries[dead]


def test_pausing_a_schedule_in_the_page_is_what_the_cli_reports(admin: Browser, api: ApiServer) -> None:
    def cli_schedule() -> dict[str, Any]:
        out = subprocess.run(
            [sys.executable, "-m", "console.cli", "--config", str(api.config.path), "schedules", "list", "--json"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        return {r["name"]: r for r in map(json.loads, out.stdout.splitlines())}["nightly"]

    nightly = css('[data-testid="schedule-row"][data-schedule="nightly"]')
    admin.open("/schedules")
    assert admin.element(nightly).get_attribute("data-paused") == "false"
    assert "0 3 * * *" in admin.element(nightly).text and "echo" in admin.element(nightly).text
    active = cli_schedule()
    assert not active["paused"] and active["next_fire"] in admin.element(nightly).text
    admin.click(by_testid("pause-nightly"))
    admin.element(by_testid("resume-nightly"))
    assert admin.element(nightly).get_attribute("data-paused") == "true"
    assert cli_schedule()["paused"] is True
    admin.screenshot("schedules")
    admin.click(by_testid("resume-nightly"))
    admin.element(by_testid("pause-nightly"))
    assert admin.element(nightly).get_attribute("data-paused") == "false"
    assert cli_schedule()["paused"] is False


def test_rules_and_the_explain_box_name_the_failing_condition(admin: Browser, api: ApiServer) -> None:
    admin.open("/rules")
    rule = admin.element(css('[data-testid="rule"][data-rule="paid_orders"]'))
    conditions = rule.find_element(*by_testid("rule-conditions")).text
    assert "status" in conditions and "amount" in conditions and "100" in conditions
    db = api.config.settings.mysql.database
    change = {"op": "c", "before": None, "after": {"id": 7, "status": "paid", "amount": 50}}
    change["source"] = {"db": db, "table": "orders"}
    box = admin.element(by_id("explain-change"))
    box.clear()
    box.send_keys(json.dumps(change))
    admin.click(by_id("explain-submit"))
    verdict = admin.element(css('#explain-verdicts tr[data-rule="paid_orders"]'))
    assert verdict.get_attribute("data-matched") == "false"
    assert "conditions.amount.gt" in verdict.text and "50" in verdict.text, verdict.text
    admin.screenshot("rules")
    box = admin.element(by_id("explain-change"))
    box.clear()
    box.send_keys(json.dumps({**change, "after": {"id": 7, "status": "paid", "amount": 500}}))
    admin.click(by_id("explain-submit"))
    admin.wait(
        lambda d: (
            d.find_element(*css('#explain-verdicts tr[data-rule="paid_orders"]')).get_attribute("data-matched")
            == "true"
        ),
        what="the rule to match",
    )
    assert "order 7" in admin.text(by_id("explain-verdicts"))


def test_a_replay_started_in_the_page_finishes_with_the_expected_runs(admin: Browser, api: ApiServer) -> None:
    tag = uuid.uuid4().hex[:6]
    for i in range(3):
        trigger(api, {"message": f"rp{tag}{i}"})
    admin.open("/replays")
    admin.fill(by_id("replay-source"), "invoke:echo")
    admin.fill(by_id("replay-where"), f"params.message ~ ^rp{tag}[0-9]$")
    dry_run = admin.element(by_id("replay-dry-run"))
    if dry_run.is_selected():
        dry_run.click()
    admin.click(by_id("replay-submit"))
    admin.wait_text("started", by_id("replay-result"))
    state = by_id("replay-state")
    admin.wait(
        lambda d: d.find_element(*state).get_attribute("data-state") != "running", 90, what="the replay to finish"
    )
    assert admin.element(state).get_attribute("data-state") == "finished"
    progress = admin.text(by_id("replay-progress"))
    assert "sent 3" in progress, progress
    bar = admin.element(by_id("replay-bar"))
    assert bar.get_attribute("value") == bar.get_attribute("max")
    admin.screenshot("replays")

    with api.client("read") as reader:

        def replayed() -> list[dict[str, Any]]:
            runs = reader.get("/api/runs", params={"trigger_kind": "replay", "plugin": "echo", "limit": 100}).json()
            return [r for r in runs["runs"] if str((r.get("output") or {}).get("message", "")).startswith(f"rp{tag}")]

        runs = wait_for(lambda: len(r := replayed()) >= 3 and r, 60, what="three replayed runs")
    assert sorted(r["output"]["message"] for r in runs) == [f"rp{tag}{i}" for i in range(3)]
    admin.open("/runs?trigger_kind=replay&plugin=echo")
    for r in runs:
        admin.element(row(r["invocation_id"]))
    admin.open("/runs")
    admin.element(row(runs[0]["invocation_id"]))
    admin.screenshot("runs")


def test_a_read_only_session_is_offered_nothing_that_changes_anything(page: Browser, api: ApiServer) -> None:
    page.sign_in(api.tokens["read"], "/plugins/echo")
    page.element(by_id("plugin-parameters"))
    assert not page.exists(by_id("trigger-form")) and not page.exists(by_id("reload-form"))
    page.open("/schedules")
    page.element(css('[data-testid="schedule-row"][data-schedule="nightly"]'))
    assert not page.exists(by_testid("pause-nightly"))
    page.open("/dlq")
    page.element(by_id("dlq"))
    assert not page.exists(css('input[name="dlq_id"]'))
    page.open("/replays")
    page.element(by_id("replay-progress"))
    assert not page.exists(by_id("replay-form"))


def test_a_forged_request_cannot_act_with_the_session(admin: Browser, api: ApiServer) -> None:
    """Same origin without the CSRF token: refused (403). From another site: the SameSite=Strict cookie
    is not sent, so the request is anonymous (401). Either way the schedule stays as it was."""
    admin.open("/schedules")
    admin.element(by_testid("pause-nightly"))
    status = admin.driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch('/api/schedules/nightly/pause', {method: 'POST', credentials: 'same-origin'})"
        ".then(r => done(r.status), e => done(String(e)));"
    )
    assert status == 403
    forged = (
        f'<form method="post" action="{api.base_url}/api/schedules/nightly/pause" id="f"></form>'
        "<script>document.getElementById('f').submit()</script>"
    )
    admin.driver.get("data:text/html," + forged)
    admin.wait(lambda d: d.current_url.startswith(api.base_url), what="the forged form to be posted")
    assert '"status":401' in admin.text().replace(" ", "")
    admin.console_errors()  # the refused requests are logged by chromium as failed loads
    with api.client("read") as reader:
        nightly = {s["name"]: s for s in reader.get("/api/schedules").json()}["nightly"]
    assert nightly["paused"] is False


def test_sign_out_ends_the_session(admin: Browser, api: ApiServer) -> None:
    cookie = admin.session_cookie()
    assert cookie is not None and cookie["httpOnly"] and cookie.get("sameSite") == "Strict"
    admin.open("/")
    admin.element(by_testid("component-runner"))
    admin.screenshot("overview-later")  # with the runs, failures and charts of the tests before
    admin.sign_out()
    assert admin.session_cookie() is None
    admin.element(by_id("login-form"))
    admin.open("/runs")
    admin.wait_path("/login")
    # the old cookie is worth nothing now: the session is gone on the server, not only in the browser
    admin.driver.add_cookie({"name": cookie["name"], "value": cookie["value"], "path": "/"})
    admin.open("/runs")
    admin.wait_path("/login")
    answer = httpx.get(f"{api.base_url}/runs", cookies={cookie["name"]: cookie["value"]}, follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"].startswith("/login")
    assert not admin.elements((By.ID, "signed-in-as"))


def test_a_row_change_runs_page_marks_the_changed_columns(admin: Browser, api: ApiServer) -> None:
    # a cdc run as the runner records it: its trigger carries the row before and after the change
    trigger = {
        "kind": "cdc",
        "rule": "paid_orders",
        "event_id": "1:binlog.000001:4:0",
        "table": "shop.orders",
        "op": "u",
        "before": {"id": 7, "status": "new", "amount": 120},
        "after": {"id": 7, "status": "paid", "amount": 120},
    }
    result = a_result("row-diff-run", trigger_kind="cdc", trigger=trigger, params={"message": "order 7"})
    RunStore(api.config.settings).record(result)
    admin.open("/runs/row-diff-run")
    rows = {
        r.get_attribute("data-column"): r.get_attribute("data-changed")
        for r in admin.elements(css("#row-change tr[data-column]"))
    }
    assert rows == {"id": "false", "status": "true", "amount": "false"}, rows
    assert "changed" in admin.element(css('#row-change tr[data-column="status"]')).text


def wait_dead_letter(admin: Browser, dlq_id: str) -> Locator:
    """Reloads /dlq until it lists `dlq_id` (the page lists what the topic holds when it is loaded)."""
    entry = css(f'[data-testid="dlq-row"][data-dlq-id="{dlq_id}"]')
    admin.open("/dlq")

    def listed(_driver: Any) -> bool:
        if admin.exists(entry):
            return True
        admin.driver.refresh()
        return False

    admin.wait(listed, 30, what=f"dead letter {dlq_id}")
    return entry


def signed_in_pages(admin: Browser, api: ApiServer) -> list[tuple[str, str]]:
    """(name, path) of every page an admin sees, with data in them: a finished run for a run's page
    and a dead letter listed with its checkbox."""
    run = trigger(api, {"message": "access"})["invocation_id"]
    wait_dead_letter(admin, trigger(api, {"mode": "raise", "message": "access"})["invocation_id"])
    return [
        ("Overview", "/"),
        ("Runs", "/runs"),
        ("a run's page", f"/runs/{run}"),
        ("Plugins", "/plugins"),
        ("echo's page with its trigger form", "/plugins/echo"),
        ("Schedules", "/schedules"),
        ("Rules", "/rules"),
        ("Dead letters", "/dlq"),
        ("Replays", "/replays"),
    ]


def open_page(session: Browser, path: str) -> None:
    session.open(path)
    session.element(by_id("page-title"))
    if path == "/rules":  # with the explain box's verdicts shown
        session.click(by_id("explain-submit"))
        session.element(css("#explain-verdicts tr[data-rule]"))


def test_every_form_control_has_an_accessible_label(page: Browser, api: ApiServer) -> None:
    missing: dict[str, list[str]] = {}
    page.open("/login")
    page.element(by_id("login-form"))
    missing["sign-in page"] = unlabelled_controls(page)
    page.sign_in(api.tokens["admin"])
    for name, path in signed_in_pages(page, api):
        open_page(page, path)
        missing[name] = unlabelled_controls(page)
    assert not {name: keys for name, keys in missing.items() if keys}, (
        f"form controls without a label (<label for>, a wrapping <label>, aria-label or aria-labelledby): {missing}"
    )


def test_tab_reaches_every_link_and_control_on_every_page(page: Browser, api: ApiServer) -> None:
    unreached: dict[str, list[str]] = {}
    page.open("/login")
    page.element(by_id("login-form"))
    unreached["sign-in page"], _ = unreached_by_tab(page)
    page.sign_in(api.tokens["admin"])
    for name, path in signed_in_pages(page, api):
        open_page(page, path)
        missed, order = unreached_by_tab(page)
        print(f"{name}: {len(set(order))} elements focused in {len(order)} focus moves")
        unreached[name] = missed
    assert not {name: keys for name, keys in unreached.items() if keys}, (
        f"visible links and controls that Tab from the top of the page never focuses: {unreached}"
    )


def test_the_sign_in_form_works_with_the_keyboard_alone(page: Browser, api: ApiServer) -> None:
    page.open("/runs")
    page.wait_path("/login")
    page.element(by_id("login-form"))
    for _ in range(10):  # Tab from wherever the page put the focus until the token field has it
        if focused_id(page) == "token":
            break
        press(page, Keys.TAB)
    assert focused_id(page) == "token", "Tab never focused the token field"
    press(page, api.tokens["admin"])
    press(page, Keys.TAB)
    assert focused_id(page) == "login-submit", f"Tab from the token field focused #{focused_id(page)}"
    press(page, Keys.ENTER)
    assert "test-admin" in page.element(by_id("signed-in-as")).text
    page.wait_path("/runs")
    # and the Enter key in the field submits as well
    page.sign_out()
    page.open("/plugins")
    page.wait_path("/login")
    page.wait(lambda _d: focused_id(page) == "token", what="the token field focused on load (autofocus)")
    press(page, api.tokens["read"] + Keys.ENTER)
    assert "test-read" in page.element(by_id("signed-in-as")).text
    page.wait_path("/plugins")


@pytest.mark.parametrize(
    ("path", "live", "selector"),
    [
        ("/", "overview-live", 'a[href="/runs?status=failed"]'),
        ("/schedules", "schedules-live", '[data-testid="pause-nightly"]'),
    ],
)
def test_a_live_refresh_leaves_the_keyboard_focus_where_it_was(
    admin: Browser, path: str, live: str, selector: str
) -> None:
    """The live parts of Overview (every 5 s) and Schedules (every 15 s) are swapped in place: a
    keyboard user on a link or button in them must not be thrown back to the top of the page."""
    admin.open(path)
    admin.element(by_id(live))
    admin.driver.execute_script(
        "window.__swaps = 0; document.body.addEventListener('htmx:afterSettle',"
        " e => { if (e.detail.target.id === arguments[0]) window.__swaps++; });",
        live,
    )
    target = f"return document.activeElement && document.activeElement.matches({json.dumps(selector)})"
    for _ in range(60):
        if admin.driver.execute_script(target):
            break
        press(admin, Keys.TAB)
    assert admin.driver.execute_script(target), f"Tab never focused {selector}"
    admin.wait(lambda d: d.execute_script("return window.__swaps") >= 1, 40, what=f"#{live} refreshed")
    focused = admin.driver.execute_script("return document.activeElement.outerHTML.slice(0, 120)")
    assert admin.driver.execute_script(target), f"after the refresh of #{live} the focus is on {focused}"


def cdcflow(api: ApiServer, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "console.cli", "--config", str(api.config.path), *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cancelling_a_running_run_in_its_page_is_what_the_cli_and_api_report(admin: Browser, api: ApiServer) -> None:
    with api.client("trigger") as client:
        sent = client.post("/api/plugins/echo/invocations", json={"params": {"mode": "sleep", "seconds": 25}})
    assert sent.status_code == 202, sent.text
    invocation_id = sent.json()["invocation_id"]
    admin.open(f"/runs/{invocation_id}")
    admin.wait(
        lambda d: d.find_element(*by_id("run-state")).get_attribute("data-status") == "running",
        30,
        what="the run shown running",
    )
    started = time.monotonic()
    admin.click(by_id("run-cancel-submit"))
    status = admin.wait(
        lambda d: (
            d.find_elements(*by_id("run-status")) and d.find_element(*by_id("run-status")).get_attribute("data-status")
        ),
        15,
        what="the run's final status",
    )
    assert status == "cancelled" and time.monotonic() - started < 15
    assert "Cancelled" in admin.element(by_id("run-error")).text
    assert not admin.exists(by_id("run-cancel")), "a finished run offers no cancel"
    admin.screenshot("run-cancelled")
    with api.client("read") as reader:
        assert reader.get(f"/api/runs/{invocation_id}").json()["result"]["status"] == "cancelled"
    shown = cdcflow(api, "runs", "show", invocation_id)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["status"] == "cancelled"
    with api.client("admin") as client:  # cancelling it again: the API's 409, as the page would show
        assert client.post(f"/api/runs/{invocation_id}/cancel").status_code == 409


def test_only_an_admin_session_is_offered_cancel(page: Browser, api: ApiServer) -> None:
    with api.client("trigger") as client:
        sent = client.post("/api/plugins/echo/invocations", json={"params": {}, "delay_seconds": 600})
    invocation_id = sent.json()["invocation_id"]
    try:
        page.sign_in(api.tokens["trigger"], f"/runs/{invocation_id}")
        page.element(by_id("run-delayed"))
        assert not page.exists(by_id("run-cancel"))
    finally:
        with api.client("admin") as client:
            assert client.post(f"/api/runs/{invocation_id}/cancel").status_code == 200


def test_a_delayed_trigger_from_the_form_waits_then_runs(admin: Browser, api: ApiServer) -> None:
    admin.open("/plugins/echo")
    message = f"later-{uuid.uuid4().hex[:6]}"
    admin.fill(by_id("param-message"), message)
    admin.fill(by_id("trigger-delay"), "soon")
    admin.click(by_id("trigger-submit"))
    slot = css('[data-error-for="delay_seconds"]')
    error = admin.wait(lambda d: d.find_element(*slot).text.strip(), what="the error next to the delay")
    assert "number" in error.lower(), error
    assert admin.element(by_id("trigger-delay")).get_attribute("aria-invalid") == "true"
    assert not admin.exists(by_testid("invocation-link"))
    admin.fill(by_id("trigger-delay"), "-1")
    admin.click(by_id("trigger-submit"))
    admin.wait(lambda d: "positive" in d.find_element(*slot).text, what="the API's refusal of -1")
    admin.console_errors()  # the refused POSTs (422) are logged by chromium as failed loads
    admin.fill(by_id("trigger-delay"), "3")
    sent_at = time.time()
    admin.click(by_id("trigger-submit"))
    admin.click(by_testid("invocation-link"))
    delayed = admin.element(by_id("run-delayed"))
    assert delayed.get_attribute("data-status") == "delayed"
    admin.screenshot("run-delayed")
    status = admin.wait(
        lambda d: (
            d.find_elements(*by_id("run-status")) and d.find_element(*by_id("run-status")).get_attribute("data-status")
        ),
        30,
        what="the run's result",
    )
    assert status == "success"
    assert json.loads(admin.element(by_id("run-output")).text)["message"] == message
    invocation_id = admin.path.rsplit("/", 1)[1]
    with api.client("read") as reader:
        result = reader.get(f"/api/runs/{invocation_id}").json()["result"]
    started = datetime.fromisoformat(result["started_at"]).timestamp()
    assert started >= sent_at + 2.5, f"ran {started - sent_at:.2f}s after the trigger, not after the 3 s delay"


def test_run_now_on_the_schedules_page_runs_the_schedules_plugin(admin: Browser, api: ApiServer) -> None:
    with api.client("read") as reader:
        before = {r["invocation_id"] for r in reader.get("/api/runs", params={"schedule": "nightly"}).json()["runs"]}
    admin.open("/schedules")
    admin.click(by_testid("run-nightly"))
    link = admin.element(css('#schedule-run-result [data-testid="invocation-link"]'))
    invocation_id = link.text.strip()
    assert invocation_id and invocation_id not in before
    admin.screenshot("schedules-run-now")
    done_at(api, invocation_id)
    with api.client("read") as reader:
        result = reader.get(f"/api/runs/{invocation_id}").json()["result"]
        listed = {r["invocation_id"] for r in reader.get("/api/runs", params={"schedule": "nightly"}).json()["runs"]}
    assert result["plugin"] == "echo" and result["status"] == "success" and result["trigger_kind"] == "schedule"
    assert result["params"]["message"] == "night" and invocation_id in listed
    admin.click(css('#schedule-run-result [data-testid="invocation-link"]'))
    admin.wait_path(f"/runs/{invocation_id}")
    assert admin.element(by_id("run-status")).get_attribute("data-status") == "success"


def test_a_read_only_session_is_offered_no_run_now(page: Browser, api: ApiServer) -> None:
    page.sign_in(api.tokens["read"], "/schedules")
    page.element(css('[data-testid="schedule-row"][data-schedule="nightly"]'))
    assert not page.exists(by_testid("run-nightly")) and not page.exists(by_id("schedule-run-result"))
    page.open("/plugins/echo")
    page.element(by_id("plugin-parameters"))
    assert not page.exists(by_id("trigger-delay"))
