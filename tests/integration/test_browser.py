"""The web extension in a real browser, under both node renderers: workflows load cleanly, the chart behaves.

A real ComfyUI server with the pack (and testing_nodes' toy model) runs on loopback, and the app opens in
Debian's Chromium (/usr/bin/chromium, driven by Playwright with ``executable_path``; no browser is
downloaded), once with the LiteGraph canvas and once with the Vue node renderer ("Modern Node Design").
Under each:

- every EPD node's help page is where the frontend asks first (``docs/<node id>/en.md``: no 404);
- every workflows/*.json loads with ``app.loadGraphData``, as opening the file does, with no missing-node
  dialog, no unregistered node type, no console error or warning or page error from the pack's files, and no
  two nodes overlapping as drawn, title bars included (LiteGraph's bounding boxes; under Vue the node
  elements' boxes with everything visible that hangs out of them, such as "Show advanced inputs");
- EPD Distill trains on the toy model from a queued prompt; the chart fills on its own node, a duplicated
  workflow tab opened meanwhile (same node ids and types) gets none of it, the curve is complete when its tab
  comes back, and an immediate reload keeps it; after Cancel the chart shows and keeps the final curve;
- EPD RL Tune trains too (tiny TAESD, contrast reward) and its chart names policy loss and mean reward;
- a table that "Copy into widget" wrote into EPD Table survives a reload.

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
from test_training_server import VAE_FILE, write_tiny_taesd

pytest.importorskip("playwright.sync_api")
from comfy_browser import PICTURE_SETTINGS, VUE_NODES, BrowserApp, chromium_available, open_app

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((ROOT / "workflows").glob("*.json"))
PACK_FILES = ("/extensions/ComfyUI-EPD/", "EPD")
RENDERERS = {"litegraph": False, "vue": True}
# The frontend writes the draft that a reload restores 512 ms after the change tracker reports a change
# (a debounce in frontend 1.41, for every edit); a reload sooner loses any edit, the user's own too.
DRAFT_MS = 700
TRAIN_MS = 300_000  # a toy run takes seconds, minutes on a busy 2-core machine
README_WIDTH = 1100  # px, the README pictures' largest side

pytestmark = pytest.mark.skipif(not chromium_available(), reason="needs /usr/bin/chromium (apt-get install chromium)")

# Adds nodes [[type, [x, y], {widget: value}]] and links [[from, output slot, to, input name]] to the graph on
# screen, as a user would; returns the new nodes' ids.
BUILD = """async ([nodes, links]) => {
  const made = nodes.map(([type, pos, values]) => {
    const n = LiteGraph.createNode(type);
    n.pos = pos;
    window.app.graph.add(n);
    for (const [k, v] of Object.entries(values)) n.widgets.find((w) => w.name === k).value = v;
    return n;
  });
  for (const [a, slot, b, input] of links) made[a].connect(slot, made[b], made[b].findInputSlot(input));
  return made.map((n) => n.id);
}"""
TOY = [
    ["EPDTest_ToyModel", [0, 0], {"kind": "edm"}],
    ["EPDTest_ClassConditioning", [0, 160], {"label": 3}],
    ["EPDTest_ClassConditioning", [0, 320], {"label": -1}],
]
TOY_LINKS = [[0, 0, 3, "model"], [1, 0, 3, "positive"], [2, 0, 3, "negative"]]
# Toy EPD Distill (32 px, 3 steps, K = 2) saving its table: the training node is nodes[3].
DISTILL = {"cfg": 2, "width": 32, "height": 32, "batch": 2, "steps": 3, "num_points": 2, "teacher_substeps": 2,
           "form": "direction", "learn_sigmas": False}  # fmt: skip
# Toy EPD RL Tune (tiny TAESD, contrast reward, default start table on a 2-step grid): nodes[3] again.
RL = {"cfg": 2, "width": 32, "height": 32, "prompts_per_step": 1, "group_size": 2, "eval_every": 1,
      "eval_per_prompt": 1, "policy_file": "browser_policy", "overwrite_policy": True}  # fmt: skip
RL_NODES = [
    ["VAELoader", [0, 480], {"vae_name": VAE_FILE}],
    ["EPD_WeightFreeReward", [0, 600], {"kind": "contrast"}],
    ["EPD_Sigmas", [0, 720], {"steps": 2, "schedule": "polynomial"}],
    ["EPD_DefaultTable", [0, 880], {"form": "data"}],
]
RL_LINKS = [[4, 0, 3, "vae"], [5, 0, 3, "reward"], [0, 0, 6, "model"], [6, 0, 7, "sigmas"], [7, 0, 3, "table"]]
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
    write_tiny_taesd(base / "models" / "vae" / VAE_FILE)  # EPD RL Tune decodes its rollouts
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


# The template browser's list for the pack and each entry's thumbnail status, fetched as frontend 1.41 does
# (title = the file's name; thumbnail /api/workflow_templates/<pack>/<name>.jpg).
TEMPLATES = """async () => {
  const names = (await (await fetch("/api/workflow_templates")).json())["ComfyUI-EPD"];
  const out = {};
  for (const name of names) out[name] = (await fetch(`/api/workflow_templates/ComfyUI-EPD/${name}.jpg`)).status;
  return out;
}"""


def test_every_template_has_its_thumbnail(app: BrowserApp) -> None:
    status = app.page.evaluate(TEMPLATES)
    assert sorted(status) == sorted(p.stem for p in WORKFLOWS)
    assert {name: s for name, s in status.items() if s != 200} == {}


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_loads_cleanly_and_nothing_overlaps(app: BrowserApp, workflow: Path, shots: Path) -> None:
    seen = len(app.messages)
    result = app.load(workflow)
    dialogs = app.dialogs()
    app.close_dialogs()
    overlaps = app.overlaps()  # waits until the Vue renderer's layout has settled
    app.screenshot(shots / f"{app.renderer}_{workflow.stem}.png")
    if workflow.stem == "SD1.5 text to image":
        app.fit_view()
        readme_picture(app, "quick_start", shots)
    assert result["count"] > 0
    assert result["missing"] == [], f"{workflow.name}: unregistered node types {result['missing']}"
    assert dialogs == [], f"{workflow.name}: a dialog opened on load: {dialogs}"
    assert overlaps == [], f"{workflow.name} under {app.renderer}: overlapping nodes {overlaps}"
    assert not pack_messages(app, seen), pack_messages(app, seen)


# The chart of the first EPD Distill on screen: text size on screen, the SVG's viewBox against its element's size.
CHART_TEXT = """() => {
  const n = window.app.graph.nodes.find((n) => n.type === "EPD_Distill");
  const svg = n.widgets.find((w) => w.name === "epd_train_chart").element.querySelector("svg");
  const [, , vw, vh] = svg.getAttribute("viewBox").split(" ").map(Number);
  const font = parseFloat(getComputedStyle(svg.querySelector("text")).fontSize);
  return { screenPx: font * window.app.canvas.ds.scale, vw, vh, w: svg.clientWidth, h: svg.clientHeight, node: [...n.size] };
}"""
WIDEN = """() => {
  const n = window.app.graph.nodes.find((n) => n.type === "EPD_Distill");
  n.setSize([n.size[0] + 300, n.size[1]]);
  window.app.canvas.setDirty(true, true);
}"""


def test_chart_text_is_readable_at_the_examples_zoom_and_never_stretched(app: BrowserApp) -> None:
    app.load(ROOT / "workflows" / "SD1.5 distill a table then sample.json")  # opens at zoom 0.6
    app.page.wait_for_timeout(800)
    before = app.page.evaluate(CHART_TEXT)
    assert before["screenPx"] >= 8.9, before  # 6 px before the fix
    assert (before["vw"], before["vh"]) == (before["w"], before["h"]), before  # one SVG unit per CSS pixel
    app.page.evaluate(WIDEN)
    app.page.wait_for_timeout(800)
    wide = app.page.evaluate(CHART_TEXT)
    assert wide["w"] > before["w"] + 200 and (wide["vw"], wide["vh"]) == (wide["w"], wide["h"]), wide
    assert wide["screenPx"] == before["screenPx"]


def chart(app: BrowserApp, node: int) -> dict[str, Any]:
    return app.page.evaluate(CHART, node)


def start_training(app: BrowserApp, node_type: str, iterations: int) -> int:
    """A new workflow tab with a toy EPD Distill or EPD RL Tune, queued from the page; waits for chart rows."""
    pytest.importorskip("sklearn", reason="the toy model fits a mixture to sklearn's digits")
    app.command("Comfy.NewBlankWorkflow")
    values = {**(DISTILL if node_type == "EPD_Distill" else RL), "iterations": iterations}
    nodes = [*TOY, [node_type, [360, 0], values], ["EPD_SaveTable", [820, 0], {"name": "browser", "overwrite": True}]]
    links = [*TOY_LINKS, [3, 0, 4, "table"]]
    if node_type == "EPD_RLTune":
        nodes, links = [*nodes[:4], *RL_NODES, nodes[4]], [*TOY_LINKS, *RL_LINKS, [3, 0, 8, "table"]]
    node = app.page.evaluate(BUILD, [nodes, links])[3]
    app.page.evaluate("() => window.app.queuePrompt(0)")
    app.page.wait_for_function(f"() => ({CHART})({node}).saved >= 2", timeout=TRAIN_MS)
    return node


def wait_done(app: BrowserApp, node: int) -> dict[str, Any]:
    app.page.wait_for_function(f"() => ({CHART})({node}).done === true", timeout=TRAIN_MS)
    return chart(app, node)


def test_chart_stays_with_its_workflow_and_survives_reload(app: BrowserApp, shots: Path) -> None:
    seen = len(app.messages)
    iterations = 16
    node = start_training(app, "EPD_Distill", iterations)
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
    node = start_training(app, "EPD_Distill", 400)
    height = app.page.evaluate(f"() => window.app.graph.getNodeById({node}).size[1]")
    app.page.wait_for_function(f"() => ({CHART})({node}).saved >= 3", timeout=TRAIN_MS)
    app.command("Comfy.Interrupt")
    final = wait_done(app, node)
    assert final["titles"][0].endswith("(stopped)"), final
    assert 3 <= final["saved"] < 400 and final["drawn"]
    assert app.page.evaluate(f"() => window.app.graph.getNodeById({node}).size[1]") == height  # fixed height
    app.page.wait_for_timeout(DRAFT_MS)
    app.reload()
    after = chart(app, node)
    assert (after["saved"], after["done"]) == (final["saved"], True), after
    assert not pack_messages(app, seen), pack_messages(app, seen)


def test_rl_tune_chart_names_its_lines(app: BrowserApp) -> None:
    seen = len(app.messages)
    node = start_training(app, "EPD_RLTune", 3)
    final = wait_done(app, node)
    assert final["saved"] == 3 and final["drawn"], final
    assert "policy loss" in final["legend"] and "mean reward" in final["legend"], final
    assert final["titles"] == ["iteration 3 / 3", "policy loss", "reward"], final
    assert not pack_messages(app, seen), pack_messages(app, seen)


# The EPD Table node's button and its table_json widget.
TABLE_WIDGET = """() => {
  const n = window.app.graph.nodes.find((n) => n.type === "EPD_Table");
  const w = n.widgets.find((w) => w.name === "epd_table_summary");
  return { json: n.widgets.find((w) => w.name === "table_json").value, line: w.element.textContent };
}"""

# The EPD Table node's "Copy into widget" button (its panel is the node's epd_table_summary widget).
COPY_BUTTON = """() => {
  const n = window.app.graph.nodes.find((n) => n.type === "EPD_Table");
  return n?.widgets.find((w) => w.name === "epd_table_summary")?.element.querySelector("button");
}"""

SET_STEPS = """(steps) => {
  window.app.graph.nodes.find((n) => n.type === "EPD_Sigmas").widgets.find((w) => w.name === "steps").value = steps;
}"""


def test_a_table_copied_into_the_widget_survives_reload(app: BrowserApp) -> None:
    pytest.importorskip("sklearn", reason="the toy model fits a mixture to sklearn's digits")
    seen = len(app.messages)
    app.load(ROOT / "tests" / "integration" / "workflows" / "epd_toy_cpu.json")
    assert app.page.evaluate(TABLE_WIDGET)["json"] == ""
    steps = 4 + list(RENDERERS).index(app.renderer)  # a new grid per run: a cached EPD Table sends no result
    app.page.evaluate(SET_STEPS, steps)
    app.page.evaluate("() => window.app.queuePrompt(0)")
    app.page.wait_for_function(f"() => ({COPY_BUTTON})()?.disabled === false", timeout=TRAIN_MS)
    app.page.evaluate(f"() => ({COPY_BUTTON})().click()")  # the node may lie outside the view: click() all the same
    copied = app.page.evaluate(TABLE_WIDGET)
    assert '"format": "epd-table"' in copied["json"] or '"format":"epd-table"' in copied["json"], copied
    app.page.wait_for_timeout(DRAFT_MS)
    app.reload()  # no click in between: Copy into widget told the change tracker
    after = app.page.evaluate(TABLE_WIDGET)
    assert after["json"] == copied["json"]
    assert after["line"].startswith("in widget: "), after
    assert not pack_messages(app, seen), pack_messages(app, seen)


def test_nothing_from_the_pack_in_the_console_after_all(app: BrowserApp) -> None:
    app.page.wait_for_timeout(500)  # late messages
    assert not pack_messages(app), pack_messages(app)
