"""EPD table files: safetensors with string metadata, and compact JSON for a widget.

A file holds float64 arrays ``r``, ``lam``, ``c``, ``a`` [S, K] and ``sigmas`` [S + 1]
(the values the solver uses), plus the raw logits ``r_logits``, ``weight_logits``,
``scale_dir_logits``, ``scale_time_logits`` so that a save/load round trip is exact.
A file without the logit arrays is rebuilt from the values. Pickles are never read.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as _st_save

from .atomic import atomic_write
from .params import EPDParams, check_json_shape, check_json_text
from .vocab import MAX_POINTS

FORMAT = "epd-table"
FORMAT_VERSION = "1"
PICKLE_SUFFIXES = (".pkl", ".pickle", ".pt", ".pth", ".ckpt", ".bin")  # torch.save / pickle files, never opened
VALUE_ARRAYS = ("r", "lam", "c", "a")
LOGIT_ARRAYS = ("r_logits", "weight_logits", "scale_dir_logits", "scale_time_logits")
MAX_STEPS = 10_000  # rows of a table; ComfyUI's step widgets stop at 10000
_CONSISTENCY_ATOL = 1e-9  # stored values vs. the values recomputed from the stored logits


def _pickle_refusal(path: Path | str) -> ValueError:
    """The one message for every pickle we refuse to open."""
    return ValueError(
        f"refusing to unpickle {path}: EPD tables load only from .safetensors because a pickle can run code; "
        f"convert it with python -m epd_core.upstream {path} OUT.safetensors or the EPD Import Upstream Table node."
    )


def _table_arrays(params: EPDParams) -> dict[str, torch.Tensor]:
    """All arrays of a table, detached float64 contiguous CPU tensors."""
    arrays = {
        "r": params.r,
        "lam": params.lam,
        "c": params.c,
        "a": params.a,
        "sigmas": params.sigmas,
        **{name: getattr(params, name) for name in LOGIT_ARRAYS},
    }
    return {k: v.detach().to(torch.float64).contiguous() for k, v in arrays.items()}


def _stamped_metadata(params: EPDParams, *, created: bool) -> dict[str, Any]:
    """User metadata with provenance (default "unknown") and, for files, a UTC creation time."""
    meta = dict(params.metadata)
    meta.setdefault("provenance", "unknown")
    if created:
        now = _dt.datetime.now(_dt.timezone.utc)  # datetime.UTC needs 3.11; ComfyUI runs on 3.10
        meta.setdefault("created", now.isoformat(timespec="seconds"))
    return meta


def _header(params: EPDParams) -> dict[str, Any]:
    """Typed header fields shared by the file and the JSON form."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "num_points": params.num_points,
        "num_steps": params.num_steps,
        "scale_dir": params.scale_dir,
        "scale_time": params.scale_time,
        "afs": params.afs,
    }


