"""The report in a real browser: headless Chromium loads the index, a unit page and the
counterfactual page from file:// URLs, with no console errors, no failed loads, no broken
images or links, and a working unit search; it saves a screenshot of each page.

Chromium is driven over the DevTools protocol through ``--remote-debugging-pipe`` (JSON
messages separated by NUL bytes on file descriptors 3 and 4), so no driver or websocket
package is needed. The test skips when /usr/bin/chromium is missing, except in CI (CI=true),
where ``scripts/install_chromium.sh`` must have installed it.

Environment:
- ``REPORT_DIR``: check this already built report instead of building the tiny one
  (e.g. ``results/default/report`` after ``snakemake --cores 2``);
- ``REPORT_SCREENSHOTS``: also copy the screenshots into this folder (e.g. ``docs/img``).

Each page's time to its load event is printed (``pytest -s`` shows it) for the benchmark
record; the test does not judge it, as a shared machine's timings are noise.
"""

from __future__ import annotations

import base64
import json
import os
import re
import select
import shutil
import subprocess
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from tests.test_report import built_report

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-pipe",
)
WINDOW = {"width": 1280, "height": 900}
MAX_SCREENSHOT_HEIGHT = 2400
TIMEOUT_S = 60.0

if not CHROMIUM.exists():
    if os.environ.get("CI") == "true":
        pytest.fail("CI needs /usr/bin/chromium: run scripts/install_chromium.sh first", pytrace=False)
    pytestmark = pytest.mark.skip(reason="/usr/bin/chromium is missing; scripts/install_chromium.sh installs it")

# Forces lazy images to load, waits for every image, and lists the broken ones and all links.
PAGE_CHECK = """
(async () => {
  const images = Array.from(document.images);
  for (const img of images) img.loading = "eager";
  await Promise.all(images.map((img) => img.complete ? null : new Promise((done) => {
    img.addEventListener("load", done); img.addEventListener("error", done);
  })));
  return {
    images: images.length,
    broken: images.filter((img) => !(img.complete && img.naturalWidth > 0)).map((img) => img.getAttribute("src")),
    links: Array.from(document.querySelectorAll("a[href]")).map((a) => a.href),
  };
})()
"""

SEARCH_CHECK = """
(() => {
  const query = document.getElementById("unit-query");
  const visible = () => Array.from(document.querySelectorAll("#unit-table tbody tr")).filter((r) => !r.hidden);
  const all = visible().length;
  query.value = %s;
  query.dispatchEvent(new Event("input"));
  const found = visible().map((r) => r.dataset.unit);
  query.value = "";
  query.dispatchEvent(new Event("input"));
  const counter = document.getElementById("unit-count").textContent;
  return {all: all, found: found, restored: visible().length, counter: counter};
})()
"""


