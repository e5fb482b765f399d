"""Headless tuning (issue 18): the same loops on one process and under torchrun with gloo on 127.0.0.1."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from epd_core.distill import DistillConfig, distill
from epd_core.grids import epd_sigmas
from epd_core.mixture import gaussian
from epd_core.rl import load_policy
from epd_core.table_io import load_table
from epd_core.tables import default_table
from epd_core.tune import load_config, rank_seed
from epd_core.tune.__main__ import main

pytest.importorskip("sklearn")  # the default model is the exact digits mixture

ROOT = Path(__file__).resolve().parents[2]
DISTILL = {"loop": {"iterations": 3, "batch": 8, "val_batch": 16, "eval_every": 1, "teacher": "dpm_2", "inserted": 3}}
RL = {"loop": {"iterations": 3, "prompts_per_step": 2, "group_size": 4, "eval_every": 1, "eval_per_prompt": 2}}


def write_config(tmp_path: Path, name: str, base: dict, **extra) -> Path:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"out": str(tmp_path / f"{name}.safetensors"), "log": str(tmp_path / f"{name}.log"),
                                "check_replicas": True, **base, **extra}))  # fmt: skip
    return path


def log_rows(tmp_path: Path, name: str, rank: int) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / f"{name}.log.rank{rank}").read_text().splitlines()]


def torchrun(mode: str, config: Path, procs: int = 2, env: dict | None = None) -> subprocess.CompletedProcess:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={procs}", "--master_addr=127.0.0.1",
           f"--master_port={port}", "-m", "epd_core.tune", mode, str(config), "--threads", "1"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(cmd, check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_rank_seeds_keep_the_run_seed_on_rank_0_and_differ_elsewhere() -> None:
    assert rank_seed(7, 0) == 7  # one process = the plain loop's seed
    assert len({rank_seed(7, r, d, 4) for r in range(4) for d in range(3)}) == 12


def test_a_hook_that_does_nothing_changes_no_bit_and_runs_once_per_step() -> None:
    mixture = gaussian(0.5, 0.5, 4)
    start = default_table(epd_sigmas(3, 0.002, 20.0), 2)

    def model(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return mixture.denoise(x, sigma)

    def noise(batch: int, gen: torch.Generator) -> torch.Tensor:
        return torch.randn(batch, 4, generator=gen, dtype=torch.float64) * 20.0

    config = DistillConfig(iterations=3, batch=4, val_batch=8, eval_every=1, teacher="dpm_2", inserted=3)
    calls = []
    plain = list(distill(model, start, noise, config))
    hooked = list(distill(model, start, noise, config, grad_hook=lambda params: calls.append(len(params))))
    assert len(calls) == 3 and all(n > 0 for n in calls)
    assert [s.loss for s in plain] == [s.loss for s in hooked]
    assert torch.equal(plain[-1].best_table.r_logits, hooked[-1].best_table.r_logits)


def test_bad_settings_are_reported_together(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('colour = "red"\n[loop]\nbatchsize = 3\n')
    with pytest.raises(ValueError, match=r"unknown key 'colour'.*unknown loop key 'batchsize'.*'out'"):
        load_config("distill", path)


def test_single_process_distill_and_rl_write_loadable_tables(tmp_path: Path, capsys) -> None:
    assert main(["distill", str(write_config(tmp_path, "d", DISTILL))]) == 0
    table = load_table(tmp_path / "d.safetensors")
    assert table.metadata["world_size"] == 1 and table.metadata["provenance"] == "distilled"
    rows = log_rows(tmp_path, "d", 0)
    assert [r["iteration"] for r in rows] == [1, 2, 3] and rows[-1]["reduced_bytes"] == 0
    assert rows[-1]["best_val_error"] <= rows[0]["best_val_error"]
    assert main(["rl", str(write_config(tmp_path, "r", RL))]) == 0
    load_table(tmp_path / "r.safetensors")
    _, done = load_policy(tmp_path / "r.policy.safetensors")
    assert done == 3


def test_rl_resumes_from_the_last_policy_save(tmp_path: Path) -> None:
    first = write_config(tmp_path, "r", RL)
    assert main(["rl", str(first)]) == 0
    more = {"loop": {**RL["loop"], "iterations": 5}}
    resumed = write_config(tmp_path, "r", more, resume=str(tmp_path / "r.policy.safetensors"))
    assert main(["rl", str(resumed)]) == 0
    assert [r["iteration"] for r in log_rows(tmp_path, "r", 0)] == [4, 5]
    assert load_policy(tmp_path / "r.policy.safetensors")[1] == 5


def test_two_gloo_ranks_hold_identical_tables_and_reproduce(tmp_path: Path) -> None:
    tables = []
    for run in ("a", "b"):
        config = write_config(tmp_path, run, DISTILL)
        done = torchrun("distill", config)
        assert done.returncode == 0, done.stderr[-2000:]
        ranks = [log_rows(tmp_path, run, r) for r in (0, 1)]
        # Parameters and averaged gradients before every step agree bit for bit across the ranks.
        assert [r["digests"] for r in ranks[0]] == [r["digests"] for r in ranks[1]]
        # 24 float64 gradients (r, weights, two scales on a 3 x 2 table) = 192 bytes a step.
        assert ranks[0][-1]["reduced_bytes"] == 3 * 192
        tables.append(load_table(tmp_path / f"{run}.safetensors"))
    assert torch.equal(tables[0].r_logits, tables[1].r_logits)
    assert torch.equal(tables[0].weight_logits, tables[1].weight_logits)


def test_two_gloo_ranks_run_rl_with_whole_groups(tmp_path: Path) -> None:
    done = torchrun("rl", write_config(tmp_path, "r", RL))
    assert done.returncode == 0, done.stderr[-2000:]
    ranks = [log_rows(tmp_path, "r", r) for r in (0, 1)]
    assert [r["digests"] for r in ranks[0]] == [r["digests"] for r in ranks[1]]
    assert load_policy(tmp_path / "r.policy.safetensors")[1] == 3


def test_a_killed_rank_ends_the_run_and_leaves_the_best_table(tmp_path: Path) -> None:
    helper = tmp_path / "dying_model.py"
    helper.write_text(
        "import os, signal\nfrom epd_core.digits import ExactModel, digits_mixture\n"
        "class Dying(ExactModel):\n"
        "    def __init__(self):\n        super().__init__(digits_mixture())\n"
        "    def __call__(self, x, sigma, **kw):\n"
        "        if os.environ['RANK'] == '1' and self.calls > 150:\n"
        "            os.kill(os.getpid(), signal.SIGKILL)\n"
        "        return super().__call__(x, sigma, **kw)\n"
    )
    config = write_config(tmp_path, "k", {"loop": {**DISTILL["loop"], "iterations": 50}}, model="dying_model:Dying",
                          timeout_s=30)  # fmt: skip
    done = torchrun("distill", config, env={"PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"})
    assert done.returncode != 0
    rows = log_rows(tmp_path, "k", 0)
    assert 0 < len(rows) < 50
    table = load_table(tmp_path / "k.safetensors")  # the best so far, whole
    assert table.metadata["world_size"] == 2
