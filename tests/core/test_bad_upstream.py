"""Bad-input corpus for the upstream .pkl importer (issue 13): every hostile class is refused fast.

Each case is generated here (no binaries are committed). A case passes when the import
raises ValueError naming the file and the cause within ``_SECONDS``, the Python heap
and the process high-water mark stay small, nothing from the file ran, and a valid
file imports correctly right after it (no state left behind in the process).
"""

from __future__ import annotations

import collections
import importlib.util
import io
import pickle
import resource
import sys
import time
import tracemalloc
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch._utils import _rebuild_tensor_v2
from torch.storage import _load_from_bytes

from epd_core import pickle_budget, torch_legacy, upstream_pickle
from epd_core.table_io import load_table
from epd_core.torch_legacy import read_legacy_storage
from epd_core.upstream import MAX_PICKLE_BYTES, import_upstream_table, main


def _sibling(name: str) -> Any:
    """tests/core/<name>.py, loaded by path (tests/core is not on sys.path in importlib mode)."""
    spec = importlib.util.spec_from_file_location(f"epd_tests_{name}", Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_writer = _sibling("test_upstream")  # the one writer of upstream-shaped pickles
_PARAMS, _dumps, _Persistent, _predictor_pickle, _Reduce = (
    _writer._PARAMS, _writer._dumps, _writer._Persistent, _writer._predictor_pickle, _writer._Reduce
)  # fmt: skip
fake_modules = _writer.fake_modules  # the fixture that makes the pickler's stand-in globals importable
_SECONDS = 2.0  # every refusal; the unbounded importer took 82-118 s (24-level DAG) or never ended
_HEAP_BYTES = 32 * 2**20  # Python objects allocated while refusing (tracemalloc peak)
_RSS_GROWTH_KB = 100 * 2**10  # process high-water mark growth (catches torch allocations)
_GOOD_ATTRS = {"num_steps": 3, "num_points": 2, "schedule_type": "time_uniform", "sigma_min": 0.002,
               "sigma_max": 80.0, "schedule_rho": 1.0, "afs": False, "dataset_name": "cifar10"}  # fmt: skip
_MAGIC = b"".join(pickle.dumps(v, protocol=2) for v in (0x1950A86A20F9469CFC6C, 1001))  # legacy torch.save
_LEGACY_HEADER = _MAGIC + pickle.dumps({"little_endian": True}, protocol=2)
_PERSIST = b"ctorch_utils.persistence\n_reconstruct_persistent_obj\n"


def _good_params() -> dict[str, torch.Tensor]:
    return {k: torch.full((2, 2), 0.25 * (i + 1)) for i, k in enumerate(_PARAMS)}


def _predictor(**attrs: Any) -> bytes:
    """A predictor pickle with the good attributes overlaid by ``attrs``."""
    return _predictor_pickle(_good_params(), {**_GOOD_ATTRS, **attrs})


def _storage(n: int) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.zeros(n).storage()


def _tensor(storage: Any, size: tuple[int, ...], stride: tuple[int, ...]) -> _Reduce:
    return _Reduce(_rebuild_tensor_v2, storage, 0, size, stride, False, collections.OrderedDict())


def _nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


def _dag(levels: int, fan_out: int = 2) -> list[Any]:
    """x = [x] * fan_out, ``levels`` times: a few bytes per level, fan_out ** levels as a tree."""
    value: list[Any] = [0]
    for _ in range(levels):
        value = [value] * fan_out
    return value


def _deep_predictor(depth: int) -> bytes:
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 4 * depth))  # the C pickler recurses once per level
    try:
        return _predictor(extra=_nested(depth))
    finally:
        sys.setrecursionlimit(limit)


def _blob(obj_pickle: bytes) -> bytes:
    """A legacy torch.save blob whose object record is ``obj_pickle``, with no storages."""
    return _LEGACY_HEADER + obj_pickle + pickle.dumps([], protocol=2)


def _in_model(blob: bytes) -> bytes:
    return _dumps({"model": _Reduce(_load_from_bytes, blob)})


# --- the corpus: (name, builder, message) ---------------------------------------------------------
# Builders return the file's bytes; each message regex names the cause (the file name is checked apart).

