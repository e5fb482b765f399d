"""Stage 2 loop, RDPO (docs/training.md): sample tables, roll out, score, update the policy.

Like the distillation loop this is a plain generator of RLStats and never prints. The model
is reached only through ``rollout(rows, prompts, seeds) -> images``, so the same loop runs on
an exact denoiser in a test, on the Fashion-MNIST benchmark and through ComfyUI's guider + VAE.
Image i of a rollout shows prompt ``prompts[i % len(prompts)]``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple

import torch

from ..params import EPDParams
from ..solver import table_rows
from .objective import GROUPINGS, group_ids, loo_advantages, ppo_loss
from .policy import DirichletTablePolicy

Rows = list[dict[str, torch.Tensor]]
Rollout = Callable[[Rows, Sequence[int], Sequence[int]], torch.Tensor]
Reward = Callable[[torch.Tensor, Sequence[str]], torch.Tensor]
GradHook = Callable[[list[torch.Tensor]], None]  # sees the policy's tensors, .grad set, before clipping
# Validation noise seeds start here, far from the training seeds drawn below 2**31.
VAL_SEED_BASE = 2**40


class Cancelled(Exception):
    """Raised by a rollout (e.g. from a progress callback) to end the run; the loop returns its best table."""


class RLConfig(NamedTuple):
    iterations: int = 50  # policy updates, one rollout batch each
    prompts_per_step: int = 2  # P: prompts in a rollout batch
    group_size: int = 4  # k: images per prompt, each with its own table and noise
    concentration: float = 20.0  # kappa: Dirichlet spread around the table (larger = tighter)
    lr: float = 3e-3  # Adam learning rate of the residual network
    clip_range: float = 0.2  # PPO ratio clip
    kl_coef: float = 0.01  # KL(pi || start) penalty weight; 0 only logs it
    ppo_epochs: int = 1
    minibatch: int = 4  # images per gradient step
    max_grad_norm: float = 1.0
    grouping: str = "prompt"  # 'prompt': same-prompt RLOO; 'mixed': upstream's mixed-prompt columns
    normalize_advantages: bool = True
    learn_scales: bool = False  # log-normal direction/time scales in the policy
    eval_every: int = 5  # iterations between mean-table validations (also the preview)
    eval_per_prompt: int = 2  # validation images per prompt, fixed seeds
    seed: int = 0


class RLStats(NamedTuple):
    iteration: int
    mean_reward: float  # mean reward of this iteration's rollouts (-inf-free; tables drawn from the policy)
    loss: float
    kl: float  # KL(pi || start), summed over steps
    val_reward: float | None  # mean-table reward on the validation seeds, when validated
    best_val_reward: float
    best_table: EPDParams  # the policy mean with the best validation reward so far
    preview: torch.Tensor | None  # validation images of the current mean table [N, H, W, 3], when validated
    seconds: float  # wall time of this iteration


def check_config(config: RLConfig, num_prompts: int) -> None:
    """Every bad setting at once, before any compute."""
    problems = []
    if min(config.iterations, config.prompts_per_step, config.ppo_epochs, config.minibatch, config.eval_every) < 1:
        problems.append("iterations, prompts_per_step, ppo_epochs, minibatch and eval_every must all be >= 1")
    if config.group_size < 2:
        problems.append(f"group_size={config.group_size} must be >= 2 (the baseline leaves one image out)")
    if config.grouping not in GROUPINGS:
        problems.append(f"grouping={config.grouping!r} is not one of {GROUPINGS}")
    if not (config.lr > 0 and config.clip_range > 0 and config.kl_coef >= 0 and config.max_grad_norm > 0):
        problems.append("need lr > 0, clip_range > 0, kl_coef >= 0 and max_grad_norm > 0")
    if num_prompts < 1 or config.eval_per_prompt < 1:
        problems.append("need at least one prompt and eval_per_prompt >= 1")
    if problems:
        raise ValueError("EPD RL: " + "; ".join(problems))


def make_policy(start: EPDParams | DirichletTablePolicy, config: RLConfig) -> DirichletTablePolicy:
    """A fresh policy around a table, or a saved policy to resume."""
    if isinstance(start, DirichletTablePolicy):
        return start
    return DirichletTablePolicy(start, config.concentration, learn_scales=config.learn_scales, seed=config.seed)


def update_policy(
    policy, optimizer, draw, log_prob_old, advantages, config: RLConfig, grad_hook: GradHook | None = None
) -> tuple[float, float]:
    """PPO epochs over shuffled minibatches; returns (last loss, KL to the start).

    ``grad_hook`` runs after each backward and before the clip, so that averaged gradients are clipped alike.
    """
    gen = torch.Generator().manual_seed(config.seed)
    loss_value, kl_value = 0.0, 0.0
    with torch.enable_grad():  # callers may sit in no_grad (e.g. a ComfyUI prompt); the policy needs autograd
        for _ in range(config.ppo_epochs):
            for index in torch.randperm(len(draw), generator=gen).split(config.minibatch):
                kl = policy.kl_to_base()
                loss = ppo_loss(policy.log_prob(draw[index]), log_prob_old[index], advantages[index], config.clip_range)
                loss = loss + config.kl_coef * kl
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if grad_hook is not None:
                    grad_hook(list(policy.parameters()))
                torch.nn.utils.clip_grad_norm_(policy.parameters(), config.max_grad_norm)
                optimizer.step()
                loss_value, kl_value = float(loss.detach()), float(kl.detach())
    return loss_value, kl_value


class Validator:
    """Reward of a mean table on fixed seeds: every prompt, ``eval_per_prompt`` images each."""

    def __init__(self, rollout: Rollout, reward: Reward, texts: Sequence[str], config: RLConfig) -> None:
        self.rollout, self.reward, self.texts = rollout, reward, list(texts)
        self.prompts = list(range(len(texts)))
        self.seeds = [VAL_SEED_BASE + config.seed * 10_000 + i for i in range(len(texts) * config.eval_per_prompt)]

    def __call__(self, table: EPDParams) -> tuple[float, torch.Tensor]:
        images = self.rollout(table_rows(table), self.prompts, self.seeds)
        prompt_texts = [self.texts[i % len(self.texts)] for i in range(len(self.seeds))]
        return float(self.reward(images, prompt_texts).mean()), images


def rl_tune(
    start: EPDParams | DirichletTablePolicy,
    rollout: Rollout,
    reward: Reward,
    texts: Sequence[str],
    config: RLConfig | None = None,
    should_stop: Callable[[], bool] | None = None,
    grad_hook: GradHook | None = None,
) -> Iterator[RLStats]:
    """RDPO on a table; yields RLStats per iteration. ``texts``: one prompt text per conditioning.

    ``grad_hook(params)`` runs before every optimiser step (epd_core.tune all-reduces there).
    """
    config = RLConfig() if config is None else config
    check_config(config, len(texts))
    policy = make_policy(start, config)
    optimizer = torch.optim.Adam(policy.parameters(), lr=config.lr)
    validate = Validator(rollout, reward, texts, config)
    groups = group_ids(config.grouping, config.prompts_per_step, config.group_size)
    seeds = torch.Generator().manual_seed(config.seed)
    try:
        best_val, _ = validate(policy.mean_table())
    except Cancelled:
        return
    best_table = policy.mean_table({"rl_iterations": 0, "rl_val_reward": best_val})
    for iteration in range(1, config.iterations + 1):
        if should_stop is not None and should_stop():
            return
        started = time.perf_counter()
        prompts = [(iteration * config.prompts_per_step + j) % len(texts) for j in range(config.prompts_per_step)]
        batch = len(groups)
        image_seeds = torch.randint(0, 2**31 - 1, (batch,), generator=seeds).tolist()
        draw = policy.sample(batch, int(torch.randint(0, 2**31 - 1, (1,), generator=seeds)))
        try:
            images = rollout(draw.rows(policy.sigmas), prompts, image_seeds)
        except Cancelled:
            return
        rewards = reward(images, [texts[prompts[i % len(prompts)]] for i in range(batch)]).double()
        with torch.no_grad():
            log_prob_old = policy.log_prob(draw)
        advantages = loo_advantages(rewards, groups, config.normalize_advantages)
        loss, kl = update_policy(policy, optimizer, draw, log_prob_old, advantages, config, grad_hook)
        val, preview = None, None
        if iteration % config.eval_every == 0 or iteration == config.iterations:
            try:
                val, preview = validate(policy.mean_table())
            except Cancelled:
                return
            if val > best_val:
                best_val = val
                best_table = policy.mean_table({"rl_iterations": iteration, "rl_val_reward": val})
        yield RLStats(iteration, float(rewards.mean()), loss, kl, val, best_val, best_table, preview,
                      time.perf_counter() - started)  # fmt: skip
