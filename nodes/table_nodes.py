"""EPD Default Table and EPD Table (inline JSON)."""

from __future__ import annotations

from typing import Any

from ..epd_core.table_io import table_from_json, table_to_json
from ..epd_core.tables import default_table
from ..epd_core.vocab import DEFAULT_TABLE_FORM, TABLE_KIND_CHOICES
from .comfy import sampling
from .comfy.api import io, ui
from .errors import node_errors
from .options import CATEGORY
from .types import form_input, num_points_input, table_input, table_output, tail_input

DEFAULT_TABLE = "EPD Default Table"
INLINE_TABLE = "EPD Table"


def default_table_inputs() -> list[io.Input]:
    """Inputs of EPD Default Table."""
    return [
        io.Sigmas.Input("sigmas", tooltip="The grid to build the table for (the tail rule is applied first)."),
        num_points_input(with_table=False),
        io.Combo.Input(
            "kind",
            options=list(TABLE_KIND_CHOICES),
            default="auto",
            tooltip="gauss_legendre: the K-point quadrature rule of each step. "
            "uniform: points spread around mid-step with equal weights (the RL cold start). "
            "auto: the one measured best for the form (gauss_legendre for direction, uniform for data).",
        ),
        form_input(for_table=True),
        io.Boolean.Input("afs", default=False, tooltip="Mark the table for the analytical first step."),
        tail_input(),
    ]


class EPDDefaultTable(io.ComfyNode):
    """A training-free table for given sigmas."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="EPD_DefaultTable",
            display_name=DEFAULT_TABLE,
            category=CATEGORY,
            description="A training-free EPD table for the connected sigmas: Gauss-Legendre points and weights "
            "(or the uniform RL cold start). Save it, or use it as the starting point of distillation.",
            inputs=default_table_inputs(),
            outputs=[table_output()],
        )

    @classmethod
    def execute(
        cls,
        sigmas: Any,
        num_points: int = 2,
        kind: str = "auto",
        form: str = DEFAULT_TABLE_FORM,
        afs: bool = False,
        tail: str = "auto",
    ) -> io.NodeOutput:
        with node_errors(DEFAULT_TABLE):
            grid = sampling.table_grid(sigmas, tail)
            return io.NodeOutput(default_table(grid, num_points, kind, form=form, afs=afs))


class EPDTable(io.ComfyNode):
    """A table carried inside the workflow as JSON text."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="EPD_Table",
            display_name=INLINE_TABLE,
            category=CATEGORY,
            description="An EPD table stored in the workflow as JSON, so the workflow carries it. Connect a table "
            "to show its JSON on the node, then paste that text into the box.",
            inputs=[
                io.String.Input(
                    "table_json",
                    multiline=True,
                    default="",
                    tooltip="Table JSON (as shown by this node or written by table_to_json). "
                    "Ignored while a table is connected.",
                ),
                table_input("Optional: a table to pass through and show as JSON, ready to copy into the text box."),
            ],
            outputs=[table_output()],
        )

    @classmethod
    def execute(cls, table_json: str = "", table: Any = None) -> io.NodeOutput:
        if table is not None:
            return io.NodeOutput(table, ui=ui.PreviewText(table_to_json(table)))
        if not table_json.strip():
            raise ValueError(f"{INLINE_TABLE}: the text box is empty; paste table JSON or connect a table.")
        with node_errors(INLINE_TABLE):
            return io.NodeOutput(table_from_json(table_json))
