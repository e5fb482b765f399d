"""Core fixtures: the published EPD tables of ../shared/reference, read by one finder."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

REFERENCE_JSON = "epd_published_tables.json"


def reference_file() -> Path | None:
    """The shared reference JSON next to the repo, else under $EPD_REFERENCE_DIR."""
    candidates = [Path(__file__).resolve().parents[2].parent / "shared" / "reference" / REFERENCE_JSON]
    if os.environ.get("EPD_REFERENCE_DIR"):
        candidates.append(Path(os.environ["EPD_REFERENCE_DIR"]) / REFERENCE_JSON)
    return next((p for p in candidates if p.is_file()), None)


@pytest.fixture(scope="session")
def reference_tables() -> dict[str, Any]:
    """The parsed reference JSON; tests that need it skip without it."""
    path = reference_file()
    if path is None:
        pytest.skip(f"{REFERENCE_JSON} not found (set EPD_REFERENCE_DIR)")
    return json.loads(path.read_text())
