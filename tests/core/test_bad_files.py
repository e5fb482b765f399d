"""The project's bad-input corpus (issue 13): every hostile or broken input gets a clear error.

Each case is generated here (no committed binaries) and asserts that the message names the
file or input, the cause and the fix. "Large" inputs prove their limit by being refused
before anything big is allocated or read.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from epd_core import atomic, table_io
from epd_core.params import MAX_JSON_DEPTH, EPDParams
from epd_core.rl.policy import DirichletTablePolicy
from epd_core.rl.state import load_policy, save_policy
from epd_core.solver import sample_epd
from epd_core.table_io import load_table, save_table, table_from_json, table_to_json
from epd_core.vocab import MAX_POINTS

F64 = torch.float64


@pytest.fixture
def table() -> EPDParams:
    gen = torch.Generator().manual_seed(3)
    logits = [torch.randn(3, 2, generator=gen, dtype=F64) for _ in range(4)]
    sigmas = torch.tensor([10.0, 2.0, 0.5, 0.0], dtype=F64)
    return EPDParams(*logits, sigmas, scale_dir=0.05, scale_time=0.05, metadata={"provenance": "corpus"})


def _file_parts(p: EPDParams) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The arrays and header save_table writes, to be broken one field at a time."""
    arrays = {k: getattr(p, k).detach().contiguous() for k in ("r", "lam", "c", "a", "sigmas", *table_io.LOGIT_ARRAYS)}
    header = {
        "format": "epd-table",
        "format_version": "1",
        "num_points": str(p.num_points),
        "num_steps": str(p.num_steps),
        "scale_dir": repr(p.scale_dir),
        "scale_time": repr(p.scale_time),
        "afs": "false",
        "epd_metadata": json.dumps({"provenance": "corpus"}),
    }
    return arrays, header


def _write(tmp_path: Path, arrays: dict[str, torch.Tensor], header: dict[str, str], name: str = "t") -> Path:
    path = tmp_path / f"{name}.safetensors"
    save_file(arrays, str(path), metadata=header)
    return path


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


# --- table files -------------------------------------------------------------------------------


def test_table_metadata_nesting_is_capped(table: EPDParams, tmp_path: Path) -> None:
    arrays, header = _file_parts(table)
    header["epd_metadata"] = '{"x": ' + _nested(100_000) + "}"
    path = _write(tmp_path, arrays, header)
    with pytest.raises(
        ValueError, match=rf"t\.safetensors: epd_metadata is nested 100001 levels.*at most {MAX_JSON_DEPTH}.*re-save"
    ):
        load_table(path)


def test_table_in_low_precision_names_the_cause_and_the_path_once(table: EPDParams, tmp_path: Path) -> None:
    for dtype in (torch.float16, torch.bfloat16, torch.float32):
        arrays, header = _file_parts(table)
        path = _write(tmp_path, {k: v.to(dtype) for k, v in arrays.items()}, header, name=str(dtype)[6:])
        with pytest.raises(
            ValueError, match=r"stores its arrays as .*not float64.*rounding.*save_table writes float64"
        ) as err:
            load_table(path)
        assert str(err.value).count(str(path)) == 1
        assert "edited by hand" not in str(err.value)


