"""ComfyUI adapter of ComfyUI-EPD (comfyui-integration.md §9): V3 nodes over epd_core.

``bridge`` is the only module that touches ComfyUI internals; ``_api`` the only one
that imports the node API.
"""

from __future__ import annotations

from .extension import comfy_entrypoint

__all__ = ["comfy_entrypoint"]
