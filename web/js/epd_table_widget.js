// EPD.TableWidget: on "EPD Table" nodes, a one-line summary of the table (steps, K, provenance, form,
// sigma range) and a "Copy into widget" button. After a run with a table connected, the node's ui text
// is that table's JSON (nodes/table_nodes.py, ui.PreviewText); the button writes it into table_json and tells
// the change tracker, so the workflow carries the table (an immediate reload keeps it). On load (onConfigure)
// the summary shows the JSON already in the box.
import { app } from "../../../scripts/app.js";
import { chainCallback, findWidget, firstText, formatTableSummary, notifyGraphChange, tableSummary } from "./epd_util.js";

const NODE = "EPD_Table";
const JSON_WIDGET = "table_json";
const PANEL_HEIGHT = 72; // px including the frontend's widget margins
const state = new WeakMap(); // node -> {root, line, button, received}

function buildPanel(node) {
  const root = document.createElement("div");
  root.style.cssText = "display:flex;flex-direction:column;gap:4px;font:12px sans-serif;padding:2px 4px;";
  const line = document.createElement("div");
  line.style.cssText = "flex:none;opacity:0.85;white-space:nowrap;overflow:hidden;text-overflow:ellipsis;";
  const button = document.createElement("button");
  button.textContent = "Copy into widget";
  button.title = "Write the connected table's JSON into table_json, so the workflow carries the table.";
  button.style.cssText = "flex:none;cursor:pointer;font:12px sans-serif;padding:2px 6px;";
  button.addEventListener("click", () => copyIntoWidget(node));
  root.append(line, button);
  const widget = node.addDOMWidget("epd_table_summary", "epd_table_summary", root, {
    serialize: false,
    hideOnZoom: false,
    getMinHeight: () => PANEL_HEIGHT,
    getMaxHeight: () => PANEL_HEIGHT,
  });
  widget.serialize = false; // keeps widgets_values to the schema's widgets (table_json only)
  const panel = { root, line, button, received: null };
  state.set(node, panel);
  return panel;
}

function render(node) {
  const panel = state.get(node);
  if (!panel) return;
  const boxText = findWidget(node, JSON_WIDGET)?.value ?? "";
  const linked = node.inputs?.find((i) => i.name === "table")?.link != null;
  const received = linked ? panel.received : null; // a result from a table that is no longer connected is stale
  const shown = received ?? boxText;
  const prefix = received ? "connected: " : boxText.trim() ? "in widget: " : "";
  panel.line.textContent = shown.trim() ? prefix + formatTableSummary(tableSummary(shown)) : "no table yet (run with a table connected)";
  const same = received !== null && received === boxText;
  panel.button.disabled = received === null || same || !tableSummary(received).ok;
  panel.button.textContent = same ? "Copied into widget" : "Copy into widget";
}

function copyIntoWidget(node) {
  const panel = state.get(node);
  const widget = findWidget(node, JSON_WIDGET);
  if (!panel?.received || !widget) return;
  widget.value = panel.received;
  widget.callback?.(widget.value);
  node.setDirtyCanvas?.(true, true);
  render(node);
  notifyGraphChange(app); // an immediate reload or save keeps the copied table
}

app.registerExtension({
  name: "EPD.TableWidget",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData?.name !== NODE) return;
    const proto = nodeType.prototype;
    chainCallback(proto, "onNodeCreated", function () {
      buildPanel(this);
      const box = findWidget(this, JSON_WIDGET);
      if (box) chainCallback(box, "callback", () => render(this));
      render(this);
    });
    chainCallback(proto, "onConnectionsChange", function () {
      render(this);
    });
    chainCallback(proto, "onExecuted", function (message) {
      const text = firstText(message);
      const panel = state.get(this) ?? buildPanel(this);
      panel.received = text && tableSummary(text).ok ? text : null;
      render(this);
    });
    chainCallback(proto, "onConfigure", function () {
      if (!state.get(this)) buildPanel(this);
      render(this);
    });
  },
});
