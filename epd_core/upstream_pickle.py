"""Decode upstream BeierZhu/EPD predictor pickles into inert stand-ins, within budgets.

Every global the file names resolves to a stand-in from a fixed allow-list or is refused;
stand-in classes are sealed and stand-in functions are made fresh for each load, so
nothing a pickle sets (a BUILD on a class or function) outlives the load. The embedded
``module_src`` is dropped unread and storage blobs go to the restricted legacy reader
(torch_legacy). The budgets of epd_core.pickle_budget are checked before the work they
bound (issue 13). Nothing from a file runs. epd_core.upstream converts the result.
"""

from __future__ import annotations

import collections
import io
import pickle
import re
from collections.abc import Callable
from typing import Any

import torch

from .pickle_budget import PickleBudget, check_graph, describe
from .torch_legacy import read_legacy_storage, strided_copy

MAX_PICKLE_BYTES = 16 * 2**20  # released predictor pickles are 7-15 KB; checked with stat before reading
_DECODE_ERRORS = (pickle.UnpicklingError, EOFError, TypeError, AttributeError, IndexError, KeyError, OverflowError)
# ICCV loss_fn objects keep references to solver functions; they become inert names, never callables.
_SOLVER_REF = re.compile(r"[a-z0-9_]+_sampler")


# --- stand-ins: plain data holders, nothing here imports or runs upstream code ---------------


class _Sealed(type):
    """Metaclass of the stand-in classes: a pickle's BUILD cannot set attributes on them (issue 13)."""

    def __setattr__(cls, name: str, value: Any) -> None:
        raise ValueError(f"refusing to set {describe(name)} on the stand-in class {cls.__name__} (a BUILD)")

    def __delattr__(cls, name: str) -> None:
        raise ValueError(f"refusing to delete {describe(name)} from the stand-in class {cls.__name__}")


class _InertModule(metaclass=_Sealed):
    """Stand-in for a torch.nn activation module: keeps its pickled state, computes nothing."""

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _Sigmoid(_InertModule):
    """Stand-in for torch.nn.modules.activation.Sigmoid."""


class _Softmax(_InertModule):
    """Stand-in for torch.nn.modules.activation.Softmax."""


class PersistentObject(metaclass=_Sealed):
    """What ``torch_utils.persistence._reconstruct_persistent_obj(meta)`` would rebuild, as plain data.

    ``module_src`` is deliberately not kept: it is code, and it is never executed.
    """

    def __init__(self, meta: Any) -> None:
        if not isinstance(meta, dict) or meta.get("type") != "class":
            raise ValueError(f"persistent object meta must be a dict with type 'class', got {describe(meta)}")
        name = meta.get("class_name")
        if not isinstance(name, str) or len(name) > 200:
            raise ValueError(f"persistent object class_name must be a class name, got {describe(name)}")
        self.class_name = name
        self.version = meta.get("version")
        self.state = meta.get("state")

    def __setstate__(self, state: Any) -> None:
        self.extra_state = state


class SolverReference(metaclass=_Sealed):
    """A pickled reference to an upstream solver function (ICCV ``loss_fn``); only its name is kept."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __setstate__(self, state: Any) -> None:
        raise ValueError(f"the solver reference {self.name} carries unexpected state (a BUILD)")


class TensorBox(metaclass=_Sealed):
    """A decoded tensor, boxed so that no torch object is ever exposed to the pickle machine (BUILD)."""

    def __init__(self, value: torch.Tensor) -> None:
        self.value = value

    def __setstate__(self, state: Any) -> None:
        raise ValueError("a tensor in an upstream EPD pickle carries unexpected state")


def _stand_in_functions(budget: PickleBudget) -> dict[tuple[str, str], Callable[..., Any]]:
    """Fresh stand-ins for the torch functions, bound to one load's budget; a BUILD on one dies with it."""

    def load_from_bytes(blob: Any) -> TensorBox:  # torch.storage._load_from_bytes
        return TensorBox(read_legacy_storage(blob, budget))

    def rebuild_tensor_v2(storage: Any, offset: Any, size: Any, stride: Any, *_: Any) -> TensorBox:
        if not isinstance(storage, TensorBox):
            raise ValueError(f"tensor storage must come from a storage blob, got {type(storage).__name__}")
        return TensorBox(strided_copy(storage.value, offset, size, stride, budget))

    def rebuild_parameter(data: Any, *_: Any) -> Any:  # requires_grad and hooks are ignored
        return data

    def reconstruct_persistent_obj(meta: Any) -> PersistentObject:
        return PersistentObject(meta)

    return {
        ("torch._utils", "_rebuild_parameter"): rebuild_parameter,
        ("torch._utils", "_rebuild_tensor_v2"): rebuild_tensor_v2,
        ("torch.storage", "_load_from_bytes"): load_from_bytes,
        ("torch_utils.persistence", "_reconstruct_persistent_obj"): reconstruct_persistent_obj,
    }