def test_table_extra_arrays_are_refused_unread(
    table: EPDParams, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    arrays, header = _file_parts(table)
    path = _write(tmp_path, {**arrays, "payload": torch.zeros(64)}, header)
    read: list[str] = []
    real_open = table_io.safe_open

    class Spy:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self.inner = real_open(*args, **kwargs)

        def __enter__(self) -> Spy:
            self.handle = self.inner.__enter__()
            return self

        def __exit__(self, *exc: object) -> None:
            self.inner.__exit__(*exc)

        def __getattr__(self, name: str) -> Any:
            return getattr(self.handle, name)

        def get_tensor(self, name: str) -> torch.Tensor:
            read.append(name)
            return self.handle.get_tensor(name)

    monkeypatch.setattr(table_io, "safe_open", Spy)
    with pytest.raises(
        ValueError,
        match=r"t\.safetensors holds 1 arrays that are not part of an EPD table \('payload'\).*not read.*Save Table",
    ):
        load_table(path)
    assert read == []


def test_table_known_array_with_a_wrong_shape_is_refused_unread(table: EPDParams, tmp_path: Path) -> None:
    arrays, header = _file_parts(table)
    arrays["r"] = torch.zeros(3, 7, dtype=F64)
    with pytest.raises(
        ValueError, match=r"array 'r' has shape \(3, 7\), but the header says num_steps=3, num_points=2"
    ):
        load_table(_write(tmp_path, arrays, header))


def test_table_error_never_echoes_file_bytes(tmp_path: Path) -> None:
    secret = tmp_path / "passwd"
    secret.write_text("root:x:0:0:root:/root:/bin/bash\n")
    link = tmp_path / "table.safetensors"
    link.symlink_to(secret)
    with pytest.raises(ValueError, match=r"table\.safetensors is not a safetensors EPD table.*EPD Save Table") as err:
        load_table(link)
    assert "root" not in str(err.value).replace(str(tmp_path), "")


@pytest.mark.parametrize("k", [MAX_POINTS + 1, 4096])
def test_table_file_k_is_capped(tmp_path: Path, k: int) -> None:
    arrays = {"r": torch.full((1, k), 0.5, dtype=F64), "lam": torch.full((1, k), 1 / k, dtype=F64)}
    arrays |= {"c": torch.ones(1, k, dtype=F64), "a": torch.ones(1, k, dtype=F64), "sigmas": torch.tensor([1.0, 0.0])}
    header = {"format": "epd-table", "format_version": "1", "num_points": str(k), "num_steps": "1"}
    with pytest.raises(ValueError, match=rf"num_points must be between 1 and {MAX_POINTS} \(.*K x batch rows.*got {k}"):
        load_table(_write(tmp_path, arrays, header))


def test_params_k_is_capped() -> None:
    k = MAX_POINTS + 1
    with pytest.raises(ValueError, match=rf"K={k} points.*MAX_POINTS={MAX_POINTS}.*K x batch rows"):
        EPDParams.from_values(torch.full((1, k), 0.5), torch.full((1, k), 1 / k), torch.tensor([1.0, 0.0]))


# --- table JSON --------------------------------------------------------------------------------


def test_table_json_nesting_is_capped() -> None:
    for text in (_nested(100_000), '{"metadata": {"a": ' + _nested(200) + "}}"):
        with pytest.raises(
            ValueError, match=rf"EPD table JSON is nested \d+ levels deep; at most {MAX_JSON_DEPTH}.*EPD Save Table"
        ):
            table_from_json(text)


def test_table_json_huge_integers_are_clear(table: EPDParams) -> None:
    obj = json.loads(table_to_json(table))
    for field in ("num_steps", "scale_dir"):
        text = json.dumps({**obj, field: 10**400})
        with pytest.raises(ValueError, match=rf"EPD table JSON has a malformed header: {field} must be"):
            table_from_json(text)
    text = json.dumps({**obj, "r": [[10**400, 0.5]] * 3})
    with pytest.raises(ValueError, match=r"EPD table JSON: arrays must be nested lists of numbers \(OverflowError"):
        table_from_json(text)


@pytest.mark.parametrize("value", [5.7, True, 3.0, "3.0", [3]])
def test_table_json_num_steps_must_be_a_whole_number(table: EPDParams, value: Any) -> None:
    text = json.dumps({**json.loads(table_to_json(table)), "num_steps": value})
    with pytest.raises(ValueError, match=r"EPD table JSON has a malformed header: num_steps must be a whole number"):
        table_from_json(text)


def test_table_json_k_is_capped_before_arrays_are_built(table: EPDParams) -> None:
    obj = json.loads(table_to_json(table))
    text = json.dumps({**obj, "num_points": 100_000, "r": [[0.5] * 100_000]})
    start = time.perf_counter()
    with pytest.raises(ValueError, match=rf"num_points must be between 1 and {MAX_POINTS}.*got 100000"):
        table_from_json(text)
    assert time.perf_counter() - start < 1.0


def test_table_round_trip_still_exact(table: EPDParams, tmp_path: Path) -> None:
    loaded = load_table(save_table(table, tmp_path / "ok.safetensors"))
    assert torch.equal(loaded.r_logits, table.r_logits)
    assert table_from_json(table_to_json(table)).equals(table)


# --- atomic writes -----------------------------------------------------------------------------


def _stale(folder: Path, name: str, age_s: float) -> Path:
    temp = folder / name
    temp.write_bytes(b"partial")
    then = time.time() - age_s
    os.utime(temp, (then, then))
    return temp


def test_killed_save_temps_are_cleaned_on_the_next_save(table: EPDParams, tmp_path: Path) -> None:
    dead_pid = 2**22 + 12345  # above Linux's pid_max, so never a live process
    old_style = _stale(tmp_path, ".t.safetensors.abcd1234.tmp", age_s=2 * atomic.STALE_AFTER_S)
    dead = _stale(tmp_path, f".t.safetensors.{dead_pid}.abcd1234.tmp", age_s=2 * atomic.MIN_AGE_S)
    live = _stale(tmp_path, f".t.safetensors.{os.getppid()}.abcd1234.tmp", age_s=2 * atomic.MIN_AGE_S)
    fresh = _stale(tmp_path, f".t.safetensors.{dead_pid}.zzzz9999.tmp", age_s=1)
    other = _stale(tmp_path, f".u.safetensors.{dead_pid}.abcd1234.tmp", age_s=2 * atomic.STALE_AFTER_S)
    user = _stale(tmp_path, ".t.safetensors.notes.tmp", age_s=2 * atomic.STALE_AFTER_S)
    save_table(table, tmp_path / "t.safetensors")
    assert not old_style.exists() and not dead.exists()
    assert live.exists() and fresh.exists() and other.exists() and user.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".t.")) == sorted(
        [live.name, fresh.name, user.name]
    )


