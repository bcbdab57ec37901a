"""report.html in a real headless browser (Debian's chromium): it paints, it fits a laptop
screen (1280 px) without horizontal scrolling, and it makes no network request.

Chromium is driven directly (no Playwright download): ``--screenshot``, ``--dump-dom`` and
``--log-net-log``. The browser's own background requests (update checks and the like,
initiator "not an origin") are told apart from the page's requests (initiator = the
page's origin, "null" for a file). ``--host-resolver-rules`` keeps all of them off the
network. A control page with an external image and a too-wide block proves both checks
can fail.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from bench.report_bench import synthetic_run
from runner.finish import finish_run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium is not installed and could not be (.ci/run installs it with `apt-get install -y chromium`)",
)

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-breakpad",
    "--disable-client-side-phishing-detection",
    "--disable-domain-reliability",
    "--metrics-recording-only",
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--hide-scrollbars",
    "--window-size=1280,900",
]
#: Writes the page's scroll width and visible width into the DOM for --dump-dom to show.
MEASURE = (
    '<script>document.body.setAttribute("data-width", '
    'document.documentElement.scrollWidth + "x" + document.documentElement.clientWidth)</script>'
)


def _browse(page: Path, work: Path, *, screenshot: Path | None = None) -> tuple[str, list[tuple[str, str]]]:
    """Open ``page``; return the DOM after scripts ran and the page's own network requests (url, initiator)."""
    netlog = work / f"{page.stem}.netlog.json"
    argv = [
        CHROMIUM,
        *FLAGS,
        f"--user-data-dir={work / ('profile-' + page.stem)}",
        f"--log-net-log={netlog}",
        "--dump-dom",
    ]
    if screenshot is not None:
        argv.append(f"--screenshot={screenshot}")
    done = subprocess.run([*argv, page.resolve().as_uri()], capture_output=True, text=True, timeout=120, cwd=work)
    assert done.returncode == 0, done.stderr[-2000:]
    log = json.loads(netlog.read_text())
    names = {number: name for name, number in log["constants"]["logEventTypes"].items()}
    requests = [
        (event["params"]["url"], event["params"].get("initiator"))
        for event in log["events"]
        if names.get(event["type"]) == "URL_REQUEST_START_JOB"
        and "url" in event.get("params", {})
        and event["params"].get("initiator") != "not an origin"  # chromium's own background traffic
    ]
    return done.stdout, requests


def _width(dom: str) -> tuple[int, int]:
    match = re.search(r'data-width="(\d+)x(\d+)"', dom)
    assert match, "the measuring script did not run"
    return int(match.group(1)), int(match.group(2))


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("browser")
    site = {
        "location": "myapp/very/long/package/path/to/the/module/sessions.py:40",
        "function": "make_session_with_a_rather_long_name",
        "bytes_per_connection": 2040.0,
        "live_bytes_end": 3_000_000,
        "share": 0.97,
    }
    log = [
        "x" * 600,
        "<script>alert(1)</script>",
        "a_single_unbroken_token_" * 40,
    ]  # long lines must wrap, not widen the page
    folder = synthetic_run(tmp / "run", samples=1500, leak_bytes=2048, sites=[site], log_lines=log)
    finish_run(folder, history=tmp / "history.sqlite")
    return folder / "report.html"


def test_report_paints_fits_1280_px_and_requests_nothing(report, tmp_path):
    from PIL import Image

    # the page as written, minus its Content-Security-Policy: the markup itself must ask for nothing
    html = report.read_text()
    html = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", html).replace("</body>", MEASURE + "</body>")
    page = tmp_path / "report.html"
    page.write_text(html)
    shot = tmp_path / "report.png"
    dom, requests = _browse(page, tmp_path, screenshot=shot)

    assert requests == [], f"the report made network requests: {requests}"
    scroll, visible = _width(dom)
    assert visible == 1280 and scroll <= visible, f"horizontal scrolling at 1280 px: content is {scroll} px wide"
    assert "<script>alert(1)</script>" not in dom  # the target's log line stayed text

    image = Image.open(shot).convert("RGB")
    assert image.size[0] == 1280
    colours = image.getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50, "the screenshot is (nearly) one colour"
    non_white = sum(count for count, rgb in colours if rgb != (255, 255, 255))
    assert non_white > 0.05 * image.size[0] * image.size[1]
    banner = image.crop((0, 0, 1280, 150)).getcolors(maxcolors=1 << 20)
    assert any(abs(r - 0xC6) < 8 and abs(g - 0x28) < 8 and abs(b - 0x28) < 8 for _, (r, g, b) in banner), (
        "no red LEAK banner at the top"
    )


def test_the_checks_catch_a_page_that_requests_and_overflows(tmp_path):
    control = tmp_path / "control.html"
    control.write_text(
        f'<html><body><div style="width:2000px">wide</div><img src="http://127.0.0.1:9/x.png">{MEASURE}</body></html>'
    )
    dom, requests = _browse(control, tmp_path)
    assert ("http://127.0.0.1:9/x.png", "null") in requests
    scroll, visible = _width(dom)
    assert scroll > visible
