"""The web extension in a real browser, under both node renderers: workflows load cleanly, the chart behaves.

A real ComfyUI server with the pack (and testing_nodes' toy model) runs on loopback, and the app opens in
Debian's Chromium (/usr/bin/chromium, driven by Playwright with ``executable_path``; no browser is
downloaded), once with the LiteGraph canvas and once with the Vue node renderer ("Modern Node Design").
Under each:

- every EPD node's help page is where the frontend asks first (``docs/<node id>/en.md``: no 404);
- every workflows/*.json loads with ``app.loadGraphData``, as opening the file does, with no missing-node
  dialog, no unregistered node type, no console error or warning or page error from the pack's files, and no
  two nodes overlapping (LiteGraph's bounding boxes, or the node elements' boxes under Vue);
- EPD Distill trains on the toy model from a queued prompt; the chart fills on its own node, a duplicated
  workflow tab opened meanwhile (same node ids and types) gets none of it, the curve is complete when its tab
  comes back, and an immediate reload keeps it; after Cancel the chart shows and keeps the final curve.

Screenshots go to pytest's tmp folder. With ``EPD_SCREENSHOTS=docs/images`` the LiteGraph run also refreshes the
README's pictures there (``quick_start.jpg``, the fitted SD1.5 example; ``training_chart.jpg``, the chart after
the toy run). Skips without COMFYUI_PATH,
playwright or /usr/bin/chromium; the training checks also need scikit-learn (the toy model).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from comfy_server import Server, running_server

pytest.importorskip("playwright.sync_api")
from comfy_browser import PICTURE_SETTINGS, VUE_NODES, BrowserApp, chromium_available, open_app

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((ROOT / "workflows").glob("*.json"))
PACK_FILES = ("/extensions/ComfyUI-EPD/", "EPD")
RENDERERS = {"litegraph": False, "vue": True}
# The frontend writes the draft that a reload restores 512 ms after the change tracker reports a change
# (a debounce in frontend 1.41, for every edit); a reload sooner loses any edit, the user's own too.
DRAFT_MS = 700
README_WIDTH = 1100  # px, the README pictures' largest side

pytestmark = pytest.mark.skipif(not chromium_available(), reason="needs /usr/bin/chromium (apt-get install chromium)")

# A toy-model EPD Distill (32 px, 3 steps, K = 2) saving its table; returns the Distill node's id.
BUILD_DISTILL = """async ([iterations]) => {
  const g = window.app.graph;
  const add = (type, pos, values = {}) => {
    const n = LiteGraph.createNode(type);
    n.pos = pos;
    g.add(n);
    for (const [k, v] of Object.entries(values)) n.widgets.find((w) => w.name === k).value = v;
    return n;
  };
  const model = add("EPDTest_ToyModel", [0, 0], { kind: "edm" });
  const pos = add("EPDTest_ClassConditioning", [0, 160], { label: 3 });
  const neg = add("EPDTest_ClassConditioning", [0, 320], { label: -1 });
  const d = add("EPD_Distill", [360, 0], { cfg: 2, width: 32, height: 32, batch: 2, steps: 3, num_points: 2,
    teacher_substeps: 2, iterations, form: "direction", learn_sigmas: false });
  const save = add("EPD_SaveTable", [820, 0], { name: "browser_distill", overwrite: true });
  model.connect(0, d, 0); pos.connect(0, d, 1); neg.connect(0, d, 2); d.connect(0, save, 0);
  return d.id;
}"""
# What the chart of node `id` in the graph on screen shows and keeps.
CHART = """(id) => {
  const n = window.app.graph.getNodeById(id);
  const el = n?.widgets?.find((w) => w.name === "epd_train_chart")?.element;
  const saved = n?.properties?.epd_train_curve;
  return {
    workflow: window.app.rootGraph.id,
    saved: saved?.rows?.length ?? 0,
    done: saved?.done ?? null,
    legend: el?.querySelector(".epd-chart-legend")?.textContent ?? null,
    titles: [...(el?.querySelectorAll(".epd-axis-title") ?? [])].map((t) => t.textContent),
    drawn: !!el?.querySelector("path"),
  };
}"""

# Zoom 1.4 on the bottom of node `id` (its chart), for the README picture.
CLOSE_UP = """(id) => {
  const c = window.app.canvas;
  const n = window.app.graph.getNodeById(id);
  const rect = c.canvas.getBoundingClientRect();
  c.ds.scale = 1.4;
  c.ds.offset = [rect.width / 2 / 1.4 - (n.pos[0] + n.size[0] / 2), rect.height / 2 / 1.4 - (n.pos[1] + n.size[1] - 120)];
  c.setDirty(true, true);
}"""


@pytest.fixture(scope="module")
def server(comfyui: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("comfy_browser")
    packs = {"ComfyUI-EPD": ROOT, "epd_testing_nodes": ROOT / "testing_nodes"}
    with running_server(comfyui, base, packs, "/object_info/EPD_Sampler", {}) as srv:
        yield srv


@pytest.fixture(scope="module", params=list(RENDERERS))
def app(request: pytest.FixtureRequest, server: Server) -> Iterator[BrowserApp]:
    settings = {VUE_NODES: RENDERERS[request.param], **PICTURE_SETTINGS}
    with open_app(server.url, server.base / f"profile_{request.param}", settings, request.param) as page_app:
        yield page_app


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("screens")


def readme_picture(app: BrowserApp, name: str, shots: Path, selector: str | None = None) -> None:
    """With EPD_SCREENSHOTS set, from the LiteGraph run: the graph (or ``selector``'s element) as a JPEG there."""
    folder = os.environ.get("EPD_SCREENSHOTS")
    if not folder or app.renderer != "litegraph":
        return
    from PIL import Image

    png = shots / f"readme_{name}.png"
    if selector:
        app.page.locator(selector).first.screenshot(path=str(png))
    else:
        app.screenshot_graph(png)
    image = Image.open(png).convert("RGB")
    image.thumbnail((README_WIDTH, README_WIDTH))
    Path(folder).mkdir(parents=True, exist_ok=True)
    image.save(Path(folder) / f"{name}.jpg", "JPEG", quality=82, optimize=True)


def pack_messages(app: BrowserApp, since: int = 0) -> list[str]:
    """Console errors and warnings, and page errors, that mention the pack."""
    return [
        f"{m.kind}: {m.text} ({m.url})"
        for m in app.messages[since:]
        if m.kind in ("error", "warning", "pageerror") and m.mentions(*PACK_FILES)
    ]


def test_the_pack_extensions_register(app: BrowserApp) -> None:
    assert {"EPD.LossChart", "EPD.TableWidget"} <= set(app.extension_names())
    vue = app.page.evaluate("(id) => window.app.extensionManager.setting.get(id)", VUE_NODES)
    assert vue is RENDERERS[app.renderer]
    assert not pack_messages(app)


# The help page URL the frontend 1.41 asks first for each EPD node (NodeHelpService.fetchCustomNodeHelp:
# /extensions/<pack folder>/docs/<node id>/<locale>.md), and its status.
HELP = """async () => {
  const out = {};
  for (const [type, cls] of Object.entries(LiteGraph.registered_node_types)) {
    if (!type.startsWith("EPD_")) continue;
    const pack = cls.nodeData.python_module.split(".")[1];
    out[type] = (await fetch(`/extensions/${pack}/docs/${type}/en.md`)).status;
  }
  return out;
}"""


def test_every_node_has_the_help_page_the_frontend_asks_first(app: BrowserApp) -> None:
    status = app.page.evaluate(HELP)
    assert len(status) >= 20, status
    assert {t: s for t, s in status.items() if s != 200} == {}


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_loads_cleanly_and_nothing_overlaps(app: BrowserApp, workflow: Path, shots: Path) -> None:
    seen = len(app.messages)
    result = app.load(workflow)
    dialogs = app.dialogs()
    app.close_dialogs()
    app.page.wait_for_timeout(300)  # the Vue renderer lays nodes out after the load
    overlaps = app.overlaps()
    app.screenshot(shots / f"{app.renderer}_{workflow.stem}.png")
    if workflow.stem == "epd_sd15_txt2img":
        app.fit_view()
        readme_picture(app, "quick_start", shots)
    assert result["count"] > 0
    assert result["missing"] == [], f"{workflow.name}: unregistered node types {result['missing']}"
    assert dialogs == [], f"{workflow.name}: a dialog opened on load: {dialogs}"
    assert overlaps == [], f"{workflow.name} under {app.renderer}: overlapping nodes {overlaps}"
    assert not pack_messages(app, seen), pack_messages(app, seen)


def chart(app: BrowserApp, node: int) -> dict[str, Any]:
    return app.page.evaluate(CHART, node)


def start_distill(app: BrowserApp, iterations: int) -> int:
    """A new workflow tab with the toy EPD Distill, queued from the page; waits for the first chart rows."""
    pytest.importorskip("sklearn", reason="the toy model fits a mixture to sklearn's digits")
    app.command("Comfy.NewBlankWorkflow")
    node = app.page.evaluate(BUILD_DISTILL, [iterations])
    app.page.evaluate("() => window.app.queuePrompt(0)")
    app.page.wait_for_function(f"() => ({CHART})({node}).saved >= 2", timeout=90_000)
    return node


def wait_done(app: BrowserApp, node: int) -> dict[str, Any]:
    app.page.wait_for_function(f"() => ({CHART})({node}).done === true", timeout=90_000)
    return chart(app, node)


def test_chart_stays_with_its_workflow_and_survives_reload(app: BrowserApp, shots: Path) -> None:
    seen = len(app.messages)
    iterations = 30
    node = start_distill(app, iterations)
    own = chart(app, node)
    app.command("Comfy.DuplicateWorkflow")  # same node ids and types, another workflow
    copy = chart(app, node)
    app.page.wait_for_timeout(1500)  # training goes on meanwhile
    later = chart(app, node)
    assert copy["workflow"] != own["workflow"]
    assert later["saved"] == copy["saved"], "the chart fed a duplicated tab's node"
    app.command("Workspace.PreviousOpenedWorkflow")
    assert chart(app, node)["workflow"] == own["workflow"]
    final = wait_done(app, node)
    assert final["saved"] == iterations, final  # no row lost while its tab was away
    assert final["drawn"]
    assert "train loss" in final["legend"] and "best validation error" in final["legend"], final
    assert final["titles"] == [f"iteration {iterations} / {iterations}", "train loss", "validation error"], final
    app.screenshot(shots / f"{app.renderer}_training_chart.png")
    if os.environ.get("EPD_SCREENSHOTS"):
        app.page.evaluate(CLOSE_UP, node)
        app.page.wait_for_timeout(600)  # the zoom watcher redraws the chart
    readme_picture(app, "training_chart", shots, ".epd-train-chart:visible")
    app.page.wait_for_timeout(DRAFT_MS)
    app.reload()  # no click in between: the chart itself told the change tracker
    after = chart(app, node)
    assert after["workflow"] == own["workflow"]
    assert after["saved"] == iterations and after["done"] is True, after
    app.page.wait_for_function(f"() => ({CHART})({node}).drawn", timeout=10_000)
    assert not pack_messages(app, seen), pack_messages(app, seen)


def test_cancel_keeps_the_final_curve(app: BrowserApp) -> None:
    seen = len(app.messages)
    node = start_distill(app, 400)
    app.page.wait_for_function(f"() => ({CHART})({node}).saved >= 3", timeout=90_000)
    app.command("Comfy.Interrupt")
    final = wait_done(app, node)
    assert final["titles"][0].endswith("(stopped)"), final
    assert 3 <= final["saved"] < 400 and final["drawn"]
    app.page.wait_for_timeout(DRAFT_MS)
    app.reload()
    after = chart(app, node)
    assert (after["saved"], after["done"]) == (final["saved"], True), after
    assert not pack_messages(app, seen), pack_messages(app, seen)


def test_nothing_from_the_pack_in_the_console_after_all(app: BrowserApp) -> None:
    app.page.wait_for_timeout(500)  # late messages
    assert not pack_messages(app), pack_messages(app)
