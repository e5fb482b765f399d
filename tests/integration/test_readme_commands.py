"""The README's ComfyUI test command works in a clone named as "Install into ComfyUI" says (issue 12).

A folder named ComfyUI-EPD is no Python identifier: pytest then imports the root __init__.py
as a plain module and, in its default import mode, puts the repo root ahead of ComfyUI on
sys.path, so this repo's nodes/ shadowed ComfyUI's nodes.py. The tracked files are copied
into such a folder and a slice of the suite that imports the pack, ComfyUI's nodes.py and
the helpers runs there with the README's command.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SLICE = ["tests/integration/test_registration.py", "tests/toy/test_toy_model.py", "tests/adapter/test_schema.py"]


def test_readme_test_command_works_in_a_clone_named_comfyui_epd(comfyui: Path, tmp_path: Path) -> None:
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    clone = tmp_path / "ComfyUI-EPD"
    for name in files:
        if (ROOT / name).is_file():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, clone / name)
    env = {**os.environ, "COMFYUI_PATH": str(comfyui)}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *SLICE], check=False, cwd=clone,
                         env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert " passed" in run.stdout and "error" not in run.stdout.splitlines()[-1], run.stdout[-2000:]
