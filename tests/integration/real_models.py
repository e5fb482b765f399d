"""Random-weight checkpoints of real architectures that ComfyUI's own loaders detect (issue 12).

Each builder writes safetensors files into a folder and returns their names. The key
names and shapes come from ComfyUI's own modules, built on the meta device (no memory,
no weights); every tensor is then filled here: biases zero, 1-D weights (norms) one,
the rest ``randn * 0.02``, so every output stays finite. Files are stored in fp16.

What detection requires (ComfyUI 0.17, comfy/model_detection.py and comfy/supported_models.py):

* **SD1.5 checkpoint** (``CheckpointLoaderSimple``): the UNet prefix
  ``model.diffusion_model.``; ``SD15.unet_config`` asks for ``model_channels`` 320
  (``input_blocks.0.0.weight`` has 320 outputs), ``context_dim`` 768 (the second dim of the
  first cross-attention ``attn2.to_k.weight``, so at least one transformer block must exist),
  conv ``proj_in`` (4-D, not linear), no ``label_emb`` (adm_in_channels None) and no temporal
  layers; the 4 input channels keep it off SD15_instructpix2pix (8). Level count, res blocks
  per level and transformer depth are read from the keys and free, so this UNet has one level,
  one res block, one transformer block and no middle block (``transformer_depth_middle`` -2).
  The text encoder is CLIP-L at its fixed config (comfy/sd1_clip_config.json: 12 layers, width
  768) under ``cond_stage_model.transformer.``; the VAE under ``first_stage_model.`` has ComfyUI's
  fixed ddconfig (ch 128, ch_mult 1,2,4,4, 2 res blocks): only ``z_channels`` (from
  ``decoder.conv_in.weight``) and the ``post_quant_conv`` width are read from the file.
* **SDXL checkpoint** (``CheckpointLoaderSimple``): ``SDXL.unet_config`` asks for
  ``model_channels`` 320, linear ``proj_in`` (2-D), ``transformer_depth`` [0, 0, 2, 2, 10, 10]
  (one entry per input res block: 3 levels of 2), ``context_dim`` 2048, ``adm_in_channels`` 2816
  (``label_emb.0.0.weight``) and no temporal layers. ``channel_mult`` is free, so all levels stay
  at 320 channels ([1, 1, 1]); the output blocks have no transformers and there is no middle
  block, both free too. The text encoders are CLIP-L and CLIP-G (comfy/clip_config_bigg.json:
  32 layers, width 1280, about 700M parameters) at their fixed configs; their checkpoint keys
  come from ComfyUI's own ``SDXL.process_clip_state_dict_for_saving`` (CLIP-L under
  ``conditioner.embedders.0.transformer.``, CLIP-G in OpenCLIP layout under
  ``conditioner.embedders.1.model.``), the inverse of what the loader maps back. The VAE is the
  SD1.5 one (4 latent channels, quant convs).
* **SD3 MMDiT** (``UNETLoader``): the key ``joint_blocks.0.context_block.attn.qkv.weight``
  marks an MMDiT; ``SD3.unet_config`` asks for ``in_channels`` 16 (``x_embedder.proj.weight``)
  and ``pos_embed_scaling_factor`` None (always set by detection). ``depth`` is the
  x_embedder width / 64 (heads of 64), so depth 1 gives width 64, one joint block, one head.
  ``context_embedder`` must take 4096 features and ``y_embedder`` 2048 (what the sd3 text
  encoder emits: CLIP-L padded to 4096, pooled CLIP-L 768 + zero CLIP-G 1280); ``pos_embed``
  sets ``pos_embed_max_size`` (here 32 patches a side, images up to 512 px).
* **CLIP-L alone** (``CLIPLoader`` type ``sd3``): detect_te_model finds
  ``text_model.encoder.layers.0.mlp.fc1.weight`` but no layer 22 or 30, so CLIP-L, which
  CLIPType.SD3 turns into sd3_clip(clip_l=True, clip_g=False, t5=False).
* **SD3 VAE** (``VAELoader``): ``decoder.conv_in.weight`` with 16 input channels and no
  ``post_quant_conv``: the same fixed ddconfig, 16 latent channels.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import save_file

SCALE = 0.02  # weight std: small enough that 12 CLIP layers and the VAE stay finite
SD15_CHECKPOINT = "epd_test_sd15.safetensors"
SDXL_CHECKPOINT = "epd_test_sdxl.safetensors"
SD3_UNET = "epd_test_sd3_mmdit.safetensors"
CLIP_L = "epd_test_clip_l.safetensors"
SD3_VAE = "epd_test_sd3_vae.safetensors"
SD15_UNET_CONFIG = {
    "image_size": 32,
    "in_channels": 4,
    "out_channels": 4,
    "model_channels": 320,
    "num_res_blocks": [1],
    "channel_mult": [1],
    "transformer_depth": [1],
    "transformer_depth_output": [1, 1],
    "transformer_depth_middle": -2,
    "context_dim": 768,
    "num_heads": 8,
    "use_spatial_transformer": True,
    "use_linear_in_transformer": False,
    "legacy": False,
}
SDXL_UNET_CONFIG = {
    "image_size": 32,
    "in_channels": 4,
    "out_channels": 4,
    "model_channels": 320,
    "num_res_blocks": [2, 2, 2],
    "channel_mult": [1, 1, 1],
    "transformer_depth": [0, 0, 2, 2, 10, 10],
    "transformer_depth_output": [0] * 9,
    "transformer_depth_middle": -2,
    "context_dim": 2048,
    "num_head_channels": 64,
    "num_classes": "sequential",
    "adm_in_channels": 2816,
    "use_spatial_transformer": True,
    "use_linear_in_transformer": True,
    "legacy": False,
}
SD3_MMDIT_CONFIG = {
    "in_channels": 16,
    "patch_size": 2,
    "depth": 1,
    "adm_in_channels": 2048,
    "context_embedder_config": {"target": "torch.nn.Linear", "params": {"in_features": 4096, "out_features": 64}},
    "num_patches": 32 * 32,
    "pos_embed_max_size": 32,
}


def vae_ddconfig(z_channels: int) -> dict:
    """The fixed AutoencoderKL layout ComfyUI assumes for SD1.x and SD3 VAEs (comfy/sd.py VAE)."""
    return {
        "double_z": True,
        "z_channels": z_channels,
        "resolution": 256,
        "in_channels": 3,
        "out_ch": 3,
        "ch": 128,
        "ch_mult": [1, 2, 4, 4],
        "num_res_blocks": 2,
        "attn_resolutions": [],
        "dropout": 0.0,
    }


def meta_shapes(build: Callable[[], torch.nn.Module]) -> dict[str, torch.Size]:
    """Key -> shape of a module's state dict, built on the meta device (no weights allocated)."""
    with torch.device("meta"):
        return {key: value.shape for key, value in build().state_dict().items()}


