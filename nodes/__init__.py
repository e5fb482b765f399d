"""ComfyUI adapter of ComfyUI-EPD: V3 nodes over epd_core, in three layers.

- ``nodes/*.py``: the node classes (schema plus one call each) and their plain helpers
  (``types``, ``options``, ``errors``, ``plan``, ``compat``);
- ``nodes/comfy/``: the ComfyUI boundary, the only package that imports ComfyUI;
- ``nodes/train/``: the orchestration of distillation and RL, plain functions the nodes call.
"""

from __future__ import annotations

from .extension import comfy_entrypoint

__all__ = ["comfy_entrypoint"]
