"""Start from a learned intermediate distribution ("skip the middle", Fassina et al. 2026; issue 16 B).

fit.py fits a light model of the data and convolves it with the noise at sigma*, dip.py
suggests sigma* by Hartigan's dip test, start.py turns a draw into the state a sampler
starts from. Everything here works in the VE-scaled space y = x0 + s * n (s the VE sigma).
"""

from .dip import dip_statistic, suggest_sigma_star
from .fit import FAMILIES, StartModel, fit_start
from .start import latent_scale, sample_start, truncate_sigmas, ve_sigma

__all__ = [
    "FAMILIES", "StartModel", "dip_statistic", "fit_start", "latent_scale", "sample_start", "suggest_sigma_star",
    "truncate_sigmas",
    "ve_sigma",
]  # fmt: skip
