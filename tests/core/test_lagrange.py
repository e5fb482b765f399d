"""The Lagrange interval-collocation sampler (epd_core.lagrange) on exact denoisers, float64 CPU."""

from __future__ import annotations

import math

import pytest
import torch

from epd_core.digits import ExactModel
from epd_core.lagrange import extrapolate, lam_of, make_interval, nfe_per_run, sample_lagrange
from epd_core.mixture import gaussian, two_blobs

B, D = 3, 4


def log_grid(n: int, sigma_max: float = 80.0, sigma_min: float = 0.05) -> torch.Tensor:
    return torch.exp(torch.linspace(math.log(sigma_max), math.log(sigma_min), n + 1, dtype=torch.float64))


def start(seed: int = 0, scale: float = 80.0) -> torch.Tensor:
    return torch.randn(B, D, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale


class PolyInLambda:
    """A denoiser that ignores x: D = sum_m coeffs[m] lambda^m * v, so the ODE integral is closed-form."""

    def __init__(self, coeffs: list[float], kind: str) -> None:
        self.coeffs, self.kind = coeffs, kind
        self.v = torch.linspace(-1.0, 1.0, D, dtype=torch.float64)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **_: object) -> torch.Tensor:
        lam = torch.from_numpy(lam_of(sigma.numpy(), self.kind))
        return sum(c * lam**m for m, c in enumerate(self.coeffs))[:, None] * self.v

    def exact(self, x_a: torch.Tensor, sigma_a: float, sigma_b: float) -> torch.Tensor:
        """x_b = sigma_b (x_a / sigma_a + int e^l p(l) dl), with int e^l l^m = e^l sum_i (-1)^i m!/(m-i)! l^(m-i)."""
        la, lb = (float(lam_of(s, self.kind)) for s in (sigma_a, sigma_b))

        def antiderivative(lam: float) -> float:
            return sum(
                c * math.exp(lam) * sum((-1) ** i * math.perm(m, i) * lam ** (m - i) for i in range(m + 1))
                for m, c in enumerate(self.coeffs)
            )

        return sigma_b * (x_a / sigma_a + (antiderivative(lb) - antiderivative(la)) * self.v)


@pytest.mark.parametrize("kind", ["ve", "flow"])
@pytest.mark.parametrize("order", [1, 2, 3, 4])
@pytest.mark.parametrize("nodes", ["chebyshev", "equispaced"])
def test_exact_for_polynomials_of_degree_order(kind: str, order: int, nodes: str) -> None:
    # D(lambda) of degree <= K is reproduced by the degree-K interpolant, and since D ignores x
    # one sweep already has the right node values: the step is exact to round-off.
    sigma_a, sigma_b = (3.0, 0.5) if kind == "ve" else (0.9, 0.2)
    model = PolyInLambda([0.3, -0.7, 0.2, 0.1, -0.05][: order + 1], kind)
    x = start(scale=sigma_a)
    sigmas = torch.tensor([sigma_a, sigma_b], dtype=torch.float64)
    out = sample_lagrange(model, x, sigmas, order=order, refinements=1, nodes=nodes, kind=kind)
    torch.testing.assert_close(out, model.exact(x, sigma_a, sigma_b), rtol=1e-11, atol=1e-11)


def test_degree_above_order_is_not_exact() -> None:
    # The check above is not vacuous: a cubic in lambda is not reproduced with K = 2.
    model = PolyInLambda([0.0, 0.0, 0.0, 1.0], "ve")
    x, sigmas = start(scale=3.0), torch.tensor([3.0, 0.5], dtype=torch.float64)
    out = sample_lagrange(model, x, sigmas, order=2, refinements=1)
    assert (out - model.exact(x, 3.0, 0.5)).abs().max() > 1e-6