_LAZY_BUILD = b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\nN}X\x08\x00\x00\x00__init__Ns\x86b."
_CORPUS: list[tuple[str, Callable[[], bytes], str]] = [
    ("dag_64_levels", lambda: _predictor(extra=_dag(64)), r"nested 25 levels deep; at most 24"),
    ("dag_20_levels", lambda: _predictor(extra=_dag(20)), r"nested 2\d levels deep; at most 24"),
    ("deep_attribute", lambda: _deep_predictor(2000), r"nested \d+ levels deep.*at most \d+"),
    ("opcode_flood", lambda: b"\x80\x02" + b"]" * 2_000_000 + b".", r"more than \d+ pickle operations"),
    ("stride_0", lambda: _dumps({"model": _tensor(_storage(1), (4096, 4096), (0, 0))}), r"elements"),
    ("stride_0_small", lambda: _dumps({"model": _tensor(_storage(1), (64,), (0,))}), r"stride 0"),
    ("elements_2_40", lambda: _dumps({"model": _tensor(_storage(4), (2**40,), (0,))}), r"2\^40|1099511627776"),
    ("overlapping", lambda: _dumps({"model": _tensor(_storage(512), (256, 256), (1, 1))}), r"overlapping"),
    (
        "shared_storage",
        lambda: _dumps({"model": [_tensor(s, (2**16,), (1,)) for s in [_storage(2**16)] * 64]}),
        r"elements in total",
    ),
    ("lazy_tensor_class_build", lambda: _in_model(_blob(_LAZY_BUILD)), r"storage or tensor, got a function"),
    ("persistent_newobj", lambda: b"\x80\x02}X\x05\x00\x00\x00model" + _PERSIST + b")\x81s.", r"NEWOBJ"),
    (
        "persistent_function_build",
        lambda: b"\x80\x02" + _PERSIST + b"N}X\x08\x00\x00\x00__init__Ns\x86b.",
        r"holds 'function' under 'model'",
    ),
    (
        "sigmoid_class_build",
        lambda: b"\x80\x02ctorch.nn.modules.activation\nSigmoid\nN}X\x08\x00\x00\x00__init__Ns\x86b.",
        r"TypeError: _InertModule.__setstate__\(\) missing",
    ),
    (
        "class_swap",
        lambda: (
            b"\x80\x02}X\x05\x00\x00\x00modelcsolvers\nepd_sampler\nN}X\t\x00\x00\x00__class__" + _PERSIST + b"s\x86bs."
        ),
        r"state",
    ),
    ("afs_no", lambda: _predictor(afs="no"), r"'afs' is 'no'.*True or False"),
    ("num_points_2_5", lambda: _predictor(num_points=2.5), r"'num_points' is 2\.5.*integer"),
    ("num_steps_list", lambda: _predictor(num_steps=[4]), r"'num_steps' is a list.*integer"),
    ("num_steps_text", lambda: _predictor(num_steps="abc"), r"'num_steps' is 'abc'.*integer"),
    ("sigma_min_text", lambda: _predictor(sigma_min="tiny"), r"'sigma_min' is 'tiny'.*number"),
    (
        "num_points_9",
        lambda: _predictor_pickle({k: torch.zeros(2, 9) for k in _PARAMS}, _GOOD_ATTRS | {"num_points": 9}),
        r"K=9.*at most 8",
    ),
    ("class_name_dag", lambda: _dumps({"model": _persistent_meta(class_name=_dag(40))}), r"class_name"),
    ("cycle", lambda: _predictor(extra=_cycle()), r"reference cycle"),
    ("deep_blob_header", lambda: _in_model(_MAGIC + _deep_raw(3000)), r"sys info a list of 1 item\b"),
]


def _persistent_meta(**meta: Any) -> Any:
    return _Persistent({"type": "class", "version": 6, **meta})


def _cycle() -> list[Any]:
    value: list[Any] = []
    value.append(value)
    return value


def _deep_raw(depth: int) -> bytes:
    """A pickle of a list nested ``depth`` deep, written as opcodes (no recursion while writing)."""
    return b"\x80\x02" + b"]" * depth + b"a" * (depth - 1) + b"."


# --- the checks ------------------------------------------------------------------------------------

_WATCHED_EVENTS = {"exec", "compile", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "subprocess.Popen",
                   "os.mkdir", "os.remove", "os.rename", "ctypes.dlopen", "socket.connect"}  # fmt: skip
_events: list[str] = []
_armed = [False]


def _audit(event: str, _args: tuple[Any, ...]) -> None:
    if _armed[0] and event in _WATCHED_EVENTS:
        _events.append(event)


sys.addaudithook(_audit)  # audit hooks cannot be removed; it records only while a check is armed


def _stand_in_state() -> list[dict[str, Any]]:
    """The attributes of every stand-in class a pickle can name (a BUILD must leave them as they are)."""
    classes = [torch_legacy._LazyTensor, upstream_pickle.PersistentObject, upstream_pickle.SolverReference,
               upstream_pickle.TensorBox, upstream_pickle._Sigmoid, upstream_pickle._Softmax]  # fmt: skip
    return [dict(vars(c)) for c in classes]


@pytest.fixture
def valid(fake_modules: None, tmp_path: Path) -> Callable[[], None]:
    """A check that a good predictor and a legacy tensor blob still import exactly (run once to warm up)."""
    path = tmp_path / "good.pkl"
    path.write_bytes(_predictor())
    tensor = torch.arange(6, dtype=torch.float64).reshape(2, 3).t()
    buf = io.BytesIO()
    torch.save(tensor, buf, _use_new_zipfile_serialization=False)

    def check() -> None:
        p = import_upstream_table(path)
        assert torch.equal(p.r_logits, torch.full((2, 2), 0.25, dtype=torch.float64)) and p.afs is False
        assert p.num_points == 2 and p.metadata["upstream"]["dataset_name"] == "cifar10"
        assert torch.equal(read_legacy_storage(buf.getvalue()), tensor)

    check()
    return check


