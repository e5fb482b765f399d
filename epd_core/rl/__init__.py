"""Stage 2: tune an EPD table with preference rewards (RDPO, docs/training.md).

``rl_tune`` samples per-image tables from ``DirichletTablePolicy``, rolls them out through a
``rollout(rows, prompts, seeds) -> images`` function, scores the images with a reward and
updates the policy with PPO on leave-one-out advantages. The backbone is never trained.
"""

from .loop import Cancelled, RLConfig, RLStats, make_policy, rl_tune
from .objective import group_ids, loo_advantages, ppo_loss
from .policy import DirichletTablePolicy, TableDraw
from .rollout import denoiser_rollout
from .state import load_policy, save_policy

__all__ = [
    "Cancelled",
    "DirichletTablePolicy",
    "RLConfig",
    "RLStats",
    "TableDraw",
    "denoiser_rollout",
    "group_ids",
    "load_policy",
    "loo_advantages",
    "make_policy",
    "ppo_loss",
    "rl_tune",
    "save_policy",
]
