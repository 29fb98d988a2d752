"""Take the README's screenshots from a running studio in headless Debian Chromium.

    .venv/bin/python app.py --port 7861 &
    .venv/bin/python docs/screenshots/take.py http://127.0.0.1:7861/

Writes create.png (after one generation) and compare.png (after a 4-seed comparison) beside this file.
"""

import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

HERE = Path(__file__).resolve().parent
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
PROMPT = "a red ball bouncing on a black background"
VIDEOS_PLAYING = "sel => { const v = [...document.querySelectorAll(sel)]; return v.length > 0 && v.every(x => x.readyState >= 2 && x.currentTime > 0); }"
VIDEOS_LOADED = "sel => [...document.querySelectorAll(sel)].every(x => x.readyState >= 2)"


def main(url: str) -> None:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(300_000)  # a CPU run of the bundled model takes a while
        page.goto(url)

        # Create: one video, seed 7.
        page.locator("#prompt textarea").fill(PROMPT)
        seed = page.locator("#seed input")
        seed.fill("")
        seed.press_sequentially("7")  # typed key by key, as a person does (fill() sends no input event)
        page.wait_for_function("() => document.querySelector('#lock input')?.checked")  # a typed seed locks itself
        page.locator("#generate").click()
        page.wait_for_function(VIDEOS_PLAYING, arg="#result video")
        page.wait_for_function(VIDEOS_LOADED, arg="#history video")  # thumbnails: loaded, not playing
        page.wait_for_function("() => !document.querySelector('#generate').disabled")
        page.wait_for_timeout(1500)
        page.screenshot(path=str(HERE / "create.png"), full_page=True)

        # Compare seeds: the same prompt, four seeds side by side.
        page.get_by_role("tab", name="Compare seeds").click()
        page.locator("#compare-prompt textarea").fill(PROMPT)
        page.locator("#seeds input").fill("1, 2, 3, 4")
        page.locator("#compare").click()
        page.wait_for_function("() => document.querySelectorAll('#compare-slots video').length === 4")
        page.wait_for_function(VIDEOS_PLAYING, arg="#compare-slots video")
        page.wait_for_timeout(1500)
        page.screenshot(path=str(HERE / "compare.png"), full_page=True)
        browser.close()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:7861/")
