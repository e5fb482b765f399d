"""Runs the web extension's pure-JS tests (tests/web/*.test.mjs) with Node's test runner.

Skips when ``node`` is not on PATH: the pack itself never needs Node.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
HELPERS = ("epd_util.js", "epd_chart_math.js", "epd_chart_svg.js", "epd_curves.js")


def test_node_test_runner_passes() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not on PATH")
    files = sorted(str(p.relative_to(ROOT)) for p in HERE.glob("*.test.mjs"))
    assert files, "no tests/web/*.test.mjs found"
    proc = subprocess.run([node, "--test", *files], check=False, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def test_web_files_follow_the_extension_rules() -> None:
    """Under 200 lines, one EPD.<Feature> extension per file; helpers register nothing and import only helpers."""
    files = sorted((ROOT / "web" / "js").glob("*.js"))
    assert files
    for path in files:
        text = path.read_text(encoding="utf-8")
        assert len(text.splitlines()) < 200, path
        assert text.startswith("// "), f"{path.name} opens without a header comment"
        registrations = text.count("app.registerExtension(")
        if path.name in HELPERS:
            imports = re.findall(r'^import .* from "(.+)";$', text, flags=re.MULTILINE)
            assert registrations == 0 and all(i.removeprefix("./") in HELPERS for i in imports), path
        else:
            assert registrations == 1 and 'name: "EPD.' in text, path
            assert 'from "../../../scripts/app.js"' in text, path
