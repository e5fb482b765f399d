"""The engine's vocabulary: model kinds, step forms, tails, table kinds and their defaults.

One definition of each choice, used by the engine and by the nodes. Each concept is a
``Literal`` type plus the tuple of its values (``typing.get_args`` of the type, so the
two cannot drift apart). The node-facing ``*_CHOICES`` tuples add ``"auto"`` in front,
where the node decides from what it reads from ComfyUI (epd_core.plan.plan_run).
"""

from __future__ import annotations

from typing import Literal, get_args

Kind = Literal["ve", "flow"]
"""ve: eps/v/x0/EDM models, D(x, sigma) with x = x0 + sigma n; flow: rectified flow, sigma <= 1."""
Form = Literal["direction", "data"]
"""How the K evaluations are combined (solver.combine, docs/engine.md)."""
Parallel = Literal["batched", "sequential"]
"""How the K point evaluations run (points.evaluate_points)."""
Tail = Literal["drop", "stop", "keep"]
"""What to do with a grid's ``[..., sigma_min, 0]`` end (solver.prepare_sigmas)."""
TableKind = Literal["uniform", "gauss_legendre"]
"""The training-free tables of tables.default_table."""
ScheduleName = Literal["polynomial", "logsnr", "time_uniform", "discrete", "flowmatch", "flow_uniform"]
"""The sigma grids of schedules.get_sigmas."""

KINDS: tuple[Kind, ...] = get_args(Kind)
FORMS: tuple[Form, ...] = get_args(Form)
PARALLEL_MODES: tuple[Parallel, ...] = get_args(Parallel)
TAILS: tuple[Tail, ...] = get_args(Tail)
TABLE_KINDS: tuple[TableKind, ...] = get_args(TableKind)
SCHEDULE_NAMES: tuple[ScheduleName, ...] = get_args(ScheduleName)

# Measured in bench/bench_exact.py: the data form stays stable under CFG 7.5 where the
# paper's direction form and every multistep built-in diverge (docs/benchmarks.md).
DEFAULT_FORM: Form = "data"
DEFAULT_TABLE_FORM: Form = DEFAULT_FORM
DEFAULT_KIND: Kind = "ve"
DEFAULT_PARALLEL: Parallel = "batched"
# The samplers take a grid as given; only a caller that knows the model's sigma_min can
# tell ComfyUI's tail from a real step (plan.resolve_tail decides "auto").
DEFAULT_TAIL: Tail = "keep"

# Node-facing choices: "auto" first, then the engine's values.
AUTO = "auto"
FormChoice = Literal["auto", "direction", "data"]
ParallelChoice = Literal["auto", "batched", "sequential"]
TailChoice = Literal["auto", "drop", "stop", "keep"]
TableKindChoice = Literal["auto", "uniform", "gauss_legendre"]
# With a guider, "auto" follows the table's recorded form, else direction at cfg <= 1 and
# data above (plan.resolve_form); measured in docs/benchmarks.md.
DEFAULT_FORM_CHOICE: FormChoice = AUTO
FORM_CHOICES: tuple[FormChoice, ...] = (AUTO, *FORMS)
PARALLEL_CHOICES: tuple[ParallelChoice, ...] = (AUTO, *PARALLEL_MODES)
TAIL_CHOICES: tuple[TailChoice, ...] = (AUTO, *TAILS)
TABLE_KIND_CHOICES: tuple[TableKindChoice, ...] = (AUTO, *TABLE_KINDS)
SCHEDULE_CHOICES = (AUTO, *SCHEDULE_NAMES)
AFS_CHOICES = (AUTO, "on", "off")
# EPD-Plugin (iPNDM jumps) or the plain EPD-Solver. "auto" follows a table's recorded sampler, else the plugin on
# eps/v/EDM models and off on flow models (plan.resolve_plugin; measured per family in docs/benchmarks.md).
PluginChoice = Literal["auto", "on", "off"]
PLUGIN_CHOICES: tuple[PluginChoice, ...] = (AUTO, "on", "off")

# K, the parallel points per step, is capped where the node widget caps it (nodes/types.py
# num_points max): a batched step makes one model call of K x batch rows, so a K read from a
# file or JSON must not be able to ask for more memory than the widget allows.
MAX_POINTS = 8
