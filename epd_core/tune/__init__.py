"""Headless tuning under torchrun: the same ``distill`` and ``rl_tune`` loops as the nodes, on N processes.

``python -m epd_core.tune distill|rl CONFIG`` (JSON or TOML); under ``torchrun --nproc_per_node N``
every process is a rank of one ``torch.distributed`` group (gloo on CPU, NCCL on GPU).

Design (issue 18):

- **Data parallel over the batch, nothing else.** The table (a few dozen numbers) and the policy
  (a small MLP) are replicated; every rank runs the unchanged loop on its share of the batch and
  the loops' ``grad_hook`` averages the gradients with one all-reduce before each optimiser step.
  Same start, same averaged gradients and the same Adam state keep the replicas bit-identical
  (checked in tests/core/test_tune.py), so no parameters are ever broadcast.
- **Seeds.** Rank r trains on seed ``rank_seed(seed, r)``; rank 0 keeps the run seed itself, so
  one process reproduces ``python -m epd_core.distill`` and a run is reproducible for a given N.
  The RL policy's network is initialised from the run seed on every rank.
- **Equal total batch.** ``batch`` (distill) and ``prompts_per_step`` (RL) are totals and are
  split evenly over the ranks, so N only changes how fast a step runs, not what it computes
  (up to which noise each sample gets).
- **RL groups stay on one rank.** A prompt's k images, and so its leave-one-out baseline, live on
  one rank: rank r takes P / N whole prompt groups. No reward is gathered: a group needs only its
  own rewards, and gathering would put a collective between scoring and the update for nothing.
  The one statistic that is per rank is the advantages' standardisation (divided by the rank's
  batch std, not the global one): it rescales a rank's gradient by a factor near 1 and does not
  change any advantage's sign or which ratios PPO clips.
- **Rank 0 validates and writes.** It keeps the best table (written atomically with
  ``table_io.save_table`` whenever it improves) and, for RL, the policy after every
  ``save_every`` iterations (``rl.state.save_policy``), which ``resume`` continues from. The other
  ranks validate only at the end, on one sample. A rank that dies ends the run (torchrun stops the
  others; a hung collective times out after ``timeout_s``); the files on disk are the last good ones.
"""

from __future__ import annotations

from .comm import Ranks, init_ranks, rank_seed
from .config import TuneSetup, load_config
from .runs import run_distill, run_rl

__all__ = ["Ranks", "TuneSetup", "init_ranks", "load_config", "rank_seed", "run_distill", "run_rl"]
