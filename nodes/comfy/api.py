"""The one place that imports ComfyUI's node API.

``comfy_api.latest`` is a moving target (``STABLE = False``); pinning a numbered
version such as ``comfy_api.v0_0_2`` is a one-line change here.
"""

from __future__ import annotations

from comfy_api.latest import ComfyExtension, io, ui

__all__ = ["ComfyExtension", "io", "ui"]
