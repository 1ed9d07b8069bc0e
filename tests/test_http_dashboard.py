"""The dashboard in a real browser: Debian's headless Chromium, driven by selenium through
Debian's chromedriver. The page updates itself (server-sent events): a restart shows without
a reload; it fits a phone's width; it uses nothing from outside activator.

With ACTIVATOR_DASHBOARD_SCREENSHOT=FILE, the test also saves the page as FILE (README's
picture: docs/dashboard.png)."""

import os
import shutil
import signal
import socket
import time

import pytest

from harness import PYTHON, wait_for
from http_support import base_url

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                reason="chromium and chromium-driver are not installed (scripts/setup test)")


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path / 'chromium'}", "--window-size=1000,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def text_of(driver, css: str) -> str | None:
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    try:
        return driver.find_element("css selector", css).text
    except (NoSuchElementException, StaleElementReferenceException):
        return None


NOTIFIER = ("import os, socket, time; s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); "
            "s.connect(os.environ['NOTIFY_SOCKET']); "
            "s.send(b'READY=1'); s.send(b'STATUS=serving: 3 clients, 12 requests/s'); time.sleep(3600)")
RESTARTS = '[data-unit="worker"] [data-instance="1"] [data-field="restarts"]'


def test_the_dashboard_shows_a_restart_live(activator, browser, tmp_path):
    a = activator({
        "web": """
            description: holds a socket; nobody accepts
            exec: [sleep, infinity]
            sockets:
              http: {listen: "tcp://127.0.0.1:0"}
        """,
        "worker": """
            description: a worker that says hello
            exec: [sh, -c, "echo hello from the worker; exec sleep infinity"]
            instances: 2
            restart: always
            restart_sec: 0.1
        """,
        "api": f"""
            description: says how it is doing with STATUS=
            type: notify
            exec: [{PYTHON}, -c, "{NOTIFIER}"]
        """,
        "broken": """
            exec: [sh, -c, "echo cannot read the config >&2; exit 3"]
            restart: "no"
        """,
    }, args=["--http", "127.0.0.1:0"])
    a.wait_state("broken", "failed")
    browser.get(base_url(a) + "/")
    wait_for(lambda: text_of(browser, RESTARTS) == "0", 20, what="the dashboard's first update")
    browser.execute_script("window.notReloaded = true")
    page_state = text_of(browser, '[data-unit="worker"] [data-instance="1"] [data-field="state"]')
    assert "running" in page_state  # the state is written, not only coloured
    assert "failed" in text_of(browser, '[data-unit="broken"] h2')
    assert "not ready" in text_of(browser, "#ready")
    assert "broken" in text_of(browser, "#problems")
    wait_for(lambda: "12 requests/s" in (text_of(browser, '[data-unit="api"] [data-field="status"]') or ""), 20,
             what="the last STATUS= text on the page")

    port = int(a.status()["units"]["web"]["sockets"][0]["listen"].rsplit(":", 1)[1])
    waiting = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(3)]
    wait_for(lambda: text_of(browser, '[data-socket="http"] [data-field="queue"]') == "3", 20,
             what="3 clients waiting in the accept queue, on the page")

    os.kill(a.host_pids("worker")[0], signal.SIGKILL)
    wait_for(lambda: text_of(browser, RESTARTS) == "1", 20, interval=0.1, what="the restart on the page")
    assert browser.execute_script("return window.notReloaded") is True  # no reload: live

    # Nothing but activator itself was asked for: no external asset.
    urls = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert all(u.startswith(base_url(a)) for u in urls), urls

    screenshot = os.environ.get("ACTIVATOR_DASHBOARD_SCREENSHOT")
    if screenshot:
        wait_for(lambda: "running" in (text_of(browser, '[data-unit="worker"] h2') or ""), 10)
        time.sleep(1.2)  # one more update: CPU over the last second rather than since the start
        browser.set_window_size(1000, 1150)
        browser.save_screenshot(screenshot)

    # A phone's width: nothing wider than the screen, every value still there.
    browser.set_window_size(375, 800)
    wait_for(lambda: browser.execute_script("return document.documentElement.clientWidth") <= 375, 10)
    overflow = browser.execute_script("return document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, overflow
    browser.save_screenshot(str(tmp_path / "narrow.png"))
    assert text_of(browser, RESTARTS).endswith("1")
    for client in waiting:
        client.close()
