"""The web extension in a real browser: every shipped workflow loads cleanly in headless Chromium.

A real ComfyUI server with the pack runs on loopback, and the app opens in Debian's Chromium
(/usr/bin/chromium, driven by Playwright with ``executable_path``; no browser is downloaded). Each
workflows/*.json is loaded with ``app.loadGraphData``, as opening the file does, and must leave no
missing-node dialog and no unregistered node type. No console error or warning, and no uncaught
page error, may come from the pack's files. A screenshot of each loaded workflow is written to the
test's tmp folder. Skips without COMFYUI_PATH, without playwright or without /usr/bin/chromium.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from comfy_server import running_server

pytest.importorskip("playwright.sync_api")
from comfy_browser import BrowserApp, chromium_available, open_app

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((ROOT / "workflows").glob("*.json"))
PACK_FILES = ("/extensions/ComfyUI-EPD/", "EPD")

pytestmark = pytest.mark.skipif(not chromium_available(), reason="needs /usr/bin/chromium (apt-get install chromium)")


@pytest.fixture(scope="module")
def app(comfyui: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserApp]:
    base = tmp_path_factory.mktemp("comfy_browser")
    with (
        running_server(comfyui, base, {"ComfyUI-EPD": ROOT}, "/object_info/EPD_Sampler", {}) as server,
        open_app(server.url, base / "profile") as page_app,
    ):
        yield page_app


def pack_messages(app: BrowserApp) -> list[str]:
    """Console errors and warnings, and page errors, that mention the pack."""
    return [
        f"{m.kind}: {m.text} ({m.url})"
        for m in app.messages
        if m.kind in ("error", "warning", "pageerror") and m.mentions(*PACK_FILES)
    ]


def test_the_pack_extensions_register(app: BrowserApp) -> None:
    assert {"EPD.LossChart", "EPD.TableWidget"} <= set(app.extension_names())
    assert not pack_messages(app)


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_loads_without_missing_nodes_or_pack_errors(
    app: BrowserApp, workflow: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    seen = len(app.messages)
    result = app.load(workflow)
    dialogs = app.dialogs()
    app.close_dialogs()
    app.screenshot(tmp_path_factory.mktemp("screens") / f"{workflow.stem}.png")
    assert result["count"] > 0
    assert result["missing"] == [], f"{workflow.name}: unregistered node types {result['missing']}"
    assert dialogs == [], f"{workflow.name}: a dialog opened on load: {dialogs}"
    new = BrowserApp(app.page, app.messages[seen:])
    assert not pack_messages(new), pack_messages(new)


def test_nothing_from_the_pack_in_the_console_after_all_loads(app: BrowserApp) -> None:
    app.page.wait_for_timeout(500)  # late messages from the last load
    assert not pack_messages(app), pack_messages(app)
