"""Reward nodes: EPD_REWARD producers, EPD Reward Mix and EPD Score Images (issue 4; docs/rewards.md).

An EPD_REWARD is an ``epd_core.rl.rewards.BaseReward``: ``reward(images, prompts) -> scores`` with
images [B, H, W, 3] in [0, 1], prompts a list of B strings and scores float32 [B] on the CPU,
roughly in [0, 1]. EPD RL Tune maximises it; EPD Score Images shows it on a batch.
"""

from __future__ import annotations

from typing import Any

from ..epd_core.rl.rewards import WEIGHT_FREE, MixedReward, weight_free_reward
from .comfy import reward_files
from .comfy.api import io, ui
from .comfy.reward_models import AestheticReward, CLIPTextImageReward, load_aesthetic_head, load_clip_bundle
from .errors import node_errors, prompt_lines
from .options import CATEGORY
from .types import EPDReward

REWARD_CATEGORY = CATEGORY + "/rewards"
AESTHETIC = "EPD Aesthetic Reward"
WEIGHT_FREE_NODE = "EPD Weight-Free Reward"
MIX = "EPD Reward Mix"
SCORE = "EPD Score Images"
MIX_SLOTS = 4


def reward_output() -> io.Output:
    """The EPD_REWARD output of every reward node."""
    return EPDReward.Output(
        display_name="reward",
        tooltip="A reward: scores [B] per image (and prompt), roughly in [0, 1]; connect to EPD RL Tune, "
        "EPD Reward Mix or EPD Score Images.",
    )


def file_check(check: Any, *args: Any) -> bool | str:
    """validate_inputs helper: True, or the error text of a failed file check."""
    try:
        check(*args)
    except ValueError as err:
        return str(err)
    return True


def stamp(locate: Any, name: str, node: str) -> str:
    """fingerprint_inputs helper: names, sizes and times of the located file(s); the name if it is missing."""
    try:
        return reward_files.folder_stamp(locate(name, node))
    except ValueError:
        return name


def check_head(name: str, node: str) -> str:
    """Path of a listed aesthetic head that is not a pickle."""
    path = reward_files.head_path(name, node)
    reward_files.refuse_pickle(path, node)
    return path


class EPDAestheticReward(io.ComfyNode):
    """LAION aesthetic predictor on ComfyUI CLIP vision embeddings; reward = score / 10."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="EPD_AestheticReward",
            display_name=AESTHETIC,
            category=REWARD_CATEGORY,
            description="LAION aesthetic predictor as a reward: the head (models/epd_rewards/aesthetic, .safetensors) "
            "scores L2-normalised CLIP image embeddings; reward = predicted score (1..10) / 10.",
            inputs=[
                io.ClipVision.Input(
                    "clip_vision", tooltip="CLIP ViT-L/14 vision model from Load CLIP Vision (the LAION heads' CLIP)."
                ),
                io.Combo.Input(
                    "head",
                    options=reward_files.head_names(),
                    tooltip="Aesthetic head in models/epd_rewards/aesthetic: the linear LAION head or the MLP "
                    "'sac+logos+ava1-l14-linearMSE', converted to .safetensors (docs/rewards.md).",
                ),
            ],
            outputs=[reward_output()],
        )

    @classmethod
    def validate_inputs(cls, head: str) -> bool | str:
        return file_check(check_head, head, AESTHETIC)

    @classmethod
    def fingerprint_inputs(cls, head: str, **kwargs: Any) -> str:
        return stamp(reward_files.head_path, head, AESTHETIC)

    @classmethod
    def execute(cls, clip_vision: Any, head: str) -> io.NodeOutput:
        with node_errors(AESTHETIC):
            path = check_head(head, AESTHETIC)
            return io.NodeOutput(AestheticReward(clip_vision, load_aesthetic_head(path, AESTHETIC), path))


def clip_reward_schema(node_id: str, display: str, description: str) -> io.Schema:
    """Schema of the transformers-CLIP reward nodes (one model-folder combo)."""
    return io.Schema(
        node_id=node_id,
        display_name=display,
        category=REWARD_CATEGORY,
        description=description + " Needs the prompt texts (prompt_texts on EPD RL Tune).",
        inputs=[
            io.Combo.Input(
                "model",
                options=reward_files.clip_model_names(),
                tooltip="A transformers CLIP model folder in models/epd_rewards/clip (config.json, model.safetensors, "
                "tokenizer files); docs/rewards.md says where to get each.",
            )
        ],
        outputs=[reward_output()],
    )


class CLIPRewardNode(io.ComfyNode):
    """Shared body of the CLIP-style reward nodes; subclasses set KIND, NODE_ID, DISPLAY, DESCRIPTION."""

    KIND = NODE_ID = DISPLAY = DESCRIPTION = ""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return clip_reward_schema(cls.NODE_ID, cls.DISPLAY, cls.DESCRIPTION)

    @classmethod
    def validate_inputs(cls, model: str) -> bool | str:
        return file_check(reward_files.clip_model_dir, model, cls.DISPLAY)

    @classmethod
    def fingerprint_inputs(cls, model: str, **kwargs: Any) -> str:
        return stamp(reward_files.clip_model_dir, model, cls.DISPLAY)

    @classmethod
    def execute(cls, model: str) -> io.NodeOutput:
        with node_errors(cls.DISPLAY):
            folder = reward_files.clip_model_dir(model, cls.DISPLAY)
            return io.NodeOutput(CLIPTextImageReward(load_clip_bundle(folder, cls.DISPLAY), cls.KIND, folder))


class EPDPickScoreReward(CLIPRewardNode):
    KIND, NODE_ID, DISPLAY = "pickscore", "EPD_PickScoreReward", "EPD PickScore Reward"
    DESCRIPTION = "PickScore (yuvalkirstain/PickScore_v1) as a reward: exp(logit_scale) * cosine / 26."


class EPDCLIPScoreReward(CLIPRewardNode):
    KIND, NODE_ID, DISPLAY = "clip", "EPD_CLIPScoreReward", "EPD CLIP Score Reward"
    DESCRIPTION = "CLIP text-image similarity as a reward: the cosine of the image and prompt embeddings."


class EPDHPSReward(CLIPRewardNode):
    KIND, NODE_ID, DISPLAY = "hps", "EPD_HPSReward", "EPD HPS Reward"
    DESCRIPTION = (
        "HPSv2.1 as a reward, from a checkpoint converted to the transformers CLIP format (docs/rewards.md): "
        "the cosine clamped to [0, 1]."
    )


class EPDWeightFreeReward(io.ComfyNode):
    """JPEG (in)compressibility, sharpness or contrast: no model files."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="EPD_WeightFreeReward",
            display_name=WEIGHT_FREE_NODE,
            category=REWARD_CATEGORY,
            description="A reward that needs no model: JPEG compressibility or incompressibility (DDPO; JPEG size "
            "at quality 95 per pixel), sharpness (variance of the Laplacian) or contrast (luma std).",
            inputs=[
                io.Combo.Input(
                    "kind",
                    options=list(WEIGHT_FREE),
                    default="jpeg_compressibility",
                    tooltip="jpeg_compressibility: 1 - JPEG bits per pixel / 24 (simple images win); "
                    "jpeg_incompressibility: bits per pixel / 24 (detail wins); sharpness: s / (s + 0.1), "
                    "s = std of the luma Laplacian; contrast: 2 x luma std.",
                )
            ],
            outputs=[reward_output()],
        )

    @classmethod
    def execute(cls, kind: str) -> io.NodeOutput:
        with node_errors(WEIGHT_FREE_NODE):
            return io.NodeOutput(weight_free_reward(kind))


