"""The README's first command: python -m epd_core.demo (small batch)."""

from __future__ import annotations

import pytest

pytest.importorskip("sklearn", reason="the demo's digits come from scikit-learn")

from epd_core.demo import ROUNDS, main
from epd_core.png import encode_png


def test_demo_prints_the_table_and_writes_the_grid(tmp_path, capsys) -> None:
    assert main(["--batch", "8", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    for name in ("epd", "epd_plugin", "euler", "ipndm", "heun", "dpm_2"):
        assert f"| {name} |" in printed
    assert all(f"{r} rounds" in printed for r in ROUNDS)
    png = (tmp_path / "samples_5_rounds.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")


def test_png_encoder_header() -> None:
    import numpy as np

    data = encode_png(np.zeros((3, 5)))
    assert (
        data[12:16] == b"IHDR" and int.from_bytes(data[16:20], "big") == 5 and int.from_bytes(data[20:24], "big") == 3
    )
