"""Start from a learned intermediate distribution ("skip the middle", Fassina et al. 2026; issue 16 B).

fit.py fits a light model of the data and convolves it with the noise at sigma* (flow.py: the
small normalizing flow option, trained on noised data), dip.py suggests sigma* by Hartigan's dip
test, start.py turns a draw into the state a sampler starts from, store.py reads and writes
.safetensors. Everything here works in the VE-scaled space y = x0 + s * n (s the VE sigma).
"""

from .dip import dip_statistic, suggest_sigma_star
from .fit import FAMILIES, StartModel, fit_start
from .flow import FlowStart, flow_log_prob
from .start import latent_scale, sample_start, truncate_sigmas, ve_sigma
from .store import load_start, save_start

__all__ = [
    "FAMILIES", "FlowStart", "StartModel", "dip_statistic", "fit_start", "flow_log_prob", "latent_scale", "load_start",
    "sample_start", "save_start", "suggest_sigma_star", "truncate_sigmas", "ve_sigma",
]  # fmt: skip
