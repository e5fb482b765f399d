"""EPD Load Table, EPD Save Table and EPD Import Upstream Table."""

from __future__ import annotations

import logging
import os
from typing import Any

from ..epd_core.table_io import load_table, save_table
from ..epd_core.upstream import import_upstream_table
from .comfy import folders
from .comfy.api import io, ui
from .errors import node_errors, table_file_name
from .options import CATEGORY
from .types import overwrite_input, table_input, table_output

log = logging.getLogger(__name__)

LOAD = "EPD Load Table"
SAVE = "EPD Save Table"
IMPORT = "EPD Import Upstream Table"


def write_table(params: Any, name: str, overwrite: bool, node: str) -> str:
    """Save a table as models/epd/<name>.safetensors (atomic); returns the path."""
    with node_errors(node):
        path = os.path.join(folders.default_dir(), table_file_name(name, node))
        if os.path.exists(path) and not overwrite:
            raise ValueError(f"{node}: {path} already exists; turn on overwrite or choose another name.")
        save_table(params, path)
    log.info("%s: saved %s", node, path)
    return path


class EPDLoadTable(io.ComfyNode):
    """A table file from models/epd."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="EPD_LoadTable",
            display_name=LOAD,
            category=CATEGORY,
            description="Load an EPD table (.safetensors) from models/epd. Upstream .pkl predictors must be "
            "converted first with EPD Import Upstream Table.",
            inputs=[
                io.Combo.Input(
                    "table_name",
                    options=folders.table_names(),
                    tooltip="A .safetensors table in models/epd (or another 'epd' folder from extra_model_paths.yaml).",
                ),
            ],
            outputs=[table_output()],
        )

    @classmethod
    def validate_inputs(cls, table_name: str) -> bool | str:
        return True if folders.table_path(table_name) else f"{LOAD}: no table {table_name!r} in models/epd."

    @classmethod
    def fingerprint_inputs(cls, table_name: str) -> str:
        path = folders.table_path(table_name)
        return folders.file_digest(path) if path else table_name

    @classmethod
    def execute(cls, table_name: str) -> io.NodeOutput:
        path = folders.table_path(table_name)
        if path is None:
            raise ValueError(f"{LOAD}: no table {table_name!r} in models/epd; refresh the list or copy it there.")
        with node_errors(LOAD):
            return io.NodeOutput(load_table(path))


class EPDSaveTable(io.ComfyNode):
    """Writes a table to models/epd so EPD Load Table lists it."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="EPD_SaveTable",
            display_name=SAVE,
            category=CATEGORY,
            description="Save an EPD table to models/epd/<name>.safetensors (written atomically).",
            inputs=[
                table_input("The table to save.", optional=False),
                io.String.Input("name", default="epd_table", tooltip="File name in models/epd; .safetensors is added."),
                overwrite_input(),
            ],
            outputs=[],
            is_output_node=True,
        )

    @classmethod
    def validate_inputs(cls, name: str) -> bool | str:
        try:
            table_file_name(name, SAVE)
        except ValueError as err:
            return str(err)
        return True

    @classmethod
    def execute(cls, table: Any, name: str = "epd_table", overwrite: bool = False) -> io.NodeOutput:
        path = write_table(table, name, overwrite, SAVE)
        return io.NodeOutput(ui=ui.PreviewText(f"saved {os.path.basename(path)} ({table!r})"))


def import_inputs() -> list[io.Input]:
    """Inputs of EPD Import Upstream Table."""
    return [
        io.String.Input(
            "path",
            default="",
            tooltip="Path of the upstream .pkl relative to ComfyUI's input folder (e.g. epd/sd15-best.pkl); "
            "paths that leave the input folder are refused.",
        ),
        io.String.Input(
            "save_as",
            default="",
            tooltip="If set, also save the table as models/epd/<save_as>.safetensors. Leave empty to only convert.",
        ),
        overwrite_input(),
        io.Sigmas.Input(
            "sigmas",
            optional=True,
            tooltip="Optional: the grid the table was trained on, when the pickle's metadata cannot rebuild it "
            "(one sigma per table step + 1).",
        ),
    ]


class EPDImportUpstreamTable(io.ComfyNode):
    """Converts a BeierZhu/EPD predictor .pkl without running it."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="EPD_ImportUpstreamTable",
            display_name=IMPORT,
            category=CATEGORY,
            description="Read an upstream EPD predictor .pkl with a restricted unpickler (no code runs) and "
            "output it as an EPD table; optionally save it to models/epd.",
            inputs=import_inputs(),
            outputs=[table_output()],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, path: str, save_as: str = "", overwrite: bool = False, sigmas: Any = None) -> io.NodeOutput:
        if not path.strip():
            raise ValueError(f"{IMPORT}: path is empty; give the path of an upstream EPD predictor .pkl.")
        with node_errors(IMPORT):
            grid = None if sigmas is None else sigmas.detach().to("cpu").double()
            params = import_upstream_table(folders.input_path(path), sigmas=grid)
        note = f"imported {params!r}"
        if save_as.strip():
            note += f"; saved {os.path.basename(write_table(params, save_as, overwrite, IMPORT))}"
        return io.NodeOutput(params, ui=ui.PreviewText(note))
