"""The ComfyUI web app in headless Debian Chromium, driven by Playwright: open, load a workflow, screenshot.

Used by tests/integration/test_browser.py and tools/make_thumbnails.py. The browser is the system's
/usr/bin/chromium (``apt-get install chromium``), launched through ``executable_path``; Playwright never
downloads one here. Each session gets a fresh profile folder, and every console message and page
error is kept in ``BrowserApp.messages`` for the caller to check.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from comfy_server import request

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
VIEWPORT = {"width": 1600, "height": 1000}
READY_MS = 60_000
# The app has a graph and the pack's extensions have registered.
READY = "() => !!(window.app?.graph && window.app.extensions?.some((e) => e.name === 'EPD.LossChart'))"
# Settings for a fresh user: no first-run template browser over the canvas.
FRESH_USER_SETTINGS: dict[str, Any] = {"Comfy.TutorialCompleted": True}
# For pictures: full-detail nodes at any zoom, no minimap or canvas statistics.
PICTURE_SETTINGS: dict[str, Any] = {
    "LiteGraph.Canvas.MinFontSizeForLOD": 0,
    "Comfy.Minimap.Visible": False,
    "Comfy.Graph.CanvasInfo": False,
}
LOAD = """async ([graph, types]) => {
  await window.app.loadGraphData(graph);
  await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
  return {
    missing: types.filter((t) => !(t in LiteGraph.registered_node_types)),
    count: window.app.graph.nodes.length,
  };
}"""
# Drawn by the frontend only: never in /object_info, but the frontend registers them itself.
FRONTEND_ONLY = {"Note", "MarkdownNote"}
FIT = """async () => {
  const canvas = window.app.canvas;
  canvas.deselectAll?.();
  await window.app.extensionManager.command.execute("Comfy.Canvas.FitView");
  await new Promise((r) => setTimeout(r, 800));  // the fit is animated
  canvas.setDirty(true, true);
}"""
# The graph's nodes and groups, in page pixels.
BOUNDS = """() => {
  const canvas = window.app.canvas;
  const rects = [...window.app.graph.nodes.map((n) => n.boundingRect), ...window.app.graph.groups.map((g) => g.boundingRect)];
  const box = canvas.canvas.getBoundingClientRect();
  const [x0, y0] = canvas.ds.convertOffsetToCanvas([Math.min(...rects.map((r) => r[0])), Math.min(...rects.map((r) => r[1]))]);
  const [x1, y1] = canvas.ds.convertOffsetToCanvas([
    Math.max(...rects.map((r) => r[0] + r[2])),
    Math.max(...rects.map((r) => r[1] + r[3])),
  ]);
  return { x: box.left + x0, y: box.top + y0, width: x1 - x0, height: y1 - y0 };
}"""
FOCUS = "() => window.app.extensionManager.command.execute('Workspace.ToggleFocusMode')"
# The Vue node renderer ("Modern Node Design") instead of the LiteGraph canvas (frontend 1.41 setting id).
VUE_NODES = "Comfy.VueNodes.Enabled"
# Every node's box as drawn, title bar included, once the layout has settled: the same boxes two animation
# frames apart, after the fonts load (the Vue renderer sizes nodes from their text). Under the Vue renderer
# the node element in page pixels, grown by every visible descendant: the "Show advanced inputs" button and
# the border hang below the element, absolutely placed. A scrolling or clipping element counts only its own
# box, and opacity-0 resize handles not at all. Under LiteGraph, boundingRect (graph units), which starts
# at the title bar above node.pos, grown up to the node's badges ("EPD", "BETA"), drawn above the title bar.
NODE_BOXES = """async (vue) => {
  const label = (id) => { const n = window.app.graph.getNodeById(Number(id)); return n ? `${n.id} ${n.title}` : id; };
  const frame = () => new Promise((r) => requestAnimationFrame(r));
  const drawn = (el, box) => {
    const style = getComputedStyle(el);
    if (style.display === "none" || style.visibility === "hidden" || style.opacity === "0") return box;
    const r = el.getBoundingClientRect();
    if (r.width && r.height) box = [Math.min(box[0], r.left), Math.min(box[1], r.top), Math.max(box[2], r.right), Math.max(box[3], r.bottom)];
    if (style.overflow !== "visible") return box;
    for (const child of el.children) box = drawn(child, box);
    return box;
  };
  const measure = () => {
    if (!vue) return window.app.graph.nodes.map((n) => {
      const [x, y, w, h] = n.boundingRect;
      const badges = n.badges.map((b) => (typeof b === "function" ? b() : b)).filter((b) => b.text || b.icon);
      const lift = badges.length ? 2 + Math.max(...badges.map((b) => b.height)) : 0;  // as drawBadges places them
      return [label(n.id), x, y - lift, w, h + lift];
    });
    const nodes = [...document.querySelectorAll("[data-node-id]")].filter((el) => !el.parentElement.closest("[data-node-id]"));
    return nodes.map((el) => {
      const [x0, y0, x1, y1] = drawn(el, [Infinity, Infinity, -Infinity, -Infinity]);
      return [label(el.dataset.nodeId), x0, y0, x1 - x0, y1 - y0];
    });
  };
  await document.fonts.ready;
  let before = JSON.stringify(measure());
  for (let i = 0; i < 50; i++) {
    await frame();
    await frame();
    const now = JSON.stringify(measure());
    if (now === before) return JSON.parse(now);
    before = now;
  }
  throw new Error(`node boxes still changing: ${before}`);
}"""


@dataclass
class Message:
    """One console message or uncaught page error."""

    kind: str  # "error", "warning", ... or "pageerror"
    text: str
    url: str = ""

    def mentions(self, *needles: str) -> bool:
        return any(n in self.text or n in self.url for n in needles)


@dataclass
class BrowserApp:
    """A page with the ComfyUI app loaded, and what its console said."""

    page: Any
    messages: list[Message] = field(default_factory=list)
    renderer: str = "litegraph"  # or "vue": the node renderer the page was opened with

    def extension_names(self) -> list[str]:
        return self.page.evaluate("() => window.app.extensions.map((e) => e.name)")

    def load(self, workflow: Path) -> dict[str, Any]:
        """Load a UI-format workflow file as the user would.

        Returns ``missing``, the file's node types (subgraphs included, frontend-only ones left out)
        that LiteGraph has not registered, and ``count``, the nodes in the loaded graph.
        """
        graph = json.loads(workflow.read_text(encoding="utf-8"))
        return self.page.evaluate(LOAD, [graph, sorted(node_types(graph) - FRONTEND_ONLY)])

    def dialogs(self) -> list[str]:
        """The text of every open dialog (a missing-node warning opens one)."""
        return self.page.locator(".p-dialog:visible").all_inner_texts()

    def close_dialogs(self) -> None:
        for _ in range(3):
            if not self.dialogs():
                return
            self.page.keyboard.press("Escape")
            self.page.wait_for_timeout(200)

    def fit_view(self) -> None:
        """Zoom and pan so the whole graph fills the canvas."""
        self.page.evaluate(FIT)
        self.page.wait_for_timeout(200)

    def focus_mode(self) -> None:
        """Hide the menus and tabs, leaving only the canvas."""
        self.page.evaluate(FOCUS)
        self.page.wait_for_timeout(300)

    def screenshot(self, path: Path) -> None:
        self.page.screenshot(path=str(path))

    def command(self, name: str) -> None:
        """Run a frontend command (e.g. Comfy.DuplicateWorkflow) as its menu entry does."""
        self.page.evaluate("(name) => window.app.extensionManager.command.execute(name)", name)
        self.page.wait_for_timeout(300)

    def reload(self) -> None:
        """Reload the page, as the browser's reload button does, and wait for the app."""
        self.page.reload(wait_until="load")
        self.page.wait_for_function(READY, timeout=READY_MS)
        self.close_dialogs()

    def overlaps(self, margin: float = 1.0) -> list[tuple[str, str]]:
        """Pairs of nodes whose boxes as drawn (see NODE_BOXES) overlap by more than ``margin`` both ways.

        ``margin`` (page pixels under Vue, graph units under LiteGraph) only lets edges touch.
        """
        boxes = self.page.evaluate(NODE_BOXES, self.renderer == "vue")
        return [
            (a[0], b[0])
            for i, a in enumerate(boxes)
            for b in boxes[i + 1 :]
            if min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]) > margin
            and min(a[2] + a[4], b[2] + b[4]) - max(a[2], b[2]) > margin
        ]

    def screenshot_graph(self, path: Path, margin: int = 40, **options: Any) -> None:
        """Only the part of the page the graph covers, plus ``margin`` pixels, within the viewport."""
        box, view = self.page.evaluate(BOUNDS), self.page.viewport_size
        x, y = max(0, box["x"] - margin), max(0, box["y"] - margin)
        clip = {
            "x": x,
            "y": y,
            "width": min(view["width"], box["x"] + box["width"] + margin) - x,
            "height": min(view["height"], box["y"] + box["height"] + margin) - y,
        }
        self.page.screenshot(path=str(path), clip=clip, **options)


