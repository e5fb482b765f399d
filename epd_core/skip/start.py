"""Draw a start state from a StartModel and scale it for the model kind (other-seeds.md B.4).

A draw y is the VE-scaled state y = x0 + s * n. An eps-type model (EPS, V, EDM) samples
x = y at sigma = s. A rectified-flow model (CONST) samples x = (1 - t) x0 + t n, which is
(1 - t) * y with s = t / (1 - t): the flow state is the VE draw shrunk by (1 - t), and
must not be shrunk a second time by whoever adds the (here disabled) noise.
"""

from __future__ import annotations

from typing import Literal

import torch

from .fit import StartModel
from .flow import FlowStart, sample_flow

Kind = Literal["ve", "flow"]


def ve_sigma(sigma: float, kind: Kind) -> float:
    """The VE sigma s of a model sigma: s = sigma (ve), t / (1 - t) (flow)."""
    if kind == "flow":
        if not 0.0 < sigma < 1.0:
            raise ValueError(f"a flow model's sigma* must lie strictly between 0 and 1, got {sigma}")
        return sigma / (1.0 - sigma)
    return sigma


def latent_scale(sigma: float, kind: Kind) -> float:
    """How the sampler's state at ``sigma`` relates to the VE draw: x = latent_scale * y (1 or 1 - t)."""
    return 1.0 - sigma if kind == "flow" else 1.0


@torch.no_grad()
def sample_start(model: StartModel | FlowStart, batch: int, generator: torch.Generator) -> torch.Tensor:
    """VE-scaled draws y [batch, *shape] (float64): pick a component, then mean + sqrt(var) z1 + W z2 (or the flow)."""
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    if isinstance(model, FlowStart):
        return sample_flow(model, batch, generator)
    comp = torch.multinomial(torch.softmax(model.log_weights, 0), batch, replacement=True, generator=generator)
    d, r = model.factors.shape[1:]
    z1 = torch.randn(batch, d, generator=generator, dtype=torch.float64)
    z2 = torch.randn(batch, r, generator=generator, dtype=torch.float64)
    y = model.means[comp] + model.var[comp].sqrt() * z1 + torch.einsum("bdr,br->bd", model.factors[comp], z2)
    return y.reshape(batch, *model.shape)


def truncate_sigmas(sigmas: torch.Tensor, sigma_star: float) -> torch.Tensor:
    """sigmas [N+1] restarted at sigma*: sigma* followed by every sigma below it (float64)."""
    grid = sigmas.detach().to("cpu", torch.float64).flatten()
    rest = grid[grid < sigma_star]
    if len(rest) == 0:
        raise ValueError(f"no sigma of the schedule lies below sigma* = {sigma_star:.4g} "
                         f"(schedule {grid[0].item():.4g} .. {grid[-1].item():.4g}); lower sigma*")  # fmt: skip
    return torch.cat([grid.new_tensor([sigma_star]), rest])
