"""Node schemas: ids, types, tooltips, categories."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("comfy", reason="set COMFYUI_PATH to a ComfyUI checkout")

import comfyui_epd
from comfy_api.latest import ComfyExtension
from comfyui_epd.epd_core import vocab
from comfyui_epd.nodes import extension

# node_id -> (display name, input ids in order, output types); changing any of these breaks saved workflows.
EXPECTED = {
    "EPD_Sampler": (
        "EPD Sampler",
        ["table", "num_points", "plugin", "max_order", "form", "parallel", "chunk_size", "afs", "tail"],
        ["SAMPLER"],
    ),
    "EPD_LagrangeSampler": (
        "EPD Lagrange Sampler",
        ["order", "refinements", "nodes", "warm_start", "parallel"],
        ["SAMPLER"],
    ),
    "EPD_Sigmas": ("EPD Sigmas", ["model", "steps", "schedule", "end_at_zero", "table"], ["SIGMAS"]),
    "EPD_DefaultTable": (
        "EPD Default Table",
        ["sigmas", "num_points", "kind", "form", "afs", "tail"],
        ["EPD_TABLE"],
    ),
    "EPD_LoadTable": ("EPD Load Table", ["table_name"], ["EPD_TABLE"]),
    "EPD_SaveTable": ("EPD Save Table", ["table", "name", "overwrite"], []),
    "EPD_Table": ("EPD Table", ["table_json", "table"], ["EPD_TABLE"]),
    "EPD_ImportUpstreamTable": (
        "EPD Import Upstream Table",
        ["path", "save_as", "overwrite", "sigmas"],
        ["EPD_TABLE"],
    ),
    "EPD_Distill": (
        "EPD Distill",
        [
            "model",
            "positive",
            "negative",
            "cfg",
            "width",
            "height",
            "batch",
            "steps",
            "num_points",
            "form",
            "schedule",
            "teacher",
            "teacher_substeps",
            "iterations",
            "lr",
            "lr_min",
            "targets",
            "bptt",
            "scale_range",
            "learn_sigmas",
            "afs",
            "seed",
            "table",
            "vae",
            "image_loss_weight",
            "teacher_pool",
            "loss",
            "save_memory",
        ],
        ["EPD_TABLE", "LOSS_MAP"],
    ),
    "EPD_WeightFreeReward": ("EPD Weight-Free Reward", ["kind"], ["EPD_REWARD"]),
    "EPD_AestheticReward": ("EPD Aesthetic Reward", ["clip_vision", "head"], ["EPD_REWARD"]),
    "EPD_PickScoreReward": ("EPD PickScore Reward", ["model"], ["EPD_REWARD"]),
    "EPD_CLIPScoreReward": ("EPD CLIP Score Reward", ["model"], ["EPD_REWARD"]),
    "EPD_HPSReward": ("EPD HPS Reward", ["model"], ["EPD_REWARD"]),
    "EPD_RewardMix": (
        "EPD Reward Mix",
        ["reward_1", "weight_1", "reward_2", "weight_2", "reward_3", "weight_3", "reward_4", "weight_4"],
        ["EPD_REWARD"],
    ),
    "EPD_ScoreImages": ("EPD Score Images", ["images", "reward", "prompt"], ["FLOAT", "STRING"]),
    "EPD_FitStart": (
        "EPD Fit Start Distribution",
        ["model", "latents", "sigma_star", "family", "rank", "components", "seed", "flow_steps"],
        ["EPD_START_MODEL"],
    ),
    "EPD_SampleStart": ("EPD Sample Start Latent", ["model", "start_model", "batch_size", "seed"], ["LATENT"]),
    "EPD_TruncateSigmas": ("EPD Truncate Sigmas", ["sigmas", "start_model"], ["SIGMAS"]),
    "EPD_SuggestSigmaStar": ("EPD Suggest Sigma*", ["model", "latents", "projections", "seed"], ["FLOAT"]),
    "EPD_ScalewiseSchedule": (
        "EPD Scale-wise Schedule",
        ["model", "preset", "width", "height", "patch", "custom_scales", "custom_sigmas"],
        ["EPD_SCALES", "SIGMAS", "STRING"],
    ),
    "EPD_ScalewiseSampler": ("EPD Scale-wise Sampler", ["scales", "upscale"], ["SAMPLER"]),
    "EPD_RLTune": (
        "EPD RL Tune",
        [
            "model",
            "vae",
            "positive",
            "negative",
            "reward",
            "table",
            "prompt_texts",
            "cfg",
            "width",
            "height",
            "form",
            "iterations",
            "prompts_per_step",
            "group_size",
            "concentration",
            "lr",
            "kl_coef",
            "clip_range",
            "learn_scales",
            "grouping",
            "eval_every",
            "eval_per_prompt",
            "seed",
            "policy_file",
            "resume",
            "overwrite_policy",
        ],
        ["EPD_TABLE", "LOSS_MAP", "IMAGE"],
    ),
}


@pytest.fixture(scope="module")
def node_list():
    ext = asyncio.run(comfyui_epd.comfy_entrypoint())
    assert isinstance(ext, ComfyExtension)
    asyncio.run(ext.on_load())
    return asyncio.run(ext.get_node_list())


def test_pack_exports_only_the_entrypoint():
    assert comfyui_epd.WEB_DIRECTORY == "./web"
    assert not hasattr(comfyui_epd, "NODE_CLASS_MAPPINGS"), "V1 mappings would make ComfyUI skip comfy_entrypoint"
    assert set(comfyui_epd.__all__) == {"comfy_entrypoint", "WEB_DIRECTORY"}


def test_node_ids_inputs_and_outputs(node_list):
    schemas = {cls.GET_SCHEMA().node_id: cls.GET_SCHEMA() for cls in node_list}
    assert set(schemas) == set(EXPECTED)
    for node_id, (display, inputs, outputs) in EXPECTED.items():
        schema = schemas[node_id]
        assert schema.display_name == display
        assert [i.id for i in schema.inputs] == inputs, node_id
        assert [o.io_type for o in schema.outputs] == outputs, node_id


def test_conventions(node_list):
    for cls in node_list:
        schema = cls.GET_SCHEMA()
        assert schema.node_id.startswith("EPD_") and schema.display_name.startswith("EPD ")
        assert schema.category in ("sampling/custom_sampling/epd", "sampling/custom_sampling/epd/rewards")
        assert schema.description, schema.node_id
        for inp in schema.inputs:
            assert inp.tooltip and len(inp.tooltip) > 15, f"{schema.node_id}.{inp.id} needs a tooltip"


def test_v1_info_as_object_info_serves_it(node_list):
    for cls in node_list:
        info = cls.GET_NODE_INFO_V1()
        assert info["name"] == cls.GET_SCHEMA().node_id
        assert info["category"].startswith("sampling/custom_sampling/epd")
    save = next(c for c in node_list if c.GET_SCHEMA().node_id == "EPD_SaveTable")
    assert save.GET_NODE_INFO_V1()["output_node"] is True


def test_defaults_come_from_one_place(node_list):
    sampler = next(c for c in node_list if c.GET_SCHEMA().node_id == "EPD_Sampler").GET_SCHEMA()
    by_id = {i.id: i for i in sampler.inputs}
    assert by_id["form"].default == vocab.DEFAULT_FORM_CHOICE == "auto"
    distill = next(c for c in node_list if c.GET_SCHEMA().node_id == "EPD_Distill").GET_SCHEMA()
    table = next(c for c in node_list if c.GET_SCHEMA().node_id == "EPD_DefaultTable").GET_SCHEMA()
    made_for = {next(i for i in node.inputs if i.id == "form").default for node in (distill, table)}
    assert made_for == {vocab.DEFAULT_TABLE_FORM}, "tables are made for the form the sampler picks"
    assert by_id["parallel"].options == ["auto", "batched", "sequential"]
    assert by_id["tail"].options == ["auto", "drop", "stop", "keep"] and by_id["tail"].default == "auto"
    assert "sigma_min" in by_id["tail"].tooltip and "dpm_2" in by_id["tail"].tooltip
    assert by_id["table"].optional and by_id["table"].io_type == "EPD_TABLE"
    assert by_id["plugin"].options == ["auto", "on", "off"] and by_id["plugin"].default == "auto"


def test_sampler_accepts_the_old_plugin_checkbox(node_list):
    sampler = next(c for c in node_list if c.GET_SCHEMA().node_id == "EPD_Sampler")
    assert all(sampler.validate_inputs(plugin=v) is True for v in (True, False, "auto", "on", "off"))
    assert "plugin must be one of ['auto', 'on', 'off'], got 'yes'" in sampler.validate_inputs(plugin="yes")


def test_node_classes_are_small():
    import inspect

    for cls in extension.NODES:
        lines = len(inspect.getsource(cls).splitlines())
        assert lines < 40, f"{cls.__name__} has {lines} lines (node classes stay under 40 lines)"
