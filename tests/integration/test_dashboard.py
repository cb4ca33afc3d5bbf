"""The web dashboard (console/web, served by the API server at /) in a real headless chromium
against the real pipeline (`cdcflow run --only streams --only runners`) and a real API server.

Screenshots of each page land in .state/screenshots/ (1280x800, and Overview at 420x800)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import isolated_config_data, remove_test_resources, write_config
from tests.support.api import ApiServer, api_server
from tests.support.browser import Browser, browser

RULES = {
    "monitored_tables": {
        "orders": {
            "name": "paid_orders",
            "triggers": ["echo"],
            "operations": ["INSERT", "UPDATE"],
            "conditions": {"status": "paid", "amount": {"gt": 100}},
            "params": {"message": "order {after.id}"},
        }
    },
    "schedules": {"nightly": {"plugin": "echo", "cron": "0 3 * * *", "params": {"message": "night"}}},
}


@pytest.fixture(scope="module")
def directory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("dashboard")


@pytest.fixture(scope="module")
def api(directory: Path) -> Iterator[ApiServer]:
    config = write_config(directory, isolated_config_data("dash", RULES))
    try:
        with api_server(config, directory / "api.log") as server:
            yield server
    finally:
        remove_test_resources(config.settings, [])


@pytest.fixture
def page(api: ApiServer, directory: Path) -> Iterator[Browser]:
    """A fresh browser (no cookies) on the API server."""
    with browser(api.base_url, log_path=directory / "chromedriver.log") as session:
        yield session


def test_the_browser_opens_the_api_docs(page: Browser) -> None:
    """Debian's headless chromium through Debian's chromedriver renders a page of the real server."""
    page.open("/docs")
    page.wait(lambda d: d.title == "cdcflow API - Swagger UI", what="the /docs title")
    assert page.driver.capabilities["browserName"] == "chrome"
    assert page.driver.execute_script("return [innerWidth, innerHeight]") == [1280, 800]