def _refused(path: Path, match: str, valid: Callable[[], None]) -> str:
    """Import ``path``: refused with ``match`` and the file's name, fast, small, no code run; then ``valid()``."""
    classes, rss = _stand_in_state(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    _armed[0], start = True, time.perf_counter()
    try:
        with pytest.raises(ValueError, match=match) as info:
            import_upstream_table(path)
        elapsed, (_, peak) = time.perf_counter() - start, tracemalloc.get_traced_memory()
    finally:
        _armed[0] = False
        tracemalloc.stop()
    assert str(path) in str(info.value), info.value
    assert elapsed < _SECONDS, f"{path.name}: refused after {elapsed:.2f} s"
    assert peak < _HEAP_BYTES, f"{path.name}: {peak} bytes of Python objects while refusing"
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss < _RSS_GROWTH_KB
    assert not _events, f"{path.name} ran {_events}"
    assert _stand_in_state() == classes
    valid()
    return str(info.value)


@pytest.mark.parametrize(("name", "build", "match"), _CORPUS, ids=[case[0] for case in _CORPUS])
def test_hostile_file_is_refused(
    name: str, build: Callable[[], bytes], match: str, valid: Callable[[], None], tmp_path: Path
) -> None:
    path = tmp_path / f"{name}.pkl"
    path.write_bytes(build())
    message = _refused(path, match, valid)
    assert len(message) < 1000  # a cause and a fix, never the file's contents


def test_oversized_file_is_refused_before_reading(valid: Callable[[], None], tmp_path: Path) -> None:
    path = tmp_path / "sparse.pkl"
    with path.open("wb") as fh:
        fh.truncate(2**30)  # 1 GiB, sparse: no disk used; the old importer read it all (1.57 GB RSS)
    _refused(path, rf"is {2**30} bytes.*at most {MAX_PICKLE_BYTES} bytes are read", valid)
    path.write_bytes(b"\x80\x02" + b"N" * MAX_PICKLE_BYTES)  # limit + 2 bytes: the cap is exact
    _refused(path, rf"is {MAX_PICKLE_BYTES + 2} bytes", valid)


@pytest.mark.parametrize(("levels", "fan_out"), [(16, 2), (6, 16)])
def test_shared_children_never_land_in_metadata(
    levels: int, fan_out: int, valid: Callable[[], None], tmp_path: Path
) -> None:
    # a DAG within the depth budget: 2^16 or 16^6 values as a tree, a few bytes per level on disk
    path, out = tmp_path / "dag.pkl", tmp_path / "dag.safetensors"
    path.write_bytes(_predictor(extra=_dag(levels, fan_out), note=["small", 1]))
    start = time.perf_counter()
    assert main([str(path), str(out)]) == 0
    assert time.perf_counter() - start < _SECONDS
    upstream = load_table(out).metadata["upstream"]
    assert "extra" not in upstream and upstream["note"] == ["small", 1] and upstream["num_steps"] == 3
    assert out.stat().st_size < 64 * 2**10  # the 20-level DAG used to write a 6.3 MB table
    valid()


def test_cli_names_the_file_and_the_field(
    fake_modules: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src, out = tmp_path / "in.pkl", tmp_path / "t.safetensors"
    for attrs, field in (({"num_steps": [4]}, "'num_steps' is a list"), ({"num_steps": "abc", "afs": "no"}, "'afs'")):
        src.write_bytes(_predictor(**attrs))
        assert main([str(src), str(out)]) == 1  # an error message, not a traceback
        err = capsys.readouterr().err
        assert str(src) in err and field in err and "re-download" in err and not out.exists()
    src.write_bytes(_predictor())
    assert main([str(src), str(out), "--sigmas", "80", "x"]) == 1
    assert "--sigmas takes numbers" in capsys.readouterr().err


@pytest.mark.parametrize(("value", "expected"), [(True, True), (False, False), (1, True), (0, False), (None, False)])
def test_strict_afs_accepts_bools_and_0_1(value: Any, expected: bool, fake_modules: None, tmp_path: Path) -> None:
    path = tmp_path / "t.pkl"
    path.write_bytes(_predictor(afs=value))
    assert import_upstream_table(path).afs is expected


def test_budgets_bound_one_load_only() -> None:
    budget = pickle_budget.PickleBudget(max_total_elements=10)
    storage = torch.zeros(8)
    torch_legacy.strided_copy(storage, 0, (8,), (1,), budget)
    with pytest.raises(ValueError, match=r"16 tensor elements in total; at most 10"):
        torch_legacy.strided_copy(storage, 0, (8,), (1,), budget)
    assert torch_legacy.strided_copy(storage, 0, (8,), (1,)).numel() == 8  # a fresh budget per call
