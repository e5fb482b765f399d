"""Toy-model fixtures; tests/conftest.py sets up the ComfyUI checkout named by COMFYUI_PATH.

Without COMFYUI_PATH the test modules skip at ``pytest.importorskip("comfy")``.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def digits():
    """The digits mixture, fitted once for the whole session (about 6 s)."""
    from epd_core.digits import digits_mixture

    return digits_mixture()
