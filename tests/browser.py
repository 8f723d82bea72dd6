"""A fresh headless Chromium for UI tests (Selenium), and waits that save a screenshot when
they time out. Skips, saying what to install, where Chromium or ChromeDriver is absent."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

SCREENSHOTS = Path(__file__).resolve().parents[1] / "test-output" / "screenshots"
# The fold/unfold button the MLflow 3 runs table puts beside a parent run's name.
EXPAND_CHILDREN = "button[data-component-id*='runnamecellrenderer']"


def browser():
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and chromedriver):
        pytest.skip(
            "no chromium/chromedriver here (Debian: apt-get install chromium chromium-driver)"
        )
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium must not try to fetch a driver
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run", "--window-size=1600,1000",
    ):  # fmt: skip
        options.add_argument(flag)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return webdriver.Chrome(service=Service(chromedriver), options=options)


def wait_for(driver, css: str, timeout: float = 60):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(
        expected_conditions.presence_of_element_located((By.CSS_SELECTOR, css))
    )


def wait_for_text(driver, text: str, timeout: float = 60) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        WebDriverWait(driver, timeout).until(
            lambda d: text in d.find_element("tag name", "body").text
        )
    except Exception:
        driver.save_screenshot(str(SCREENSHOTS / "failure.png"))
        raise


def show_runs_and_report(driver, runs_url: str, names: dict[str, str], report_url: str,
                         shot: str) -> None:  # fmt: skip
    """On the runs page: the main run's name, unfolded to its steps' names and the Datasets
    column; then the analyze run's report.html in MLflow's artifact viewer."""
    from selenium.webdriver.common.by import By

    driver.get(runs_url)
    wait_for_text(driver, names["main"])
    for toggle in driver.find_elements(By.CSS_SELECTOR, EXPAND_CHILDREN):
        toggle.click()  # unfold each main run to its step runs
    for step in ("train", "influence", "analyze"):
        wait_for_text(driver, names[step])
    wait_for_text(driver, "cldr-train")  # the Datasets column
    driver.save_screenshot(str(SCREENSHOTS / f"{shot}-runs.png"))
    driver.get(report_url)
    wait_for_text(driver, "report.html")
    frame = wait_for(driver, "iframe")
    driver.switch_to.frame(frame)
    wait_for_text(driver, "Own-language shares")  # a heading of the report itself
    driver.switch_to.default_content()
    driver.save_screenshot(str(SCREENSHOTS / f"{shot}-report.png"))
