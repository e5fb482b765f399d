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
from ..table_io import table_from_json, table_to_json
from .policy import DirichletTablePolicy

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
    """(policy, iterations) from a file written by save_policy; anything else is refused with the reason."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"{path}: policy states load only from .safetensors files written by EPD RL Tune")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{path}: not a readable safetensors file ({err})") from err
    if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{path}: not an EPD RL policy state (format {meta.get('format')!r}); "
            "an EPD table goes to the table input, a policy file to the resume input"
        )
    options: dict[str, Any] = json.loads(meta["options"])
    policy = DirichletTablePolicy(table_from_json(meta["table"]), **options)
    try:
        policy.load_state_dict(tensors)
    except RuntimeError as err:
        raise ValueError(f"{path}: policy tensors do not match the options stored with them ({err})") from err
    return policy, int(meta.get("iterations", "0"))