class Browser:
    """A headless Chromium and one page, spoken to over the DevTools pipe."""

    def __init__(self, profile: Path):
        to_browser, self._browser_in = os.pipe()
        self._browser_out, from_browser = os.pipe()

        def wire_pipes() -> None:
            # Chromium reads commands on fd 3 and writes replies on fd 4.
            read_end, write_end = os.dup(to_browser), os.dup(from_browser)
            os.dup2(read_end, 3)
            os.dup2(write_end, 4)

        self.process = subprocess.Popen(
            [str(CHROMIUM), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=wire_pipes,
            close_fds=False,
        )
        os.close(to_browser)
        os.close(from_browser)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable", session=self.session)
        self.call(
            "Emulation.setDeviceMetricsOverride", session=self.session, deviceScaleFactor=1, mobile=False, **WINDOW
        )

    def call(self, method: str, session: str | None = None, **params) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._browser_in, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._receive()
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def wait_for(self, method: str) -> dict:
        for position, event in enumerate(self.events):
            if event.get("method") == method:
                return self.events.pop(position)
        while True:
            event = self._receive()
            if event.get("method") == method:
                return event
            self.events.append(event)

    def open(self, path: Path) -> float:
        """Navigate to ``path``; return the seconds until its load event."""
        self.events.clear()
        started = time.perf_counter()
        self.call("Page.navigate", session=self.session, url=path.resolve().as_uri())
        self.wait_for("Page.loadEventFired")
        return time.perf_counter() - started

    def evaluate(self, expression: str):
        result = self.call(
            "Runtime.evaluate", session=self.session, expression=expression, awaitPromise=True, returnByValue=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result["result"]["value"]

    def screenshot(self, path: Path) -> None:
        height = self.call("Page.getLayoutMetrics", session=self.session)["cssContentSize"]["height"]
        clip = {"x": 0, "y": 0, "width": WINDOW["width"], "height": min(height, MAX_SCREENSHOT_HEIGHT), "scale": 1}
        shot = self.call(
            "Page.captureScreenshot", session=self.session, format="png", clip=clip, captureBeyondViewport=True
        )
        path.write_bytes(base64.b64decode(shot["data"]))

    def problems(self) -> list[str]:
        """Console errors, uncaught exceptions and failed loads seen since the last :meth:`open`."""
        found = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                found.append(f"exception: {params['exceptionDetails'].get('text')}")
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                found.append(f"console.{params['type']}: {[a.get('value') for a in params.get('args', [])]}")
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                found.append(f"log: {params['entry'].get('text')} {params['entry'].get('url', '')}")
            elif method == "Network.loadingFailed":
                found.append(f"load failed: {params.get('errorText')}")
        return found

    def _receive(self) -> dict:
        deadline = time.monotonic() + TIMEOUT_S
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._browser_out], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise TimeoutError(f"Chromium sent nothing for {TIMEOUT_S:.0f} s")
            chunk = os.read(self._browser_out, 1 << 16)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe")
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(message)

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except (RuntimeError, TimeoutError, OSError):
            self.process.kill()
        self.process.wait(timeout=TIMEOUT_S)
        os.close(self._browser_in)
        os.close(self._browser_out)


@pytest.fixture(scope="module")
def site(request, tmp_path_factory) -> Path:
    given = os.environ.get("REPORT_DIR")
    if given:
        return Path(given)
    return built_report(request.getfixturevalue("finished_run"), tmp_path_factory.mktemp("browser-report"))


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chromium = Browser(tmp_path_factory.mktemp("chromium-profile"))
    yield chromium
    chromium.close()


def unit_page_of(site: Path) -> Path:
    """The page of the index's first unit: the strongest one."""
    first = re.search(r"data-unit='(\d+)'", (site / "index.html").read_text())
    assert first, "the index lists no unit"
    return site / "units" / f"{first.group(1)}.html"


@pytest.mark.parametrize("page", ["index", "unit", "counterfactuals"])
def test_page_loads_cleanly_with_all_images_and_links(site, browser, page, tmp_path):
    path = unit_page_of(site) if page == "unit" else site / f"{page}.html"
    seconds = browser.open(path)
    print(f"report page {path.relative_to(site)} loaded in {seconds:.3f} s")
    check = browser.evaluate(PAGE_CHECK)
    shot = tmp_path / f"report-{page}.png"
    browser.screenshot(shot)
    if os.environ.get("REPORT_SCREENSHOTS"):
        target = Path(os.environ["REPORT_SCREENSHOTS"])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, target / shot.name)

    assert browser.problems() == []
    assert check["broken"] == []
    missing = [
        href for href in check["links"] if href.startswith("file:") and not Path(unquote(urlparse(href).path)).exists()
    ]
    assert missing == []
    assert not any(href.startswith(("http:", "https:")) for href in check["links"]), "the report must work offline"
    assert shot.stat().st_size > 10_000
    if page != "counterfactuals" or any((site / "img/counterfactuals").iterdir()):
        assert check["images"] > 0


def test_unit_search_filters_the_table(site, browser):
    browser.open(site / "index.html")
    unit = unit_page_of(site).stem
    result = browser.evaluate(SEARCH_CHECK % json.dumps(unit))

    assert result["found"] == [unit]
    assert result["restored"] == result["all"] > 1
    assert result["counter"] == str(result["all"])
    assert browser.problems() == []