def node_types(graph: dict[str, Any]) -> set[str]:
    """Every node type in a UI-format workflow, including those inside subgraph definitions."""
    subgraphs = graph.get("definitions", {}).get("subgraphs", [])
    nodes = [*graph.get("nodes", []), *(n for sub in subgraphs for n in sub.get("nodes", []))]
    ids = {sub["id"] for sub in subgraphs}
    return {n["type"] for n in nodes} - ids


def chromium_available() -> bool:
    return CHROMIUM.is_file()


def store_settings(url: str, settings: dict[str, Any]) -> None:
    """Save settings for the server's default user (the page reads them when it opens)."""
    for key, value in settings.items():
        status, data = request(f"{url}/settings/{key}", value)
        assert status == 200, (key, status, data)


def _record(messages: list[Message], msg: Any) -> None:
    location = msg.location or {}
    messages.append(Message(msg.type, msg.text, location.get("url", "")))


@contextlib.contextmanager
def open_app(
    url: str, profile: Path, settings: dict[str, Any] | None = None, renderer: str = "litegraph"
) -> Iterator[BrowserApp]:
    """Open ``url`` (a ComfyUI server) in headless Chromium with a fresh ``profile`` and wait for the app.

    Requests to any other origin (the frontend asks api.comfy.org for releases) are aborted, so the
    page only talks to the local server.
    """
    from playwright.sync_api import sync_playwright

    store_settings(url, {**FRESH_USER_SETTINGS, **(settings or {})})
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), headless=True, args=ARGS, viewport=VIEWPORT
        )
        try:
            context.route(lambda u: not u.startswith(url), lambda route: route.abort())
            page = context.pages[0] if context.pages else context.new_page()
            app = BrowserApp(page, renderer=renderer)
            page.on("console", lambda msg: _record(app.messages, msg))
            page.on("pageerror", lambda err: app.messages.append(Message("pageerror", f"{err}\n{err.stack}")))
            page.goto(url, wait_until="load")
            page.wait_for_function(READY, timeout=READY_MS)
            app.close_dialogs()
            yield app
        finally:
            context.close()
