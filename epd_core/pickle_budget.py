"""Budgets for reading an untrusted pickle: operations, graph depth, tensor elements (issue 13).

The upstream importer (epd_core.upstream, torch_legacy) checks each budget before the work
it bounds: the pickle operations are counted by a scan before the unpickler runs, every
tensor's element count is checked before it is copied, and the decoded graph's depth is
measured once, counting each shared object once, so a DAG such as ``x = [x, x]`` costs its
size on disk, not its size as a tree. One PickleBudget lives for one load.
"""

from __future__ import annotations

import io
import math
import pickle
import pickletools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

# A released predictor pickle (synthetic copies of the 11 published tables, built as in
# tests/core/test_upstream.py) takes ~600 operations, ~820 with its storage blobs, nests 7
# levels and carries four [10, 2] tensors. Each limit leaves a wide margin and still bounds
# one load to well under a second and a few tens of MB.
MAX_PICKLE_OPS = 100_000  # all pickles of one load (outer + storage blobs); a scan is ~0.3 us/op
MAX_PICKLE_DEPTH = 24  # nesting of the decoded objects, shared children counted once
MAX_TENSOR_ELEMENTS = 2**16  # per storage or tensor: steps x K tables, K <= 8
MAX_TOTAL_ELEMENTS = 2**20  # all storages and tensors of one load together (8 MB as float64)
MAX_TENSOR_DIMS = 4  # upstream tensors are 1-D (t_steps) or 2-D (tables)


@dataclass
class PickleBudget:
    """What one load may still spend; counters only grow, each check raises ValueError when over."""

    max_ops: int = MAX_PICKLE_OPS
    max_tensor_elements: int = MAX_TENSOR_ELEMENTS
    max_total_elements: int = MAX_TOTAL_ELEMENTS
    ops: int = 0
    elements: int = 0

    def scan(self, fh: io.BytesIO, what: str) -> None:
        """Count the operations of the pickle at ``fh``'s position (then rewind); refuse past the budget.

        A stream that does not parse raises pickle.UnpicklingError, as the unpickler would.
        """
        start = fh.tell()
        try:
            for _ in pickletools.genops(fh):
                self.ops += 1
                if self.ops > self.max_ops:
                    raise ValueError(
                        f"{what} has more than {self.max_ops} pickle operations; an upstream EPD predictor "
                        "has about 1,000"
                    )
        except (ValueError, EOFError, OverflowError) as err:
            if self.ops > self.max_ops:
                raise
            raise pickle.UnpicklingError(f"not a pickle stream: {err}") from err
        fh.seek(start)

    def take_elements(self, count: int, what: str) -> None:
        """Reserve ``count`` tensor elements, per tensor and for the whole load."""
        if count > self.max_tensor_elements:
            raise ValueError(
                f"{what} asks for {describe(count)} elements; at most {self.max_tensor_elements} are allowed "
                "per tensor (an EPD table is steps x K, K <= 8)"
            )
        self.elements += count
        if self.elements > self.max_total_elements:
            raise ValueError(
                f"{what} brings the file to {self.elements} tensor elements in total; at most "
                f"{self.max_total_elements} are allowed"
            )


def _children(obj: Any) -> Iterable[Any]:
    """The objects a decoded value refers to: container items, dict keys and values, instance state."""
    if isinstance(obj, dict):
        return [*obj.keys(), *obj.values()]
    if isinstance(obj, (list, tuple, set, frozenset)):
        return obj
    state = getattr(obj, "__dict__", None)
    return state.values() if isinstance(state, dict) and not isinstance(obj, type) else ()


def check_graph(root: Any, what: str, max_depth: int = MAX_PICKLE_DEPTH) -> None:
    """Refuse a decoded graph nested deeper than ``max_depth`` or holding a cycle; linear in its objects.

    Heights are computed once per object (post-order, no recursion), so shared children
    are not walked again. Functions, classes and tensors are leaves.
    """
    height: dict[int, int] = {}
    keep: list[Any] = []  # ids are only unique while the objects live
    stack: list[tuple[Any, bool]] = [(root, False)]
    on_path: set[int] = set()
    while stack:
        obj, done = stack.pop()
        key = id(obj)
        if done:
            on_path.discard(key)
            height[key] = 1 + max((height.get(id(c), 0) for c in _children(obj)), default=0)
            if height[key] > max_depth:
                _too_deep(what, height[key], max_depth)
            continue
        if key in height:
            continue
        if key in on_path:
            raise ValueError(f"{what} holds a reference cycle; upstream EPD predictors hold none")
        if len(on_path) >= max_depth:
            _too_deep(what, len(on_path) + 1, max_depth)
        on_path.add(key)
        keep.append(obj)
        stack.append((obj, True))
        stack.extend((c, False) for c in _children(obj) if not _is_leaf(c))


def _is_leaf(obj: Any) -> bool:
    return obj is None or isinstance(obj, (bool, int, float, str, bytes, bytearray))


def _too_deep(what: str, depth: int, max_depth: int) -> None:
    raise ValueError(
        f"{what} is nested {depth} levels deep; at most {max_depth} are allowed (an upstream EPD predictor nests 7)"
    )


def describe(value: Any) -> str:
    """A short, bounded description of a decoded value for messages; never a full repr."""
    if value is None or isinstance(value, (bool, float)):
        return repr(value)
    if isinstance(value, int):
        if value.bit_length() > 64:
            return f"an integer of {value.bit_length()} bits"
        return f"2^{value.bit_length() - 1}" if value > 1024 and value & (value - 1) == 0 else repr(value)
    if isinstance(value, str):
        return repr(value) if len(value) <= 40 else f"{value[:30]!r}... ({len(value)} characters)"
    if isinstance(value, (list, tuple, dict, set, frozenset)):
        return f"a {type(value).__name__} of {len(value)} item{'' if len(value) == 1 else 's'}"
    return f"a {type(value).__name__}"


OMIT = object()  # json_copy's answer for a value that is not small JSON data


def json_copy(value: Any, left: list[int], max_depth: int = 6, max_chars: int = 1024) -> Any:
    """A fresh JSON-data copy of ``value`` spending at most ``left[0]`` nodes, else OMIT.

    Shared children are copied each time they occur, so the node allowance (not a walk of
    the whole tree) is what stops a DAG; recursion is bounded by ``max_depth``.
    """
    left[0] -= 1
    if left[0] < 0 or max_depth < 0:
        return OMIT
    if value is None or isinstance(value, bool) or (isinstance(value, float) and math.isfinite(value)):
        return value
    if isinstance(value, int):
        return value if value.bit_length() <= 64 else OMIT
    if isinstance(value, str):
        return value if len(value) <= max_chars else OMIT
    if isinstance(value, (list, tuple)):
        items = []
        for item in value:
            items.append(json_copy(item, left, max_depth - 1, max_chars))
            if items[-1] is OMIT:
                return OMIT
        return items
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            out[key] = (
                json_copy(item, left, max_depth - 1, max_chars)
                if isinstance(key, str) and len(key) <= max_chars
                else OMIT
            )
            if out[key] is OMIT:
                return OMIT
        return out
    return OMIT
