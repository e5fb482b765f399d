"""A small normalizing flow of the noised distribution at sigma* (Fassina et al. 2026, other-seeds.md B.2).

The paper trains a coupling flow by maximum likelihood on noised data x0 + s * n with fresh noise
every minibatch ("dynamic" noise). Here the flow lives on the top-r principal coordinates of the
clean reference data, so its cost does not grow with the latent size:
- y = mean + B c + y_perp, B [D, r] orthonormal (PCA of the clean data);
- c = B^T (x0 - mean) + s * z is modelled by the flow (z ~ N(0, I_r): B^T n of white noise);
- y_perp, the rest, is N(0, (floor + s^2) I) on the complement of B, floor the mean leftover PCA
  variance (as the low-rank family), added in closed form.
The flow: an affine scaling to unit variance, ``layers`` RealNVP affine couplings (Dinh, Sohl-Dickstein,
Bengio 2017) with a fixed seeded permutation each, and a Student-t base with a learned degree of
freedom per coordinate (the paper's heavy-tailed base; a large df is a Gaussian). Written from
the papers; no code was ported. Parameters are plain tensors, initialised from a torch.Generator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

FAMILY = "normalizing_flow"
SCALE_CLAMP = 3.0  # log-scales of a coupling are soft-clamped to +-3 (e^3 = 20x per layer) to keep training stable
DF_INIT = 30.0  # a start close to Gaussian; maximum likelihood moves it down for heavy tails
DF_LR_SCALE = 10.0  # log(df) must travel ~3 (df 30 -> 2) in a few hundred Adam steps of size ~lr


@dataclass(frozen=True, eq=False)
class FlowStart:
    """A flow model at VE sigma ``sigma_ve``: mean [D], basis [D, r], coef_std [r], params of the couplings."""

    family: str
    shape: tuple[int, ...]
    sigma_ve: float
    mean: torch.Tensor
    basis: torch.Tensor
    coef_std: torch.Tensor
    rest_var: float  # variance off the basis, noise included (floor + sigma^2)
    params: dict[str, torch.Tensor]

    @property
    def layers(self) -> int:
        return len(self.params["perms"])


def _init(r: int, hidden: int, layers: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Coupling MLPs (last layer zero: the flow starts as the identity), permutations, and the base's raw df."""
    half = r // 2
    params: dict[str, torch.Tensor] = {"perms": torch.stack([torch.randperm(r, generator=gen) for _ in range(layers)])}
    params["raw_df"] = torch.full((r,), math.log(DF_INIT - 1.0), dtype=torch.float64)
    for k in range(layers):
        params[f"w1.{k}"] = torch.randn(half, hidden, generator=gen, dtype=torch.float64) / math.sqrt(max(half, 1))
        params[f"b1.{k}"] = torch.zeros(hidden, dtype=torch.float64)
        params[f"w2.{k}"] = torch.randn(hidden, hidden, generator=gen, dtype=torch.float64) / math.sqrt(hidden)
        params[f"b2.{k}"] = torch.zeros(hidden, dtype=torch.float64)
        params[f"w3.{k}"] = torch.zeros(hidden, 2 * (r - half), dtype=torch.float64)
        params[f"b3.{k}"] = torch.zeros(2 * (r - half), dtype=torch.float64)
    return params


