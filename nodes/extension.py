"""The pack's ComfyExtension and entry point."""

from __future__ import annotations

import logging
import os

from .comfy import folders, reward_files, sampling
from .comfy.api import ComfyExtension, io
from .distill_nodes import EPDDistill
from .file_nodes import EPDImportUpstreamTable, EPDLoadTable, EPDSaveTable
from .lagrange_nodes import EPDLagrangeSampler
from .options import KSAMPLER_ENTRY_ENV, KSAMPLER_ENTRY_NAME
from .reward_nodes import (
    EPDAestheticReward,
    EPDCLIPScoreReward,
    EPDHPSReward,
    EPDPickScoreReward,
    EPDRewardMix,
    EPDScoreImages,
    EPDWeightFreeReward,
)
from .rl_nodes import EPDRLTune
from .sampler_nodes import EPDSampler, EPDSigmas
from .scalewise_nodes import EPDScalewiseSampler, EPDScalewiseSchedule
from .skip_nodes import EPDFitStart, EPDSampleStart, EPDSuggestSigmaStar, EPDTruncateSigmas
from .table_nodes import EPDDefaultTable, EPDTable

log = logging.getLogger(__name__)

NODES: tuple[type[io.ComfyNode], ...] = (
    EPDSampler,
    EPDSigmas,
    EPDLagrangeSampler,
    EPDDefaultTable,
    EPDLoadTable,
    EPDSaveTable,
    EPDTable,
    EPDImportUpstreamTable,
    EPDDistill,
    EPDRLTune,
    EPDWeightFreeReward,
    EPDAestheticReward,
    EPDPickScoreReward,
    EPDCLIPScoreReward,
    EPDHPSReward,
    EPDRewardMix,
    EPDScoreImages,
    EPDFitStart,
    EPDSampleStart,
    EPDTruncateSigmas,
    EPDSuggestSigmaStar,
    EPDScalewiseSchedule,
    EPDScalewiseSampler,
)


def ksampler_entry_requested() -> bool:
    """True when EPD_KSAMPLER_ENTRY is set to 1 / true / yes / on (off by default)."""
    return os.environ.get(KSAMPLER_ENTRY_ENV, "").strip().lower() in ("1", "true", "yes", "on")


class EPDExtension(ComfyExtension):
    """Registers the epd model folder, the optional KSampler entry and the nodes."""

    async def on_load(self) -> None:
        folders.register_folder()
        reward_files.register_reward_folders()
        if ksampler_entry_requested() and sampling.register_ksampler_entry():
            log.info("EPD: added %r to the KSampler sampler list (%s=1).", KSAMPLER_ENTRY_NAME, KSAMPLER_ENTRY_ENV)

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)


async def comfy_entrypoint() -> EPDExtension:
    """Called by ComfyUI's custom-node loader."""
    return EPDExtension()
