"""The RDPO policy: a distribution over whole EPD tables centred on a starting table (docs/training.md).

Per step n, the K sorted positions become K + 1 segments (r_1, r_2 - r_1, ..., 1 - r_K) drawn
from a Dirichlet, so sampled positions stay ordered inside (0, 1); the weights are a second
Dirichlet; the optional scales (c, a) are log-normal. The concentrations are
``kappa * mean``, so the mean is the table and the spread shrinks as 1 / (kappa + 1).

A small residual network on the step index adds Delta to log alpha (and to the log-normal
parameters). Its head starts at zero, so the untrained policy IS the cold-start
distribution; training moves the residual, never the base.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.distributions import Dirichlet, LogNormal, Normal, kl_divergence

from ..params import EPDParams, interp_sigma
from ..solver import StepRow

_F64 = torch.float64
# Smallest base concentration: a segment or weight of 0 in a table would give alpha = 0,
# which is not a distribution; 1e-3 moves the mean by less than 1e-3 / kappa.
ALPHA_MIN = 1e-3
# Sampled segments are kept off 0 so that positions stay strictly inside (0, 1).
SEGMENT_FLOOR = 1e-9
LOG_STD_RANGE = (-7.0, 2.0)  # upstream's clamp of the log-normal log-std
# Network size caps (upstream: 128 x 2). 1024 wide x 8 blocks is ~8.4M float64 weights (67 MB).
MAX_HIDDEN = 1024
MAX_LAYERS = 8


@dataclass(frozen=True)
class TableDraw:
    """Tables drawn per image: segments [B, S, K+1], weights [B, S, K], scales [B, S, K, 2] (c, a) or None."""

    segments: torch.Tensor
    weights: torch.Tensor
    scales: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.segments.shape[0])

    def __getitem__(self, index: torch.Tensor | slice) -> TableDraw:
        scales = None if self.scales is None else self.scales[index]
        return TableDraw(self.segments[index], self.weights[index], scales)

    @property
    def positions(self) -> torch.Tensor:
        """r [B, S, K]: cumulative sums of the first K segments."""
        return self.segments.cumsum(-1)[..., :-1].clamp(SEGMENT_FLOOR, 1 - SEGMENT_FLOOR)

    def rows(self, sigmas: torch.Tensor) -> list[StepRow]:
        """Per-step solver rows with a table per sample: tau, a, lam_c of shape [K, B] (solver.run_rows)."""
        sigmas = sigmas.to(_F64)
        tau = interp_sigma(sigmas[:-1, None], sigmas[1:, None], self.positions)  # [B, S, K]
        ones = torch.ones_like(tau)
        c, a = (ones, ones) if self.scales is None else (self.scales[..., 0], self.scales[..., 1])
        lam_c = self.weights * c
        return [StepRow(tau[:, n].T, a[:, n].T, lam_c[:, n].T) for n in range(tau.shape[1])]


class ResidualBlock(nn.Module):
    """LayerNorm -> SiLU -> Linear with a skip connection (upstream EPDParamPolicy)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.LayerNorm(width), nn.SiLU(), nn.Linear(width, width))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.body(h)


def sorted_table(table: EPDParams) -> EPDParams:
    """The same table with each row's points in increasing r (the solver's sum does not care; segments do)."""
    order = table.r.detach().argsort(dim=-1)
    if bool((order == torch.arange(table.num_points)).all()):
        return table
    names = ("r_logits", "weight_logits", "scale_dir_logits", "scale_time_logits")
    return table.replace(**{n: getattr(table, n).detach().gather(-1, order) for n in names})


def table_segments(table: EPDParams) -> torch.Tensor:
    """Segments [S, K+1] of a table whose rows are sorted (sorted_table)."""
    r = table.r.detach()
    edges = torch.cat([torch.zeros_like(r[:, :1]), r, torch.ones_like(r[:, :1])], dim=-1)
    return edges.diff(dim=-1)


