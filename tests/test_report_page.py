"""The analyze run's report.html of the tiny pipeline, opened in a real (headless) Chromium
at a laptop's window size: the answer (sentences, the final share matrix with intervals, an
example's text) is within the first two screens, and nothing is fetched."""

from __future__ import annotations

import re
import shutil

import pytest

from xlinfluence import artifacts, tracking

from .browser import SCREENSHOTS, browser

pytestmark = pytest.mark.slow

CELL = re.compile(r"\d\.\d\d \[\d\.\d\d, \d\.\d\d\]")


def _top(driver, css: str) -> float:
    """Distance of the first element matching `css` from the top of the page, in px."""
    return driver.execute_script(
        "const e = document.querySelector(arguments[0]);"
        "return e === null ? null : e.getBoundingClientRect().top + window.scrollY;",
        css,
    )


def test_report_leads_with_the_answer(main_runs, tmp_path):
    driver = browser()  # skips where Chromium is absent
    page = tmp_path / "report.html"
    shutil.copy(tracking.download(main_runs["analyze"], f"{artifacts.ANALYSIS}/report.html"), page)
    try:
        driver.set_window_size(1280, 900)
        driver.get(page.as_uri())
        screen = driver.execute_script("return window.innerHeight")
        tops = {css: _top(driver, css) for css in ("#summary li", "#matrix", ".case .text")}
        assert None not in tops.values(), tops
        assert all(top < 2 * screen for top in tops.values()), (screen, tops)

        text = driver.find_element("tag name", "body").text
        assert "strongest cross-language reliance" in text and "language-blind" in text
        assert "not evidence of which languages the model learnt from" in text
        cells = driver.find_elements("css selector", "#matrix td")
        assert cells and all(CELL.match(c.text) for c in cells)
        example = driver.find_element("css selector", ".case td.text").text
        assert example.strip()
        assert (
            driver.execute_script("return performance.getEntriesByType('resource').length") == 0
        )  # everything inline: no request beyond the file itself
        for details in driver.find_elements("css selector", "#more ~ details"):
            assert not details.get_attribute("open")  # the rest is folded
        shot = tmp_path / "report.png"
        driver.save_screenshot(str(shot))
        shutil.copy(shot, SCREENSHOTS / "report-first-screen.png")
    finally:
        driver.quit()
    assert shot.stat().st_size > 10_000
