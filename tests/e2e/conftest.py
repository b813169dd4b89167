"""Fixtures of the browser tests."""

from __future__ import annotations

import pytest

from tests.conftest import require


@pytest.fixture(scope="module")
def playwright():
    """One Playwright per module: its sync API cannot run two at once in a thread."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require(False, "playwright is not installed: make venv")
    with sync_playwright() as instance:
        yield instance