def test_save_over_a_folder_names_the_target(table: EPDParams, tmp_path: Path) -> None:
    target = tmp_path / "t.safetensors"
    target.mkdir()
    with pytest.raises(IsADirectoryError, match=r"cannot save to .*t\.safetensors: it is a folder; choose a file name"):
        save_table(table, target)
    assert list(target.iterdir()) == []


def test_unwritable_folder_names_the_table_not_the_temp(
    table: EPDParams, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def denied(dir: str, prefix: str, suffix: str) -> tuple[int, str]:  # what mkstemp raises in a 0555 folder
        raise PermissionError(13, "Permission denied", f"{dir}/{prefix}xxxxxxxx{suffix}")

    monkeypatch.setattr(atomic.tempfile, "mkstemp", denied)
    with pytest.raises(PermissionError, match=r"cannot save .*t\.safetensors: the folder .* is not writable") as err:
        save_table(table, tmp_path / "t.safetensors")
    assert ".tmp" not in str(err.value)


def test_read_only_table_is_not_replaced(table: EPDParams, tmp_path: Path) -> None:
    target = tmp_path / "t.safetensors"
    target.write_bytes(b"keep me")
    target.chmod(0o444)
    with pytest.raises(
        PermissionError, match=r"refusing to replace .*t\.safetensors: the file is read-only.*chmod u\+w"
    ):
        save_table(table, target)
    assert target.read_bytes() == b"keep me"


def test_too_long_names_are_refused_before_writing(table: EPDParams, tmp_path: Path) -> None:
    name = "x" * (atomic.NAME_MAX - atomic.TEMP_OVERHEAD - len(".safetensors") + 1) + ".safetensors"
    with pytest.raises(ValueError, match=rf"at most {atomic.NAME_MAX - atomic.TEMP_OVERHEAD} bytes.*shorter name"):
        atomic.check_target_name(tmp_path / name)
    with pytest.raises(ValueError, match=r"shorter name"):
        save_table(table, tmp_path / name)
    longest = name[1:]
    save_table(table, tmp_path / longest)
    assert torch.equal(load_table(tmp_path / longest).r_logits, table.r_logits)


# --- RL policy files ---------------------------------------------------------------------------


def _policy_file(table: EPDParams, tmp_path: Path, meta_over: dict[str, str | None]) -> Path:
    """A policy written by save_policy, then re-written with some metadata fields changed or dropped."""
    path = save_policy(DirichletTablePolicy(table, hidden=8, layers=1), tmp_path / "p.safetensors")
    with safe_open(str(path), framework="pt") as f:
        meta, tensors = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    meta.update({k: v for k, v in meta_over.items() if v is not None})
    meta = {k: v for k, v in meta.items() if k not in meta_over or meta_over[k] is not None}
    save_file(tensors, str(path), metadata=meta)
    return path


@pytest.mark.parametrize(
    ("over", "match"),
    [
        ({"options": None}, r"lacks its options metadata.*EPD RL Tune"),
        ({"options": json.dumps({"hidden": 10**6})}, r"hidden=1000000 must be a whole number in \[1, 1024\]"),
        ({"options": json.dumps({"layers": 2.5})}, r"layers=2\.5 must be a whole number"),
        ({"options": '{"a": ' + _nested(50_000) + "}"}, r"options are not readable JSON \(the options is nested"),
        ({"options": "[1]"}, r"options must be an object with keys from"),
        ({"options": json.dumps({"seed": 1, "__class__": 2})}, r"options must be an object with keys from"),
        ({"options": json.dumps({"learn_scales": "no"})}, r"learn_scales must be true or false"),
        ({"options": json.dumps({"hidden": 16})}, r"policy tensors do not match the options.*mismatched"),
        ({"table": _nested(50_000)}, r"start table is invalid \(EPD table JSON is nested"),
        ({"iterations": "1e9"}, r"iterations must be a whole number"),
    ],
)
def test_policy_file_errors_are_clear(
    table: EPDParams, tmp_path: Path, over: dict[str, str | None], match: str
) -> None:
    path = _policy_file(table, tmp_path, over)
    with pytest.raises(ValueError, match=rf"p\.safetensors: .*{match}"):
        load_policy(path)


def test_policy_round_trip_still_works(table: EPDParams, tmp_path: Path) -> None:
    policy, iterations = load_policy(_policy_file(table, tmp_path, {}))
    assert (policy.hidden, policy.layers, iterations) == (8, 1, 0)


def test_policy_shape_caps_refuse_before_allocating(table: EPDParams) -> None:
    with pytest.raises(ValueError, match=r"hidden=1000000 must be a whole number in \[1, 1024\]"):
        DirichletTablePolicy(table, hidden=10**6)


# --- engine inputs -----------------------------------------------------------------------------


def _identity(x: torch.Tensor, sigma: torch.Tensor, **_: Any) -> torch.Tensor:
    return x * 0.5


_X = torch.ones(2, 3, dtype=F64)
_GRID = torch.tensor([4.0, 1.0, 0.0], dtype=F64)


@pytest.mark.parametrize("sigmas", [torch.zeros(0), torch.tensor([1.0]), torch.ones(2, 3), torch.tensor(2.0)])
def test_engine_sigmas_shape_is_clear(sigmas: torch.Tensor) -> None:
    with pytest.raises(ValueError, match=r"sigmas must be a 1-D tensor of at least 2 noise levels.*connect a SIGMAS"):
        sample_epd(_identity, _X, sigmas)


def test_engine_increasing_sigmas_are_called_increasing() -> None:
    with pytest.raises(ValueError, match=r"they increase somewhere.*from sigma_max down") as err:
        sample_epd(_identity, _X, torch.tensor([0.0, 1.0, 4.0], dtype=F64))
    assert "repeated" not in str(err.value)
    with pytest.raises(ValueError, match=r"without repeated sigmas"):
        sample_epd(_identity, _X, torch.tensor([4.0, 4.0, 0.0], dtype=F64))


@pytest.mark.parametrize("k", [2.5, True, 0, MAX_POINTS + 1])
def test_engine_num_points_is_checked(k: Any) -> None:
    with pytest.raises(ValueError, match=rf"num_points must be a whole number between 1 and {MAX_POINTS}, got {k!r}"):
        sample_epd(_identity, _X, _GRID, num_points=k)


@pytest.mark.parametrize("afs", [False, True])  # with AFS the first model call is the K-point one
def test_engine_wrong_batch_from_the_model_is_clear(afs: bool) -> None:
    def one_row(x: torch.Tensor, sigma: torch.Tensor, **_: Any) -> torch.Tensor:
        return x[:1] * 0.5

    match = r"the model returned \(1, 3\) for an input of shape \(\d+, 3\).*one prediction per input row"
    with pytest.raises(ValueError, match=match):
        sample_epd(one_row, _X, _GRID, afs=afs)


def test_engine_nan_input_and_nan_model_output_are_errors() -> None:
    with pytest.raises(ValueError, match=r"input latent x contains nan"):
        sample_epd(_identity, torch.full_like(_X, float("nan")), _GRID)

    def nan_late(x: torch.Tensor, sigma: torch.Tensor, **_: Any) -> torch.Tensor:
        return torch.where(sigma.reshape(-1, 1) < 1.0, torch.nan, x * 0.5)

    with pytest.raises(ValueError, match=r"the model returned nan or inf at step 1 \(sigma=1\).*precision"):
        sample_epd(nan_late, _X, _GRID)
