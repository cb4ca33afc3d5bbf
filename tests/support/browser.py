"""A real headless browser for the dashboard's tests: Debian's chromium driven by Debian's
chromedriver through Selenium (both installed by stack/bootstrap.sh).

The driver and the browser are named by path (ChromeService(executable_path=...) and
options.binary_location), so Selenium Manager is never asked for one and nothing is downloaded;
SE_OFFLINE is set as well, and chromium runs without its background network traffic (component
updates, sync, field trials).

    with browser(base_url) as b:
        b.sign_in(token)
        b.open("/runs")
        b.wait_text("echo")
        b.screenshot("runs")
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.support import STATE

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOTS = STATE / "screenshots"
WIDTH, HEIGHT = 1280, 800

T = TypeVar("T")
Locator = tuple[str, str]


def by_testid(value: str) -> Locator:
    return (By.CSS_SELECTOR, f'[data-testid="{value}"]')


def by_id(value: str) -> Locator:
    return (By.ID, value)


def css(selector: str) -> Locator:
    return (By.CSS_SELECTOR, selector)


def chromium_options(width: int = WIDTH, height: int = HEIGHT) -> webdriver.ChromeOptions:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",  # we run as root
        "--disable-dev-shm-usage",
        f"--window-size={width},{height}",
        "--hide-scrollbars",  # screenshots of the page, not of the scrollbar
        "--force-device-scale-factor=1",
        "--lang=en-US",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--disable-extensions",
        "--metrics-recording-only",
        "--disable-features=Translate,OptimizationHints,MediaRouter",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return options


# Run in every page before its own scripts: remembers each EventSource the page opens.
WATCH_EVENT_SOURCES = """
(() => {
  const Native = window.EventSource;
  if (!Native || Native.__watched) return;
  window.__eventSources = [];
  class Watched extends Native {
    constructor(url, init) { super(url, init); window.__eventSources.push(this); }
  }
  Watched.__watched = true;
  window.EventSource = Watched;
})();
"""


class Browser:
    """A driver bound to the dashboard's base URL, with the waits and helpers the tests share."""

    def __init__(self, driver: WebDriver, base_url: str, timeout: float = 15.0) -> None:
        self.driver = driver
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    # ------------------------------------------------------------------ navigation

    def open(self, path: str = "/") -> None:
        self.driver.get(self.base_url + path)

    @property
    def path(self) -> str:
        """The current URL without the base (path, query and fragment)."""
        url = self.driver.current_url
        return url[len(self.base_url) :] if url.startswith(self.base_url) else url

    def resize(self, width: int, height: int) -> None:
        """The page's viewport set to exactly width x height, so a screenshot is that size (a headless
        window's viewport is smaller than its --window-size, and a window may not get that narrow)."""
        self.driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )

    # ------------------------------------------------------------------ waits

    def wait(self, condition: Callable[[WebDriver], T], timeout: float | None = None, what: str = "") -> T:
        """WebDriverWait until `condition` returns something truthy; on timeout the page's URL and
        visible text are in the failure."""
        try:
            return WebDriverWait(
                self.driver,
                self.timeout if timeout is None else timeout,
                poll_frequency=0.05,
                ignored_exceptions=(StaleElementReferenceException,),
            ).until(condition)
        except TimeoutException:
            raise AssertionError(
                f"timed out after {self.timeout if timeout is None else timeout}s waiting for "
                f"{what or condition!r} on {self.path}\n--- page text ---\n{self.text()[:3000]}"
            ) from None

    def element(self, locator: Locator, timeout: float | None = None) -> WebElement:
        """The element, once it is visible."""
        return self.wait(ec.visibility_of_element_located(locator), timeout, what=f"element {locator[1]}")

    def present(self, locator: Locator, timeout: float | None = None) -> WebElement:
        """The element, once it is in the DOM (visible or not)."""
        return self.wait(ec.presence_of_element_located(locator), timeout, what=f"element {locator[1]} in the DOM")

    def elements(self, locator: Locator) -> list[WebElement]:
        return self.driver.find_elements(*locator)

    def exists(self, locator: Locator) -> bool:
        return bool(self.driver.find_elements(*locator))

    def wait_text(self, text: str, locator: Locator = (By.TAG_NAME, "body"), timeout: float | None = None) -> str:
        """Waits until `text` shows in the element's visible text; returns that text."""

        def shown(driver: WebDriver) -> str | bool:
            found = driver.find_elements(*locator)
            content = " ".join(e.text for e in found)
            return content if text in content else False

        return self.wait(shown, timeout, what=f"text {text!r} in {locator[1]}")

    def wait_no_text(self, text: str, locator: Locator = (By.TAG_NAME, "body"), timeout: float | None = None) -> None:
        def gone(driver: WebDriver) -> bool:
            return all(text not in e.text for e in driver.find_elements(*locator))

        self.wait(gone, timeout, what=f"text {text!r} gone from {locator[1]}")

    def wait_path(self, prefix: str, timeout: float | None = None) -> str:
        self.wait(lambda _d: self.path.startswith(prefix), timeout, what=f"the URL to start with {prefix!r}")
        return self.path

    def text(self, locator: Locator = (By.TAG_NAME, "body")) -> str:
        try:
            return " ".join(e.text for e in self.driver.find_elements(*locator))
        except StaleElementReferenceException:
            return ""

    # ------------------------------------------------------------------ forms

    def fill(self, locator: Locator, value: str) -> WebElement:
        field = self.element(locator)
        field.clear()
        field.send_keys(value)
        return field

    def choose(self, locator: Locator, visible_text: str) -> None:
        Select(self.element(locator)).select_by_visible_text(visible_text)

    def click(self, locator: Locator) -> None:
        self.wait(ec.element_to_be_clickable(locator), what=f"{locator[1]} clickable").click()

    # ------------------------------------------------------------------ sign in

    def submit_sign_in(self, token: str, path: str = "/") -> None:
        """Opens `path` (which sends a signed-out browser to the sign-in form) and submits `token`."""
        self.open(path)
        self.wait_path("/login")
        self.fill(by_id("token"), token)
        self.click(by_id("login-submit"))

    def sign_in(self, token: str, path: str = "/") -> None:
        """Signs in through the dashboard's sign-in form (not by setting a cookie); back on `path`."""
        self.submit_sign_in(token, path)
        self.element(by_id("signed-in-as"))
        self.wait_path(path)

    def sign_out(self) -> None:
        self.click(by_id("logout"))
        self.wait_path("/login")

    def session_cookie(self) -> dict[str, Any] | None:
        cookies = [c for c in self.driver.get_cookies() if "session" in c["name"].lower()]
        return cookies[0] if cookies else None

    # ------------------------------------------------------------------ server-sent events

    def wait_event_source(self, url_part: str, timeout: float | None = None) -> None:
        """Waits until the page holds an open EventSource whose URL contains `url_part` (see
        WATCH_EVENT_SOURCES), so a test knows the page listens before it makes something happen."""
        script = "return (window.__eventSources || []).some(s => s.url.includes(arguments[0]) && s.readyState === 1)"
        self.wait(lambda d: d.execute_script(script, url_part), timeout, what=f"an open EventSource on {url_part}")

    # ------------------------------------------------------------------ evidence

    def screenshot(self, name: str) -> Path:
        """The visible page as .state/screenshots/<name>.png."""
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        if not self.driver.save_screenshot(str(path)):
            raise AssertionError(f"chromium did not save the screenshot {path}")
        return path

    def console_errors(self) -> list[str]:
        """Severe browser console entries since the last call: JS errors, failed loads of the page's
        own resources (not chromium's own /favicon.ico probe, which a page without an icon 404s)."""
        return [
            e["message"]
            for e in self.driver.get_log("browser")
            if e.get("level") == "SEVERE" and "/favicon.ico " not in e["message"]
        ]

    def horizontal_overflow(self) -> int:
        """How many CSS pixels the page is wider than its viewport (0: nothing overflows sideways)."""
        return int(
            self.driver.execute_script(
                "return Math.max(document.documentElement.scrollWidth, document.body.scrollWidth)"
                " - document.documentElement.clientWidth"
            )
        )


def new_driver(width: int = WIDTH, height: int = HEIGHT, log_path: Path | None = None) -> WebDriver:
    """Debian's chromium through Debian's chromedriver; fails clearly when either is missing."""
    for binary in (CHROMIUM, CHROMEDRIVER):
        if not binary.exists():
            raise AssertionError(f"{binary} is missing: run `bash stack/bootstrap.sh` (apt chromium chromium-driver)")
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager, were it ever asked, stays offline
    service = webdriver.ChromeService(
        executable_path=str(CHROMEDRIVER), log_output=str(log_path) if log_path else os.devnull
    )
    return webdriver.Chrome(options=chromium_options(width, height), service=service)


@contextmanager
def browser(base_url: str, width: int = WIDTH, height: int = HEIGHT, log_path: Path | None = None) -> Iterator[Browser]:
    """A fresh headless chromium (own profile, no cookies) for the dashboard at `base_url`."""
    driver = new_driver(width, height, log_path)
    try:
        driver.set_page_load_timeout(30)
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": WATCH_EVENT_SOURCES})
        session = Browser(driver, base_url)
        session.resize(width, height)
        yield session
    finally:
        driver.quit()
