"""Accessibility checks run inside the dashboard's pages in the real browser: which form controls have
no accessible label, and which visible links and controls the Tab key never reaches.

Elements are named by a key built from what a re-render keeps (tag, id, name, href, test id, a
button's text, and the position among elements with the same key), not by node identity: the
Overview and Schedules pages swap their live parts while the keys are pressed."""

from __future__ import annotations

from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.keys import Keys

from tests.support.browser import Browser

# Shared by both checks: window.__accessKey(element) names an element as described above.
KEYS = """
const FOCUSABLE = 'a[href], button, input:not([type=hidden]), select, textarea, [tabindex]:not([tabindex="-1"])';
const describe = e => {
  const tag = e.tagName.toLowerCase();
  const attr = n => e.getAttribute(n) ? `[${n}=${e.getAttribute(n)}]` : '';
  const text = tag === 'button' ? `"${e.textContent.trim().replace(/\\s+/g, ' ')}"` : '';
  const value = e.type === 'checkbox' || e.type === 'radio' ? attr('value') : '';
  return tag + (e.id ? '#' + e.id : '') + attr('name') + attr('href') + attr('data-testid') + value + text;
};
window.__accessKey = e => {
  const d = describe(e);
  const same = [...document.querySelectorAll(FOCUSABLE)].filter(o => describe(o) === d);
  const nth = same.indexOf(e);
  return nth > 0 ? `${d} (${nth + 1})` : d;
};
window.__accessFocusable = () => [...document.querySelectorAll(FOCUSABLE)].filter(e =>
  !e.disabled && !e.closest('[inert]') && e.getClientRects().length > 0
  && getComputedStyle(e).visibility !== 'hidden');
"""

UNLABELLED = """
const named = ids => ids.split(/\\s+/).filter(Boolean).map(i => document.getElementById(i))
  .some(e => e && e.textContent.trim());
const labelled = e =>
  (e.getAttribute('aria-label') || '').trim() !== ''
  || named(e.getAttribute('aria-labelledby') || '')
  || [...(e.labels || [])].some(l => l.textContent.trim())
  || (e.tagName === 'BUTTON' && e.textContent.trim() !== '')
  || (['submit', 'reset', 'button'].includes(e.type) && e.tagName === 'INPUT' && e.value.trim() !== '');
return [...document.querySelectorAll('input:not([type=hidden]), select, textarea, button')]
  .filter(e => !labelled(e)).map(e => window.__accessKey(e));
"""

START_WALK = """
window.__tabbed = [];
document.addEventListener('focusin', ev => window.__tabbed.push(window.__accessKey(ev.target)), true);
if (document.activeElement && document.activeElement !== document.body) document.activeElement.blur();
return window.__accessFocusable().map(e => window.__accessKey(e));
"""


def unlabelled_controls(page: Browser) -> list[str]:
    """Keys of the page's form controls (input, select, textarea, button) that have no accessible
    label: no <label> (for= its id, or wrapping it), no aria-label, no aria-labelledby naming text,
    and, for a button, no text of its own."""
    page.driver.execute_script(KEYS)
    return list(page.driver.execute_script(UNLABELLED))


def unreached_by_tab(page: Browser, batch: int = 10) -> tuple[list[str], list[str]]:
    """Presses Tab from the top of the page (nothing focused) until every visible link, button and
    form control has had the focus, or until twice their number plus 40 presses (a date-time input
    takes a press per field) have not reached them all. Returns (the ones never reached, the order
    the focus went in)."""
    page.driver.execute_script(KEYS)
    expected = list(page.driver.execute_script(START_WALK))
    budget = 2 * len(expected) + 40
    pressed = 0
    reached: list[str] = []
    while pressed < budget:
        ActionChains(page.driver).send_keys(Keys.TAB * batch).perform()
        pressed += batch
        reached = list(page.driver.execute_script("return window.__tabbed"))
        if set(expected) <= set(reached):
            break
    return [key for key in expected if key not in reached], reached


def press(page: Browser, keys: str) -> None:
    """Types `keys` into whatever has the focus, as a keyboard would."""
    ActionChains(page.driver).send_keys(keys).perform()


def focused_id(page: Browser) -> str:
    return str(page.driver.execute_script("return document.activeElement ? document.activeElement.id : ''"))