@pytest.mark.parametrize("warm_start", [False, True])
@pytest.mark.parametrize("kind", ["ve", "flow"])
def test_point_mass_is_exact_down_to_zero(warm_start: bool, kind: str) -> None:
    # A point mass at mu has D = mu everywhere: x(sigma) = mu + (sigma/sigma_a)(x_a - mu), and 0 lands on mu.
    # For flow the same holds in k-diffusion coordinates (d(x/sigma) = -D/sigma^2 dsigma for both kinds).
    mu = torch.tensor([0.5, -1.0, 2.0, 0.0], dtype=torch.float64)

    def model(x: torch.Tensor, sigma: torch.Tensor, **_: object) -> torch.Tensor:
        return mu.expand_as(x)

    sigmas = torch.tensor([1.0, 0.6, 0.3, 0.1, 0.0] if kind == "flow" else [80.0, 10.0, 1.0, 0.1, 0.0])
    x = start(scale=float(sigmas[0]))
    out = sample_lagrange(model, x, sigmas.double(), order=3, refinements=2, warm_start=warm_start, kind=kind)
    torch.testing.assert_close(out, mu.expand_as(x), rtol=0, atol=1e-12)


def gaussian_error(n: int, order: int, refinements: int, warm_start: bool = False) -> float:
    """Error against the closed form x(sigma) = mu + sqrt(s^2 + sigma^2) / sqrt(s^2 + sigma_a^2) (x_a - mu)."""
    mean, std = 0.5, 0.3
    sigmas, x = log_grid(n), start()
    exact = mean + math.sqrt((std**2 + float(sigmas[-1]) ** 2) / (std**2 + 80.0**2)) * (x - mean)
    model = ExactModel(gaussian(mean, std, D))
    out = sample_lagrange(model, x, sigmas, order=order, refinements=refinements, warm_start=warm_start)
    return float((out - exact).norm(dim=1).max())


@pytest.mark.parametrize(
    ("order", "refinements", "warm_start", "expected"),
    [(1, 1, False, 2), (2, 2, False, 3), (2, 3, False, 4), (2, 1, True, 3)],
)
def test_observed_order_when_halving(order: int, refinements: int, warm_start: bool, expected: int) -> None:
    # Picard from a DDIM guess gains one order per sweep up to the collocation order:
    # global order min(R + 1, K + 1 (+1 for even K)); measured here by halving 16 -> 32 intervals.
    e16, e32 = (gaussian_error(n, order, refinements, warm_start) for n in (16, 32))
    assert math.log2(e16 / e32) > expected - 0.5, (e16, e32)