def _shift_scale(params: dict[str, torch.Tensor], k: int, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-scale, shift) [n, r - r//2] of coupling k from its conditioning half cond [n, r//2]."""
    h = torch.nn.functional.silu(cond @ params[f"w1.{k}"] + params[f"b1.{k}"])
    h = torch.nn.functional.silu(h @ params[f"w2.{k}"] + params[f"b2.{k}"])
    log_s, t = (h @ params[f"w3.{k}"] + params[f"b3.{k}"]).chunk(2, dim=1)
    return SCALE_CLAMP * torch.tanh(log_s / SCALE_CLAMP), t


def _to_base(params: dict[str, torch.Tensor], u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Data side u [n, r] (unit-variance coordinates) -> base side z [n, r] and log|det dz/du| [n]."""
    half, logdet = u.shape[1] // 2, u.new_zeros(u.shape[0])
    for k, perm in enumerate(params["perms"]):
        u = u[:, perm]
        log_s, t = _shift_scale(params, k, u[:, :half])
        u = torch.cat([u[:, :half], u[:, half:] * log_s.exp() + t], dim=1)
        logdet = logdet + log_s.sum(1)
    return u, logdet


def _from_base(params: dict[str, torch.Tensor], z: torch.Tensor) -> torch.Tensor:
    """The inverse of _to_base: base side z [n, r] -> data side u [n, r]."""
    half = z.shape[1] // 2
    for k in reversed(range(len(params["perms"]))):
        log_s, t = _shift_scale(params, k, z[:, :half])
        z = torch.cat([z[:, :half], (z[:, half:] - t) * (-log_s).exp()], dim=1)
        z = z[:, torch.argsort(params["perms"][k])]
    return z


def _df(params: dict[str, torch.Tensor]) -> torch.Tensor:
    """Degrees of freedom [r] of the Student-t base: 1 + e^raw_df (above 1, so the mean exists)."""
    return 1.0 + params["raw_df"].exp()


def _base_log_prob(params: dict[str, torch.Tensor], z: torch.Tensor) -> torch.Tensor:
    """log density [n] of z [n, r] under independent unit-scale Student-t's with df [r]."""
    v = _df(params)
    norm = torch.lgamma((v + 1) / 2) - torch.lgamma(v / 2) - 0.5 * torch.log(v * math.pi)
    return (norm - (v + 1) / 2 * torch.log1p(z**2 / v)).sum(1)


def _gamma(shape: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Gamma(shape, 1) draws of the shape of ``shape``: Marsaglia & Tsang (2000), boosted below shape 1."""
    a = torch.where(shape < 1, shape + 1, shape)
    d = a - 1.0 / 3.0
    c = 1.0 / torch.sqrt(9.0 * d)
    out, todo = torch.ones_like(a), torch.ones_like(a, dtype=torch.bool)
    for _ in range(64):  # each round accepts >= 95 %; 64 rounds leave ~1e-80 of the draws at 1
        x = torch.randn(a.shape, generator=gen, dtype=a.dtype)
        u = torch.rand(a.shape, generator=gen, dtype=a.dtype)
        v = (1 + c * x) ** 3
        ok = todo & (v > 0) & (torch.log(u) < 0.5 * x**2 + d - d * v + d * torch.log(v.clamp_min(1e-300)))
        out, todo = torch.where(ok, d * v, out), todo & ~ok
    boost = torch.rand(a.shape, generator=gen, dtype=a.dtype) ** (1.0 / shape)
    return torch.where(shape < 1, out * boost, out)


def _base_sample(params: dict[str, torch.Tensor], n: int, gen: torch.Generator) -> torch.Tensor:
    """n Student-t draws [n, r]: z / sqrt(g / df), g ~ chi^2(df) = 2 Gamma(df / 2)."""
    v = _df(params).expand(n, -1)
    z = torch.randn(v.shape, generator=gen, dtype=torch.float64)
    return z / torch.sqrt(2.0 * _gamma(v / 2, gen) / v)


def flow_log_prob(model: FlowStart, y: torch.Tensor) -> torch.Tensor:
    """log p(y) [n] of VE-scaled states y [n, *shape] under the flow (basis part) and the isotropic rest."""
    centred = y.reshape(len(y), -1).to(torch.float64) - model.mean
    coef = centred @ model.basis
    z, logdet = _to_base(model.params, coef / model.coef_std)
    log_p = _base_log_prob(model.params, z) + logdet - torch.log(model.coef_std).sum()
    rest = centred - coef @ model.basis.T
    dims = centred.shape[1] - model.basis.shape[1]
    if dims == 0:
        return log_p
    return log_p - 0.5 * (dims * math.log(2 * math.pi * model.rest_var) + (rest**2).sum(1) / model.rest_var)


@torch.no_grad()
def sample_flow(model: FlowStart, batch: int, gen: torch.Generator) -> torch.Tensor:
    """VE-scaled draws y [batch, *shape] (float64): flow on the basis, N(0, rest_var) off it."""
    coef = _from_base(model.params, _base_sample(model.params, batch, gen)) * model.coef_std
    white = torch.randn(batch, model.mean.shape[0], generator=gen, dtype=torch.float64)
    rest = white - (white @ model.basis) @ model.basis.T
    y = model.mean + coef @ model.basis.T + math.sqrt(model.rest_var) * rest
    return y.reshape(batch, *model.shape)


def _train(params: dict[str, torch.Tensor], coef: torch.Tensor, sigma: float, coef_std: torch.Tensor, steps: int,
           batch: int, lr: float, gen: torch.Generator) -> None:  # fmt: skip
    """Adam on the NLL of (coef rows + sigma z) / coef_std, fresh rows and noise each step (the paper's dynamic noise).

    coef [n, r] clean principal coordinates, coef_std [r] their noised standard deviations.
    """
    trained = {k: v.requires_grad_() for k, v in params.items() if k != "perms"}
    nets = [v for k, v in trained.items() if k != "raw_df"]
    opt = torch.optim.Adam([{"params": nets}, {"params": [params["raw_df"]], "lr": lr * DF_LR_SCALE}], lr=lr)
    for _ in range(steps):
        rows = coef[torch.randint(len(coef), (batch,), generator=gen)]
        u = (rows + sigma * torch.randn(rows.shape, generator=gen, dtype=torch.float64)) / coef_std
        z, logdet = _to_base(params, u)
        loss = -(_base_log_prob(params, z) + logdet).mean()
        opt.zero_grad()
        loss.backward()
        for p in trained.values():
            p.grad = torch.nan_to_num(p.grad)
        opt.step()


def fit_flow(
    x: torch.Tensor, shape: tuple[int, ...], sigma_ve: float, *, rank: int = 8, steps: int = 300, hidden: int = 64,
    layers: int = 4, batch: int = 256, lr: float = 3e-3, seed: int = 0,
) -> FlowStart:  # fmt: skip
    """Fit the flow to clean samples x [n, D] (float64) noised at VE sigma ``sigma_ve``, by Adam on the NLL.

    rank: principal directions modelled by the flow (at most n - 1 and D; at least 2); steps: Adam
    steps, each on ``batch`` data rows drawn with replacement plus fresh noise. Runs with autograd on
    and outside inference mode, since ComfyUI runs every node under torch.inference_mode.
    """
    n, d = x.shape
    r = min(rank, n - 1, d)
    gen = torch.Generator().manual_seed(seed)
    with torch.inference_mode(False), torch.enable_grad():
        x = x.clone()  # a normal tensor: one made under inference mode cannot take part in autograd
        mean = x.mean(0)
        _, s, vh = torch.linalg.svd(x - mean, full_matrices=False)
        basis, vals = vh[:r].T.contiguous(), s**2 / (n - 1)
        floor = float(vals[r:].sum()) / (d - r) if d > r else 0.0
        coef_std = torch.sqrt(vals[:r] + sigma_ve**2)
        params = _init(r, hidden, layers, gen)
        _train(params, (x - mean) @ basis, sigma_ve, coef_std, steps, batch, lr, gen)
        frozen = {k: v.detach() for k, v in params.items()}
    return FlowStart(FAMILY, shape, float(sigma_ve), mean, basis, coef_std, floor + sigma_ve**2, frozen)
