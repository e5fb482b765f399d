"""Restricted reader for legacy ``torch.save`` blobs (the format before torch 1.6 zip files).

Upstream EPD pickles embed each tensor storage as such a blob (``torch.storage._load_from_bytes``).
A blob is a run of pickles: magic number, protocol version, sys info, the object (storages as
persistent ids), the list of storage keys; then per storage an int64 element count and the raw
little-endian bytes. The pickles are read by an unpickler that knows only storage types and
tensor layouts, so a blob cannot run code. Used by epd_core.upstream (epd-method.md §6.1).

Why not ``torch.load(io.BytesIO(blob), weights_only=True)`` (decided for issue 15): it reads
this legacy format too, but (1) its allow-list is process-wide state, extended by
``torch.serialization.add_safe_globals`` from any other code in the ComfyUI process, so
"nothing from the file runs" would depend on what other packs registered; here the list
is local and holds only storage types and ``_rebuild_tensor(_v2)``; (2) torch.load takes
no size budget, while ``_read_storage`` checks each storage's count against the bytes
actually present, inside the importer's byte budget (upstream.MAX_PICKLE_BYTES, issue 13);
(3) its accepted inputs change between torch
releases, and the importer's refusals are tested on exact texts. The reader stays.
"""

from __future__ import annotations

import collections
import io
import math
import pickle
from typing import Any

import torch

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


def strided_copy(storage: Any, offset: Any, size: Any, stride: Any) -> torch.Tensor:
    """A bounds-checked strided copy out of a flat storage (never reads outside it)."""
    if not torch.is_tensor(storage) or storage.ndim != 1:
        raise ValueError(f"tensor storage must be a flat tensor, got {type(storage).__name__}")
    offset, size, stride = int(offset), tuple(int(v) for v in size), tuple(int(v) for v in stride)
    if len(size) != len(stride) or offset < 0 or min((*size, *stride, 0)) < 0:
        raise ValueError(f"invalid tensor layout: offset {offset}, size {size}, stride {stride}")
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if math.prod(size) > 0 and last >= storage.numel():
        raise ValueError(f"tensor layout {size}/{stride}+{offset} reads past its storage of {storage.numel()}")
    return torch.as_strided(storage, size, stride, offset).clone()


class _LazyTensor:
    """A tensor whose storage bytes come later in a legacy blob."""

    def __init__(self, storage: Any, offset: Any, size: Any, stride: Any, *_: Any) -> None:
        self.args = (storage, offset, size, stride)


class _LegacyUnpickler(pickle.Unpickler):
    """Restricted unpickler for one legacy ``torch.save`` record: storage types and tensors only."""

    def __init__(self, fh: io.BytesIO, storages: dict[str, tuple[torch.dtype, int]]) -> None:
        super().__init__(fh)
        self.storages = storages

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _LazyTensor
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        raise ValueError(f"refusing global {module}.{name} inside a torch storage blob")

    def persistent_load(self, pid: Any) -> str:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise ValueError(f"unexpected persistent id in a torch storage blob: {pid!r}")
        dtype, key, numel = pid[1], str(pid[2]), int(pid[4])
        if not isinstance(dtype, torch.dtype) or (len(pid) > 5 and pid[5] is not None):
            raise ValueError(f"unsupported storage record {pid!r} (storage views predate torch 1.0)")
        self.storages[key] = (dtype, numel)
        return key


def read_legacy_storage(blob: bytes) -> torch.Tensor:
    """Parse a legacy ``torch.save`` blob (magic, protocol, sys info, object, keys, raw storages).

    Returns the flat storage (or the tensor, for a saved tensor) on CPU; storage locations
    such as 'cuda:0' are ignored. Only storage types and tensor layouts are accepted;
    anything else raises ValueError.
    """
    if not isinstance(blob, (bytes, bytearray)):
        raise ValueError(f"a torch storage blob must be bytes, got {type(blob).__name__}")
    try:
        return _read_blob(io.BytesIO(blob))
    except _DECODE_ERRORS as err:
        raise ValueError(f"damaged torch storage blob ({type(err).__name__}: {err})") from err


def _read_blob(fh: io.BytesIO) -> torch.Tensor:
    """The body of read_legacy_storage."""
    storages: dict[str, tuple[torch.dtype, int]] = {}
    header = [_LegacyUnpickler(fh, storages).load() for _ in range(3)]
    if header[0] != _LEGACY_MAGIC or header[1] != _LEGACY_PROTOCOL:
        raise ValueError(f"not a legacy torch.save blob (magic {header[0]!r}, protocol {header[1]!r})")
    if not isinstance(header[2], dict) or header[2].get("little_endian") is not True:
        raise ValueError(f"only little-endian torch blobs are supported, sys info {header[2]!r}")
    obj = _LegacyUnpickler(fh, storages).load()
    keys = _LegacyUnpickler(fh, storages).load()
    if not isinstance(keys, list) or set(keys) != set(storages):
        raise ValueError(f"storage key list {keys!r} does not match the records {sorted(storages)}")
    flat = {key: _read_storage(fh, *storages[key]) for key in keys}
    if isinstance(obj, str):
        return flat[obj]
    if isinstance(obj, _LazyTensor):
        storage, *layout = obj.args
        return strided_copy(flat[storage], *layout)
    raise ValueError(f"a torch storage blob should hold a storage or tensor, got {type(obj).__name__}")


def _read_storage(fh: io.BytesIO, dtype: torch.dtype, numel: int) -> torch.Tensor:
    """Read int64 element count plus raw little-endian bytes of one storage."""
    count = int.from_bytes(fh.read(8), "little", signed=True)
    nbytes = count * torch.empty((), dtype=dtype).element_size()
    if count != numel or count < 0:
        raise ValueError(f"storage size {count} does not match its record ({numel})")
    raw = fh.read(nbytes)
    if len(raw) != nbytes:
        raise ValueError(f"storage truncated: expected {nbytes} bytes, got {len(raw)}")
    return torch.frombuffer(bytearray(raw), dtype=dtype) if nbytes else torch.empty(0, dtype=dtype)
