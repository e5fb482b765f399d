"""Tests for epd_core.upstream: safe import of BeierZhu/EPD predictor pickles.

The upstream files carry no licence, so none is stored here: the tests write synthetic
pickles with the same structure (same globals, legacy storage blobs, persistent-class
meta) from the raw float32 parameters recorded in the shared reference JSON.
"""

from __future__ import annotations

import base64
import collections
import io
import json
import os
import pickle
import sys
import types
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch._utils import _rebuild_tensor_v2
from torch.storage import _load_from_bytes

from epd_core.table_io import load_table
from epd_core.torch_legacy import read_legacy_storage
from epd_core.upstream import (
    decode_upstream_pickle,
    import_upstream_table,
    main,
    upstream_to_params,
)

F64 = torch.float64
_PARAMS = ("r_params", "weight_s", "scale_dir_params", "scale_time_params")
_MODULE_SRC = "raise SystemExit('upstream module_src was executed')\n"


@pytest.fixture(scope="module")
def reference(reference_tables: dict[str, Any]) -> dict[str, Any]:
    return reference_tables


# --- a pickler that writes the upstream structure ---------------------------------------------


class _Persistent:
    """Pickles as torch_utils.persistence._reconstruct_persistent_obj(meta), as persistent classes do."""

    def __init__(self, meta: dict[str, Any]) -> None:
        self.meta = meta


class _Reduce:
    """Pickles as fn(*args) for any importable fn (used for hostile payloads)."""

    def __init__(self, fn: Any, *args: Any, state: Any = None) -> None:
        self.fn, self.args, self.state = fn, args, state


def _never_called(*_: Any) -> None:
    raise AssertionError("stand-in target must not be called while pickling")