def test_warm_prediction_is_the_damped_chord() -> None:
    # D = 0.3 + 0.5 lambda v is linear in lambda, so the previous interval's chord is exact; the
    # prediction damps it by theta = max(0.7, 1 / (1 + h)): at the new right node lambda_b - lambda_a = h,
    # so D_last + theta * 0.5 h v; at the shared left node it is D_last.
    # h = log 4 = 1.386 gives theta = 0.7 (1 / 2.386 = 0.42); h = log 1.25 = 0.223 gives 1 / 1.223 = 0.818.
    v = torch.linspace(-1.0, 1.0, D, dtype=torch.float64)
    for sigma_b, theta in ((0.5, 0.7), (1.6, 1.0 / (1.0 + math.log(1.25)))):
        prev, iv = make_interval(10.0, 2.0, 2, "chebyshev", "ve"), make_interval(2.0, sigma_b, 2, "chebyshev", "ve")
        values = [(0.3 + 0.5 * float(lam)) * v for lam in prev.nodes]
        predicted = extrapolate(prev, values, iv)
        h = math.log(2.0 / sigma_b)
        torch.testing.assert_close(predicted[0], values[-1], rtol=0, atol=1e-14)
        torch.testing.assert_close(predicted[-1], values[-1] + theta * 0.5 * h * v, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("order", [2, 3])
def test_warm_start_is_stable_at_few_intervals(order: int) -> None:
    # Regression: extrapolating the degree-K polynomial a whole interval ahead diverged at few
    # intervals. Two narrow blobs, these 3 samples, 8 and 16 rounds: the old warm K2 R1 had 0.50 and
    # 0.027, K3 R1 1.8 and 0.034, against 0.073 and 0.026 for cold K1 R1. With the damped chord, warm
    # K R1 (N + 1 rounds on N intervals) is no worse than cold K1 R1 (2 per interval) at equal rounds:
    # measured 0.052 and 0.00056 (K2), 0.051 and 0.00061 (K3). The reference is 3e-9 from K4 R5 on 128.
    mixture, x = two_blobs(), start(scale=80.0)
    grid = lambda n: log_grid(n, 80.0, 0.002)  # noqa: E731
    ref = sample_lagrange(ExactModel(mixture), x, grid(64), order=4, refinements=4)
    for rounds in (8, 16):
        cold = sample_lagrange(ExactModel(mixture), x, grid(rounds // 2), order=1, refinements=1)
        warm = sample_lagrange(ExactModel(mixture), x, grid(rounds - 1), order=order, refinements=1, warm_start=True)
        cold_err, warm_err = ((out - ref).norm(dim=1).mean() for out in (cold, warm))
        assert warm_err <= cold_err, (rounds, float(warm_err), float(cold_err))


class CountingModel:
    """An exact denoiser that records the rows of every call."""

    def __init__(self) -> None:
        self.model, self.rows = ExactModel(gaussian(0.5, 0.3, D)), []

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **kw: object) -> torch.Tensor:
        self.rows.append(x.shape[0])
        return self.model(x, sigma, **kw)


@pytest.mark.parametrize("warm_start", [False, True])
def test_one_batched_call_per_sweep(warm_start: bool) -> None:
    # Cold: per interval one B-row call at the left node, then R calls of K*B rows (the last interval,
    # to 0, has K - 1 unknown nodes). Warm: the left-node call only on the first interval.
    order, refinements, sigmas = 3, 2, torch.tensor([80.0, 5.0, 0.5, 0.0], dtype=torch.float64)
    model = CountingModel()
    sample_lagrange(model, start(), sigmas, order=order, refinements=refinements, warm_start=warm_start)
    left, kb, tail = [B], [order * B] * refinements, [(order - 1) * B] * refinements
    expected = left + kb + ([] if warm_start else left) + kb + ([] if warm_start else left) + tail
    assert model.rows == expected
    assert sum(model.rows) / B == nfe_per_run(3, order, refinements, warm_start, ends_at_zero=True)


def test_batched_matches_sequential() -> None:
    sigmas, x = log_grid(5), start()
    runs = [
        sample_lagrange(ExactModel(gaussian(0.5, 0.3, D)), x, sigmas, order=3, refinements=2, parallel=p)
        for p in ("batched", "sequential")
    ]
    torch.testing.assert_close(runs[0], runs[1], rtol=1e-13, atol=1e-13)


def test_callback_once_per_interval_at_batch_size() -> None:
    seen: list[tuple[int, int]] = []
    sigmas = torch.tensor([80.0, 5.0, 0.5, 0.0], dtype=torch.float64)
    sample_lagrange(
        ExactModel(gaussian()), start(), sigmas, callback=lambda d: seen.append((d["i"], d["denoised"].shape[0]))
    )
    assert seen == [(0, B), (1, B), (2, B)]


def test_inputs_not_mutated() -> None:
    x, sigmas = start(), log_grid(3)
    x0, s0 = x.clone(), sigmas.clone()
    sample_lagrange(ExactModel(gaussian()), x, sigmas, order=2, refinements=1)
    assert torch.equal(x, x0) and torch.equal(sigmas, s0)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"order": 0}, r"order=0 must be an integer between 1"),
        ({"refinements": -1}, r"refinements=-1 must be an integer >= 0"),
        ({"nodes": "gauss"}, r"nodes='gauss' is not one of \('chebyshev', 'equispaced'\)"),
        ({"kind": "eps"}, r"kind='eps' is not one of"),
        ({"warm_start": True, "refinements": 0}, r"warm_start needs refinements >= 1"),
    ],
)
def test_bad_options_rejected(options: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        sample_lagrange(ExactModel(gaussian()), start(), log_grid(2), **options)


def test_bad_sigmas_rejected() -> None:
    with pytest.raises(ValueError, match=r"strictly decrease"):
        sample_lagrange(ExactModel(gaussian()), start(), torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match=r"must not exceed 1"):
        sample_lagrange(ExactModel(gaussian()), start(), torch.tensor([2.0, 0.5]), kind="flow")
