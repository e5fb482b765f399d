"""The RDPO objective (docs/training.md): leave-one-out advantages and PPO's clipped surrogate.

Rollouts here put image i on prompt i % P (ComfyUI repeats a conditioning batch cyclically
over the latents), so a group is "every image with the same prompt". Upstream's layout is
prompt-major (prompt p, copy j at index p * k + j) and its baseline takes columns of that
index reshaped to (k, B / k), which mixes prompts; ``mixed_groups`` reproduces it as an option.
"""

from __future__ import annotations

import torch

GROUPINGS = ("prompt", "mixed")


def prompt_groups(num_prompts: int, group_size: int) -> torch.Tensor:
    """Group id [P * k] of each image in the cyclic layout: image i shows prompt i % P."""
    return torch.arange(num_prompts * group_size) % num_prompts


def mixed_groups(num_prompts: int, group_size: int) -> torch.Tensor:
    """Upstream's mixed-prompt columns, mapped onto the cyclic layout.

    Image i (prompt p = i % P, copy j = i // P) sits at upstream index p * k + j, whose
    column in the (k, P) row-major reshape is (p * k + j) % P.
    """
    index = torch.arange(num_prompts * group_size)
    prompt, copy = index % num_prompts, index // num_prompts
    return (prompt * group_size + copy) % num_prompts


def group_ids(grouping: str, num_prompts: int, group_size: int) -> torch.Tensor:
    """Group ids for a grouping name ('prompt' = same-prompt RLOO, 'mixed' = upstream's columns)."""
    if grouping not in GROUPINGS:
        raise ValueError(f"grouping={grouping!r} is not one of {GROUPINGS}")
    return (prompt_groups if grouping == "prompt" else mixed_groups)(num_prompts, group_size)


def loo_advantages(rewards: torch.Tensor, groups: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """A_i = R_i - mean of the other rewards in i's group; optionally divided by the batch std.

    Every group needs at least two images. Within a group the advantages sum to zero
    (the standardisation only rescales, so it keeps that).
    """
    rewards = rewards.to(torch.float64)
    ids = groups.unique(return_inverse=True)[1]
    counts = torch.bincount(ids).to(rewards.dtype)
    if bool((counts < 2).any()):
        raise ValueError("every reward group needs at least 2 images for a leave-one-out baseline; raise group_size")
    sums = torch.zeros_like(counts).index_add_(0, ids, rewards)
    baseline = (sums[ids] - rewards) / (counts[ids] - 1)
    advantages = rewards - baseline
    if normalize and advantages.numel() > 1:
        advantages = advantages / (advantages.std() + 1e-8)
    return advantages


def ppo_loss(
    log_prob: torch.Tensor, log_prob_old: torch.Tensor, advantages: torch.Tensor, clip_range: float
) -> torch.Tensor:
    """PPO's clipped surrogate mean(max(-A rho, -A clip(rho, 1 +/- eps))), rho = pi / pi_old on whole tables."""
    # The clamp keeps exp finite when a large update moved pi far from pi_old (inf * 0 would be nan);
    # such ratios are clipped anyway, so the clamp changes no gradient that PPO uses.
    ratio = (log_prob - log_prob_old).clamp(-20.0, 20.0).exp()
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1 - clip_range, 1 + clip_range)
    return torch.maximum(unclipped, clipped).mean()
