"""EPD RL Tune's run: policy start or resume, rollouts, the RDPO loop, the kept table (issue 4).

Plain orchestration that the node calls; ``nodes.comfy.rollout`` turns a table draw into
images through the user's model and VAE. Only the small Dirichlet policy is trained.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from ...epd_core.plan import resolve_form
from ...epd_core.rl import RLConfig, load_policy, make_policy, rl_tune, save_policy
from ..comfy import folders, rollout, training
from ..errors import check_negatives, prompt_lines, table_file_name

log = logging.getLogger(__name__)

RL_NODE = "EPD RL Tune"


def policy_path(name: str) -> str | None:
    """models/epd_rl/<name>.safetensors for a plain file name; None when no name is given."""
    if not name.strip():
        return None
    return os.path.join(folders.policy_dir(), table_file_name(name, RL_NODE, "policy_file"))


def prompt_texts(text: str, count: int) -> list[str]:
    """One text per positive prompt: the lines of ``text``, or empty strings."""
    lines = prompt_lines(text)
    if not lines:
        return [""] * count
    if len(lines) != count:
        raise ValueError(
            f"{RL_NODE}: {len(lines)} prompt text lines for {count} positive prompts; give one line per prompt"
        )
    return lines


def rl_config(opts: dict[str, Any]) -> RLConfig:
    names = ("iterations", "prompts_per_step", "group_size", "concentration", "lr", "kl_coef", "clip_range",
             "learn_scales", "grouping", "eval_every", "eval_per_prompt", "seed")  # fmt: skip
    return RLConfig(**{n: opts[n] for n in names})


def start_policy(table, config: RLConfig, path: str | None, resume: bool):
    """A fresh policy on the table, or the saved one when resuming (its table must have the same steps and K)."""
    if not (resume and path and os.path.exists(path)):
        return make_policy(table, config), 0
    policy, done = load_policy(path)
    if (policy.table.num_steps, policy.table.num_points) != (table.num_steps, table.num_points):
        raise ValueError(f"{RL_NODE}: {path} holds a policy for {policy.table.num_steps} steps and K = "
                         f"{policy.table.num_points}, the table has {table.num_steps} and {table.num_points}")  # fmt: skip
    log.info("EPD RL: resuming %s after %d iterations", path, done)
    return policy, done


def make_rollout(model, vae, positive, negative, opts, table) -> rollout.ComfyRollout:
    """The guider + VAE rollout for these prompts, on the table's own grid."""
    check_negatives(positive, negative, RL_NODE)
    form = resolve_form(opts["form"], table, opts["cfg"])
    return rollout.ComfyRollout(model, vae, positive, negative, opts["cfg"], (opts["width"], opts["height"]),
                                  table, form, RL_NODE)  # fmt: skip


def run_rl(model, vae, positive, negative, reward, table, opts, node_id):
    """Run RDPO; returns (best mean table, reward history, last validation images)."""
    config = rl_config(opts)
    texts = prompt_texts(opts.get("prompt_texts", ""), len(positive))
    path = policy_path(opts.get("policy_file") or "")
    if path and os.path.exists(path) and not opts.get("resume") and not opts.get("overwrite_policy"):
        raise ValueError(
            f"{RL_NODE}: policy_file {os.path.basename(path)!r} already exists in models/{folders.POLICY_FOLDER}; "
            "turn on resume to continue it, overwrite_policy to replace it, or choose another name."
        )
    reporter = training.Reporter(config.iterations, node_id, "EPD_RLTune")
    images_of = make_rollout(model, vae, positive, negative, opts, table)
    rewards, preview = [], None

    def describe(iterations: int, cancelled: bool) -> dict[str, Any]:
        return {"provenance": "rl", "guidance": opts["cfg"], "rl_kl_coef": config.kl_coef,
                "rl_concentration": config.concentration, "rl_iterations_run": iterations,
                "cancelled": cancelled}  # fmt: skip

    best = training.BestTable(RL_NODE, node_id, table, describe)
    # ComfyUI runs prompts under inference_mode: the policy is built and trained outside it; the
    # rollouts themselves run without gradients (the backbone is never trained).
    with best.keep(), training.grad_mode():
        policy, done = start_policy(table, config, path, bool(opts.get("resume")))
        for stats in rl_tune(policy, images_of, reward, texts, config, should_stop=reporter.should_stop):
            preview = stats.preview if stats.preview is not None else preview
            rewards.append(stats.mean_reward)
            best.offer(stats.best_table, stats.iteration)
            shown = rollout.preview_grid(stats.preview) if stats.preview is not None else None
            reporter.update(stats.iteration, preview=shown, loss=stats.loss, reward=stats.mean_reward)
            if path and stats.val_reward is not None:
                save_policy(policy, path, iterations=done + stats.iteration)
    return best.write(cancelled=False), rewards, preview
