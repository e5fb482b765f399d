"""Tests for epd_core.table_io: safetensors files and widget JSON."""

from __future__ import annotations

import datetime as dt
import json
import os
import pickle
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from epd_core import table_io
from epd_core.params import EPDParams
from epd_core.table_io import load_table, save_table, table_from_json, table_to_json

F64 = torch.float64
_TENSORS = ("r_logits", "weight_logits", "scale_dir_logits", "scale_time_logits", "sigmas")


@pytest.fixture
def params() -> EPDParams:
    gen = torch.Generator().manual_seed(1)
    logits = [torch.randn(4, 3, generator=gen, dtype=F64) * 2 for _ in range(4)]
    sigmas = torch.tensor([14.6, 5.0, 1.3, 0.2, 0.0], dtype=F64)
    meta = {"provenance": "unit-test", "schedule": "karras", "guidance": 7.5}
    return EPDParams(*logits, sigmas, scale_dir=0.05, scale_time=0.1, afs=True, metadata=meta)


def _assert_identical(a: EPDParams, b: EPDParams) -> None:
    for name in _TENSORS:
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    for name in ("r", "lam", "c", "a"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert (a.scale_dir, a.scale_time, a.afs) == (b.scale_dir, b.scale_time, b.afs)


def _values(p: EPDParams, **over: Any) -> dict[str, torch.Tensor]:
    arrays = {"r": p.r, "lam": p.lam, "c": p.c, "a": p.a, "sigmas": p.sigmas}
    arrays.update(over)
    return {k: v.contiguous() for k, v in arrays.items()}


def _header(p: EPDParams, **over: str) -> dict[str, str]:
    header = {
        "format": "epd-table",
        "format_version": "1",
        "num_points": str(p.num_points),
        "num_steps": str(p.num_steps),
        "scale_dir": repr(p.scale_dir),
        "scale_time": repr(p.scale_time),
        "afs": "true",
        "epd_metadata": json.dumps({"provenance": "hand-made"}),
    }
    header.update(over)
    return header


# --- round trips ----------------------------------------------------------------------------


def test_save_load_round_trip_is_exact(params: EPDParams, tmp_path: Path) -> None:
    path = save_table(params, tmp_path / "nested" / "dir" / "table.safetensors")
    assert path.is_file()
    loaded = load_table(path)
    _assert_identical(params, loaded)
    assert loaded.metadata["provenance"] == "unit-test" and loaded.metadata["guidance"] == 7.5
    created = dt.datetime.fromisoformat(loaded.metadata["created"])
    assert created.utcoffset() == dt.timedelta(0)
    _assert_identical(loaded, load_table(save_table(loaded, tmp_path / "again.safetensors")))
    assert load_table(tmp_path / "again.safetensors").metadata["created"] == loaded.metadata["created"]


def test_file_header_and_arrays(params: EPDParams, tmp_path: Path) -> None:
    path = save_table(params.replace(metadata={}), tmp_path / "t.safetensors")
    with safe_open(str(path), framework="pt") as fh:
        header = fh.metadata()
        names = set(fh.keys())
        assert all(fh.get_tensor(k).dtype == F64 for k in names)
    expected = {"format": "epd-table", "format_version": "1", "num_points": "3", "num_steps": "4"}
    assert expected.items() <= header.items()
    assert (header["scale_dir"], header["scale_time"], header["afs"]) == ("0.05", "0.1", "true")
    assert json.loads(header["epd_metadata"])["provenance"] == "unknown"
    assert {"r", "lam", "c", "a", "sigmas"} <= names


def test_json_round_trip_is_exact_compact_and_deterministic(params: EPDParams) -> None:
    text = table_to_json(params)
    assert text == table_to_json(params) and ": " not in text and ", " not in text
    obj = json.loads(text)
    assert (
        obj["format"] == "epd-table"
        and obj["metadata"]["provenance"] == "unit-test"
        and "created" not in obj["metadata"]
    )
    assert len(obj["r"]) == 4 and len(obj["sigmas"]) == 5
    _assert_identical(params, table_from_json(text))


def test_file_without_logits_is_rebuilt_from_values(params: EPDParams, tmp_path: Path) -> None:
    path = tmp_path / "values.safetensors"
    save_file(_values(params), str(path), metadata=_header(params))
    loaded = load_table(path)
    for name in ("r", "lam", "c", "a"):
        torch.testing.assert_close(getattr(loaded, name), getattr(params, name), rtol=0, atol=1e-12)
    assert loaded.metadata == {"provenance": "hand-made"}


# --- atomic save ----------------------------------------------------------------------------


@pytest.mark.parametrize("fail_at", ["fsync", "replace"])
def test_failed_save_keeps_old_file_and_leaves_no_temp(
    params: EPDParams, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail_at: str
) -> None:
    path = save_table(params, tmp_path / "t.safetensors")
    before = path.read_bytes()

    def boom(*_: Any) -> None:
        raise OSError(f"simulated {fail_at} failure")

    monkeypatch.setattr(table_io.os, fail_at, boom)
    with pytest.raises(OSError, match=f"simulated {fail_at} failure"):
        save_table(params.replace(afs=False), path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["t.safetensors"]
    assert load_table(path).afs is True


def test_save_refuses_pickle_suffix(params: EPDParams, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"refusing to save an EPD table as .*t\.pkl.*use \.safetensors"):
        save_table(params, tmp_path / "t.pkl")


# --- pickles are refused, never opened --------------------------------------------------------


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (str(self.marker),))


@pytest.mark.parametrize("name", ["evil.pkl", "evil.pt", "evil.ckpt", "evil.safetensors"])
def test_pickles_are_refused_by_suffix_and_magic(tmp_path: Path, name: str) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / name
    path.write_bytes(pickle.dumps(_Evil(marker), protocol=4))
    with pytest.raises(ValueError, match=rf"refusing to unpickle .*{name}.*python -m epd_core\.upstream"):
        load_table(path)
    assert not marker.exists()


def test_zip_torch_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    torch.save({"r": torch.zeros(2)}, path)  # new zip format starts with 'PK'
    with pytest.raises(ValueError, match=r"refusing to unpickle .*model\.safetensors.*Import Upstream Table"):
        load_table(path)


def test_missing_and_garbage_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"EPD table file not found: .*nope\.safetensors"):
        load_table(tmp_path / "nope.safetensors")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"hello world, not a table")
    with pytest.raises(ValueError, match=r"garbage\.safetensors is not a safetensors EPD table"):
        load_table(garbage)


