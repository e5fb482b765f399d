"""A headless run's settings: one JSON or TOML file, checked in full before any compute."""

from __future__ import annotations

import importlib
import json
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from ..distill import DistillConfig
from ..grids import epd_sigmas
from ..params import EPDParams
from ..rl import RLConfig
from ..table_io import load_table
from ..tables import default_table
from ..vocab import DEFAULT_TABLE_FORM

try:
    import tomllib
except ImportError:  # Python 3.10: JSON configs only
    tomllib = None

LOOPS = {"distill": DistillConfig, "rl": RLConfig}


@dataclass(frozen=True)
class TuneSetup:
    """Everything but the loop's own settings (``loop``, a DistillConfig or RLConfig)."""

    out: str  # best table (.safetensors), written by rank 0
    loop: Any = None
    model: str = "digits"  # 'digits' (the exact digits mixture) or package.module:attribute
    shape: tuple[int, ...] = (64,)  # one sample's shape
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    kind: str = "ve"  # 've' or 'flow'
    steps: int = 3  # student steps
    num_points: int = 2  # K
    form: str = DEFAULT_TABLE_FORM
    schedule: str = "time_uniform"
    afs: bool = True
    scale_range: float = 0.05  # learned scales within 1 +/- this; 0 = off (distill)
    start: str | None = None  # a saved table to start from instead of the default one
    reward: str = "digits_class"  # RL: a weight-free reward name, 'digits_class' or package.module:attribute
    texts: tuple[str, ...] = tuple(str(d) for d in range(10))  # RL: one prompt text per class index
    policy_out: str | None = None  # RL: the policy state for resuming (default: OUT with .policy)
    resume: str | None = None  # RL: continue from this policy state
    save_every: int = 1  # RL: iterations between policy saves
    backend: str = "auto"  # 'auto' (nccl with CUDA, else gloo), 'gloo' or 'nccl'
    timeout_s: float = 300.0  # a collective waiting longer than this ends the run
    log: str | None = None  # JSON lines of stats, one file per rank (LOG.rankR)
    check_replicas: bool = False  # log a hash of the parameters before every step (tests)

    def policy_path(self) -> Path:
        return Path(self.policy_out) if self.policy_out else Path(self.out).with_suffix(".policy.safetensors")

    def start_table(self) -> EPDParams:
        if self.start is not None:
            return load_table(self.start)
        sigmas = epd_sigmas(self.steps, self.sigma_min, self.sigma_max, self.schedule)
        table = default_table(sigmas, self.num_points, form=self.form, afs=self.afs)
        return table.replace(scale_dir=self.scale_range, scale_time=self.scale_range) if self.scale_range > 0 else table

    def noise(self, batch: int, gen: torch.Generator) -> torch.Tensor:
        z = torch.randn((batch, *self.shape), generator=gen, dtype=torch.float64)
        return z if self.kind == "flow" else z * self.sigma_max


def read_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".toml":
        if tomllib is None:
            raise ValueError(f"{path}: TOML needs Python 3.11+ (tomllib); write the config as JSON")
        return tomllib.loads(text)
    if path.suffix.lower() == ".json":
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a JSON object at the top, got {type(data).__name__}")
        return data
    raise ValueError(f"{path}: config files are .json or .toml, got {path.suffix!r}")


def load_config(mode: str, path: str | Path) -> TuneSetup:
    """The setup for ``mode`` ('distill' or 'rl') from a file; every unknown or bad key is reported at once."""
    if mode not in LOOPS:
        raise ValueError(f"mode {mode!r}: choose one of {sorted(LOOPS)}")
    data = read_file(path)
    loop_cls = LOOPS[mode]
    loop = data.pop("loop", {})
    names = {f.name for f in fields(TuneSetup)} - {"loop"}
    problems = [f"unknown key {k!r}" for k in data if k not in names]
    if not isinstance(loop, dict):
        problems.append(f"'loop' must be a table of {loop_cls.__name__} settings")
        loop = {}
    problems += [
        f"unknown loop key {k!r} (valid: {', '.join(loop_cls._fields)})" for k in loop if k not in loop_cls._fields
    ]
    if "out" not in data:
        problems.append("'out' (the table to write) is required")
    if problems:
        raise ValueError(f"{path}: " + "; ".join(problems) + f"; valid top-level keys: {', '.join(sorted(names))}")
    for key in ("shape", "texts"):
        if key in data:
            data[key] = tuple(data[key])
    setup = TuneSetup(**data, loop=loop_cls(**loop))
    check_setup(mode, setup, path)
    return setup


def check_setup(mode: str, setup: TuneSetup, path: str | Path) -> None:
    problems = []
    if setup.kind not in ("ve", "flow"):
        problems.append(f"kind={setup.kind!r}: choose 've' or 'flow'")
    if not (math.isfinite(setup.timeout_s) and setup.timeout_s > 0) or setup.save_every < 1:
        problems.append("need timeout_s > 0 and save_every >= 1")
    if mode == "rl" and setup.loop.prompts_per_step > len(setup.texts):
        problems.append(f"prompts_per_step={setup.loop.prompts_per_step} exceeds the {len(setup.texts)} texts")
    if problems:
        raise ValueError(f"{path}: " + "; ".join(problems))


def split_evenly(total: int, world: int, name: str) -> int:
    """``total`` over ``world`` ranks; an uneven split is refused (equal total batch for every N)."""
    if total % world:
        raise ValueError(f"{name}={total} does not split evenly over {world} processes; make it a multiple of {world}")
    return total // world


def resolve(spec: str) -> Any:
    """'package.module:attribute' -> the object (a class is instantiated with no arguments)."""
    module_name, _, attr = spec.partition(":")
    if not attr:
        raise ValueError(f"{spec!r}: expected 'package.module:attribute'")
    obj = getattr(importlib.import_module(module_name), attr)
    return obj() if isinstance(obj, type) else obj
