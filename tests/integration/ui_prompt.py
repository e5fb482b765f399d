"""UI-format workflow -> API prompt, by the rules of the 1.41 frontend (app.graphToPrompt()).

The widget order comes from the server's /object_info (input_order.required, then .optional),
never from a list kept here, so a node that gains an input stays convertible. The frontend
stores a control_after_generate value after seed-like INT and flagged COMBO widgets; it is
skipped. A saved workflow older than an optional input appended to a node has no value for
it; the prompt then leaves it out and the server uses the input's default.
"""

from __future__ import annotations

from typing import Any

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
FRONTEND_ONLY = {"Note", "MarkdownNote"}  # virtual nodes: drawn by the frontend, never sent to the server
CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}


def input_sections(info: dict[str, Any]) -> list[tuple[str, str, list[Any]]]:
    """(section, name, spec) of every input in the frontend's order: required, then optional."""
    sections = info["input"]
    order = info.get("input_order") or {sec: list(sections.get(sec, {})) for sec in ("required", "optional")}
    return [(sec, name, sections[sec][name]) for sec in ("required", "optional") for name in order.get(sec, [])]


def input_specs(info: dict[str, Any]) -> list[tuple[str, list[Any]]]:
    """(name, spec) of every input in the frontend's order."""
    return [(name, spec) for _, name, spec in input_sections(info)]


def spec_type(spec: list[Any]) -> str:
    return "COMBO" if isinstance(spec[0], list) else spec[0]


def spec_options(spec: list[Any]) -> dict[str, Any]:
    return spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}


def is_widget(spec: list[Any]) -> bool:
    return spec_type(spec) in WIDGET_TYPES and not spec_options(spec).get("forceInput")


def has_control(name: str, spec: list[Any]) -> bool:
    """The frontend adds a control_after_generate value after seed-like INT and flagged COMBO widgets."""
    flag = spec_options(spec).get("control_after_generate")
    if spec_type(spec) == "INT":
        return bool(flag) or (flag is None and name in ("seed", "noise_seed"))
    return spec_type(spec) == "COMBO" and bool(flag)


def widget_inputs(info: dict[str, Any]) -> list[tuple[str, list[Any]]]:
    return [(name, spec) for name, spec in input_specs(info) if is_widget(spec)]


def widget_values_by_name(node: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
    """Map widgets_values onto the widget inputs, skipping the control_after_generate values.

    Values run out only for optional inputs newer than the saved workflow; those are left out.
    """
    values, out = list(node.get("widgets_values") or []), {}
    for section, name, spec in input_sections(info):
        if not is_widget(spec):
            continue
        if not values:
            assert section == "optional", f"node {node['id']} ({node['type']}): no saved value for {name}"
            break
        out[name] = values.pop(0)
        if has_control(name, spec):
            control = values.pop(0)
            assert control in CONTROL_VALUES, f"node {node['id']}: {name} control value {control!r}"
    return out


def to_api_prompt(workflow: dict[str, Any], object_info: dict[str, Any]) -> dict[str, Any]:
    """An API prompt for a UI workflow: widget values by schema order, links as [source id, slot]."""
    links = {link[0]: link for link in workflow["links"]}
    prompt: dict[str, Any] = {}
    for node in workflow["nodes"]:
        if node["type"] in FRONTEND_ONLY:
            continue
        assert node.get("mode", 0) == 0, f"node {node['id']} is muted or bypassed; the converter does not handle that"
        inputs = widget_values_by_name(node, object_info[node["type"]])
        for entry in node.get("inputs", []):
            if entry.get("link") is not None:
                _, source, slot, *_ = links[entry["link"]]
                inputs[entry["name"]] = [str(source), slot]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt
