"""sigma* by Hartigan's dip test on random 1-D projections (other-seeds.md B.2, "Choosing t*").

The dip statistic follows the computation in J. A. Hartigan and P. M. Hartigan, "The Dip Test
of Unimodality", Ann. Statist. 13(1), 1985, section 3 (the iteration behind algorithm AS 217):
shrink a modal interval [lo, hi] using the greatest convex minorant (GCM) and least concave
majorant (LCM) of the empirical CDF until their largest gap no longer exceeds the dip so far.
Written from the paper's description in numpy; no code was ported.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def _hull(x: np.ndarray, y: np.ndarray, lo: int, hi: int, lower: bool) -> np.ndarray:
    """Indices of the lower (GCM) or upper (LCM) convex hull of the points (x_i, y_i), lo <= i <= hi."""
    sign = 1.0 if lower else -1.0
    knots: list[int] = []
    for i in range(lo, hi + 1):
        while len(knots) >= 2:
            a, b = knots[-2], knots[-1]
            cross = (x[b] - x[a]) * (y[i] - y[a]) - (y[b] - y[a]) * (x[i] - x[a])
            if sign * cross > 0:
                break
            knots.pop()
        knots.append(i)
    return np.array(knots)


def _curve(x: np.ndarray, y: np.ndarray, knots: np.ndarray, at: np.ndarray) -> np.ndarray:
    """The piecewise-linear hull through ``knots`` evaluated at indices ``at``."""
    return np.interp(x[at], x[knots], y[knots])


def _dip_sorted(x: np.ndarray) -> float:
    """Dip of the empirical distribution of sorted distinct x [n]; in [1/(2n), 1/4]."""
    n = len(x)
    y = np.arange(1, n + 1, dtype=np.float64)  # n * F at the data points
    lo, hi, dip = 0, n - 1, 1.0  # dip in counts; 1 count is the step of F
    for _ in range(n):
        gcm, lcm = _hull(x, y, lo, hi, True), _hull(x, y, lo, hi, False)
        gap_g = _curve(x, y, lcm, gcm) - y[gcm]
        gap_l = y[lcm] - _curve(x, y, gcm, lcm)
        if gap_g.max() > gap_l.max():
            g = gcm[gap_g.argmax()]
            new_lo, new_hi, gap = g, lcm[lcm >= g].min(), gap_g.max()
        else:
            u = lcm[gap_l.argmax()]
            new_lo, new_hi, gap = gcm[gcm <= u].max(), u, gap_l.max()
        # gap + 1: the same one-count jump allowance as the deviations below
        if gap + 1.0 <= dip or (new_lo, new_hi) == (lo, hi):
            break
        left, right = np.arange(lo, new_lo + 1), np.arange(new_hi, hi + 1)
        # F jumps by one count at each point: the fit may sit half-way, hence the + 1 (halved at the end)
        dev_g = np.abs(_curve(x, y, gcm, left) - y[left]).max()
        dev_l = np.abs(_curve(x, y, lcm, right) - y[right]).max()
        dip = max(dip, dev_g + 1.0, dev_l + 1.0)
        lo, hi = new_lo, new_hi
    return dip / (2 * n)


def dip_statistic(values: torch.Tensor | np.ndarray) -> float:
    """Hartigan's dip of a 1-D sample [n] (n >= 4)."""
    x = np.sort(np.asarray(values, dtype=np.float64).ravel())
    if len(x) < 4:
        raise ValueError(f"the dip test needs at least 4 values, got {len(x)}")
    x = x + np.arange(len(x)) * 1e-12 * max(np.abs(x).max(), 1.0)  # break exact ties
    return _dip_sorted(x)


def uniform_null(n: int, draws: int, generator: torch.Generator) -> np.ndarray:
    """Dips of ``draws`` uniform samples of size n: the least favourable unimodal null (Hartigan 1985)."""
    return np.array([dip_statistic(torch.rand(n, generator=generator, dtype=torch.float64)) for _ in range(draws)])


def _multimodal(x0: torch.Tensor, noise: torch.Tensor, dirs: torch.Tensor, s: float, threshold: float) -> bool:
    """True when any projection of x0 + s * noise has a dip above ``threshold``."""
    proj = (x0 + s * noise) @ dirs  # [n, P]
    return max(dip_statistic(proj[:, k]) for k in range(proj.shape[1])) > threshold


def _directions(x0: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """[D, count] unit directions: half isotropic, half differences of random data pairs.

    In high dimension an isotropic direction sees a near-Gaussian projection even of
    well-separated clusters; the line through two data points crosses two of them.
    """
    iso = torch.randn(x0.shape[1], count - count // 2, generator=generator, dtype=x0.dtype)
    pairs = torch.randint(len(x0), (2, count // 2), generator=generator)
    dirs = torch.cat([iso, (x0[pairs[0]] - x0[pairs[1]]).T], dim=1)
    return torch.nn.functional.normalize(dirs + 1e-12, dim=0)


def suggest_sigma_star(
    data: torch.Tensor, *, projections: int = 32, alpha: float = 0.05, sigma_lo: float = 1e-3,
    sigma_hi: float = 80.0, bisections: int = 12, null_draws: int = 200, seed: int = 0,
) -> float:  # fmt: skip
    """Smallest VE sigma at which x0 + sigma * n looks unimodal along every probed direction.

    data: clean samples [n, ...]. A projection counts as multimodal when its dip exceeds the
    1 - alpha / projections quantile of the uniform null (Bonferroni over the slices). Bisection
    in log sigma between sigma_lo and sigma_hi, with one fixed noise draw (common random numbers).
    """
    x0 = data.detach().to("cpu", torch.float64).flatten(1)
    if x0.shape[0] < 4:
        raise ValueError(f"the dip test needs at least 4 reference samples, got {x0.shape[0]}")
    if not 0 < sigma_lo < sigma_hi:
        raise ValueError(f"need 0 < sigma_lo < sigma_hi, got {sigma_lo} and {sigma_hi}")
    gen = torch.Generator().manual_seed(seed)
    dirs = _directions(x0, projections, gen)
    noise = torch.randn(x0.shape, generator=gen, dtype=x0.dtype)
    threshold = float(np.quantile(uniform_null(x0.shape[0], null_draws, gen), 1 - alpha / projections))
    if not _multimodal(x0, noise, dirs, sigma_lo, threshold):
        return sigma_lo
    if _multimodal(x0, noise, dirs, sigma_hi, threshold):
        return sigma_hi
    lo, hi = math.log(sigma_lo), math.log(sigma_hi)
    for _ in range(bisections):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if _multimodal(x0, noise, dirs, math.exp(mid), threshold) else (lo, mid)
    return math.exp(hi)
