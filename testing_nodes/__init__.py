"""Test-only ComfyUI nodes: an exact toy MODEL and class CONDITIONING.

Not loaded by the pack. A server test links this folder into ComfyUI's custom_nodes (or
passes it as an extra custom-node path) to build a full graph without model files:
EPDTest_ToyModel -> MODEL, EPDTest_ClassConditioning -> CONDITIONING, EmptyLatentImage at
32x32 -> a [B, 4, 4, 4] latent (64 values per sample, the digits mixture's dimension).
Importable only where ``comfy`` is.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
from pathlib import Path
from typing import Any

from comfy_api.latest import ComfyExtension, io

from .toy_model import KINDS, class_conditioning, empty_conditioning, toy_model_patcher

if importlib.util.find_spec("epd_core") is None:  # the repo root holds epd_core; appended so ComfyUI's `nodes` wins
    sys.path.append(str(Path(__file__).resolve().parents[1]))

CATEGORY = "testing/epd"


@functools.lru_cache(maxsize=1)
def cached_digits_mixture() -> Any:
    """The digits mixture (fitted once per process, a few seconds)."""
    from epd_core.digits import digits_mixture

    return digits_mixture()


def parse_labels(text: str) -> list[int]:
    """'0, 3, 7' -> [0, 3, 7]; raises ValueError naming the bad entry."""
    try:
        return [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError as err:
        raise ValueError(
            f"EPDTest_ClassConditioning: labels={text!r} must be comma-separated integers like '0,1,2'"
        ) from err


class ToyModelNode(io.ComfyNode):
    """An exact Gaussian-mixture denoiser over the sklearn digits as a ComfyUI MODEL."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="EPDTest_ToyModel",
            display_name="EPD Test Toy Model",
            category=CATEGORY,
            description="Exact E[x0|x] of a Gaussian mixture fitted to the sklearn digits (64 values per sample).",
            inputs=[
                io.Combo.Input(
                    "kind",
                    options=list(KINDS),
                    default="edm",
                    tooltip="edm: VE sigmas in [0.002, 80]; flow: rectified flow; eps: SD1.x discrete",
                )
            ],
            outputs=[io.Model.Output()],
            is_dev_only=True,
        )

    @classmethod
    def execute(cls, kind: str) -> io.NodeOutput:
        return io.NodeOutput(toy_model_patcher(cached_digits_mixture(), kind))


class ClassConditioningNode(io.ComfyNode):
    """CONDITIONING for a digit class (or one class per sample); label -1 is unconditional."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="EPDTest_ClassConditioning",
            display_name="EPD Test Class Conditioning",
            category=CATEGORY,
            inputs=[
                io.Int.Input(
                    "label", default=0, min=-1, max=9, tooltip="digit class; -1 = unconditional (the whole mixture)"
                ),
                io.String.Input(
                    "labels",
                    default="",
                    optional=True,
                    tooltip="comma-separated classes, one per sample; overrides label",
                ),
            ],
            outputs=[io.Conditioning.Output()],
            is_dev_only=True,
        )

    @classmethod
    def execute(cls, label: int, labels: str = "") -> io.NodeOutput:
        many = parse_labels(labels)
        if many:
            return io.NodeOutput(class_conditioning(many))
        return io.NodeOutput(empty_conditioning() if label < 0 else class_conditioning(label))


class TestingExtension(ComfyExtension):
    """The test nodes."""

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [ToyModelNode, ClassConditioningNode]


async def comfy_entrypoint() -> TestingExtension:
    """V3 entry point (ComfyUI nodes.py:load_custom_node)."""
    return TestingExtension()


__all__ = ["comfy_entrypoint"]
