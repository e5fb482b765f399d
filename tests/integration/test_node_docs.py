"""The generated docs match the node schemas: docs/nodes.md (tools/gen_node_docs.py), and
locales/en/main.json with the web/docs/ help pages (<id>/en.md and <id>.md; tools/gen_locales.py),
each run with --check."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GENERATORS = {"gen_node_docs.py": "docs/nodes.md", "gen_locales.py": "locales/en/main.json and web/docs/"}


@pytest.mark.parametrize("tool", list(GENERATORS))
def test_generated_docs_are_up_to_date(comfyui: Path, tool: str) -> None:
    # a fresh process: the generator imports ComfyUI's nodes.py, which must not meet this session's modules
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / tool), "--check"],
        check=False,
        cwd=ROOT,
        env={**os.environ, "COMFYUI_PATH": str(comfyui)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"run tools/{tool} and commit {GENERATORS[tool]}\n" + proc.stderr[-2000:]
