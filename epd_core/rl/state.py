"""Save and resume an RDPO policy: a safetensors file with the network and, as JSON, its starting table.

The residual network alone is meaningless without the table it is a residual on, so the
file carries both: tensors = the policy's state_dict (buffers included), metadata = the
start table (table_io JSON), the policy options and the iterations done. The optimiser's
moments are not kept; Adam re-estimates them within a few steps of a resumed run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open
from safetensors.torch import save as st_save

from ..atomic import atomic_write
from ..params import EPDParams, check_json_text
from ..table_io import table_from_json, table_to_json
from .policy import DirichletTablePolicy, check_policy_options

FORMAT = "epd_rl_policy"
FORMAT_VERSION = "1"


def save_policy(policy: DirichletTablePolicy, path: str | os.PathLike[str], iterations: int = 0) -> Path:
    """Write the policy atomically; ``iterations`` records how far it was trained."""
    options = {"concentration": policy.concentration, "learn_scales": policy.learn_scales,
               "scale_std": policy.scale_std, "hidden": policy.hidden, "layers": policy.layers}  # fmt: skip
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "table": table_to_json(policy.table),
            "options": json.dumps(options), "iterations": str(int(iterations))}  # fmt: skip
    tensors = {k: v.detach().cpu().contiguous() for k, v in policy.state_dict().items()}
    return atomic_write(path, st_save(tensors, metadata=meta))


def load_policy(path: str | os.PathLike[str]) -> tuple[DirichletTablePolicy, int]:
    """(policy, iterations) from a file written by save_policy; anything else is refused with the reason.

    The options are checked (names, types, size caps) before the network is built, and the
    tensors' names and shapes before any tensor is read.
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"{path}: policy states load only from .safetensors files written by EPD RL Tune")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            _check_format(meta, path)
            policy = DirichletTablePolicy(_table(meta, path), **_options(meta, path))
            _check_tensors(f, policy, path)
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    except (SafetensorError, OSError) as err:
        raise ValueError(
            f"{path}: not a readable safetensors file ({err}); choose a policy saved by EPD RL Tune"
        ) from err
    policy.load_state_dict(tensors)
    iterations = meta.get("iterations", "0")
    if not (iterations.isascii() and iterations.isdigit() and len(iterations) <= 12):
        raise ValueError(f"{path}: iterations must be a whole number, got {iterations[:20]!r}; {_RESAVE}")
    return policy, int(iterations)


_RESAVE = "the file is damaged or not from EPD RL Tune; train again or pick another policy file"
_OPTION_NAMES = ("concentration", "learn_scales", "scale_std", "hidden", "layers")


def _check_format(meta: dict[str, str], path: Path) -> None:
    if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{path}: not an EPD RL policy state (format {str(meta.get('format'))[:40]!r}); "
            "an EPD table goes to the table input, a policy file to the resume input"
        )
    missing = [k for k in ("table", "options") if k not in meta]
    if missing:
        raise ValueError(f"{path}: the policy file lacks its {' and '.join(missing)} metadata; {_RESAVE}")


def _table(meta: dict[str, str], path: Path) -> EPDParams:
    try:
        return table_from_json(meta["table"])
    except ValueError as err:
        raise ValueError(f"{path}: the policy's start table is invalid ({err}); {_RESAVE}") from err


def _options(meta: dict[str, str], path: Path) -> dict[str, Any]:
    """The stored options: a flat JSON object with known names and valid values (policy.check_policy_options)."""
    try:
        check_json_text(meta["options"], "the options")
        options = json.loads(meta["options"])
    except ValueError as err:
        raise ValueError(f"{path}: the policy options are not readable JSON ({err}); {_RESAVE}") from err
    if not isinstance(options, dict) or set(options) - set(_OPTION_NAMES):
        got = sorted(options) if isinstance(options, dict) else type(options).__name__
        raise ValueError(f"{path}: the policy options must be an object with keys from {_OPTION_NAMES}, got {got}")
    if not isinstance(options.get("learn_scales", False), bool):
        raise ValueError(f"{path}: the policy option learn_scales must be true or false; {_RESAVE}")
    defaults = {"concentration": 20.0, "scale_std": 0.05, "hidden": 128, "layers": 2}
    try:
        check_policy_options(**{k: options.get(k, v) for k, v in defaults.items()})
    except ValueError as err:
        raise ValueError(f"{path}: {err}; {_RESAVE}") from err
    return options


def _check_tensors(f: Any, policy: DirichletTablePolicy, path: Path) -> None:
    """The file's tensors are exactly the policy's, with the same shapes (read from the index only)."""
    want = {k: tuple(v.shape) for k, v in policy.state_dict().items()}
    got = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    if got != want:
        wrong = sorted(k for k in set(want) | set(got) if want.get(k) != got.get(k))[:5]
        raise ValueError(
            f"{path}: policy tensors do not match the options stored with them (mismatched: {wrong}); {_RESAVE}"
        )
