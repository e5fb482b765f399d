"""Learned rewards: the LAION aesthetic head and CLIP-style text-image scores (docs/rewards.md).

Each reward is an ``epd_core.rl.rewards.BaseReward``: ``reward(images [B, H, W, 3] in [0, 1],
prompts) -> float32 [B]``. Models are wrapped in ComfyUI's CoreModelPatcher and loaded with
``load_models_gpu`` (full load) before scoring (the pattern of comfy/clip_vision.py), so the memory manager
swaps them with the diffusion model and the VAE. Nothing is downloaded; docs/rewards.md says
where each file comes from.
"""

from __future__ import annotations

import json
import os
from typing import Any

import comfy.clip_model
import comfy.model_management as mm
import comfy.model_patcher
import torch
from safetensors import SafetensorError, safe_open

from ...epd_core.rl.rewards import BaseReward
from .reward_files import PICKLE_SUFFIXES, load_safetensors, starts_like_pickle

AESTHETIC_SCALE = 10.0  # LAION aesthetic scores are on a 1..10 scale
PICKSCORE_SCALE = 26.0  # upstream RewardMultiMetric: PickScore / 26
MLP_LAYERS = (0, 2, 4, 6, 7)  # improved-aesthetic-predictor: Linear, Dropout, Linear, Dropout, ..., Linear, Linear
MLP_WIDTHS = (1024, 128, 64, 16, 1)


def linear_head(dim: int) -> torch.nn.Module:
    """LAION-AI/aesthetic-predictor (e.g. sa_0_4_vit_l_14_linear): one Linear(dim, 1); keys weight, bias."""
    return torch.nn.Linear(dim, 1)


class MLPHead(torch.nn.Module):
    """christophschuhmann/improved-aesthetic-predictor (sac+logos+ava1-l14-linearMSE): keys layers.{0,2,4,6,7}.

    The dropouts of the original sit at indices 1, 3, 5 (no-ops at inference); Identity keeps the indices.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        mods: list[torch.nn.Module] = []
        width = dim
        for index, out in zip(MLP_LAYERS, MLP_WIDTHS):
            mods.extend(torch.nn.Identity() for _ in range(index - len(mods)))
            mods.append(torch.nn.Linear(width, out))
            width = out
        self.layers = torch.nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def head_kind(sd: dict[str, torch.Tensor]) -> str:
    """'linear' or 'mlp' from the state-dict keys, or '' if neither layout matches."""
    if set(sd) == {"weight", "bias"}:
        return "linear"
    if set(sd) == {f"layers.{i}.{p}" for i in MLP_LAYERS for p in ("weight", "bias")}:
        return "mlp"
    return ""


def build_head(sd: dict[str, torch.Tensor], path: str, node: str) -> torch.nn.Module:
    """The aesthetic head for a state dict, checked for layout, shapes and finite values."""
    kind = head_kind(sd)
    if not kind:
        raise ValueError(
            f"{node}: {path} is not a LAION aesthetic head: expected the keys weight, bias (linear head) or "
            f"layers.{{0,2,4,6,7}}.weight/bias (MLP head), got {sorted(sd)[:8]}"
        )
    first = sd["weight"] if kind == "linear" else sd["layers.0.weight"]
    if first.ndim != 2:
        raise ValueError(f"{node}: {path}: the first layer's weight must be 2-d, got shape {list(first.shape)}")
    head = (linear_head if kind == "linear" else MLPHead)(first.shape[1])
    try:
        head.load_state_dict({"weight": sd["weight"], "bias": sd["bias"]} if kind == "linear" else sd)
    except RuntimeError as err:
        raise ValueError(f"{node}: {path} has wrong tensor shapes for a {kind} aesthetic head: {err}") from err
    if not all(torch.isfinite(p).all() for p in head.parameters()):
        raise ValueError(f"{node}: {path} contains NaN or infinite weights; re-download it")
    return head.float().eval()


def load_aesthetic_head(path: str, node: str) -> torch.nn.Module:
    """A LAION aesthetic head from a .safetensors file (layout detected from the keys)."""
    return build_head(load_safetensors(path, node), path, node)


class AestheticReward(BaseReward):
    """LAION aesthetic score / 10 on L2-normalised CLIP image embeddings from a ComfyUI CLIP_VISION."""

    name = "aesthetic"

    def __init__(self, clip_vision: Any, head: torch.nn.Module, source: str) -> None:
        self.clip_vision, self.head, self.source = clip_vision, head, source
        self.dim = next(head.parameters()).shape[1]

    def score(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        emb = self.clip_vision.encode_image(images)["image_embeds"].float()  # loads the CLIP vision patcher
        if emb.ndim != 2 or emb.shape[1] != self.dim:
            raise ValueError(
                f"{self.name}: {self.source} expects {self.dim}-d CLIP image embeddings, the CLIP vision model gives "
                f"{list(emb.shape[1:])}; load the CLIP vision model the head was trained on (ViT-L/14 for the "
                "LAION heads) with Load CLIP Vision"
            )
        emb = emb / emb.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return self.head.to(emb.device)(emb).squeeze(-1) / AESTHETIC_SCALE


def preprocess_config(folder: str, model: Any) -> tuple[int, list[float], list[float]]:
    """(size, mean, std) from preprocessor_config.json, else the model's image size and CLIP's statistics."""
    size = int(model.config.vision_config.image_size)
    mean, std = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
    path = os.path.join(folder, "preprocessor_config.json")
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as fh:
            cfg = json.load(fh)
        crop = cfg.get("crop_size", size)
        size = int(crop.get("height", size) if isinstance(crop, dict) else crop)
        mean, std = cfg.get("image_mean", mean), cfg.get("image_std", std)
    return size, list(mean), list(std)


class PatchedModule(torch.nn.Module):
    """A plain holder for a model: the patcher sets attributes such as ``device`` that transformers models own."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.inner = model


