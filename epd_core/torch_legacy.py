"""Restricted reader for legacy ``torch.save`` blobs (the format before torch 1.6 zip files).

Upstream EPD pickles embed each tensor storage as such a blob (``torch.storage._load_from_bytes``).
A blob is a run of pickles: magic number, protocol version, sys info, the object (storages as
persistent ids), the list of storage keys; then per storage an int64 element count and the raw
little-endian bytes. The pickles are read by an unpickler that knows only storage types and
tensor layouts, so a blob cannot run code. Used by epd_core.upstream.

Why not ``torch.load(io.BytesIO(blob), weights_only=True)`` (decided for issue 15): it reads
this legacy format too, but (1) its allow-list is process-wide state, extended by
``torch.serialization.add_safe_globals`` from any other code in the ComfyUI process, so
"nothing from the file runs" would depend on what other packs registered; here the list
is local and holds only storage types and ``_rebuild_tensor(_v2)``; (2) torch.load takes
no budget, while here every pickle's operations, every storage (checked against the bytes
actually present) and every tensor copy are charged to the load's PickleBudget before the
work (epd_core.pickle_budget, issue 13), and a stride-0 or overlapping layout is refused;
(3) its accepted inputs change between torch releases, and the importer's refusals are
tested on exact texts. Re-weighed for issue 13: the reader stays. A BUILD cannot reach a
module-level object: ``_rebuild_tensor_v2`` resolves to a fresh function per GLOBAL, and
``_LazyTensor`` refuses state.
"""

from __future__ import annotations

import collections
import io
import math
import pickle
from collections.abc import Callable
from typing import Any

import torch

from .pickle_budget import MAX_TENSOR_DIMS, PickleBudget, describe

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER (legacy format)
_LEGACY_PROTOCOL = 1001
_STORAGE_DTYPES = {
    "DoubleStorage": torch.float64,
    "FloatStorage": torch.float32,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
    "UntypedStorage": torch.uint8,
}
_DECODE_ERRORS = (pickle.UnpicklingError, EOFError, TypeError, KeyError, IndexError, AttributeError, OverflowError)


def strided_copy(storage: Any, offset: Any, size: Any, stride: Any, budget: PickleBudget | None = None) -> torch.Tensor:
    """A bounds-checked strided copy out of a flat storage, within the load's element budget.

    A layout may not address more elements than its storage holds (overlapping or
    stride-0 layouts would multiply a small file into gigabytes), nor read past it.
    """
    budget = PickleBudget() if budget is None else budget
    if not torch.is_tensor(storage) or storage.ndim != 1:
        raise ValueError(f"tensor storage must be a flat tensor, got {type(storage).__name__}")
    offset, size, stride = _layout(offset, size, stride)
    what = f"tensor layout size {size} stride {stride}"
    count = math.prod(size)
    budget.take_elements(count, f"a {what}")
    if count > 1 and any(s == 0 and n > 1 for n, s in zip(size, stride)):
        raise ValueError(f"{what} has stride 0: it repeats one element; an EPD parameter never does.")
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if count > 0 and last >= storage.numel():
        raise ValueError(f"{what} + offset {offset} reads past its storage of {storage.numel()}")
    if count > storage.numel():
        raise ValueError(f"{what} has {count} elements, more than its storage of {storage.numel()} (overlapping).")
    return torch.as_strided(storage, size, stride, offset).clone()


def _layout(offset: Any, size: Any, stride: Any) -> tuple[int, tuple[int, ...], tuple[int, ...]]:
    """Offset, size and stride as non-negative ints of equal length (at most MAX_TENSOR_DIMS)."""
    ok = all(isinstance(v, (tuple, list)) and len(v) <= MAX_TENSOR_DIMS for v in (size, stride))
    values = (offset, *size, *stride) if ok else ()
    if not ok or len(size) != len(stride) or not all(_is_count(v) for v in values):
        raise ValueError(
            f"invalid tensor layout: offset {describe(offset)}, size {describe(size)}, stride {describe(stride)} "
            f"(expected non-negative integers, at most {MAX_TENSOR_DIMS} dimensions)"
        )
    return offset, tuple(size), tuple(stride)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


class _LazyTensor:
    """A tensor whose storage bytes come later in a legacy blob; made by a per-load factory."""

    __slots__ = ("args",)

    def __init__(self, storage: Any, offset: Any, size: Any, stride: Any, *_: Any) -> None:
        self.args = (storage, offset, size, stride)

    def __setstate__(self, state: Any) -> None:
        raise ValueError("a tensor record in a torch storage blob carries unexpected state (a BUILD)")


