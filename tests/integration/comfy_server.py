"""A real ComfyUI server for the integration tests: start, query over HTTP, stop."""

from __future__ import annotations

import contextlib
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

STARTUP_S = 180


def request(url: str, data: Any = None) -> tuple[int, Any]:
    """GET (or POST json ``data``) -> (status, decoded json)."""
    body = None if data is None else json.dumps(data).encode()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """A running ComfyUI; ``base`` is its --base-directory, ``log`` its output."""

    def __init__(self, url: str, base: Path, log: Path) -> None:
        self.url, self.base, self.log = url, base, log

    def get(self, path: str) -> Any:
        status, data = request(self.url + path)
        assert status == 200, (path, status, data)
        return data

    def queue(self, prompt: dict[str, Any]) -> tuple[int, Any]:
        return request(self.url + "/prompt", {"prompt": prompt, "client_id": "epd-tests"})

    def run(self, prompt: dict[str, Any], timeout: float = 120.0) -> dict[str, Any]:
        """Queue an API prompt and wait for its history entry."""
        status, data = self.queue(prompt)
        assert status == 200, data
        return self.wait(data["prompt_id"], timeout)

    def wait(self, prompt_id: str, timeout: float = 120.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            history = self.get(f"/history/{prompt_id}")
            if prompt_id in history and history[prompt_id]["status"].get("completed") is not None:
                return history[prompt_id]
            time.sleep(0.2)
        raise AssertionError(f"prompt {prompt_id} did not finish; log:\n{self.log.read_text()[-3000:]}")


def _wait_until_up(proc: subprocess.Popen, url: str, ready: str, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"ComfyUI exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        with contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError):
            if request(url + ready)[0] == 200:
                return
        time.sleep(0.5)
    raise AssertionError(f"ComfyUI did not answer within {STARTUP_S} s:\n{log.read_text()[-4000:]}")


@contextlib.contextmanager
def running_server(
    comfyui: Path, base: Path, packs: dict[str, Path], ready: str, env: dict[str, str]
) -> Iterator[Server]:
    """Start ``main.py --cpu`` with ``packs`` (name -> folder) linked into base/custom_nodes."""
    (base / "custom_nodes").mkdir()
    for name, folder in packs.items():
        (base / "custom_nodes" / name).symlink_to(folder, target_is_directory=True)
    port, log = free_port(), base / "server.log"
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
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **env}
        proc = subprocess.Popen(cmd, cwd=comfyui, stdout=out, stderr=subprocess.STDOUT, env=full_env)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(proc, url, ready, log)
        yield Server(url, base, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