# --- validation on load ---------------------------------------------------------------------


def _bad_cases(p: EPDParams) -> list[tuple[dict[str, torch.Tensor], dict[str, str], str]]:
    r_bad, c_bad, lam_bad = p.r.clone(), p.c.clone(), p.lam * 1.1
    r_bad[0, 0] = 1.0
    c_bad[2, 1] = 1.2
    nan_a = p.a.clone()
    nan_a[0, 0] = float("nan")
    return [
        (_values(p), _header(p, format="other"), r"has format 'other', expected 'epd-table'"),
        (_values(p), _header(p, format_version="2"), r"format_version '2'; this ComfyUI-EPD reads version '1'"),
        (_values(p), _header(p, num_steps="four"), r"malformed header: num_steps must be a whole number.*got 'four'"),
        (_values(p), _header(p, afs="yes"), r"malformed header.*afs must be true or false"),
        ({k: v for k, v in _values(p).items() if k != "lam"}, _header(p), r"lacks the arrays \['lam'\]"),
        (_values(p), _header(p, num_points="2"), r"array 'r' has shape \(4, 3\), but the header says"),
        (_values(p, sigmas=p.sigmas[:-1]), _header(p), r"sigmas has shape \(4,\), expected \(5,\)"),
        (_values(p, a=nan_a), _header(p), r"array 'a' contains nan or inf"),
        (_values(p, r=r_bad), _header(p), r"r must lie strictly inside \(0, 1\).*max 1\.0"),
        (_values(p, lam=lam_bad), _header(p), r"each lam row must sum to 1"),
        (_values(p, c=c_bad), _header(p), r"c must lie strictly inside \(1 - s, 1 \+ s\) = \(0\.95, 1\.05\)"),
        (_values(p), _header(p, scale_time="0.0"), r"a: scale values must all be 1 when the scale range s is 0"),
        (_values(p, sigmas=p.sigmas.flip(0)), _header(p), r"sigmas must be strictly descending"),
    ]


def test_load_validation_errors_name_the_file(params: EPDParams, tmp_path: Path) -> None:
    for i, (arrays, header, match) in enumerate(_bad_cases(params)):
        path = tmp_path / f"bad{i}.safetensors"
        save_file(arrays, str(path), metadata=header)
        with pytest.raises(ValueError, match=rf"bad{i}\.safetensors.*{match}|{match}.*bad{i}\.safetensors"):
            load_table(path)


def test_inconsistent_logits_are_refused(params: EPDParams, tmp_path: Path) -> None:
    arrays = {**_values(params, r=params.r * 0.9), **{k: getattr(params, k) for k in _TENSORS[:4]}}
    path = tmp_path / "edited.safetensors"
    save_file(arrays, str(path), metadata=_header(params))
    with pytest.raises(
        ValueError, match=r"edited\.safetensors: stored 'r' differs from the value implied by its logits"
    ):
        load_table(path)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("{not json", r"EPD table JSON is not valid JSON"),
        ("[1, 2]", r"EPD table JSON must be a JSON object, got list"),
        ('{"format": "epd-table", "format_version": "1"}', r"malformed header: num_steps is missing"),
        ('{"format": "x"}', r"EPD table JSON has format 'x'"),
    ],
)
def test_json_errors(text: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        table_from_json(text)


def test_json_array_errors(params: EPDParams) -> None:
    obj = json.loads(table_to_json(params))
    obj["r"] = "abc"
    with pytest.raises(ValueError, match=r"EPD table JSON: arrays must be nested lists of numbers"):
        table_from_json(json.dumps(obj))