def save_table(params: EPDParams, path: str | os.PathLike[str]) -> Path:
    """Write ``params`` to a safetensors file atomically (temp file in the same folder, then os.replace)."""
    path = Path(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise ValueError(f"refusing to save an EPD table as {path}: {path.suffix} means pickle; use .safetensors.")
    meta = _stamped_metadata(params, created=True)
    header = {k: _header_str(v) for k, v in _header(params).items()}
    header["epd_metadata"] = json.dumps(meta, sort_keys=True, allow_nan=False)
    atomic_write(path, _st_save(_table_arrays(params), metadata=header))
    return path


def _header_str(value: Any) -> str:
    """safetensors metadata is str -> str: bools as true/false, floats with repr (exact)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def looks_like_pickle(head: bytes) -> bool:
    """A file's first bytes are a raw pickle (protocol >= 2, 0x80) or a torch.save zip archive ('PK')."""
    return head[:1] == b"\x80" or head[:2] == b"PK"


def _sniff(path: Path) -> None:
    """Accept a safetensors header; refuse pickle (0x80 protocol byte) and zip ('PK', torch.save) files.

    The file's bytes are never echoed: through a symlink they could be any file's contents.
    """
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(9)
    n = int.from_bytes(head[:8], "little") if len(head) >= 8 else -1
    if len(head) == 9 and head[8:9] == b"{" and 2 <= n <= size - 8:
        return
    if looks_like_pickle(head):
        raise _pickle_refusal(path)
    raise ValueError(
        f"{path} is not a safetensors EPD table ({size} bytes, no safetensors header at the start); "
        "choose a file written by EPD Save Table (save_table)."
    )


def load_table(path: str | os.PathLike[str]) -> EPDParams:
    """Read and validate a table written by :func:`save_table`; pickles are refused, never opened.

    Only the known arrays are read, after their shapes are checked against the header; a file
    with other arrays is refused (an EPD table holds nothing else), so no foreign tensor is loaded.
    """
    path = Path(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise _pickle_refusal(path)
    if not path.is_file():
        raise FileNotFoundError(f"EPD table file not found: {path}")
    _sniff(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            header = dict(fh.metadata() or {})
            fields = _parse_header(header, str(path))
            _check_file_arrays(fh, fields, path)
            arrays = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    except SafetensorError as err:
        raise ValueError(f"{path} is not a readable safetensors file ({err}); re-save the table.") from err
    return params_from_parts(arrays, header, source=str(path))


def _check_file_arrays(fh: Any, fields: Mapping[str, Any], path: Path) -> None:
    """Names and shapes from the file's index, before any tensor is read."""
    names = set(fh.keys())
    unknown = sorted(names - {*VALUE_ARRAYS, "sigmas", *LOGIT_ARRAYS})
    if unknown:
        shown = ", ".join(repr(k[:40]) for k in unknown[:5]) + (", ..." if len(unknown) > 5 else "")
        raise ValueError(
            f"{path} holds {len(unknown)} arrays that are not part of an EPD table ({shown}); "
            "they are not read. Re-save the table with EPD Save Table (save_table), which writes only table arrays."
        )
    shapes = {name: tuple(fh.get_slice(name).get_shape()) for name in names}
    _check_shapes(shapes, fields["num_steps"], fields["num_points"], str(path))


def table_to_json(params: EPDParams) -> str:
    """Compact JSON of a table (same arrays as the file, as lists) for a workflow widget; deterministic."""
    meta = _stamped_metadata(params, created=False)
    obj: dict[str, Any] = {**_header(params), "metadata": meta}
    obj.update({k: v.tolist() for k, v in _table_arrays(params).items()})
    return json.dumps(obj, separators=(",", ":"), sort_keys=True, allow_nan=False)


def table_from_json(text: str) -> EPDParams:
    """Inverse of :func:`table_to_json`, with the same validation as :func:`load_table`."""
    source = "EPD table JSON"
    if not isinstance(text, str):
        raise ValueError(f"{source} must be text, got {type(text).__name__}; paste the text written by EPD Save Table.")
    check_json_text(text, source)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{source} is not valid JSON: {err}; paste the text written by EPD Save Table.") from err
    except ValueError as err:  # e.g. an integer longer than sys.get_int_max_str_digits()
        raise ValueError(
            f"{source} holds a value JSON cannot read ({err}); paste the text written by EPD Save Table."
        ) from err
    if not isinstance(obj, dict):
        # ValueError, like every other problem with the pasted text (callers catch one type).
        raise ValueError(f"{source} must be a JSON object, got {type(obj).__name__}.")
    names = (*VALUE_ARRAYS, "sigmas", *LOGIT_ARRAYS)
    header = {k: v for k, v in obj.items() if k not in names}
    _parse_header(header, source)  # K and the step count are checked before any array is built
    try:
        arrays = {k: torch.tensor(obj[k], dtype=torch.float64) for k in names if k in obj}
    except (TypeError, ValueError, OverflowError, RuntimeError) as err:
        raise ValueError(
            f"{source}: arrays must be nested lists of numbers ({type(err).__name__}: {err}); "
            "paste the text written by EPD Save Table."
        ) from err
    return params_from_parts(arrays, header, source=source)


def params_from_parts(arrays: Mapping[str, torch.Tensor], header: Mapping[str, Any], *, source: str) -> EPDParams:
    """Validate a header and arrays (from a file or JSON) and build the table; errors name ``source``."""
    fields = _parse_header(header, source)
    missing = [k for k in (*VALUE_ARRAYS, "sigmas") if k not in arrays]
    if missing:
        raise ValueError(f"{source} lacks the arrays {missing}; an EPD table needs r, lam, c, a and sigmas.")
    low = sorted({str(v.dtype).removeprefix("torch.") for v in arrays.values() if v.dtype != torch.float64})
    arr = {k: v.to(torch.float64) for k, v in arrays.items()}
    _check_shapes({k: tuple(v.shape) for k, v in arr.items()}, fields["num_steps"], fields["num_points"], source)
    _check_finite(arr, source)
    # Value ranges are checked once, by EPDParams: from_values for a values-only file; a file
    # with logits must give values equal to those its logits imply (_check_consistent).
    kw = {k: fields[k] for k in ("scale_dir", "scale_time", "afs", "metadata")}
    try:
        if all(k in arr for k in LOGIT_ARRAYS):
            params = EPDParams(*(arr[k] for k in LOGIT_ARRAYS), arr["sigmas"], **kw)
        else:
            return EPDParams.from_values(arr["r"], arr["lam"], arr["sigmas"], c=arr["c"], a=arr["a"], **kw)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{source}: {err}") from err
    _check_consistent(params, arr, source, low)
    return params


def _parse_header(header: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Check format and version and convert the header fields (strings in files, typed in JSON)."""
    fmt, version = header.get("format"), str(header.get("format_version"))
    if fmt != FORMAT:
        raise ValueError(f"{source} has format {fmt!r}, expected {FORMAT!r}; it is not an EPD table.")
    if version != FORMAT_VERSION:
        raise ValueError(
            f"{source} has format_version {version!r}; this ComfyUI-EPD reads version {FORMAT_VERSION!r}. "
            "Update ComfyUI-EPD to read newer tables."
        )
    try:
        fields = {
            "num_steps": _parse_count("num_steps", header.get("num_steps"), MAX_STEPS),
            "num_points": _parse_count("num_points", header.get("num_points"), MAX_POINTS),
            "scale_dir": _parse_float("scale_dir", header.get("scale_dir", 0.0)),
            "scale_time": _parse_float("scale_time", header.get("scale_time", 0.0)),
            "afs": _parse_bool(header.get("afs", False)),
        }
    except ValueError as err:
        raise ValueError(f"{source} has a malformed header: {err}; re-save the table with EPD Save Table.") from err
    fields["metadata"] = _parse_metadata(header.get("epd_metadata", header.get("metadata", {})), source)
    return fields


def _parse_count(name: str, value: Any, cap: int) -> int:
    """A whole number in [1, cap]: a JSON int or a string of digits; 5.7, true and "5.0" are refused."""
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 20:
        value = int(value)
    if value is None:
        raise ValueError(f"{name} is missing (a whole number between 1 and {cap})")
    if isinstance(value, bool) or not isinstance(value, int):
        shown = repr(value) if len(repr(value)) <= 40 else f"a {type(value).__name__} of {len(repr(value))} characters"
        raise ValueError(f"{name} must be a whole number between 1 and {cap}, got {shown}")
    if not 1 <= value <= cap:
        why = " (the num_points widget's maximum; K x batch rows go to one model call)" if name == "num_points" else ""
        shown = value if len(str(value)) <= 20 else f"a {len(str(value))}-digit number"
        raise ValueError(f"{name} must be between 1 and {cap}{why}, got {shown}")
    return value


def _parse_float(name: str, value: Any) -> float:
    """A finite number (JSON number or its string); bools and huge integers are refused."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)) or len(str(value)) > 40:
        raise ValueError(f"{name} must be a number in [0, 1), got a {type(value).__name__}")
    try:
        number = float(value)
    except (ValueError, OverflowError) as err:
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}") from err
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number in [0, 1), got {value!r}")
    return number


def _parse_metadata(meta: Any, source: str) -> dict[str, Any]:
    """The metadata mapping: JSON text in a file, an object in JSON; nesting capped before parsing."""
    if isinstance(meta, str):
        check_json_text(meta, f"{source}: epd_metadata")
        try:
            meta = json.loads(meta)
        except ValueError as err:
            raise ValueError(f"{source}: epd_metadata is not valid JSON ({err}); re-save the table.") from err
    if not isinstance(meta, dict):
        raise ValueError(f"{source}: metadata must be a JSON object, got {type(meta).__name__}; re-save the table.")
    try:
        check_json_shape(meta, f"{source}: metadata")
    except ValueError as err:
        raise ValueError(f"{err} Re-save the table with smaller metadata.") from err
    return meta


def _parse_bool(value: Any) -> bool:
    """Accept a JSON bool or the strings true/false."""
    if isinstance(value, bool):
        return value
    if value in ("true", "false"):
        return value == "true"
    raise ValueError(f"afs must be true or false, got {value!r}")


def _check_shapes(shapes: Mapping[str, tuple[int, ...]], steps: int, points: int, source: str) -> None:
    """Every table is [num_steps, num_points]; the grid has num_steps + 1 values."""
    for name in (*VALUE_ARRAYS, *(k for k in LOGIT_ARRAYS if k in shapes)):
        if name in shapes and shapes[name] != (steps, points):
            raise ValueError(
                f"{source}: array {name!r} has shape {shapes[name]}, but the header says "
                f"num_steps={steps}, num_points={points}; the file is inconsistent, re-save it."
            )
    if "sigmas" in shapes and shapes["sigmas"] != (steps + 1,):
        raise ValueError(f"{source}: sigmas has shape {shapes['sigmas']}, expected ({steps + 1},) = num_steps + 1.")


def _check_finite(arr: Mapping[str, torch.Tensor], source: str) -> None:
    """Every stored value is finite."""
    for name, t in arr.items():
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{source}: array {name!r} contains nan or inf; every value must be finite.")


def _check_consistent(params: EPDParams, arr: Mapping[str, torch.Tensor], source: str, low: list[str]) -> None:
    """Stored r/lam/c/a must equal the values recomputed from the stored logits.

    ``low``: dtypes below float64 found in the file; their rounding alone breaks the equality.
    """
    for name in VALUE_ARRAYS:
        diff = (getattr(params, name) - arr[name]).abs().max().item()
        if diff <= _CONSISTENCY_ATOL:
            continue
        if low:
            raise ValueError(
                f"{source} stores its arrays as {', '.join(low)}, not float64: the rounding makes the stored "
                f"{name!r} differ from the value implied by its logits by {diff:.3g}. Save tables with EPD Save "
                "Table (save_table writes float64), or convert the arrays to float64 and delete the *_logits "
                "arrays to rebuild them from the values."
            )
        raise ValueError(
            f"{source}: stored {name!r} differs from the value implied by its logits by {diff:.3g}; "
            "the file was edited by hand: re-save it, or delete the *_logits arrays to rebuild from values."
        )
