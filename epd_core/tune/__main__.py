"""``python -m epd_core.tune distill|rl CONFIG``; under ``torchrun --nproc_per_node N`` too (see __init__)."""

from __future__ import annotations

import argparse
import sys

import torch

from .comm import close, init_ranks
from .config import load_config
from .runs import run_distill, run_rl


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m epd_core.tune", description=__doc__.splitlines()[0])
    p.add_argument("mode", choices=("distill", "rl"))
    p.add_argument("config", help="a .json or .toml file (epd_core/tune/config.py: TuneSetup and the loop's fields)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads per process (0: torch's default)")
    args = p.parse_args(argv)
    try:
        setup = load_config(args.mode, args.config)
    except (OSError, ValueError) as err:
        raise SystemExit(f"epd_core.tune: {err}") from err
    if args.threads:
        torch.set_num_threads(args.threads)
    ranks = init_ranks(setup.backend, setup.timeout_s, setup.check_replicas)
    run = run_distill if args.mode == "distill" else run_rl
    try:
        path = run(setup, ranks, sys.stdout.write)
    except Exception as err:
        sys.stderr.write(f"epd_core.tune rank {ranks.rank}: run ended early ({err}); "
                         f"the best table so far stays at {setup.out}\n")  # fmt: skip
        raise
    close(ranks)
    if ranks.is_main:
        sys.stdout.write(
            f"table written to {path} ({ranks.world} process(es), {ranks.reduced_bytes} bytes all-reduced)\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
