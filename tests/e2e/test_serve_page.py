"""The page at ``/`` in a real headless browser (Debian's ``chromium`` and ``chromium-driver``, driven by
selenium): a dropped file is transcribed, its words shown, and the word spoken at the player's time highlighted.
Skipped, with the reason, where the browser or its driver is not installed (``.ci/run`` installs both)."""

from __future__ import annotations

import base64
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_serve import Server, wav_bytes

CHROMIUM = Path("/usr/bin/chromium")
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"

if not CHROMIUM.is_file() or not Path(DRIVER).is_file():
    pytest.skip(
        f"needs Debian's chromium and chromium-driver ({CHROMIUM}, {DRIVER}): apt-get install chromium chromium-driver",
        allow_module_level=True,
    )

from selenium import webdriver  # noqa: E402 - only where the browser exists
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

DROP = """
const [name, data] = arguments;
const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
const transfer = new DataTransfer();
transfer.items.add(new File([bytes], name, {type: "audio/wav"}));
document.getElementById("drop").dispatchEvent(new DragEvent("drop", {dataTransfer: transfer, bubbles: true}));
"""


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    running = Server()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--autoplay-policy=no-user-gesture-required",
        "--mute-audio",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=DRIVER))
    yield driver
    driver.quit()


def current_words(browser: webdriver.Chrome) -> list[str]:
    return [span.get_attribute("data-start") or "" for span in browser.find_elements(By.CSS_SELECTOR, "span.current")]


def test_a_dropped_file_is_transcribed_and_each_word_lit_at_its_time(server: Server, browser: webdriver.Chrome) -> None:
    browser.get(server.url + "/")
    upload = wav_bytes(45.0, 300)  # two windows: the fake model says one word in each
    browser.execute_script(DROP, "talk.wav", base64.b64encode(upload).decode())
    wait = WebDriverWait(browser, 30)
    wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#transcript span.word")) == 2)
    spans = browser.find_elements(By.CSS_SELECTOR, "#transcript span.word")
    assert [span.text for span in spans] == ["w300", "w300"]
    starts = [float(span.get_attribute("data-start") or "nan") for span in spans]
    ends = [float(span.get_attribute("data-end") or "nan") for span in spans]
    assert starts[0] == 0.0 and ends[0] <= starts[1] < 45.0
    assert "2 words" in browser.find_element(By.ID, "status").text

    # seek into the second word: it alone is lit
    browser.execute_script(
        "const p = document.getElementById('player'); p.currentTime = arguments[0];", starts[1] + 1.0
    )
    wait.until(lambda b: current_words(b) == [spans[1].get_attribute("data-start")])

    # play from the start: the first word is lit while it is heard
    browser.execute_script("const p = document.getElementById('player'); p.currentTime = 0; p.play();")
    wait.until(lambda b: b.execute_script("return document.getElementById('player').currentTime") > 0.2)
    wait.until(lambda b: current_words(b) == [spans[0].get_attribute("data-start")])
    browser.execute_script("document.getElementById('player').pause();")


def test_an_error_is_shown_on_the_page(server: Server, browser: webdriver.Chrome) -> None:
    browser.get(server.url + "/")
    browser.execute_script(DROP, "notes.wav", base64.b64encode(b"not audio" * 50).decode())
    status = browser.find_element(By.ID, "status")
    WebDriverWait(browser, 30).until(lambda b: "could not decode" in status.text)
    assert "error" in (status.get_attribute("class") or "")