def _lazy_tensor_factory() -> Callable[..., _LazyTensor]:
    """A fresh stand-in for torch._utils._rebuild_tensor_v2: whatever a pickle sets on it dies with it."""

    def rebuild_tensor_v2(*args: Any) -> _LazyTensor:
        return _LazyTensor(*args)

    return rebuild_tensor_v2


class _LegacyUnpickler(pickle.Unpickler):
    """Restricted unpickler for one legacy ``torch.save`` record: storage types and tensors only."""

    def __init__(self, fh: io.BytesIO, storages: dict[str, tuple[torch.dtype, int]], budget: PickleBudget) -> None:
        budget.scan(fh, "a torch storage blob")
        super().__init__(fh)
        self.storages = storages

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]  # torch.dtype objects take no attributes
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _lazy_tensor_factory()
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict  # a builtin type: immutable
        raise ValueError(f"refusing global {module[:80]}.{name[:80]} inside a torch storage blob")

    def persistent_load(self, pid: Any) -> str:
        ok = isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"
        if not ok or not isinstance(pid[2], str) or not _is_count(pid[4]):
            raise ValueError(f"unexpected persistent id in a torch storage blob: {describe(pid)}")
        dtype, key, numel = pid[1], pid[2], pid[4]
        if not isinstance(dtype, torch.dtype) or (len(pid) > 5 and pid[5] is not None):
            raise ValueError("unsupported storage record (storage views predate torch 1.0)")
        self.storages[key] = (dtype, numel)
        return key


def read_legacy_storage(blob: bytes, budget: PickleBudget | None = None) -> torch.Tensor:
    """Parse a legacy ``torch.save`` blob (magic, protocol, sys info, object, keys, raw storages).

    Returns the flat storage (or the tensor, for a saved tensor) on CPU; storage locations
    such as 'cuda:0' are ignored. Only storage types and tensor layouts are accepted, and
    every pickle and storage is charged to ``budget`` (a fresh one when None) before it is
    read; anything else raises ValueError.
    """
    if not isinstance(blob, (bytes, bytearray)):
        raise ValueError(f"a torch storage blob must be bytes, got {type(blob).__name__}")
    try:
        return _read_blob(io.BytesIO(blob), PickleBudget() if budget is None else budget)
    except _DECODE_ERRORS as err:
        raise ValueError(f"damaged torch storage blob ({type(err).__name__}: {err})") from err


def _read_blob(fh: io.BytesIO, budget: PickleBudget) -> torch.Tensor:
    """The body of read_legacy_storage."""
    storages: dict[str, tuple[torch.dtype, int]] = {}
    header = [_LegacyUnpickler(fh, storages, budget).load() for _ in range(3)]
    if header[0] != _LEGACY_MAGIC or header[1] != _LEGACY_PROTOCOL:
        raise ValueError(f"not a legacy torch.save blob (magic {describe(header[0])}, protocol {describe(header[1])})")
    if not isinstance(header[2], dict) or header[2].get("little_endian") is not True:
        raise ValueError(f"only little-endian torch blobs are supported, sys info {describe(header[2])}")
    obj = _LegacyUnpickler(fh, storages, budget).load()
    keys = _LegacyUnpickler(fh, storages, budget).load()
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys) or set(keys) != set(storages):
        raise ValueError(f"storage key list {describe(keys)} does not match the {len(storages)} storage records")
    flat = {key: _read_storage(fh, *storages[key], budget) for key in keys}
    if isinstance(obj, str) and obj in flat:
        return flat[obj]
    if isinstance(obj, _LazyTensor) and isinstance(obj.args[0], str) and obj.args[0] in flat:
        storage, *layout = obj.args
        return strided_copy(flat[storage], *layout, budget=budget)
    raise ValueError(f"a torch storage blob should hold a storage or tensor, got {describe(obj)}")


def _read_storage(fh: io.BytesIO, dtype: torch.dtype, numel: int, budget: PickleBudget) -> torch.Tensor:
    """Read int64 element count plus raw little-endian bytes of one storage (charged before reading)."""
    count = int.from_bytes(fh.read(8), "little", signed=True)
    if count != numel or count < 0:
        raise ValueError(f"storage size {count} does not match its record ({numel})")
    budget.take_elements(count, "a storage")
    nbytes = count * torch.empty((), dtype=dtype).element_size()
    raw = fh.read(nbytes)
    if len(raw) != nbytes:
        raise ValueError(f"storage truncated: expected {nbytes} bytes, got {len(raw)}")
    return torch.frombuffer(bytearray(raw), dtype=dtype) if nbytes else torch.empty(0, dtype=dtype)