@pytest.fixture
def fake_modules(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Register importable names torch_utils.persistence._reconstruct_persistent_obj and solvers.*_sampler."""
    for module, names in (("torch_utils.persistence", ["_reconstruct_persistent_obj"]), ("solvers", ["epd_sampler", "heun_sampler"])):  # fmt: skip
        mod = types.ModuleType(module)
        for name in names:
            fn = types.FunctionType(_never_called.__code__, {}, name)
            fn.__module__, fn.__qualname__ = module, name
            setattr(mod, name, fn)
        monkeypatch.setitem(sys.modules, module, mod)
    parent = types.ModuleType("torch_utils")
    parent.persistence = sys.modules["torch_utils.persistence"]  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torch_utils", parent)
    yield


class _UpstreamPickler(pickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, _Persistent):
            return (sys.modules["torch_utils.persistence"]._reconstruct_persistent_obj, (obj.meta,))
        if isinstance(obj, _Reduce):
            return (obj.fn, obj.args) if obj.state is None else (obj.fn, obj.args, obj.state)
        return NotImplemented


def _dumps(obj: Any, protocol: int = 4) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TypedStorage deprecation while torch pickles storages
        _UpstreamPickler(buf, protocol=protocol).dump(obj)
    return buf.getvalue()


def _module_state(params: dict[str, torch.Tensor], attrs: dict[str, Any]) -> dict[str, Any]:
    """The __dict__ of an nn.Module as persistence stores it: parameters, hooks, submodules, attributes."""
    hooks = {f"_{k}": collections.OrderedDict() for k in ("forward_hooks", "forward_pre_hooks", "backward_hooks")}
    modules = {"sigmoid": torch.nn.Sigmoid(), "softmax": torch.nn.Softmax(dim=-1)}
    parameters = {k: torch.nn.Parameter(v) for k, v in params.items()}
    return {"training": False, "_parameters": parameters, "_buffers": {}, "_non_persistent_buffers_set": set(),
            **hooks, "_modules": modules, **attrs, "_init_args": (), "_init_kwargs": dict(attrs)}  # fmt: skip


def _predictor_pickle(
    params: dict[str, torch.Tensor], attrs: dict[str, Any], loss: dict[str, Any] | None = None
) -> bytes:
    meta = {"type": "class", "version": 6, "module_src": _MODULE_SRC, "class_name": "EPD_predictor"}
    container: dict[str, Any] = {"model": _Persistent({**meta, "state": _module_state(params, attrs)})}
    if loss is not None:
        container["loss_fn"] = _Persistent({**meta, "class_name": "EPD_loss", "state": loss})
    return _dumps(container)


def _raw_params(table: dict[str, Any]) -> dict[str, torch.Tensor]:
    shape = table["pickle"]["parameter_shape"]
    raw = table["raw_parameters_float32_le_base64"]
    return {
        k: torch.frombuffer(bytearray(base64.b64decode(raw[k])), dtype=torch.float32).reshape(shape) for k in _PARAMS
    }


class _Recorder(pickle.Unpickler):
    """Lists the globals a pickle names, building inert objects for all of them."""

    def __init__(self, data: bytes) -> None:
        super().__init__(io.BytesIO(data))
        self.names: set[str] = set()

    def find_class(self, module: str, name: str) -> Any:
        self.names.add(f"{module}.{name}")
        return type(name, (), {"__init__": lambda self, *a, **k: None, "__setstate__": lambda self, s: None})


# --- published tables ----------------------------------------------------------------------


def test_synthetic_pickle_has_the_upstream_structure(reference: dict[str, Any], fake_modules: None) -> None:
    table = reference["tables"][0]
    data = _predictor_pickle(_raw_params(table), table["metadata"])
    recorder = _Recorder(data)
    recorder.load()
    assert recorder.names == set(table["pickle"]["globals_referenced"])


def test_published_tables_convert(reference: dict[str, Any], fake_modules: None, tmp_path: Path) -> None:
    for table in reference["tables"]:
        path = tmp_path / f"{table['name']}.pkl"
        path.write_bytes(_predictor_pickle(_raw_params(table), table["metadata"]))
        p = import_upstream_table(path)
        raw = _raw_params(table)
        assert torch.equal(p.r_logits, raw["r_params"].double()) and torch.equal(
            p.weight_logits, raw["weight_s"].double()
        )
        sv = table["solver_values"]
        # the JSON keeps 7 significant digits: values in (0, 1] are within 5e-8; 1e-6 leaves room
        for ours, key in ((p.r, "r"), (p.lam, "lambda"), (p.c, "c"), (p.a, "a")):
            torch.testing.assert_close(ours, torch.tensor(sv[key], dtype=F64), rtol=0, atol=1e-6, msg=table["name"])
        # the grid comes from the metadata through epd_core.schedules; 7 digits -> 5e-7 relative, 2e-6 leaves room
        grid = torch.tensor(table["sigma_grid"]["values"], dtype=F64)
        torch.testing.assert_close(p.sigmas, grid, rtol=2e-6, atol=0, msg=table["name"])
        tau = torch.tensor(table["intermediate_sigmas_tau"], dtype=F64)
        torch.testing.assert_close(p.tau(), tau, rtol=2e-6, atol=0, msg=table["name"])
        assert p.metadata["provenance"] == "imported" and p.metadata["source_file"] == path.name
        assert p.metadata["upstream"]["guidance_rate"] == table["metadata"]["guidance_rate"]
        assert p.afs is False and p.num_points == 2


def test_given_sigmas_override_the_metadata(reference: dict[str, Any], fake_modules: None, tmp_path: Path) -> None:
    table = reference["tables"][0]
    meta = {k: v for k, v in table["metadata"].items() if k != "schedule_type"}  # nothing to derive from
    path = tmp_path / "t.pkl"
    path.write_bytes(_predictor_pickle(_raw_params(table), meta))
    with pytest.raises(ValueError, match=r"t\.pkl: cannot derive the sigma grid.*pass the 11 sigmas"):
        import_upstream_table(path)
    grid = table["sigma_grid"]["values"]
    p = import_upstream_table(path, sigmas=grid)
    assert p.metadata["sigma_source"] == "given" and p.sigmas.tolist() == grid


def test_iccv_snapshot_with_loss_fn(fake_modules: None, tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(3)
    params = {k: torch.randn(3, 2, generator=gen) for k in _PARAMS}
    attrs = {"num_steps": 4, "num_points": 2, "schedule_type": "time_uniform", "schedule_rho": 1.0, "afs": True,
             "scale_dir": 0.05, "scale_time": 0.05, "sampler_stu": "epd", "dataset_name": "cifar10"}  # fmt: skip
    t_steps = torch.tensor([80.0, 6.9503, 1.2867, 0.0020132])
    solvers = sys.modules["solvers"]
    loss = {"solver_stu": solvers.epd_sampler, "solver_tea": solvers.heun_sampler, "sigma_min": 0.002,
            "sigma_max": 80.0, "t_steps": t_steps, "buffer_model": [], "lpips": None}  # fmt: skip
    path = tmp_path / "network-snapshot-000010.pkl"
    path.write_bytes(_predictor_pickle(params, attrs, loss))
    p = import_upstream_table(path)
    assert torch.equal(p.sigmas, t_steps.double()) and p.metadata["sigma_source"] == "loss_fn.t_steps"
    assert p.afs and p.scale_dir == 0.05 and p.metadata["model_family"] == "cifar10"
    # c = 0.95 + 0.1 sigmoid(beta / 2) with the stored beta
    torch.testing.assert_close(p.c, 0.95 + 0.1 * torch.sigmoid(params["scale_dir_params"].double() / 2))


# --- hostile input -------------------------------------------------------------------------


def test_foreign_globals_are_refused_without_running(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    for payload in (_Reduce(os.mkdir, str(marker)), {"model": _Reduce(eval, f"open({str(marker)!r}, 'w')")}):
        with pytest.raises(ValueError, match=r"refusing global (posix\.mkdir|builtins\.eval)"):
            decode_upstream_pickle(_dumps(payload), "evil.pkl")
    assert not marker.exists()


def test_hostile_storage_blob_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    parts = [pickle.dumps(v, protocol=2) for v in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True})]
    blob = b"".join(parts) + _dumps(_Reduce(os.mkdir, str(marker)), protocol=2)
    with pytest.raises(ValueError, match=r"refusing global posix\.mkdir inside a torch storage blob"):
        decode_upstream_pickle(_dumps({"model": _Reduce(_load_from_bytes, blob)}), "evil.pkl")
    assert not marker.exists()


def test_tensor_layout_and_state_are_checked() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        storage = torch.zeros(4).storage()
    bad = _Reduce(_rebuild_tensor_v2, storage, 0, (100,), (1,), False, collections.OrderedDict())
    with pytest.raises(ValueError, match=r"reads past its storage of 4"):
        decode_upstream_pickle(_dumps({"model": bad}), "evil.pkl")
    # BUILD on a decoded tensor (e.g. Tensor.__setstate__ / set_) never reaches torch
    blob = storage.__reduce__()[1][0]
    with pytest.raises(ValueError, match=r"carries unexpected state"):
        decode_upstream_pickle(_dumps({"model": _Reduce(_load_from_bytes, blob, state=(1, 2, 3, 4))}), "evil.pkl")


def test_module_src_is_never_executed(fake_modules: None, tmp_path: Path) -> None:
    params = {k: torch.zeros(1, 2) for k in _PARAMS}
    path = tmp_path / "t.pkl"
    path.write_bytes(_predictor_pickle(params, {"num_steps": 2, "num_points": 2}))
    p = import_upstream_table(path, sigmas=[1.0, 0.5])  # would raise SystemExit if module_src ran
    assert "module_src" not in json.dumps(p.metadata)


def test_not_a_predictor(fake_modules: None) -> None:
    with pytest.raises(ValueError, match=r"x\.pkl holds 'dict' under 'model', expected an EPD_predictor"):
        upstream_to_params(decode_upstream_pickle(_dumps({"model": {"a": 1}}), "x.pkl"), source="x.pkl")
    with pytest.raises(ValueError, match=r"x\.pkl is not a readable upstream EPD predictor pickle"):
        decode_upstream_pickle(b"\x80\x04garbage", "x.pkl")


# --- legacy storage blobs --------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.int64])
def test_legacy_blobs_match_torch_weights_only_load(dtype: torch.dtype) -> None:
    t = torch.arange(12, dtype=torch.float64).reshape(3, 4).to(dtype).t()[1:]  # non-contiguous, offset view
    buf = io.BytesIO()
    torch.save(t, buf, _use_new_zipfile_serialization=False)
    ours = read_legacy_storage(buf.getvalue())
    assert torch.equal(ours, torch.load(io.BytesIO(buf.getvalue()), weights_only=True)) and torch.equal(ours, t)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, (blob,) = t.contiguous().storage().__reduce__()  # the blob a pickled storage carries
        theirs = torch.load(io.BytesIO(blob), weights_only=True)
        theirs = torch.tensor(theirs.tolist(), dtype=dtype)
    assert torch.equal(read_legacy_storage(blob), theirs)


def test_damaged_blob() -> None:
    with pytest.raises(ValueError, match=r"damaged torch storage blob"):
        read_legacy_storage(pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2))


# --- CLI -------------------------------------------------------------------------------------


def test_cli(fake_modules: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    params = {k: torch.zeros(2, 2) for k in _PARAMS}
    src, out = tmp_path / "in.pkl", tmp_path / "out" / "t.safetensors"
    src.write_bytes(_predictor_pickle(params, {"num_steps": 3, "num_points": 2}))
    assert main([str(src), str(out), "--sigmas", "2,1", "0.5"]) == 0
    assert "wrote" in capsys.readouterr().out
    loaded = load_table(out)
    assert loaded.sigmas.tolist() == [2.0, 1.0, 0.5] and loaded.metadata["provenance"] == "imported"
    with pytest.raises(SystemExit):
        main([str(src), str(out)])  # exists, no --overwrite
    src.write_bytes(_dumps(_Reduce(os.mkdir, str(tmp_path / "ran"))))
    assert main([str(src), str(out), "--overwrite"]) == 1
    assert "refusing global posix.mkdir" in capsys.readouterr().err and not (tmp_path / "ran").exists()


@pytest.mark.skipif(not os.environ.get("EPD_UPSTREAM_DIR"), reason="set EPD_UPSTREAM_DIR to real upstream .pkl files")
def test_real_upstream_files(reference: dict[str, Any]) -> None:
    for table in reference["tables"]:
        path = Path(os.environ["EPD_UPSTREAM_DIR"]) / f"{table['name']}.pkl"
        if path.is_file():
            p = import_upstream_table(path)
            assert p.metadata["source_sha256"] == table["source"]["sha256"]
            torch.testing.assert_close(
                p.tau(), torch.tensor(table["intermediate_sigmas_tau"], dtype=F64), rtol=2e-6, atol=0
            )