def reward_patcher(model: torch.nn.Module) -> Any:
    """A CoreModelPatcher for a reward model: compute device = the torch device, offload like text encoders."""
    load_device = mm.get_torch_device()
    dtype = torch.float16 if mm.should_use_fp16(load_device, prioritize_performance=False) else torch.float32
    model.to(dtype=dtype).eval()
    return comfy.model_patcher.CoreModelPatcher(
        PatchedModule(model), load_device=load_device, offload_device=mm.text_encoder_offload_device()
    )


class CLIPTextImageReward(BaseReward):
    """Text-image score of a transformers CLIPModel: cosine, PickScore (logit_scale * cosine / 26) or HPS.

    kind 'clip': cosine of the normalised embeddings, in [-1, 1] (about 0.2-0.35 for matching pairs);
    'pickscore': exp(logit_scale) * cosine / 26 (PickScore_v1's raw scores are about 18-23);
    'hps': HPSv2.1's score, the cosine, clamped to [0, 1] as upstream's RewardMultiMetric does.
    """

    KINDS = ("clip", "pickscore", "hps")

    def __init__(self, bundle: dict[str, Any], kind: str, source: str) -> None:
        if kind not in self.KINDS:
            raise ValueError(f"unknown CLIP reward kind {kind!r}; choose one of {self.KINDS}")
        self.name, self.source = kind, source
        self.model, self.tokenizer, self.patcher = bundle["model"], bundle["tokenizer"], bundle["patcher"]
        self.size, self.mean, self.std = bundle["size"], bundle["mean"], bundle["std"]
        self.max_length = int(self.model.config.text_config.max_position_embeddings)

    def score(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        if not all(p.strip() for p in prompts):
            raise ValueError(
                f"{self.name}: this reward compares each image with its prompt, but some prompts are empty; "
                "fill prompt_texts on EPD RL Tune (one line per positive) or the prompt on EPD Score Images"
            )
        # full load: a plain transformers module has no comfy cast ops, so it cannot run partly offloaded
        mm.load_models_gpu([self.patcher], force_full_load=True)
        device, dtype = self.patcher.load_device, next(self.model.parameters()).dtype
        pixels = comfy.clip_model.clip_preprocess(images.to(device), size=self.size, mean=self.mean, std=self.std)
        tokens = self.tokenizer(
            prompts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(device)
        out = self.model(
            input_ids=tokens["input_ids"], attention_mask=tokens.get("attention_mask"), pixel_values=pixels.to(dtype)
        )
        cos = (out.image_embeds.float() * out.text_embeds.float()).sum(-1)
        if self.name == "pickscore":
            return self.model.logit_scale.float().exp() * cos / PICKSCORE_SCALE
        return cos.clamp(0.0, 1.0) if self.name == "hps" else cos


def config_model_type(path: str) -> str | None:
    """config.json's model_type, or None when the file is not a JSON object."""
    try:
        with open(path, encoding="utf-8") as fh:
            config = json.load(fh)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return config.get("model_type", "") if isinstance(config, dict) else None


def weights_problem(folder: str) -> str | None:
    """Why model.safetensors cannot be read (empty, truncated, not safetensors), or None."""
    path = os.path.join(folder, "model.safetensors")
    if not os.path.isfile(path):
        return None  # a sharded index, or missing: reported elsewhere
    try:
        with safe_open(path, framework="pt") as fh:
            fh.keys()
    except (SafetensorError, OSError) as err:
        kind = "a PyTorch pickle renamed" if starts_like_pickle(path) else "not a readable safetensors file"
        return f"model.safetensors is {kind} ({os.path.getsize(path)} bytes; {err}); re-download or re-convert it"
    return None


def clip_folder_problems(folder: str) -> list[str]:
    """What a transformers CLIP folder lacks (config, safetensors weights, tokenizer); empty if complete."""
    files = set(os.listdir(folder))
    problems = []
    if "config.json" not in files:
        problems.append("config.json is missing")
    else:
        model_type = config_model_type(os.path.join(folder, "config.json"))
        if model_type is None:
            problems.append("config.json is not a JSON object (a transformers config); re-download the folder")
        elif model_type != "clip":
            problems.append(f"config.json has model_type {model_type!r}, expected 'clip' (a transformers CLIPModel)")
    if not files & {"model.safetensors", "model.safetensors.index.json"}:
        pickles = sorted(f for f in files if f.lower().endswith(PICKLE_SUFFIXES))
        problems.append(
            f"there is no model.safetensors (only the pickle file(s) {pickles}, which are never loaded); convert "
            'them once in an environment you trust: python -c "from transformers import CLIPModel; '
            f"CLIPModel.from_pretrained('{folder}').save_pretrained('{folder}', safe_serialization=True)\""
            if pickles
            else "there is no model.safetensors"
        )
    weights = weights_problem(folder)
    if weights:
        problems.append(weights)
    if "tokenizer.json" not in files and not {"vocab.json", "merges.txt"} <= files:
        problems.append("the tokenizer files are missing (tokenizer.json, or vocab.json + merges.txt)")
    return problems


def load_clip_bundle(folder: str, node: str) -> dict[str, Any]:
    """Model, tokenizer, patcher and preprocessing of a local transformers CLIP folder (never downloads)."""
    problems = clip_folder_problems(folder)
    if problems:
        raise ValueError(f"{node}: {folder} is not a usable CLIP model folder: {'; '.join(problems)} (docs/rewards.md)")
    try:
        from transformers import AutoTokenizer, CLIPModel
    except ImportError as err:
        raise ValueError(f"{node}: the transformers package is needed for this reward ({err})") from err
    try:  # mismatched sizes are loaded and then refused below, with the keys named (transformers alone
        # only says "look at the above report", a log line the user of a node never sees)
        model, info = CLIPModel.from_pretrained(
            folder, local_files_only=True, use_safetensors=True, output_loading_info=True, ignore_mismatched_sizes=True
        )
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except Exception as err:  # transformers raises many kinds; each is the folder's fault here
        detail = " ".join(str(err).split())[:400]  # one line: transformers spreads its reason over several
        raise ValueError(
            f"{node}: could not load the CLIP model in {folder}: {type(err).__name__}: {detail}; check that "
            "config.json, model.safetensors and the tokenizer files come from one CLIP checkpoint (docs/rewards.md)"
        ) from err
    bad = list(info.get("missing_keys", [])) + [str(k) for k in info.get("mismatched_keys", [])]
    if bad:
        raise ValueError(
            f"{node}: the weights in {folder} do not fit its config.json ({len(bad)} missing or mismatched, e.g. "
            f"{bad[:3]}); re-download the folder or re-convert the checkpoint"
        )
    size, mean, std = preprocess_config(folder, model)
    return {"model": model, "tokenizer": tokenizer, "patcher": reward_patcher(model), "size": size,
            "mean": mean, "std": std}  # fmt: skip
