"""ComfyUI-EPD: EPD-Solver sampling for ComfyUI.

ComfyUI imports this folder as a package; only the V3 entry point and the web folder
are exported (a NODE_CLASS_MAPPINGS here would make ComfyUI skip the entry point).
Set EPD_KSAMPLER_ENTRY=1 to also add "epd" to the KSampler sampler list.
"""

from __future__ import annotations

try:  # feature probe: only inside ComfyUI is there a node API to register with
    import comfy  # noqa: F401
except ImportError:  # e.g. pytest importing the repo root as a package while running the core tests
    comfy_entrypoint = None
else:
    if __package__:  # ComfyUI (and the adapter tests) import this folder as a package
        from .nodes import comfy_entrypoint
    else:  # pytest imports it as a plain module "__init__" when the folder name, e.g. ComfyUI-EPD,
        comfy_entrypoint = None  # is no identifier: there is no package to import .nodes from

WEB_DIRECTORY = "./web"

__all__ = ["WEB_DIRECTORY", "comfy_entrypoint"]
