"""docs/nodes.md matches the node schemas (tools/gen_node_docs.py --check)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_node_reference_is_up_to_date(comfyui: Path) -> None:
    # a fresh process: the generator imports ComfyUI's nodes.py, which must not meet this session's modules
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gen_node_docs.py"), "--check"],
        check=False,
        cwd=ROOT,
        env={**os.environ, "COMFYUI_PATH": str(comfyui)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, "run tools/gen_node_docs.py and commit docs/nodes.md\n" + proc.stderr[-2000:]
