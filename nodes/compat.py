"""Does a table's metadata fit a model? Pure checks on names.

The boundary (nodes.comfy.sampling) supplies the model side (its kind and model-config class names) and turns
a mismatch into the node's error; nothing here imports ComfyUI.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

FLOW_PREDICTIONS = frozenset({"flow", "const", "rectified_flow", "flow_matching"})
VE_PREDICTIONS = frozenset({"eps", "epsilon", "v", "v_prediction", "edm", "x0", "ve", "vp"})
# table family -> (ComfyUI model-config class names that fit it, the family's model kind)
FAMILIES: dict[str, tuple[tuple[str, ...], str]] = {
    "sd15": (("SD15",), "ve"),
    "sdxl": (("SDXL",), "ve"),
    "sd3": (("SD3",), "flow"),
    "flux": (("Flux",), "flow"),
}
KNOWN_CONFIGS = frozenset(name for fits, _ in FAMILIES.values() for name in fits)


def table_claims(meta: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """(family, kind) that a table's metadata claims; None where it says nothing we recognise."""
    family = str(meta.get("model_family") or "").lower()
    family = family.replace("-", "").replace("_", "").replace(".", "")
    family = family if family in FAMILIES else None
    prediction = str(meta.get("kind") or meta.get("prediction") or "").lower()
    if prediction in FLOW_PREDICTIONS:
        return family, "flow"
    if prediction in VE_PREDICTIONS:
        return family, "ve"
    return family, FAMILIES[family][1] if family else None


def config_names(model_config: Any) -> set[str]:
    """Class names in a model config's MRO (FluxSchnell -> {FluxSchnell, Flux, ...})."""
    return set() if model_config is None else {cls.__name__ for cls in type(model_config).__mro__}


def table_mismatch(meta: Mapping[str, Any], model_kind: str, sampling_name: str, model_config: Any) -> str | None:
    """Why a table with metadata ``meta`` does not fit the model, or None when it fits or we cannot tell."""
    family, kind = table_claims(meta)
    said = {k: meta[k] for k in ("model_family", "kind", "prediction") if meta.get(k) is not None}
    claims = ", ".join(f"{k}={v!r}" for k, v in said.items())
    if kind is not None and kind != model_kind:
        wanted = "a flow-matching" if kind == "flow" else "an eps/v-prediction"
        return f"the table was made for {wanted} model ({claims}) but this model uses {sampling_name}"
    names = config_names(model_config)
    if family is not None and names & KNOWN_CONFIGS and not names & set(FAMILIES[family][0]):
        return f"the table was made for {family} ({claims}) but the model is {type(model_config).__name__}"
    return None
