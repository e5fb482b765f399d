"""Reward nodes on tiny random-weight models of the real architectures, saved in the real formats (docs/rewards.md).

The aesthetic heads score embeddings of a real comfy.clip_vision.ClipVisionModel (a 2-layer
config written to tmp); the CLIP-style rewards load a tiny transformers CLIPModel saved with
save_pretrained(safe_serialization=True) plus ComfyUI's own CLIP tokenizer files.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil

import pytest

pytest.importorskip("comfy", reason="set COMFYUI_PATH to a ComfyUI checkout")

import comfy.clip_vision
import comfy.model_patcher
import folder_paths
import torch
from comfyui_epd.nodes import reward_nodes as rn
from safetensors.torch import load_file, save_file

TOKENIZER = os.path.join(os.path.dirname(os.path.dirname(comfy.clip_vision.__file__)), "comfy", "sd1_tokenizer")
LAION_DIM = 768  # CLIP ViT-L/14 image embedding width, what the LAION heads take
PROMPTS = ["a red cube on a table", "a photo of a cat"]


@pytest.fixture
def reward_dirs(tmp_path, monkeypatch):
    """A private models dir holding models/epd_rewards/{aesthetic,clip}; the real registry is restored afterwards."""
    registry = {k: v for k, v in folder_paths.folder_names_and_paths.items() if not k.startswith("epd_")}
    monkeypatch.setattr(folder_paths, "folder_names_and_paths", registry)
    monkeypatch.setattr(folder_paths, "models_dir", str(tmp_path / "models"))
    monkeypatch.setattr(folder_paths, "filename_list_cache", {})
    root = tmp_path / "models" / "epd_rewards"
    (root / "aesthetic").mkdir(parents=True)
    (root / "clip").mkdir()
    return root


def images(batch: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 40, 48, 3, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- weight-free, mix, score


def test_weight_free_node_and_score_images():
    reward = rn.EPDWeightFreeReward.execute("sharpness").result[0]
    out = rn.EPDScoreImages.execute(images(3), reward, "")
    mean, text = out.result
    scores = reward(images(3))
    assert mean == pytest.approx(float(scores.mean())) and len(text.split(", ")) == 3
    assert "sharpness: mean" in out.ui.as_dict()["text"][0]


def test_score_images_prompt_lines():
    reward = rn.EPDWeightFreeReward.execute("contrast").result[0]
    assert rn.split_prompts("one prompt", 3, "x") == ["one prompt"] * 3
    assert rn.split_prompts("a\n\nb\n", 2, "x") == ["a", "b"]
    with pytest.raises(ValueError, match=r"^EPD Score Images: 2 prompt lines for 3 images"):
        rn.EPDScoreImages.execute(images(3), reward, "a\nb")
    with pytest.raises(ValueError, match=r"^EPD Score Images: .*\[0, 1\]"):
        rn.EPDScoreImages.execute(images(1) * 255, reward, "")


def test_reward_mix_node():
    sharp, contrast = (rn.EPDWeightFreeReward.execute(k).result[0] for k in ("sharpness", "contrast"))
    mix = rn.EPDRewardMix.execute(reward_1=sharp, weight_1=3.0, reward_2=contrast, weight_2=1.0).result[0]
    x = images()
    torch.testing.assert_close(mix(x), (3 * sharp(x) + contrast(x)) / 4)
    with pytest.raises(ValueError, match=r"^EPD Reward Mix: .*all weights are 0"):
        rn.EPDRewardMix.execute(reward_1=sharp, weight_1=0.0, reward_2=contrast, weight_2=0.0)


# ---------------------------------------------------------------- aesthetic head on ComfyUI CLIP vision


@pytest.fixture(scope="module")
def clip_vision(tmp_path_factory):
    """A real ClipVisionModel with a 2-layer ViT config (encode_image reads layer -2) and random weights loaded through load_sd."""
    cfg = {"hidden_act": "quick_gelu", "hidden_size": 32, "image_size": 32, "intermediate_size": 64,
           "layer_norm_eps": 1e-5, "model_type": "clip_vision_model", "num_attention_heads": 2, "num_channels": 3,
           "num_hidden_layers": 2, "patch_size": 8, "projection_dim": LAION_DIM}  # fmt: skip
    path = tmp_path_factory.mktemp("clip_vision") / "tiny_vit.json"
    path.write_text(json.dumps(cfg))
    model = comfy.clip_vision.ClipVisionModel(str(path))
    g = torch.Generator().manual_seed(0)
    sd = {k: (torch.ones_like(v) if "norm" in k and k.endswith("weight") else 0.05 * torch.randn(v.shape, generator=g))
          for k, v in model.get_sd().items()}  # fmt: skip
    missing, _ = model.load_sd(sd)
    assert not missing
    return model


def mlp_state(dim: int = LAION_DIM, seed: int = 0) -> dict[str, torch.Tensor]:
    """improved-aesthetic-predictor keys and shapes: 768 -> 1024 -> 128 -> 64 -> 16 -> 1."""
    g = torch.Generator().manual_seed(seed)
    widths = [dim, 1024, 128, 64, 16, 1]
    sd = {}
    for index, (fan_in, fan_out) in zip((0, 2, 4, 6, 7), itertools.pairwise(widths)):
        sd[f"layers.{index}.weight"] = torch.randn(fan_out, fan_in, generator=g) / fan_in**0.5
        sd[f"layers.{index}.bias"] = torch.full((fan_out,), 0.5)
    return sd


def expected_aesthetic(clip_vision, head_sd, x):
    """head(normalised image_embeds) / 10, with the head written out by hand."""
    emb = clip_vision.encode_image(x)["image_embeds"].float()
    h = emb / emb.norm(dim=-1, keepdim=True)
    if "weight" in head_sd:
        return (h @ head_sd["weight"].T + head_sd["bias"]).squeeze(-1) / 10
    for index in (0, 2, 4, 6, 7):
        h = h @ head_sd[f"layers.{index}.weight"].T + head_sd[f"layers.{index}.bias"]
    return h.squeeze(-1) / 10


@pytest.mark.parametrize("layout", ["mlp", "linear"])
def test_aesthetic_reward(reward_dirs, clip_vision, layout):
    g = torch.Generator().manual_seed(1)
    sd = mlp_state() if layout == "mlp" else {"weight": torch.randn(1, LAION_DIM, generator=g), "bias": torch.ones(1)}
    save_file(sd, str(reward_dirs / "aesthetic" / f"{layout}.safetensors"))
    assert f"{layout}.safetensors" in rn.reward_files.head_names()
    assert rn.EPDAestheticReward.validate_inputs(f"{layout}.safetensors") is True
    reward = rn.EPDAestheticReward.execute(clip_vision, f"{layout}.safetensors").result[0]
    x = images()
    scores = reward(x, PROMPTS)
    assert scores.shape == (2,) and scores.dtype == torch.float32 and torch.isfinite(scores).all()
    torch.testing.assert_close(scores, expected_aesthetic(clip_vision, sd, x), rtol=1e-4, atol=1e-5)


def test_aesthetic_rejects_bad_files(reward_dirs, clip_vision):
    folder = reward_dirs / "aesthetic"
    torch.save(mlp_state(), folder / "sac+logos+ava1-l14-linearMSE.pth")  # a pickle: listed, never opened
    msg = rn.EPDAestheticReward.validate_inputs("sac+logos+ava1-l14-linearMSE.pth")
    assert "is a pickle file" in msg and "sac+logos+ava1-l14-linearMSE.safetensors" in msg and "torch.load" in msg
    with pytest.raises(ValueError, match=r"^EPD Aesthetic Reward: .*linearMSE\.pth is a pickle file"):
        rn.EPDAestheticReward.execute(clip_vision, "sac+logos+ava1-l14-linearMSE.pth")
    shutil.copy(folder / "sac+logos+ava1-l14-linearMSE.pth", folder / "renamed.safetensors")
    with pytest.raises(ValueError, match=r"renamed\.safetensors is not a valid \.safetensors.*looks like a PyTorch"):
        rn.EPDAestheticReward.execute(clip_vision, "renamed.safetensors")
    save_file({"fc.weight": torch.zeros(1, LAION_DIM)}, str(folder / "keys.safetensors"))
    with pytest.raises(ValueError, match=r"keys\.safetensors is not a LAION aesthetic head.*\['fc\.weight'\]"):
        rn.EPDAestheticReward.execute(clip_vision, "keys.safetensors")
    save_file({**mlp_state(), "layers.2.weight": torch.zeros(128, 999)}, str(folder / "shape.safetensors"))
    with pytest.raises(ValueError, match=r"shape\.safetensors has wrong tensor shapes for a mlp aesthetic head"):
        rn.EPDAestheticReward.execute(clip_vision, "shape.safetensors")
    assert "no aesthetic head 'gone.safetensors'" in rn.EPDAestheticReward.validate_inputs("gone.safetensors")


def test_aesthetic_head_width_must_match_clip_vision(reward_dirs, clip_vision):
    save_file(mlp_state(dim=1024), str(reward_dirs / "aesthetic" / "vit_h.safetensors"))
    reward = rn.EPDAestheticReward.execute(clip_vision, "vit_h.safetensors").result[0]
    with pytest.raises(ValueError, match=r"expects 1024-d CLIP image embeddings.*\[768\].*Load CLIP Vision"):
        reward(images())


# ---------------------------------------------------------------- transformers CLIP: PickScore, CLIP, HPS


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A 1-layer transformers CLIPModel saved as safetensors, with ComfyUI's CLIP tokenizer and a processor config."""
    transformers = pytest.importorskip("transformers")
    text = {"vocab_size": 49408, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
            "num_attention_heads": 2, "max_position_embeddings": 77}  # fmt: skip
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
              "image_size": 32, "patch_size": 8}  # fmt: skip
    torch.manual_seed(0)
    config = transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)
    folder = tmp_path_factory.mktemp("clip") / "tiny"
    transformers.CLIPModel(config).save_pretrained(str(folder), safe_serialization=True)
    for name in os.listdir(TOKENIZER):
        shutil.copy(os.path.join(TOKENIZER, name), folder)
    processor = {"crop_size": {"height": 32, "width": 32}, "size": {"shortest_edge": 32},
                 "image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25]}  # fmt: skip
    (folder / "preprocessor_config.json").write_text(json.dumps(processor))
    return folder


def install(reward_dirs, tiny_clip, name="tiny"):
    target = reward_dirs / "clip" / name
    shutil.copytree(tiny_clip, target)
    return target


def test_clip_rewards_score_a_batch(reward_dirs, tiny_clip):
    install(reward_dirs, tiny_clip)
    assert rn.reward_files.clip_model_names() == ["tiny"]
    x = images()
    scores = {}
    for node in (rn.EPDPickScoreReward, rn.EPDCLIPScoreReward, rn.EPDHPSReward):
        assert node.validate_inputs("tiny") is True
        reward = node.execute("tiny").result[0]
        assert isinstance(reward.patcher, comfy.model_patcher.ModelPatcher)
        scores[reward.name] = reward(x, PROMPTS)
        assert scores[reward.name].shape == (2,) and torch.isfinite(scores[reward.name]).all()
    # same weights, same cosine: pickscore = exp(logit_scale) * cos / 26, hps = clamp(cos, 0, 1)
    scale = float(torch.tensor(reward.model.config.logit_scale_init_value).exp())
    torch.testing.assert_close(scores["pickscore"], scale * scores["clip"] / 26)
    torch.testing.assert_close(scores["hps"], scores["clip"].clamp(0, 1))
    assert scores["clip"].abs().max() <= 1.0
    with pytest.raises(ValueError, match="some prompts are empty"):
        reward(x, ["a prompt", ""])


def test_clip_reward_cosine_matches_transformers(reward_dirs, tiny_clip):
    import transformers

    install(reward_dirs, tiny_clip)
    reward = rn.EPDCLIPScoreReward.execute("tiny").result[0]
    x = torch.rand(2, 32, 32, 3, generator=torch.Generator().manual_seed(3))  # already 32x32: no resampling
    model = transformers.CLIPModel.from_pretrained(str(tiny_clip)).eval()
    tok = transformers.AutoTokenizer.from_pretrained(str(tiny_clip))(PROMPTS, padding=True, return_tensors="pt")
    pixels = ((x * 255).round() / 255 - 0.5) / 0.25  # the processor config's mean / std
    with torch.no_grad():
        out = model(**tok, pixel_values=pixels.permute(0, 3, 1, 2))
    torch.testing.assert_close(reward(x, PROMPTS), (out.image_embeds * out.text_embeds).sum(-1), atol=1e-5, rtol=1e-4)


def test_clip_folder_problems_are_named(reward_dirs, tiny_clip):
    msg = rn.EPDPickScoreReward.validate_inputs("PickScore_v1")
    assert "no model folder 'PickScore_v1'" in msg and os.path.join("epd_rewards", "clip", "PickScore_v1") in msg
    target = install(reward_dirs, tiny_clip, "pickle_only")
    os.replace(target / "model.safetensors", target / "pytorch_model.bin")  # never opened
    with pytest.raises(ValueError, match=r"pickle_only is not a usable CLIP .*pytorch_model\.bin.*save_pretrained"):
        rn.EPDPickScoreReward.execute("pickle_only")
    target = install(reward_dirs, tiny_clip, "renamed_keys")
    sd = load_file(str(target / "model.safetensors"))
    save_file({k.replace("vision_model.", "visual."): v for k, v in sd.items()}, str(target / "model.safetensors"))
    with pytest.raises(ValueError, match=r"renamed_keys do not fit its config\.json"):
        rn.EPDCLIPScoreReward.execute("renamed_keys")
    target = install(reward_dirs, tiny_clip, "wrong_shape")
    save_file({**sd, "visual_projection.weight": torch.zeros(8, 32)}, str(target / "model.safetensors"))
    with pytest.raises(
        ValueError,
        match=r"^EPD HPS Reward: the weights in .*wrong_shape do not fit its config\.json .*visual_projection\.weight",
    ):
        rn.EPDHPSReward.execute("wrong_shape")
    target = install(reward_dirs, tiny_clip, "no_tokenizer")
    for name in ("vocab.json", "merges.txt"):
        os.remove(target / name)
    with pytest.raises(ValueError, match="tokenizer files are missing"):
        rn.EPDCLIPScoreReward.execute("no_tokenizer")
    with pytest.raises(ValueError, match="not a model folder name"):
        rn.EPDCLIPScoreReward.execute("../tiny")


def test_reward_schemas_have_tooltips_and_the_rewards_category():
    nodes = [rn.EPDWeightFreeReward, rn.EPDAestheticReward, rn.EPDPickScoreReward, rn.EPDCLIPScoreReward,
             rn.EPDHPSReward, rn.EPDRewardMix, rn.EPDScoreImages]  # fmt: skip
    for node in nodes:
        schema = node.GET_SCHEMA()
        assert schema.category == "sampling/custom_sampling/epd/rewards" and schema.description
        for item in [*schema.inputs, *schema.outputs]:
            assert item.tooltip and len(item.tooltip) > 15, (schema.node_id, item)
    assert rn.EPDReward.io_type == "EPD_REWARD"


def test_clip_weights_of_another_size_name_the_mismatch(reward_dirs, tiny_clip):
    folder = install(reward_dirs, tiny_clip, name="resized")
    config = json.loads((folder / "config.json").read_text())
    config["projection_dim"] = 24  # the weights hold 16
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"EPD CLIP Score Reward: .*(size mismatch|do not fit its config)") as info:
        rn.EPDCLIPScoreReward.execute("resized")
    assert "above" not in str(info.value), "no pointer to a report the user cannot see"


@pytest.mark.parametrize(
    ("file", "content", "expected"),
    [
        ("model.safetensors", b"", "model.safetensors is not a readable safetensors file"),
        ("model.safetensors", bytes(range(256)) * 8, "model.safetensors is not a readable safetensors file"),
        ("model.safetensors", b"\x80\x04\x95" + b"\x00" * 64, "model.safetensors is a PyTorch pickle renamed"),
        ("config.json", b"[1, 2]", "config.json is not a JSON object"),
        ("config.json", b"{not json", "config.json is not a JSON object"),
    ],
    ids=["empty", "random", "renamed-pickle", "config-list", "config-not-json"],
)
def test_broken_clip_folders_are_named_with_the_fix(reward_dirs, tiny_clip, file, content, expected):
    folder = install(reward_dirs, tiny_clip, name="broken")
    (folder / file).write_bytes(content)
    with pytest.raises(ValueError, match=f"EPD CLIP Score Reward: .*{expected}") as info:
        rn.EPDCLIPScoreReward.execute("broken")
    assert "docs/rewards.md" in str(info.value) or "re-download" in str(info.value)
