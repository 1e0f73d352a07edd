"""The status page in a real headless browser: Debian's chromium driven by selenium, against a real daemon.

Skipped only when chromium or chromedriver is missing (.ci/run installs both). The screenshot it takes
is kept as a test artefact: ``status-page.png`` in ``$RGW_ARTIFACTS_DIR``, by default ``.artifacts/`` at
the repository root (git-ignored); its path is printed (``pytest -rP`` shows it).
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.e2e.test_operations import REST, scrape, value, wait_for
from tests.fixtures.daemon import ACCESS_TOKEN, ROOT

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                                reason="needs Debian's chromium and chromium-driver (apt-get install chromium "
                                       "chromium-driver; .ci/run installs them)")
#: where test artefacts are kept after the run (a CI job can collect the folder)
ARTIFACTS = Path(os.environ.get("RGW_ARTIFACTS_DIR") or os.path.join(ROOT, ".artifacts"))
ADMIN = {"security": {"username": "ops", "password": "admin-pass-4f1c"}}
DOM_FACTS = """
const q = (sel) => document.querySelector(sel), text = (sel) => (q(sel) || {}).textContent;
const row = q('tr.endpoint[data-endpoint="/sensors"]');
return {title: document.title, refresh: q('meta[http-equiv="refresh"]').getAttribute("content"),
        mqtt: text("#mqtt-state"), sent: text("#events-sent"), depth: text("#storage-depth"),
        sensors: {requests: row.querySelector("td.requests").textContent,
                  errors: row.querySelector("td.errors").textContent,
                  converter: row.querySelector("td.converter-errors").textContent},
        excerpts: [...document.querySelectorAll("tr.converter-error pre.excerpt")].map(e => e.textContent),
        points: [...document.querySelectorAll("#rate-plot circle.rate-point")].map(c => c.dataset.events),
        polylines: document.querySelectorAll("#rate-plot polyline").length,
        general: text("#config-general"), connector_file: text("code.config-connector"),
        loaded: text("#config-loaded"), html: document.documentElement.outerHTML};
"""
LEAKY = b'{"name": "dev9", "note": "' + ACCESS_TOKEN.encode() + b'", "password": "hunter2-secret", "temp": '


def reloaded(browser: Any) -> bool:
    """Whether the page was loaded anew since the mark was set (False while the browser is navigating)."""
    from selenium.common.exceptions import WebDriverException

    try:
        return bool(browser.execute_script("return window.statusPageMark === undefined "
                                           "&& document.readyState === 'complete'"))
    except WebDriverException:
        return False


@pytest.fixture
def browser() -> Any:
    webdriver = pytest.importorskip("selenium.webdriver",
                                    reason="needs selenium (in the test extra: pip install '.[test]')")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,1600"):
        options.add_argument(flag)
    options.binary_location = CHROMIUM
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def test_status_page_shows_counts_redacted_errors_and_the_delivery_plot(make_daemon, mqtt_subscriber,
                                                                         browser) -> None:
    daemon = make_daemon(REST, general={"admin": ADMIN})
    for index in range(3):
        assert requests.post(daemon.url("/sensors"), json={"name": f"dev{index}", "temp": index},
                             timeout=5).status_code == 200
    assert requests.post(daemon.url("/sensors"), data=LEAKY, timeout=5).status_code == 400  # unparsable
    assert requests.post(daemon.url("/sensors"), json={"temp": 5}, timeout=5).status_code == 400  # no name
    auth = ("ops", "admin-pass-4f1c")
    assert wait_for(lambda: (s := scrape(daemon, auth=auth)) and value(s, "rest_gateway_storage_events") == 0
                    and value(s, "rest_gateway_mqtt_events_sent_total") == 3), daemon.log_text()
    # same basic auth as /metrics
    assert requests.get(daemon.admin_url("/"), timeout=5).status_code == 401
    assert requests.get(daemon.admin_url("/"), auth=("ops", "wrong"), timeout=5).status_code == 401

    browser.get(f"http://ops:admin-pass-4f1c@127.0.0.1:{daemon.admin_port}/")
    # the page refreshes itself every 10 s: read the DOM in one script (one task, no reload in between),
    # so a slow machine never finds an element of the previous page gone stale
    page = browser.execute_script(DOM_FACTS)
    assert page["title"] == "rest-gateway status"
    assert page["refresh"] == "10"
    assert page["mqtt"] == "connected" and page["sent"] == "3" and page["depth"] == "0"
    assert page["sensors"] == {"requests": "5", "errors": "2", "converter": "2"}

    assert len(page["excerpts"]) == 2
    leaked = next(text for text in page["excerpts"] if "dev9" in text)  # the unparsable body, its start shown
    assert "hunter2" not in leaked and ACCESS_TOKEN not in leaked and leaked.count("***") == 2
    assert any('"temp"' in text for text in page["excerpts"])
    assert "hunter2" not in page["html"] and ACCESS_TOKEN not in page["html"]

    assert page["points"], page["html"]
    assert sum(int(events) for events in page["points"]) == 3  # every event sent, plotted once
    assert page["polylines"] == 1

    assert page["general"] == daemon.config_path and page["connector_file"].endswith("rest.json")
    assert time.strftime("%Y-%m-%d", time.gmtime()) in page["loaded"]

    # it refreshes itself: a mark left in this page's window is gone once the browser has reloaded it
    browser.execute_script("window.statusPageMark = 1")
    assert wait_for(lambda: reloaded(browser), timeout=60)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "status-page.png"
    shot.unlink(missing_ok=True)  # so the size below is this run's screenshot, not an earlier one
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 1000
    print(f"status page screenshot: {shot}")
