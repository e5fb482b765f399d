"""A real ComfyUI server (main.py --cpu) with the pack in its custom_nodes (style.md §7).

The server gets its own --base-directory (custom_nodes, models, input, output, user), so
nothing is written into the checkout. Prompts use only non-model nodes: a MODEL needs a
checkpoint, which CI does not have. EPD_KSAMPLER_ENTRY=1 is set to check the dropdown entry.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SIGMAS = "14.61, 6.08, 2.23, 0.69, 0.17, 0.029, 0"
STARTUP_S = 180


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _request(url: str, data: Any = None) -> tuple[int, Any]:
    body = None if data is None else json.dumps(data).encode()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


class Server:
    """A running ComfyUI; ``base`` is its --base-directory."""

    def __init__(self, url: str, base: Path, log: Path) -> None:
        self.url, self.base, self.log = url, base, log

    def get(self, path: str) -> Any:
        status, data = _request(self.url + path)
        assert status == 200, (path, status, data)
        return data

    def run(self, prompt: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
        """Queue an API prompt and wait for its history entry."""
        status, data = _request(self.url + "/prompt", {"prompt": prompt, "client_id": "epd-tests"})
        assert status == 200, data
        prompt_id = data["prompt_id"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            history = self.get(f"/history/{prompt_id}")
            if prompt_id in history and history[prompt_id]["status"].get("completed") is not None:
                return history[prompt_id]
            time.sleep(0.2)
        raise AssertionError(f"prompt {prompt_id} did not finish; log:\n{self.log.read_text()[-3000:]}")


def _wait_until_up(proc: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"ComfyUI exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            if _request(url + "/object_info/EPD_Sampler")[0] == 200:
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    raise AssertionError(f"ComfyUI did not answer within {STARTUP_S} s:\n{log.read_text()[-4000:]}")


@pytest.fixture(scope="module")
def server(comfyui: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("comfy_base")
    (base / "custom_nodes").mkdir()
    (base / "custom_nodes" / "ComfyUI-EPD").symlink_to(ROOT, target_is_directory=True)
    port, log = _free_port(), base / "server.log"
    env = {**os.environ, "EPD_KSAMPLER_ENTRY": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [
        sys.executable,
        "main.py",
        "--cpu",
        "--listen",
        "127.0.0.1",
        "--port",
        str(port),
        "--base-directory",
        str(base),
    ]
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=comfyui, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(proc, url, log)
        yield Server(url, base, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_pack_imports_cleanly(server: Server) -> None:
    lines = [line for line in server.log.read_text().splitlines() if "ComfyUI-EPD" in line]
    assert lines, "the import-times list names the pack"
    assert not any("IMPORT FAILED" in line for line in lines), lines


def test_object_info_serves_the_nodes(server: Server) -> None:
    info = server.get("/object_info")
    epd = {k: v for k, v in info.items() if k.startswith("EPD_")}
    assert len(epd) == 8 and all(v["category"] == "sampling/custom_sampling/epd" for v in epd.values())
    assert epd["EPD_Sampler"]["output"] == ["SAMPLER"]
    assert "table" in epd["EPD_Sampler"]["input"]["optional"]


def test_ksampler_entry_is_offered_when_enabled(server: Server) -> None:
    options = server.get("/object_info/KSampler")["KSampler"]["input"]["required"]["sampler_name"][0]
    assert options.count("epd") == 1 and options[-1] == "epd"


def test_prompt_saves_and_reloads_tables(server: Server) -> None:
    from epd_core.table_io import load_table

    first = server.run(
        {
            "1": {"class_type": "ManualSigmas", "inputs": {"sigmas": SIGMAS}},
            "2": {
                "class_type": "EPD_DefaultTable",
                "inputs": {
                    "sigmas": ["1", 0],
                    "num_points": 3,
                    "kind": "uniform",
                    "form": "direction",
                    "afs": False,
                    "tail": "drop",
                },
            },
            "3": {"class_type": "EPD_SaveTable", "inputs": {"table": ["2", 0], "name": "http_test", "overwrite": True}},
        }
    )
    assert first["status"]["status_str"] == "success", first["status"]
    assert "http_test.safetensors" in first["outputs"]["3"]["text"][0]
    saved = load_table(server.base / "models" / "epd" / "http_test.safetensors")
    assert (saved.num_steps, saved.num_points) == (5, 3)

    second = server.run(
        {
            "1": {"class_type": "EPD_LoadTable", "inputs": {"table_name": "http_test.safetensors"}},
            "2": {"class_type": "EPD_Table", "inputs": {"table_json": "", "table": ["1", 0]}},
            "3": {"class_type": "EPD_SaveTable", "inputs": {"table": ["2", 0], "name": "http_copy", "overwrite": True}},
        }
    )
    assert second["status"]["status_str"] == "success", second["status"]
    shown = second["outputs"]["2"]["text"][0]
    copy = load_table(server.base / "models" / "epd" / "http_copy.safetensors")
    assert torch.equal(copy.r_logits, saved.r_logits) and json.loads(shown)["num_steps"] == 5

    third = server.run(
        {
            "1": {"class_type": "EPD_Table", "inputs": {"table_json": shown}},
            "2": {
                "class_type": "EPD_SaveTable",
                "inputs": {"table": ["1", 0], "name": "http_inline", "overwrite": True},
            },
        }
    )
    assert third["status"]["status_str"] == "success", third["status"]
    inline = load_table(server.base / "models" / "epd" / "http_inline.safetensors")
    assert torch.equal(inline.sigmas, saved.sigmas)


def test_bad_inputs_are_rejected_with_the_node_name(server: Server) -> None:
    status, data = _request(
        server.url + "/prompt",
        {
            "prompt": {
                "1": {"class_type": "ManualSigmas", "inputs": {"sigmas": SIGMAS}},
                "2": {
                    "class_type": "EPD_DefaultTable",
                    "inputs": {
                        "sigmas": ["1", 0],
                        "num_points": 2,
                        "kind": "uniform",
                        "form": "data",
                        "afs": False,
                        "tail": "drop",
                    },
                },
                "3": {
                    "class_type": "EPD_SaveTable",
                    "inputs": {"table": ["2", 0], "name": "../escape", "overwrite": True},
                },
            }
        },
    )
    assert status == 400
    assert "EPD Save Table: name '../escape'" in json.dumps(data["node_errors"])
    failed = server.run(
        {
            "1": {"class_type": "EPD_Table", "inputs": {"table_json": "{oops"}},
            "2": {"class_type": "EPD_SaveTable", "inputs": {"table": ["1", 0], "name": "never", "overwrite": False}},
        }
    )
    assert failed["status"]["status_str"] == "error"
    assert "EPD Table: EPD table JSON is not valid JSON" in json.dumps(failed["status"]["messages"])
