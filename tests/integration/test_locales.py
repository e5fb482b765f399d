"""locales/en/main.json and the web/docs/ help pages match the node schemas (tools/gen_locales.py --check)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_locales_and_help_pages_are_up_to_date(comfyui: Path) -> None:
    # a fresh process: the generator imports ComfyUI's nodes.py, which must not meet this session's modules
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gen_locales.py"), "--check"],
        check=False,
        cwd=ROOT,
        env={**os.environ, "COMFYUI_PATH": str(comfyui)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, "run tools/gen_locales.py and commit its output\n" + proc.stderr[-2000:]
