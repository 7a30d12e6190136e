"""The storefront page in a real headless Chromium: clicks go in as events, recommendations come back live.

Runs `streamrec serve` as a subprocess and an engine worker in a thread, both on the test's stack.
Chromium and chromedriver come from Debian (installed here when missing and possible; otherwise
the test skips and says why). The screenshot lands in the test's tmp dir and in artifacts/.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deploy.stack import stop_child
from producers.kafka import KafkaSettings
from producers.replay import replay_events
from tests.support.gateway import WorkerThread, co_views, stack_settings
from tests.support.workers import STREAMREC, stack_env

pytestmark = [pytest.mark.stack, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts"
TOKEN = "browser-test-token"
WAIT_S = 15.0  # generous: the machine is shared; the measured latency is reported, not asserted


def _browser_binaries() -> tuple[str, str]:
    """Paths of chromium and chromedriver, installing the Debian packages when missing and allowed."""
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium and driver:
        return chromium, driver
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("chromium/chromedriver missing and cannot be installed (needs root and apt-get)")
    try:
        env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update"], check=True, capture_output=True, timeout=300, env=env)
        subprocess.run(
            ["apt-get", "install", "-y", "chromium", "chromium-driver"],
            check=True,
            capture_output=True,
            timeout=600,
            env=env,
        )
    except (subprocess.SubprocessError, OSError) as exc:
        pytest.skip(f"could not install chromium and chromium-driver with apt-get: {exc}")
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.skip("apt-get ran, but chromium or chromedriver is still not on PATH")
    return chromium, driver


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    webdriver = pytest.importorskip(
        "selenium.webdriver", reason="selenium is not installed (pip install selenium)"
    )
    chromium, driver_path = _browser_binaries()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver path: selenium must not try to download one (the machine is offline).
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver_path))
    try:
        yield driver
    finally:
        driver.quit()  # stops the chromedriver process selenium started (by its PID)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def gateway_url(kafka_settings: KafkaSettings, redis_url: str, tmp_path: Path) -> Iterator[str]:
    """`streamrec serve` on a free port, stopped by its PID."""
    port = _free_port()
    env = stack_env(
        kafka_settings,
        redis_url,
        STREAMREC_GATEWAY_TOKEN=TOKEN,
        STREAMREC_ENGINE_EXCLUDE_HISTORY="false",
        STREAMREC_MODEL_DIR=tmp_path / "models",
    )
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        [*STREAMREC, "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"streamrec serve exited with {proc.returncode}: {(tmp_path / 'serve.log').read_text()}"
                )
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=5) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"gateway not healthy in 90 s: {(tmp_path / 'serve.log').read_text()}")
            time.sleep(0.2)
        yield url
    finally:
        returncode = stop_child(proc, 15)
        log.close()
    # SIGTERM is a clean stop: streams closed, consumer and producer shut down, exit status 0.
    assert returncode == 0, (tmp_path / "serve.log").read_text()


def _catalogue(url: str) -> list[str]:
    with urllib.request.urlopen(f"{url}/catalogue.json", timeout=10) as resp:
        return [item["item_id"] for item in json.load(resp)["items"]]


def _panel(driver: Any) -> list[str]:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('#recs li')).map(li => li.dataset.item)"
    )


def _wait(driver: Any, what: str, condition: Any) -> Any:
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, WAIT_S, poll_frequency=0.05).until(lambda d: condition(d))
    except TimeoutException:
        pytest.fail(f"{what}: not seen within {WAIT_S:.0f} s; panel shows {_panel(driver)}")


@pytest.mark.parametrize("transport", ["sse", "ws"])
def test_storefront_updates_live_in_a_real_browser(
    transport: str,
    browser: Any,
    gateway_url: str,
    kafka_settings: KafkaSettings,
    redis_url: str,
    tmp_path: Path,
) -> None:
    from selenium.webdriver.common.by import By

    items = _catalogue(gateway_url)
    a, b, c, d, e, f, g, h = items[:8]  # all on the first page of the grid
    seed = co_views([[a, b, c, d], [e, f, g, h]])
    replay_events(seed, kafka_settings)
    settings = stack_settings(kafka_settings, redis_url, tmp_path / "models", exclude_history=False)
    user = f"shopper-{uuid.uuid4().hex[:6]}"
    latencies: dict[str, float | None] = {}

    browser.get_log("browser")  # drain what an earlier test's page logged
    with WorkerThread(settings) as worker:
        worker.wait_applied(len(seed))
        browser.get(f"{gateway_url}/?user={user}&transport={transport}#token={TOKEN}")
        _wait(
            browser, "the stream connects", lambda d: d.find_element(By.ID, "status").text.startswith("live")
        )
        _wait(
            browser,
            "the first list (from the state)",
            lambda d: d.execute_script("return window.streamrec.updates") >= 1,
        )

        def click_and_see(selector: str, what: str, condition: Any) -> None:
            updates = browser.execute_script("return window.streamrec.updates")
            browser.find_element(By.CSS_SELECTOR, selector).click()
            _wait(
                browser,
                what,
                lambda d: (
                    d.execute_script("return window.streamrec.updates") > updates and condition(_panel(d))
                ),
            )
            latencies[what] = browser.execute_script("return window.streamrec.lastLatencyMs")

        click_and_see(f'.card[data-item="{a}"]', f"neighbours of {a}", lambda p: {b, c} <= set(p))
        assert browser.execute_script("return window.streamrec.lastKind") == "recs"
        click_and_see(
            f'.card[data-item="{e}"] button.cart',
            f"neighbours of {e} after a cart",
            lambda p: {f, g} <= set(p),
        )
        # Buy an item straight from the panel: bought items are never recommended.
        click_and_see(
            f'#recs li[data-item="{b}"] button.buy', f"{b} gone after its purchase", lambda p: b not in p
        )
        assert c in _panel(browser)
        _wait(
            browser,
            "the bought mark",
            lambda d: (
                "bought" in d.find_element(By.CSS_SELECTOR, f'.card[data-item="{b}"]').get_attribute("class")
            ),
        )

        assert browser.find_element(By.ID, "status").text == (
            "live · SSE" if transport == "sse" else "live · WebSocket"
        )
        shot = tmp_path / f"storefront-{transport}.png"
        assert browser.save_screenshot(str(shot))
        ARTIFACTS.mkdir(exist_ok=True)
        shutil.copy(shot, ARTIFACTS / shot.name)
        (ARTIFACTS / f"storefront-{transport}-latency.json").write_text(json.dumps(latencies, indent=2))
        print(f"{transport}: click -> panel update, measured in the page (ms): {latencies}")

    severe = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    browser.get("about:blank")  # close the stream before the gateway stops
    assert severe == [], severe
