"""Hostile files queued on a real server: each is refused with the node's name, nothing leaks, and the
prompt worker answers a good prompt within 5 s after each one (issue 13).

The files are made here: an upstream predictor whose attribute is a list DAG that doubles at
each of 64 levels (a tree walk takes 2^64 steps; the issue saw the worker hang until restart),
one within the depth budget whose tree expansion is 2^24 values, a pickle renamed .safetensors, a symlink from models/epd to a system file
(its bytes must never reach the message), a truncated safetensors header, and inline table
JSON nested 100,000 deep or holding a 401-digit integer.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from comfy_server import Server, running_server

ROOT = Path(__file__).resolve().parents[2]
GOOD_WITHIN_S = 5.0


def _upstream_writer() -> Any:
    """tests/core/test_upstream.py, the one writer of upstream-shaped pickles (loaded by path)."""
    spec = importlib.util.spec_from_file_location("epd_upstream_writer", ROOT / "tests" / "core" / "test_upstream.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_writer = _upstream_writer()
fake_modules = _writer.fake_modules  # makes the pickler's stand-in globals importable while writing


def dag(levels: int) -> list[Any]:
    """x = [x, x], ``levels`` times: a few bytes per level thanks to the pickle memo, 2 ** levels as a tree."""
    value: list[Any] = [0]
    for _ in range(levels):
        value = [value, value]
    return value


def dag_predictor(levels: int) -> bytes:
    """A 3-step K = 2 upstream predictor whose extra attribute is a DAG."""
    params = {k: torch.full((3, 2), 0.25) for k in _writer._PARAMS}
    attrs = {"num_steps": 4, "num_points": 2, "schedule_type": "time_uniform", "sigma_min": 0.002,
             "sigma_max": 80.0, "schedule_rho": 1.0, "afs": False, "dataset_name": "cifar10", "extra": dag(levels)}  # fmt: skip
    return _writer._predictor_pickle(params, attrs)


@pytest.fixture(scope="module")
def server(comfyui: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("comfy_hostile")
    tables, inputs = base / "models" / "epd", base / "input" / "epd"
    tables.mkdir(parents=True)
    inputs.mkdir(parents=True)
    (tables / "renamed_pickle.safetensors").write_bytes(pickle.dumps({"a": 1}, protocol=4))
    (tables / "truncated.safetensors").write_bytes((10**6).to_bytes(8, "little") + b'{"a":')
    os.symlink("/etc/passwd", tables / "passwd.safetensors")
    packs = {"ComfyUI-EPD": ROOT, "epd_testing_nodes": ROOT / "testing_nodes"}
    with running_server(comfyui, base, packs, "/object_info/EPDTest_ToyModel", {}) as srv:
        # the first run fits the toy model's mixture (seconds); ComfyUI caches it for every later prompt
        assert srv.run(good_prompt("warm_up"), timeout=120)["status"]["status_str"] == "success"
        yield srv


def good_prompt(name: str) -> dict[str, Any]:
    """Toy model -> EPD Sigmas -> EPD Default Table -> EPD Save Table: a small prompt that must run."""
    return {
        "1": {"class_type": "EPDTest_ToyModel", "inputs": {"kind": "edm"}},
        "2": {
            "class_type": "EPD_Sigmas",
            "inputs": {"model": ["1", 0], "steps": 3, "schedule": "auto", "end_at_zero": True},
        },
        "3": {
            "class_type": "EPD_DefaultTable",
            "inputs": {
                "sigmas": ["2", 0],
                "num_points": 2,
                "kind": "auto",
                "form": "data",
                "afs": True,
                "tail": "auto",
            },
        },
        "4": {"class_type": "EPD_SaveTable", "inputs": {"table": ["3", 0], "name": name, "overwrite": True}},
    }


def hostile_prompts() -> dict[str, dict[str, Any]]:
    save = {"class_type": "EPD_SaveTable", "inputs": {"table": ["1", 0], "name": "never", "overwrite": True}}
    deep = "[" * 100_000 + "]" * 100_000
    huge = json.dumps({"format_version": 1, "num_steps": 10**400}).replace("1" + "0" * 400, "1" + "0" * 400)
    inline = lambda text: {"1": {"class_type": "EPD_Table", "inputs": {"table_json": text}}, "2": save}  # noqa: E731
    load = lambda name: {"1": {"class_type": "EPD_LoadTable", "inputs": {"table_name": name}}, "2": save}  # noqa: E731
    return {
        "upstream-dag-64": {"1": {"class_type": "EPD_ImportUpstreamTable",
                                  "inputs": {"path": "epd/dag_64.pkl", "save_as": "", "overwrite": False}}, "2": save},
        "renamed-pickle": load("renamed_pickle.safetensors"),
        "truncated": load("truncated.safetensors"),
        "symlink-to-passwd": load("passwd.safetensors"),
        "json-nested": inline(deep),
        "json-401-digits": inline(huge),
    }  # fmt: skip


def test_a_shared_dag_within_the_budget_imports_fast_and_stays_small(
    server: Server, request: pytest.FixtureRequest
) -> None:
    """24 levels: 2^24 values as a tree (82-118 s and 3.8-5.9 GB before); now imported in seconds, not expanded."""
    request.getfixturevalue("fake_modules")
    (server.base / "input" / "epd" / "dag_24.pkl").write_bytes(dag_predictor(24))
    prompt = {"1": {"class_type": "EPD_ImportUpstreamTable",
                    "inputs": {"path": "epd/dag_24.pkl", "save_as": "dag_24", "overwrite": True}}}  # fmt: skip
    start = time.monotonic()
    result = server.run(prompt, timeout=60)
    if result["status"]["status_str"] == "error":  # refused by a budget is fine too, as long as it is quick
        assert refusal(result)["exception_message"].startswith("EPD Import Upstream Table: ")
    else:
        saved = server.base / "models" / "epd" / "dag_24.safetensors"
        assert saved.stat().st_size < 64 * 1024, saved.stat().st_size
    assert time.monotonic() - start < GOOD_WITHIN_S


def refusal(result: dict[str, Any]) -> dict[str, Any]:
    """The execution_error of a refused prompt."""
    assert result["status"]["status_str"] == "error", json.dumps(result["status"])[-2000:]
    (error,) = [body for kind, body in result["status"]["messages"] if kind == "execution_error"]
    return error


@pytest.mark.parametrize("case", list(hostile_prompts()))
def test_hostile_file_is_refused_and_the_worker_stays_responsive(
    server: Server, case: str, request: pytest.FixtureRequest
) -> None:
    prompt = hostile_prompts()[case]
    if case.startswith("upstream-dag"):
        request.getfixturevalue("fake_modules")
        (server.base / "input" / "epd" / "dag_64.pkl").write_bytes(dag_predictor(64))
    status, data = server.queue(prompt)
    if status != 200:  # refused at validation (e.g. Load Table's own check): the worker never saw it
        message = json.dumps(data)
    else:
        error = refusal(server.wait(data["prompt_id"], timeout=60))
        message = error["exception_message"]
        assert message.startswith("EPD "), message  # the node's display name comes first
        assert error["exception_type"] in ("ValueError", "RuntimeError"), error["exception_type"]
    assert "root:x" not in message and str(server.base) not in message, message  # no file bytes, no server paths
    start = time.monotonic()
    result = server.run(good_prompt(f"after_{case}"), timeout=60)
    assert result["status"]["status_str"] == "success", json.dumps(result["status"])[-2000:]
    assert time.monotonic() - start < GOOD_WITHIN_S, f"the worker took {time.monotonic() - start:.1f} s after {case}"
