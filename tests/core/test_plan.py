"""plan_run: tail, grid, table fit, form and AFS decided once (epd_core/plan.py), and the vocabulary."""

from __future__ import annotations

import pytest
import torch

from epd_core import schedules, vocab  # tests/test_layers.py checks that epd_core never imports ComfyUI
from epd_core.plan import plan_run, prepare_sigmas, resolve_form, resolve_plugin, resolve_tail
from epd_core.tables import default_table

F64 = torch.float64
# A ComfyUI-style grid: three real steps, then the model's sigma_min 0.1 and 0.
COMFY = torch.tensor([10.0, 5.0, 1.0, 0.1, 0.0], dtype=F64)


def test_vocabulary_is_one_definition() -> None:
    assert vocab.FORMS == ("direction", "data") and vocab.KINDS == ("ve", "flow")
    assert vocab.TAIL_CHOICES == ("auto", "drop", "stop", "keep")
    assert vocab.FORM_CHOICES[1:] == vocab.FORMS and vocab.TABLE_KIND_CHOICES[1:] == vocab.TABLE_KINDS
    assert tuple(schedules.SCHEDULE_NAMES) == vocab.SCHEDULE_NAMES


def test_tail_auto_needs_the_models_sigma_min() -> None:
    assert resolve_tail("auto", COMFY, 0.1) == "drop"
    assert resolve_tail("auto", COMFY, 0.1 * 1.005) == "drop"  # within SIGMA_MIN_RTOL = 1 %
    assert resolve_tail("auto", COMFY, 0.5) == "keep"  # 0.1 is a real step of this grid
    assert resolve_tail("auto", COMFY, None) == "drop"  # no model: any grid ending in 0
    assert resolve_tail("auto", COMFY[:-1], None) == "keep"
    assert resolve_tail("stop", COMFY, 0.5) == "stop"
    with pytest.raises(ValueError, match=r"tail='cut' is not one of \('auto', 'drop', 'stop', 'keep'\)"):
        resolve_tail("cut", COMFY, None)  # type: ignore[arg-type]


def test_form_auto_follows_the_table_then_cfg() -> None:
    table = default_table(COMFY[:-1], 2, form="direction").replace(metadata={"form": "direction"})
    assert resolve_form("auto", table, 7.5) == "direction"
    assert resolve_form("auto", None, 1.0) == "direction"
    assert resolve_form("auto", None, 7.5) == "data"
    assert resolve_form("auto", None, None) == "data"
    assert resolve_form("auto", None, 1.0, plugin=True) == "data"  # the plugin's jumps need the data form
    assert resolve_form("auto", table, 1.0, plugin=True) == "direction"
    assert resolve_form("data", table, 1.0) == "data"
    with pytest.raises(ValueError, match=r"form='euler' is not one of \('auto', 'direction', 'data'\)"):
        resolve_form("euler", None, None)  # type: ignore[arg-type]


def test_plan_without_a_table_drops_the_tail_and_builds_the_default() -> None:
    plan = plan_run(COMFY, tail="auto", sigma_min=0.1, cfg=7.5)
    assert plan.sigmas.tolist() == [10.0, 5.0, 1.0, 0.0] and plan.tail == "drop"
    assert plan.form == "data" and plan.params.num_steps == 3 and plan.params.num_points == 2
    assert not plan.afs and not plan.rebased and plan.grid_diff == 0.0
    torch.testing.assert_close(plan.params.sigmas, plan.sigmas, rtol=0, atol=0)


def test_plan_keeps_a_tables_own_step_count_whatever_the_tail() -> None:
    table = default_table(COMFY, 2)  # made for all 4 steps, tail included
    plan = plan_run(COMFY, table, tail="drop")
    assert plan.sigmas is COMFY and plan.tail == "keep" and plan.params is table


def test_plan_rebases_a_table_and_reports_only_real_differences() -> None:
    grid = torch.tensor([10.0, 5.0, 1.3, 0.1, 0.0], dtype=F64)
    table = default_table(prepare_sigmas(grid, "drop"), 2, form="direction").replace(afs=True)
    as_float32 = grid.float()  # float32 round-off of 1.3 (~5e-8) is below GRID_RTOL: not "rebased"
    plan = plan_run(as_float32, table, tail="auto", sigma_min=0.1)
    assert 0.0 < plan.grid_diff < 1e-6 and not plan.rebased and plan.afs
    torch.testing.assert_close(plan.params.sigmas, prepare_sigmas(as_float32, "drop").double(), rtol=0, atol=0)
    other = torch.tensor([12.0, 4.0, 1.5, 0.1, 0.0], dtype=F64)
    plan = plan_run(other, table, tail="auto", sigma_min=0.1)
    # |12 - 10| is the largest gap; the positions r stay, the grid is the one given
    assert plan.rebased and plan.grid_diff == pytest.approx(2.0)
    torch.testing.assert_close(plan.params.r, table.r, rtol=0, atol=1e-15)


def test_plan_step_count_mismatch_has_one_text() -> None:
    table = default_table(COMFY[:3], 2)  # 2 steps
    with pytest.raises(ValueError, match=r"EPD table has 2 steps but the sigmas give 3 \(tail='drop'\); feed"):
        plan_run(COMFY, table, tail="auto", sigma_min=0.1)


def test_plugin_auto_follows_the_table_then_the_model_kind() -> None:
    plain = default_table(COMFY[:-1], 2)  # no recorded sampler: EPD Distill and RL Tune tables
    plugin_table = plain.replace(metadata={"sampler": "epd_plugin"})
    assert resolve_plugin("auto", None, "ve") and not resolve_plugin("auto", None, "flow")
    assert not resolve_plugin("auto", None, None)  # unknown model: the plain solver
    assert not resolve_plugin("auto", plain, "ve") and resolve_plugin("auto", plugin_table, "flow")
    assert resolve_plugin("on", plain, "flow") and not resolve_plugin("off", plugin_table, "ve")
    assert resolve_plugin(True, None, "flow") and not resolve_plugin(False, None, "ve")  # a checkbox-era workflow
    assert plan_run(COMFY, plugin="auto", kind="ve").plugin and not plan_run(COMFY).plugin
    assert plan_run(COMFY, form="auto", plugin="auto", kind="ve", cfg=1.0).form == "data"
    assert plan_run(COMFY, form="auto", plugin="auto", kind="flow", cfg=1.0).form == "direction"
    with pytest.raises(ValueError, match=r"plugin='yes' is not one of \('auto', 'on', 'off'\)"):
        resolve_plugin("yes", None, "ve")  # type: ignore[arg-type]


def test_plan_refuses_a_grid_that_does_not_decrease() -> None:
    with pytest.raises(ValueError, match=r"the sigmas must strictly decrease, got \[10\.0, 5\.0, 5\.0, 0\.0\]"):
        plan_run(torch.tensor([10.0, 5.0, 5.0, 0.0]))


def test_plan_skips_afs_below_sigma_max() -> None:
    assert plan_run(COMFY, afs=True, sigma_max=10.0).afs
    assert plan_run(COMFY, afs=True, sigma_max=10.0 * (1 + 5e-4)).afs  # within AFS_REL_TOL = 0.1 %
    plan = plan_run(COMFY, afs=True, sigma_max=14.6)  # img2img: starts below pure noise
    assert not plan.afs and plan.afs_skipped
    assert plan_run(COMFY, afs=True).afs  # no sigma_max: as asked
