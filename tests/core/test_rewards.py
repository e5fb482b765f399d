"""Weight-free rewards and the reward mix (docs/rewards.md), CPU, a fraction of a second."""

from __future__ import annotations

import pytest
import torch

from epd_core.rl.rewards import (
    BaseReward,
    Contrast,
    JPEGCompressibility,
    JPEGIncompressibility,
    MixedReward,
    RewardFn,
    Sharpness,
    check_images,
    weight_free_reward,
)


def textured(size: int = 64, seed: int = 0) -> torch.Tensor:
    """A [1, size, size, 3] image with sharp edges: random 4x4 blocks of grey levels."""
    g = torch.Generator().manual_seed(seed)
    blocks = torch.rand(1, 1, size // 4, size // 4, generator=g)
    img = torch.nn.functional.interpolate(blocks, scale_factor=4, mode="nearest")
    return img[0, 0, :, :, None].expand(size, size, 3).unsqueeze(0).contiguous()


def box_blur(images: torch.Tensor, radius: int = 2) -> torch.Tensor:
    """Mean filter of width 2 * radius + 1 per channel (replicate padding)."""
    x = images.permute(0, 3, 1, 2)
    k = 2 * radius + 1
    x = torch.nn.functional.pad(x, (radius,) * 4, mode="replicate")
    return torch.nn.functional.avg_pool2d(x, k, stride=1).permute(0, 2, 3, 1)


class Constant(BaseReward):
    """A reward that gives every image the same value (for mix arithmetic)."""

    def __init__(self, value: float, name: str) -> None:
        self.value, self.name = value, name

    def score(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        return torch.full((images.shape[0],), self.value)


def test_scores_are_float32_per_image_in_range():
    images = torch.cat([textured(seed=s) for s in range(3)])
    for kind in ("jpeg_compressibility", "jpeg_incompressibility", "sharpness", "contrast"):
        reward = weight_free_reward(kind)
        assert isinstance(reward, RewardFn) and reward.name == kind
        scores = reward(images, ["a", "b", "c"])
        assert scores.dtype == torch.float32 and scores.shape == (3,)
        assert ((scores >= 0) & (scores <= 1)).all(), (kind, scores)


def test_blur_lowers_sharpness():
    image = textured()
    blurred = box_blur(image)
    scores = Sharpness()(torch.cat([image, blurred]))
    assert scores[0] > scores[1] + 0.2, scores
    # a flat image has a zero Laplacian: s = 0 -> score 0 / (0 + 0.1) = 0
    assert Sharpness()(torch.full((1, 8, 8, 3), 0.3)).item() == 0.0


def test_noise_is_less_jpeg_compressible_than_a_flat_image():
    noise = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(1))
    flat = torch.full((1, 64, 64, 3), 0.4)
    both = torch.cat([noise, flat])
    comp, incomp = JPEGCompressibility()(both), JPEGIncompressibility()(both)
    assert comp[0] < comp[1] and incomp[0] > incomp[1]
    torch.testing.assert_close(comp, 1.0 - incomp)  # the two are mirror images
    # flat 64x64: ~700 bytes, almost all JPEG header and tables (~0.06); q95 noise: ~10 bits/pixel (~0.4)
    assert incomp[1] < 0.1 < 0.3 < incomp[0]


def test_contrast_is_twice_the_luma_std():
    # half black, half white: luma std 0.5 -> contrast 1; a flat image -> 0
    half = torch.zeros(1, 4, 4, 3)
    half[:, :, :2] = 1.0
    torch.testing.assert_close(Contrast()(torch.cat([half, torch.full_like(half, 0.7)])), torch.tensor([1.0, 0.0]))


def test_mix_is_the_weighted_mean():
    images = torch.rand(2, 4, 4, 3)
    mix = MixedReward([Constant(1.0, "a"), Constant(0.25, "b"), Constant(5.0, "c")], [3.0, 1.0, 0.0])
    # (3 * 1 + 1 * 0.25 + 0 * 5) / (3 + 1 + 0) = 3.25 / 4
    torch.testing.assert_close(mix(images), torch.full((2,), 3.25 / 4))
    assert mix.name == "mix(0.75*a + 0.25*b)"


def test_mix_runs_real_rewards():
    images = torch.cat([textured(), box_blur(textured())])
    mix = MixedReward([Sharpness(), Contrast()], [1.0, 1.0])
    torch.testing.assert_close(mix(images), (Sharpness()(images) + Contrast()(images)) / 2)


@pytest.mark.parametrize(
    ("weights", "match"),
    [
        ([1.0], "2 rewards"),
        ([1.0, -0.5], "finite and >= 0"),
        ([1.0, float("nan")], "finite and >= 0"),
        ([0.0, 0.0], "all weights are 0"),
    ],
)
def test_mix_rejects_bad_weights(weights, match):
    with pytest.raises(ValueError, match=match):
        MixedReward([Contrast(), Sharpness()], weights)


def test_mix_rejects_non_rewards():
    with pytest.raises(ValueError, match="at least one reward"):
        MixedReward([], [])
    with pytest.raises(TypeError, match="not a reward"):
        MixedReward([Contrast(), 3], [1, 1])


@pytest.mark.parametrize(
    ("images", "error", "match"),
    [
        (torch.rand(4, 4, 3), ValueError, r"\[B, H, W, 3\].*\[4, 4, 3\]"),
        (torch.rand(1, 4, 4, 4), ValueError, "alpha"),
        (torch.rand(1, 3, 4, 4), ValueError, "shape"),
        (torch.full((1, 4, 4, 3), 255.0), ValueError, r"in \[0, 1\].*0\.\.255"),
        (torch.full((1, 4, 4, 3), float("nan")), ValueError, "finite"),
        (torch.zeros(1, 4, 4, 3, dtype=torch.uint8), TypeError, "floating point"),
        ([[0.5]], TypeError, "torch.Tensor"),
    ],
)
def test_bad_images_are_rejected(images, error, match):
    with pytest.raises(error, match=match):
        Contrast()(images)


def test_prompts_are_checked():
    images = torch.rand(2, 4, 4, 3)
    with pytest.raises(ValueError, match="got 1 prompts for 2 images"):
        Contrast()(images, ["only one"])
    with pytest.raises(TypeError, match="single string"):
        Contrast()(images, "ab")
    assert Contrast()(images, None).shape == (2,) and Contrast()(images, []).shape == (2,)


def test_slight_overshoot_is_clamped_not_rejected():
    images = torch.full((1, 2, 2, 3), 1.0005)
    assert check_images(images, "x").max().item() == 1.0


def test_unknown_reward_lists_the_choices():
    with pytest.raises(ValueError, match="contrast"):
        weight_free_reward("hps")
    with pytest.raises(ValueError, match="quality"):
        JPEGCompressibility(quality=0)


def test_a_broken_reward_is_reported_by_name():
    class Broken(BaseReward):
        name = "broken"

        def score(self, images, prompts):
            return torch.tensor([float("nan")] * images.shape[0])

    with pytest.raises(ValueError, match="broken: returned non-finite"):
        Broken()(torch.rand(1, 4, 4, 3))