def random_tensors(shapes: dict[str, torch.Size], prefix: str, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Zero biases, unit norms (1-D weights), small Gaussian elsewhere; fp16, keys prefixed."""
    out = {}
    for key, shape in shapes.items():
        if key.endswith("bias"):
            value = torch.zeros(shape)
        elif key.endswith("weight") and len(shape) <= 1:
            value = torch.ones(shape)
        else:
            value = torch.randn(shape, generator=gen) * SCALE
        out[prefix + key] = value.to(torch.float16)
    return out


def clip_shapes(config: str = "sd1_clip_config.json") -> dict[str, torch.Size]:
    """A CLIP text model's keys at one of ComfyUI's fixed configs (CLIP-L, or CLIP-G: clip_config_bigg.json)."""
    import comfy.clip_model
    import comfy.ops
    import comfy.sd1_clip

    cfg = json.loads(Path(comfy.sd1_clip.__file__).with_name(config).read_text())
    ops = comfy.ops.disable_weight_init
    return meta_shapes(lambda: comfy.clip_model.CLIPTextModel(cfg, torch.float32, None, ops))


def sdxl_clip_shapes() -> dict[str, torch.Size]:
    """CLIP-L and CLIP-G under the keys of an SDXL checkpoint, from ComfyUI's own saving map."""
    from comfy.supported_models import SDXL

    with torch.device("meta"):  # the map concatenates q, k, v into OpenCLIP's in_proj: on meta, free
        sd = {f"clip_l.transformer.{k}": torch.empty(v) for k, v in clip_shapes().items()}
        sd |= {f"clip_g.transformer.{k}": torch.empty(v) for k, v in clip_shapes("clip_config_bigg.json").items()}
        sd = SDXL(SDXL.unet_config).process_clip_state_dict_for_saving(sd)
    # position_ids is an index buffer the map adds; ComfyUI's CLIP has none, and random values would be wrong
    return {k: v.shape for k, v in sd.items() if not k.endswith("position_ids")}


def vae_shapes(z_channels: int, quant_convs: bool) -> dict[str, torch.Size]:
    """Encoder and decoder keys; ``quant_convs`` adds the SD1.x 1x1 (post_)quant_conv pair."""
    from comfy.ldm.modules.diffusionmodules.model import Decoder, Encoder

    cfg = vae_ddconfig(z_channels)
    shapes = {f"encoder.{k}": v for k, v in meta_shapes(lambda: Encoder(**cfg)).items()}
    shapes |= {f"decoder.{k}": v for k, v in meta_shapes(lambda: Decoder(**cfg)).items()}
    if quant_convs:
        z2 = 2 * z_channels
        shapes |= {
            "quant_conv.weight": torch.Size([z2, z2, 1, 1]),
            "quant_conv.bias": torch.Size([z2]),
            "post_quant_conv.weight": torch.Size([z_channels, z_channels, 1, 1]),
            "post_quant_conv.bias": torch.Size([z_channels]),
        }
    return shapes


def build_sd15_checkpoint(folder: Path, seed: int = 0) -> list[str]:
    """One SD1.5-class checkpoint (UNet + CLIP-L + VAE) for CheckpointLoaderSimple."""
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    gen = torch.Generator().manual_seed(seed)
    sd = random_tensors(meta_shapes(lambda: UNetModel(**SD15_UNET_CONFIG)), "model.diffusion_model.", gen)
    sd |= random_tensors(clip_shapes(), "cond_stage_model.transformer.", gen)
    sd |= random_tensors(vae_shapes(4, quant_convs=True), "first_stage_model.", gen)
    save_file(sd, str(folder / SD15_CHECKPOINT))
    return [SD15_CHECKPOINT]


def build_sdxl_checkpoint(folder: Path, seed: int = 0) -> list[str]:
    """One SDXL-class checkpoint (UNet + CLIP-L + CLIP-G + VAE) for CheckpointLoaderSimple, about 2 GB."""
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    gen = torch.Generator().manual_seed(seed)
    sd = random_tensors(meta_shapes(lambda: UNetModel(**SDXL_UNET_CONFIG)), "model.diffusion_model.", gen)
    sd |= random_tensors(sdxl_clip_shapes(), "", gen)
    sd |= random_tensors(vae_shapes(4, quant_convs=True), "first_stage_model.", gen)
    save_file(sd, str(folder / SDXL_CHECKPOINT))
    return [SDXL_CHECKPOINT]


def build_sd3_files(folder: Path, seed: int = 0) -> dict[str, str]:
    """SD3 MMDiT (diffusion_models), CLIP-L (text_encoders) and 16-channel VAE (vae) files.

    Returns {"diffusion_models": name, "text_encoders": name, "vae": name}; each file is written
    into ``folder / <that key>``.
    """
    from comfy.ldm.modules.diffusionmodules.mmdit import MMDiT
    from comfy.ops import disable_weight_init

    gen = torch.Generator().manual_seed(seed)
    parts = {
        "diffusion_models": (SD3_UNET, meta_shapes(lambda: MMDiT(**SD3_MMDIT_CONFIG, operations=disable_weight_init))),
        "text_encoders": (CLIP_L, clip_shapes()),
        "vae": (SD3_VAE, vae_shapes(16, quant_convs=False)),
    }
    for sub, (name, shapes) in parts.items():
        (folder / sub).mkdir(parents=True, exist_ok=True)
        save_file(random_tensors(shapes, "", gen), str(folder / sub / name))
    return {sub: name for sub, (name, _) in parts.items()}


def build_all(folder: Path) -> dict[str, list[str]]:
    """Every file, laid out as ComfyUI's models folder: {subfolder: file names}, the SD1.5 checkpoint first."""
    (folder / "checkpoints").mkdir(parents=True, exist_ok=True)
    checkpoints = build_sd15_checkpoint(folder / "checkpoints") + build_sdxl_checkpoint(folder / "checkpoints")
    return {"checkpoints": checkpoints, **{sub: [name] for sub, name in build_sd3_files(folder).items()}}


def link_models(built: Path, names: dict[str, list[str]], models_dir: Path) -> None:
    """Symlink each built file into a server's models/<subfolder>/."""
    for sub, files in names.items():
        (models_dir / sub).mkdir(parents=True, exist_ok=True)
        for name in files:
            (models_dir / sub / name).symlink_to(built / sub / name)