def unbox(value: Any) -> torch.Tensor | None:
    """The float64 tensor inside a TensorBox, else None."""
    return value.value.to(torch.float64) if isinstance(value, TensorBox) else None


# --- the outer pickle ---------------------------------------------------------------------------

_CLASSES: dict[tuple[str, str], type] = {
    ("collections", "OrderedDict"): collections.OrderedDict,  # a builtin type: immutable
    ("torch.nn.modules.activation", "Sigmoid"): _Sigmoid,
    ("torch.nn.modules.activation", "Softmax"): _Softmax,
}
ALLOWED_GLOBALS: tuple[tuple[str, str], ...] = (
    *_CLASSES,
    ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch.storage", "_load_from_bytes"),
    ("torch_utils.persistence", "_reconstruct_persistent_obj"),
)
_NOT_RUN = (
    "It is not an upstream EPD predictor as released; nothing in it ran and nothing was converted. "
    "Use a predictor .pkl saved by BeierZhu/EPD training."
)


class UpstreamUnpickler(pickle.Unpickler):
    """Resolves exactly the globals of an upstream predictor pickle to stand-ins; refuses all others."""

    def __init__(self, fh: io.BytesIO, budget: PickleBudget) -> None:
        super().__init__(fh)
        self.budget = budget

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _CLASSES:
            return _CLASSES[(module, name)]
        if (module, name) in ALLOWED_GLOBALS:
            return _stand_in_functions(self.budget)[(module, name)]  # fresh for every GLOBAL
        if module == "solvers" and _SOLVER_REF.fullmatch(name):
            return SolverReference(name)  # the global's value is this name holder; it is never called
        allowed = ", ".join(f"{m}.{n}" for m, n in ALLOWED_GLOBALS)
        raise ValueError(
            f"refusing global {module[:80]}.{name[:80]}: an upstream EPD predictor pickle only uses "
            f"{allowed} (and solvers.*_sampler names)"
        )


def decode_upstream_pickle(data: bytes, source: str = "upstream pickle") -> Any:
    """Decode an upstream pickle into plain stand-ins (dicts, tensors, PersistentObject); runs no file code.

    The budgets (epd_core.pickle_budget) are checked before the work they bound: the
    operations are counted before unpickling, tensor elements before each copy, and the
    decoded graph's depth (shared objects counted once) before anything walks it.
    """
    if len(data) > MAX_PICKLE_BYTES:
        raise ValueError(f"{source} is {len(data)} bytes; at most {MAX_PICKLE_BYTES} are read. {_NOT_RUN}")
    budget, fh = PickleBudget(), io.BytesIO(data)
    try:
        budget.scan(fh, "the pickle")
        obj = UpstreamUnpickler(fh, budget).load()
        check_graph(obj, "the decoded pickle")
    except ValueError as err:
        raise ValueError(f"{source}: {str(err).rstrip('.')}. {_NOT_RUN}") from err
    except _DECODE_ERRORS as err:
        raise ValueError(
            f"{source} is not a readable upstream EPD predictor pickle ({type(err).__name__}: {err}). {_NOT_RUN}"
        ) from err
    return obj