class DirichletTablePolicy(nn.Module):
    """pi(table) = prod_n Dir(segments_n) Dir(weights_n) [LogNormal(c_n) LogNormal(a_n)], residual on the step index."""

    def __init__(
        self,
        table: EPDParams,
        concentration: float = 20.0,
        *,
        learn_scales: bool = False,
        scale_std: float = 0.05,
        hidden: int = 128,
        layers: int = 2,
        seed: int = 0,
    ) -> None:
        super().__init__()
        check_policy_options(concentration, scale_std, hidden, layers)
        table = sorted_table(table)
        self.table, self.concentration, self.learn_scales = table, float(concentration), bool(learn_scales)
        self.scale_std, self.hidden, self.layers = float(scale_std), int(hidden), int(layers)
        steps, points = table.num_steps, table.num_points
        self.register_buffer("base_log_alpha_pos", (concentration * table_segments(table)).clamp_min(ALPHA_MIN).log())
        self.register_buffer("base_log_alpha_w", (concentration * table.lam.detach()).clamp_min(ALPHA_MIN).log())
        # loc = log(scale) - std^2 / 2 makes the log-normal MEAN equal the table's scale.
        scales = torch.stack([table.c.detach(), table.a.detach()], dim=-1)
        self.register_buffer("base_loc", scales.log() - scale_std**2 / 2)
        self.register_buffer("base_log_std", torch.full_like(scales, float(torch.tensor(scale_std).log())))
        self.outputs = (2 * points + 1) + (4 * points if learn_scales else 0)
        with torch.random.fork_rng(devices=[]):  # a seeded init, without touching the caller's RNG
            torch.manual_seed(seed)
            self.embed = nn.Embedding(steps, hidden)
            self.blocks = nn.Sequential(*(ResidualBlock(hidden) for _ in range(layers)))
            self.head = nn.Linear(hidden, self.outputs)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.to(_F64)

    @property
    def sigmas(self) -> torch.Tensor:
        return self.table.sigmas

    def residual(self) -> torch.Tensor:
        """Delta [S, outputs] from the step index; exactly 0 at initialisation."""
        steps = torch.arange(self.table.num_steps, device=self.head.weight.device)
        return self.head(self.blocks(self.embed(steps)))

    def distributions(self) -> dict[str, torch.distributions.Distribution]:
        """The per-step factors, batch shape [S]: positions, weights and (when learned) scales."""
        delta, points = self.residual(), self.table.num_points
        d_pos, d_w = delta[:, : points + 1], delta[:, points + 1 : 2 * points + 1]
        dists: dict[str, torch.distributions.Distribution] = {
            "positions": Dirichlet((self.base_log_alpha_pos + d_pos).exp().clamp_min(1e-5)),
            "weights": Dirichlet((self.base_log_alpha_w + d_w).exp().clamp_min(1e-5)),
        }
        if self.learn_scales:
            d_loc = delta[:, 2 * points + 1 : 4 * points + 1].reshape(-1, points, 2)
            d_std = delta[:, 4 * points + 1 :].reshape(-1, points, 2)
            log_std = (self.base_log_std + d_std).clamp(*LOG_STD_RANGE)
            dists["scales"] = LogNormal(self.base_loc + d_loc, log_std.exp())
        return dists

    def base_distributions(self) -> dict[str, torch.distributions.Distribution]:
        """The cold-start distribution (the residual left out), for the KL penalty."""
        dists: dict[str, torch.distributions.Distribution] = {
            "positions": Dirichlet(self.base_log_alpha_pos.exp()),
            "weights": Dirichlet(self.base_log_alpha_w.exp()),
        }
        if self.learn_scales:
            dists["scales"] = LogNormal(self.base_loc, self.base_log_std.exp())
        return dists

    @torch.no_grad()
    def sample(self, count: int, seed: int) -> TableDraw:
        """``count`` independent tables; deterministic for a seed (the global RNG is left untouched)."""
        dists = self.distributions()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            segments = dists["positions"].sample((count,))
            weights = dists["weights"].sample((count,))
            scales = dists["scales"].sample((count,)) if "scales" in dists else None
        segments = segments.clamp_min(SEGMENT_FLOOR)
        return TableDraw(segments / segments.sum(-1, keepdim=True), weights.clamp_min(SEGMENT_FLOOR), scales)

    def log_prob(self, draw: TableDraw) -> torch.Tensor:
        """log pi(table) [B]: the sum over steps (and scales) of every factor's log-density."""
        dists = self.distributions()
        total = dists["positions"].log_prob(draw.segments).sum(-1) + dists["weights"].log_prob(draw.weights).sum(-1)
        if "scales" in dists:
            if draw.scales is None:
                raise ValueError("this policy learns scales but the draw has none; draw it from this policy")
            total = total + dists["scales"].log_prob(draw.scales).sum((-3, -2, -1))
        return total

    def kl_to_base(self) -> torch.Tensor:
        """KL(pi || pi_base), closed form, summed over steps (log-normal KL = KL of the normal logs)."""
        now, base = self.distributions(), self.base_distributions()
        total = sum(kl_divergence(now[k], base[k]).sum() for k in ("positions", "weights"))
        if "scales" in now:
            total = (
                total
                + kl_divergence(
                    Normal(now["scales"].loc, now["scales"].scale), Normal(base["scales"].loc, base["scales"].scale)
                ).sum()
            )
        return total

    @torch.no_grad()
    def mean_values(self) -> dict[str, torch.Tensor]:
        """The policy mean as solver values r, lam [S, K] and (when learned) c, a."""
        dists = self.distributions()
        segments = dists["positions"].mean
        values = {"r": segments.cumsum(-1)[:, :-1], "lam": dists["weights"].mean}
        if "scales" in dists:
            values["c"], values["a"] = dists["scales"].mean.unbind(-1)
        return values

    def mean_table(self, metadata: dict | None = None) -> EPDParams:
        """The policy mean exported as a table; scales keep their learned values (a range is widened to hold them)."""
        values = self.mean_values()
        r = values["r"].clamp(1e-9, 1 - 1e-9)
        lam = values["lam"] / values["lam"].sum(-1, keepdim=True)
        table = self.table
        options = {"scale_dir": table.scale_dir, "scale_time": table.scale_time, "c": table.c, "a": table.a}
        if "c" in values:
            options = {"scale_dir": scale_range(values["c"], table.scale_dir), "c": values["c"]}
            options |= {"scale_time": scale_range(values["a"], table.scale_time), "a": values["a"]}
        meta = dict(table.metadata) | (metadata or {})
        return EPDParams.from_values(r, lam, table.sigmas, afs=table.afs, metadata=meta, **options)


