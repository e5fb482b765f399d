"""The pack's layers (issue 15): only the boundary package nodes/comfy imports ComfyUI.

An AST scan, so it runs without a ComfyUI checkout: every import in nodes/, epd_core/ and
the root __init__.py is read, and a ComfyUI module (comfy, comfy_api, comfy_extras,
comfy_execution, folder_paths, server, latent_preview, node_helpers, or ComfyUI's top-level
``nodes``) may appear only under nodes/comfy/. epd_core imports nothing of the pack's
adapter either.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMFYUI_MODULES = {
    "comfy", "comfy_api", "comfy_extras", "comfy_execution", "folder_paths", "server", "latent_preview",
    "node_helpers", "nodes",
}  # fmt: skip
BOUNDARY = ROOT / "nodes" / "comfy"


def absolute_imports(path: Path) -> list[tuple[int, str]]:
    """(line, top-level module) of every absolute import in a file; relative imports are the pack's own."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
    return found


def pack_files() -> list[Path]:
    return [ROOT / "__init__.py", *sorted((ROOT / "nodes").rglob("*.py")), *sorted((ROOT / "epd_core").rglob("*.py"))]


def test_only_the_boundary_imports_comfyui() -> None:
    outside = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in pack_files()
        if BOUNDARY not in path.parents
        for line, module in absolute_imports(path)
        if module in COMFYUI_MODULES
    ]
    root_probe = [entry for entry in outside if entry.startswith("__init__.py") and entry.endswith("comfy")]
    assert outside == root_probe, "ComfyUI imports outside nodes/comfy:\n" + "\n".join(outside)
    assert len(root_probe) == 1, "the root __init__ probes for ComfyUI once, to decide whether to register"


def test_the_boundary_exists_and_does_import_comfyui() -> None:
    inside = {module for path in BOUNDARY.rglob("*.py") for _, module in absolute_imports(path)}
    assert {"comfy", "comfy_api", "folder_paths"} <= inside


def test_the_engine_never_imports_the_adapter() -> None:
    for path in (ROOT / "epd_core").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        relative = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level >= 2]
        assert not relative or all(not m.startswith("nodes") for m in relative), path