def mix_inputs() -> list[io.Input]:
    """reward_i / weight_i pairs; the first two rewards are required."""
    inputs: list[io.Input] = []
    for i in range(1, MIX_SLOTS + 1):
        optional = i > 2
        note = "Optional: another reward to mix in." if optional else "A reward to mix (any EPD reward node)."
        inputs.append(EPDReward.Input(f"reward_{i}", optional=optional, tooltip=note))
        inputs.append(
            io.Float.Input(
                f"weight_{i}",
                default=1.0,
                min=0.0,
                max=100.0,
                step=0.05,
                tooltip=f"Weight of reward {i}; 0 leaves it out. Weights need not sum to 1.",
            )
        )
    return inputs


class EPDRewardMix(io.ComfyNode):
    """R = sum w_m r_m / sum w_m over two to four rewards (docs/rewards.md)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="EPD_RewardMix",
            display_name=MIX,
            category=REWARD_CATEGORY,
            description="Combine two to four rewards into their weighted mean, sum w_m r_m / sum w_m, as upstream "
            "RDPO's multi-metric reward. Rewards with weight 0 are not run.",
            inputs=mix_inputs(),
            outputs=[reward_output()],
        )

    @classmethod
    def execute(cls, **kwargs: Any) -> io.NodeOutput:
        slots = [(kwargs.get(f"reward_{i}"), kwargs.get(f"weight_{i}", 1.0)) for i in range(1, MIX_SLOTS + 1)]
        pairs = [(reward, weight) for reward, weight in slots if reward is not None]
        with node_errors(MIX):
            return io.NodeOutput(MixedReward([r for r, _ in pairs], [w for _, w in pairs]))


def split_prompts(text: str, batch: int, node: str) -> list[str]:
    """One prompt for every image, or one non-empty line per image; empty text means no prompts."""
    lines = prompt_lines(text)
    if len(lines) <= 1:
        return (lines or [""]) * batch
    if len(lines) != batch:
        raise ValueError(f"{node}: {len(lines)} prompt lines for {batch} images; give one line, or one per image")
    return lines


class EPDScoreImages(io.ComfyNode):
    """Scores a batch of images with a reward, to check a reward inside a graph."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="EPD_ScoreImages",
            display_name=SCORE,
            category=REWARD_CATEGORY,
            description="Score images with an EPD reward and show the per-image scores: a quick check of what a "
            "reward prefers before tuning with it.",
            inputs=[
                io.Image.Input("images", tooltip="The images to score (a batch is scored image by image)."),
                EPDReward.Input("reward", tooltip="The reward to apply (any EPD reward node or EPD Reward Mix)."),
                io.String.Input(
                    "prompt",
                    default="",
                    multiline=True,
                    tooltip="The prompt of the images, for "
                    "text-aware rewards: one line for all images, or one line per image.",
                ),
            ],
            outputs=[
                io.Float.Output(display_name="mean", tooltip="Mean score over the batch."),
                io.String.Output(display_name="scores", tooltip="Per-image scores, comma-separated, batch order."),
            ],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, images: Any, reward: Any, prompt: str = "") -> io.NodeOutput:
        with node_errors(SCORE):
            scores = reward(images, split_prompts(prompt, images.shape[0], SCORE))
        text = ", ".join(f"{s:.4f}" for s in scores.tolist())
        note = f"{getattr(reward, 'name', 'reward')}: mean {scores.mean():.4f}; {text}"
        return io.NodeOutput(float(scores.mean()), text, ui=ui.PreviewText(note))
