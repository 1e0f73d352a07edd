"""The status page in a real headless browser: Debian's chromium driven by selenium, against a real daemon.

Skipped only when chromium or chromedriver is missing (.ci/run installs both).
"""
from __future__ import annotations

import shutil
import time
from typing import Any

import pytest
import requests

from tests.e2e.test_operations import REST, scrape, value, wait_for
from tests.fixtures.daemon import ACCESS_TOKEN

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                                reason="needs Debian's chromium and chromium-driver (apt-get install chromium "
                                       "chromium-driver; .ci/run installs them)")
ADMIN = {"security": {"username": "ops", "password": "admin-pass-4f1c"}}
LEAKY = b'{"name": "dev9", "note": "' + ACCESS_TOKEN.encode() + b'", "password": "hunter2-secret", "temp": '


@pytest.fixture
def browser() -> Any:
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is in the test extra of setup.py")
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


def test_status_page_shows_counts_redacted_errors_and_the_delivery_plot(make_daemon, mqtt_subscriber, browser,
                                                                         tmp_path) -> None:
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

    from selenium.webdriver.common.by import By

    browser.get(f"http://ops:admin-pass-4f1c@127.0.0.1:{daemon.admin_port}/")
    assert browser.title == "rest-gateway status"
    find, find_all = browser.find_element, browser.find_elements
    assert find(By.CSS_SELECTOR, 'meta[http-equiv="refresh"]').get_attribute("content") == "10"
    assert find(By.ID, "mqtt-state").text == "connected"
    assert find(By.ID, "events-sent").text == "3" and find(By.ID, "storage-depth").text == "0"

    row = find(By.CSS_SELECTOR, 'tr.endpoint[data-endpoint="/sensors"]')
    assert row.find_element(By.CSS_SELECTOR, "td.requests").text == "5"
    assert row.find_element(By.CSS_SELECTOR, "td.errors").text == "2"
    assert row.find_element(By.CSS_SELECTOR, "td.converter-errors").text == "2"

    errors = find_all(By.CSS_SELECTOR, "tr.converter-error")
    assert len(errors) == 2
    excerpts = [e.find_element(By.CSS_SELECTOR, "pre.excerpt").text for e in errors]
    leaked = next(text for text in excerpts if "dev9" in text)  # the unparsable body, its start shown
    assert "hunter2" not in leaked and ACCESS_TOKEN not in leaked and leaked.count("***") == 2
    assert any('"temp"' in text for text in excerpts)
    assert "hunter2" not in browser.page_source and ACCESS_TOKEN not in browser.page_source

    points = find_all(By.CSS_SELECTOR, "#rate-plot circle.rate-point")
    assert points, browser.page_source
    assert sum(int(p.get_attribute("data-events")) for p in points) == 3  # every event sent, plotted once
    assert find_all(By.CSS_SELECTOR, "#rate-plot polyline")

    assert find(By.ID, "config-general").text == daemon.config_path
    assert find(By.CSS_SELECTOR, "code.config-connector").text.endswith("rest.json")
    assert time.strftime("%Y-%m-%d", time.gmtime()) in find(By.ID, "config-loaded").text

    shot = tmp_path / "status-page.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 1000
