"""The studio in a real browser: headless Debian Chromium driven by playwright, on a tiny model.

Type a prompt, press Generate, watch the live preview change and the progress count steps, get a
video the browser can play; then Stop a long run (its prompt warned about words the model never
read) and see that the page is ready again.
Set LING_SCREENSHOTS=DIR to keep the screenshots (default: the test's tmp folder).
"""

import io
import os
import time
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from test_studio_client import free_port, studio, tiny_model_dir  # noqa: F401  (module fixtures: a tiny studio)

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium: install Debian's chromium (apt-get install -y chromium) to run the browser test"),
]

# Installed before anything is clicked: records every preview image and progress text the page shows.
WATCH = """() => {
  window.lingSeen = {previews: [], progress: []};
  const record = () => {
    const img = document.querySelector('#preview img');
    const src = img && img.getAttribute('src');
    if (src && window.lingSeen.previews.at(-1) !== src) window.lingSeen.previews.push(src);
    const text = document.querySelector('#progress')?.innerText.trim();
    if (text && window.lingSeen.progress.at(-1) !== text) window.lingSeen.progress.push(text);
  };
  new MutationObserver(record).observe(document.body, {subtree: true, childList: true, attributes: true, characterData: true});
}"""


@pytest.fixture
def page(studio):  # noqa: F811  (the fixture imported above)
    from playwright.sync_api import sync_playwright

    url, _, _ = studio
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)
        page.goto(url)
        page.wait_for_selector("#generate")
        page.evaluate(WATCH)
        yield page
        browser.close()


def _screenshot_dir(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("LING_SCREENSHOTS", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _set_slider(page, elem_id: str, value: int) -> None:
    """Type a value into a slider's number box and wait until its range input agrees. On a loaded
    machine the typed value was sometimes lost (the box re-rendered while the Advanced accordion
    opened) and Generate sent the old one; type it again."""
    box = page.locator(f"#{elem_id} input[type=number]")
    for _ in range(3):
        box.fill(str(value))
        box.press("Enter")
        try:
            page.wait_for_function(f"() => Number(document.querySelector('#{elem_id} input[type=range]').value) === {value}", timeout=10_000)
            return
        except Exception:  # playwright's TimeoutError: the value did not take
            continue
    raise AssertionError(f"the {elem_id} slider did not take {value} after three tries")


def _set_steps(page, steps: int) -> None:
    page.locator("#advanced").get_by_text("Advanced").click()
    _set_slider(page, "steps", steps)


def _click_generate_until_running(page) -> None:
    """Click Generate and wait until the run has started. On a loaded machine a click that lands
    while the page is still re-rendering the control just edited can be swallowed; click again."""
    for _ in range(3):
        page.locator("#generate").click()
        try:
            page.wait_for_function("() => document.querySelector('#generate').disabled", timeout=10_000)
            return
        except Exception:  # playwright's TimeoutError: the click did not start a run
            continue
    raise AssertionError("Generate did not start a run after three clicks")


def test_generate_shows_a_live_preview_then_a_playable_video(page, tmp_path):
    page.locator("#prompt textarea").fill("a red ball bouncing on a black background")
    _set_steps(page, 30)
    page.locator("#generate").click()

    # The result: a video element whose source the browser has loaded and can play.
    page.wait_for_function(
        "() => { const v = document.querySelector('#result video'); return v && v.currentSrc && v.readyState >= 2 && v.duration > 0; }"
    )
    page.wait_for_function("() => !document.querySelector('#generate').disabled && document.querySelector('#stop').disabled")
    seen = page.evaluate("() => window.lingSeen")
    assert len(seen["previews"]) >= 2, "the live preview should change while the video is denoised"
    assert any("Step" in text and "of 30" in text for text in seen["progress"]), seen["progress"]
    assert any("left" in text for text in seen["progress"])  # the time left is shown
    assert "Done" in page.locator("#progress").inner_text()
    video = page.evaluate("() => { const v = document.querySelector('#result video'); return {w: v.videoWidth, h: v.videoHeight, loop: v.loop}; }")
    assert video == {"w": 112, "h": 64, "loop": True}
    assert "Seed " in page.locator("#result-info").inner_text()
    assert '"steps": 30' in page.locator("#recipe").inner_text()

    shot = _screenshot_dir(tmp_path) / "browser-create.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    preview = np.asarray(PIL.Image.open(io.BytesIO(page.locator("#preview img").screenshot())).convert("RGB"))
    assert preview.reshape(-1, 3).std(axis=0).max() > 5, "the preview shows an image, not a blank box"


def test_stop_ends_a_long_run_and_the_page_is_ready_again(page):
    page.locator("#prompt textarea").fill("a small white star spinning like a pinwheel against a navy background")
    _set_steps(page, 100)
    _set_slider(page, "duration", 10)
    _click_generate_until_running(page)
    # Words the model never read are named in a warning, and the run goes ahead.
    page.wait_for_function("() => document.body.innerText.includes(\"never read 'like', 'pinwheel'\")")
    page.wait_for_function("() => /Step \\d+ of 100/.test(document.querySelector('#progress').innerText)")
    assert page.locator("#generate").is_disabled() and page.locator("#stop").is_enabled()
    started = time.perf_counter()
    page.locator("#stop").click()
    page.wait_for_function("() => document.querySelector('#progress').innerText.includes('Stopped')")
    assert time.perf_counter() - started < 20
    page.wait_for_function("() => !document.querySelector('#generate').disabled && document.querySelector('#stop').disabled")
    assert page.locator("#result video").count() == 0  # no video from the stopped run
