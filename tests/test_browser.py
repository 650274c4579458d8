"""Open each HTML report in headless Chromium (Debian's chromium and chromedriver, driven by
selenium): it renders its sections and plots, makes no network request and logs no console error.
A full-page screenshot of each is saved under the test's temporary folder.

Without chromium the tests skip, unless LINKCARE_REQUIRE_BROWSER=1 (set by .ci/run, which installs
it), when a missing browser is a failure.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from conftest import write_config
from linkcare.cli import cli
from linkcare.synth.options import SynthOptions
from linkcare.synth.programme import Programme
from linkcare.synth.site import write_site

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
if not (CHROMIUM and CHROMEDRIVER):
    if os.environ.get("LINKCARE_REQUIRE_BROWSER") == "1":
        raise RuntimeError("LINKCARE_REQUIRE_BROWSER=1 but chromium or chromedriver is not installed; "
                           "apt-get install chromium chromium-driver")
    pytest.skip("chromium and chromedriver are not installed (apt-get install chromium chromium-driver)",
                allow_module_level=True)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1024", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-default-apps",
                f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def reports(small_site: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """link, train, stratify and monitor the small site; return each report."""
    work = tmp_path_factory.mktemp("reports")
    config = str(small_site / "site.toml")
    monitored = str(write_config(small_site / "site.toml", work / "monitor.toml", extra=MONITOR, own_monitor=True))
    runner = CliRunner()
    for args in (["link", config, "--out", str(work / "cohort")],
                 ["train", config, "--cohort", str(work / "cohort"), "--out", str(work / "model")],
                 ["stratify", config, "--cohort", str(work / "cohort"), "--model", str(work / "model"),
                  "--out", str(work / "risk")],
                 ["monitor", monitored, "--cohort", str(work / "cohort"), "--risk", str(work / "risk"),
                  "--out", str(work / "monitor")]):
        result = runner.invoke(cli, ["-q", *args])
        assert result.exit_code == 0, result.output
    # A site with an MDT programme, for the matched comparison's section.
    programme = work / "programme"
    write_site(programme, SynthOptions(people=12_000, seed=8, reference_date=date(2026, 3, 31),
                                       programme=Programme(date(2024, 10, 1), enrolment_months=6)))
    for args in (["link", str(programme / "site.toml"), "--out", str(work / "p_cohort")],
                 ["monitor", str(programme / "site.toml"), "--cohort", str(work / "p_cohort"), "--out",
                  str(work / "p_monitor")]):
        result = runner.invoke(cli, ["-q", *args])
        assert result.exit_code == 0, result.output
    return {"link": work / "cohort" / "link_report.html", "train": work / "model" / "risk_report.html",
            "stratify": work / "risk" / "risk_report.html", "monitor": work / "monitor" / "monitor_report.html",
            "impact": work / "p_monitor" / "monitor_report.html"}


MONITOR = """
[monitor]
[[monitor.cohorts]]
name = "over_75"
where = { age_min = 75 }
enrolled = "2025-04-01"
[[monitor.cohorts]]
name = "top_tier"
tier = "high risk"
[[monitor.plans]]
cohort = "population"
measure = "emergency_admissions"
direction = "lower"
trajectory = [{ month = "2026-02", value = 9.0 }, { month = "2026-03", value = 9.0 }]
"""


def _requests(driver: Any) -> list[str]:
    """Return the URL of every request the page made, from Chromium's performance log."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def _screenshot(driver: Any, path: Path) -> None:
    """Save a screenshot of the whole page, beyond the window."""
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
    path.write_bytes(base64.b64decode(shot["data"]))


SECTIONS = {
    "link": ["sources", "blocking", "weights", "precision", "model", "unlinkables", "clusters", "equity", "borderline"],
    "stratify": ["distribution", "performance", "subgroups", "factors"],
    "train": ["performance", "subgroups", "factors"],
    "monitor": ["cohorts", "overview", "cohort-population", "cohort-over_75", "cohort-top_tier", "coverage",
                "unit-costs", "method"],
    "impact": ["cohort-mdt_caseload", "impact-mdt_caseload"],
}


@pytest.mark.parametrize("name", list(SECTIONS))
def test_report_renders_offline_without_errors(browser: Any, reports: dict[str, Path], name: str,
                                               tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    path = reports[name]
    browser.get_log("performance")  # start from an empty log
    browser.get_log("browser")
    browser.get(path.resolve().as_uri())
    assert browser.execute_script("return document.readyState") == "complete"
    found = [s.get_attribute("id") for s in browser.find_elements(By.CSS_SELECTOR, "section")]
    assert set(SECTIONS[name]) <= set(found), found
    for section in SECTIONS[name]:
        heading = browser.find_element(By.CSS_SELECTOR, f"section#{section} h2")
        assert heading.is_displayed() and heading.text.strip()
    plots = browser.find_elements(By.CSS_SELECTOR, "figure[data-plot] svg")
    assert len(plots) >= len(SECTIONS[name])
    if name == "link":  # one plot in each section of the link report
        for section in SECTIONS[name]:
            assert len(browser.find_elements(By.CSS_SELECTOR, f"section#{section} figure[data-plot] svg")) == 1, section
    for plot in plots:  # each plot is drawn: it has a size on the page and marks inside it
        assert plot.size["width"] > 100 and plot.size["height"] > 50
        assert len(plot.find_elements(By.CSS_SELECTOR, "path, rect, line, polyline")) > 3
    others = [u for u in _requests(browser) if not u.startswith(("file:", "data:", "about:"))]
    assert others == [], f"the report tried to load {others}"
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == [], errors
    shot = tmp_path / f"{name}_report.png"
    _screenshot(browser, shot)
    assert shot.stat().st_size > 10_000
