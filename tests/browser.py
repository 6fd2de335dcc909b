"""A headless Chromium for the wallboard tests: Debian's `chromium` driven by Selenium through Debian's
`chromium-driver` (`make test` installs both as root, as it does shellcheck).

The machine may have no internet: without the flags below Chromium waits on network lookups (component
updates, sync, QUIC probes). A fresh profile per browser. Missing tools skip the test, except in CI
(`CI=true`), where they fail it.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("SWITCHDESK_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("SWITCHDESK_CHROMEDRIVER", "/usr/bin/chromedriver")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1920,1080")
ARTIFACTS = Path(os.environ.get("SWITCHDESK_TEST_ARTIFACTS", Path(__file__).resolve().parent.parent / "test-artifacts"))


def _missing(reason: str) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI: {reason} (make test-deps installs chromium and chromium-driver)", pytrace=False)
    pytest.skip(f"{reason}: apt-get install chromium chromium-driver (make test-deps as root)")


@contextmanager
def chromium() -> Iterator[object]:
    """A Selenium WebDriver on a headless Chromium with a fresh profile; quit afterwards."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _missing("selenium is not installed (pip install -e '.[test]')")
    for path in (CHROMIUM, CHROMEDRIVER):
        if not (os.path.exists(path) and os.access(path, os.X_OK)):
            _missing(f"{path} is missing")
    profile = tempfile.mkdtemp(prefix="switchdesk-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.set_page_load_timeout(20)
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def screenshot(driver: object, name: str) -> Path:
    """Save the page as test-artifacts/<name>.png (SWITCHDESK_TEST_ARTIFACTS overrides the folder)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    driver.save_screenshot(str(path))  # type: ignore[attr-defined]
    return path