def scale_range(values: torch.Tensor, current: float) -> float:
    """A scale range s with every value strictly inside (1 - s, 1 + s): the table's own, widened when needed."""
    needed = float((values - 1).abs().max())
    if needed < current:
        return current
    if needed >= 0.99:
        raise ValueError(f"a learned scale moved {needed:.3f} away from 1; tables hold scales within 1 +/- 0.99")
    return min(0.99, needed * 1.05 + 1e-6)


def check_policy_options(concentration: float, scale_std: float, hidden: int, layers: int) -> None:
    """Clear errors for settings that cannot make a policy; checked before anything is allocated."""
    for name, value in (("concentration", concentration), ("scale_std", scale_std)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"policy option {name} must be a finite number, got {value!r}")
    for name, value, low, cap in (("hidden", hidden, 1, MAX_HIDDEN), ("layers", layers, 0, MAX_LAYERS)):
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= cap:
            raise ValueError(
                f"policy option {name}={value!r} must be a whole number in [{low}, {cap}] "
                f"(upstream uses hidden=128, layers=2); the cap keeps the network small enough to allocate"
            )
    if not concentration > 0:
        raise ValueError(f"concentration kappa={concentration} must be > 0 (20 is upstream's default)")
    if not 0 < scale_std < 1:
        raise ValueError(f"scale_std={scale_std} must be in (0, 1) (0.05 is upstream's default)")
