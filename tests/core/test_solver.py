"""EPD-Solver / EPD-Plugin on exact denoisers, float64 (docs/engine.md)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from epd_core.mixture import gaussian
from epd_core.params import EPDParams
from epd_core.schedules import get_sigmas_logsnr, get_sigmas_polynomial
from epd_core.solver import prepare_sigmas, sample_epd, sample_epd_plugin
from epd_core.tables import default_table

MEAN, STD = 0.5, 0.5
GAUSS = gaussian(MEAN, STD, dim=4)


class Counting:
    """The k-diffusion denoiser contract around an exact Gaussian, counting calls and rows."""

    def __init__(self, flow: bool = False) -> None:
        self.calls, self.rows, self.flow = 0, [], flow

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.rows.append(x.shape[0])
        return GAUSS.denoise_flow(x, sigma) if self.flow else GAUSS.denoise(x, sigma)


def exact_ve(x: torch.Tensor, sigma: float, sigma_next: float) -> torch.Tensor:
    """Probability-flow ODE of N(m, s^2): x - m scales by sqrt(s^2 + sigma^2)."""
    return MEAN + (x - MEAN) * math.sqrt(STD**2 + sigma_next**2) / math.sqrt(STD**2 + sigma**2)


def start(batch: int = 3, sigma: float = 10.0) -> torch.Tensor:
    return MEAN + torch.randn(batch, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * math.hypot(
        STD, sigma
    )


def table(sigmas: torch.Tensor, r: list[float], lam: list[float], **kw) -> EPDParams:
    steps = len(sigmas) - 1
    return EPDParams.from_values(torch.tensor([r] * steps), torch.tensor([lam] * steps), sigmas, **kw)


def dpm_solver_2(model, x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """DPM-Solver-2 midpoint step as in k-diffusion's sample_dpm_2 (no churn)."""
    for sigma, sigma_next in zip(sigmas[:-1].tolist(), sigmas[1:].tolist()):
        d = (x - model(x, sigma * x.new_ones(len(x)))) / sigma
        sigma_mid = math.exp(0.5 * (math.log(sigma) + math.log(sigma_next)))
        x_2 = x + d * (sigma_mid - sigma)
        d_2 = (x_2 - model(x_2, sigma_mid * x.new_ones(len(x)))) / sigma_mid
        x = x + d_2 * (sigma_next - sigma)
    return x


def test_k1_midpoint_is_dpm_solver_2() -> None:
    # K = 1, r = 1/2, a = c = 1 is exactly DPM-Solver-2's midpoint step (docs/engine.md).
    sigmas = get_sigmas_polynomial(6, 0.05, 10.0)
    x = start()
    ours = sample_epd(Counting(), x, sigmas, params=table(sigmas, [0.5], [1.0]), form="direction")
    torch.testing.assert_close(ours, dpm_solver_2(Counting(), x, sigmas), rtol=0, atol=1e-12)


def test_k1_r_near_zero_is_euler() -> None:
    # r -> 0 puts tau at sigma_n, so the single direction is d_n: Euler, up to O(r).
    sigmas = get_sigmas_polynomial(6, 0.05, 10.0)
    x = start()
    ours = sample_epd(Counting(), x, sigmas, params=table(sigmas, [1e-9], [1.0]), form="direction")
    euler = x
    for sigma, sigma_next in zip(sigmas[:-1].tolist(), sigmas[1:].tolist()):
        euler = euler + (sigma_next - sigma) * (euler - GAUSS.denoise(euler, sigma)) / sigma
    torch.testing.assert_close(ours, euler, rtol=0, atol=1e-7)


@pytest.mark.parametrize("form", ["direction", "data"])
@pytest.mark.parametrize("num_points", [1, 2, 3])
def test_batched_equals_sequential_and_chunked(form: str, num_points: int) -> None:
    sigmas = get_sigmas_polynomial(5, 0.05, 10.0)
    x = start()
    runs = [
        sample_epd(Counting(), x, sigmas, num_points=num_points, form=form, parallel=mode, chunk_size=chunk)
        for mode, chunk in (("batched", 0), ("sequential", 0), ("batched", 2))
    ]
    for other in runs[1:]:
        torch.testing.assert_close(other, runs[0], rtol=0, atol=1e-12)


@pytest.mark.parametrize("num_points", [1, 2, 4])
def test_two_rounds_per_step_whatever_k(num_points: int) -> None:
    sigmas = get_sigmas_polynomial(5, 0.05, 10.0)  # 4 steps
    model = Counting()
    sample_epd(model, start(batch=3), sigmas, num_points=num_points, afs=True)
    # AFS skips the first anchor call: 2 * 4 - 1 rounds; each point call holds K * B rows.
    assert model.calls == 7
    assert sorted(set(model.rows)) == sorted({3, 3 * num_points})


def test_sequential_makes_k_calls_per_step() -> None:
    model = Counting()
    sample_epd(model, start(), get_sigmas_polynomial(5, 0.05, 10.0), num_points=3, parallel="sequential")
    assert model.calls == 4 * (1 + 3)


def errors_at(steps_list: list[int], form: str, max_order: int = 1) -> list[float]:
    out = []
    for steps in steps_list:
        sigmas = get_sigmas_logsnr(steps + 1, 0.1, 10.0)
        x = start(sigma=10.0)
        if max_order == 1:
            y = sample_epd(Counting(), x, sigmas, form=form)
        else:
            y = sample_epd_plugin(Counting(), x, sigmas, form=form, max_order=max_order)
        out.append((y - exact_ve(x, 10.0, 0.1)).abs().max().item())
    return out


@pytest.mark.parametrize("form", ["direction", "data"])
def test_second_order_convergence(form: str) -> None:
    # Halving the step size divides the error of a second-order method by about 4.
    errs = errors_at([8, 16, 32], form)
    orders = [math.log2(a / b) for a, b in itertools.pairwise(errs)]
    assert min(orders) > 1.8, (errs, orders)


def test_plugin_converges_and_order1_is_epd() -> None:
    sigmas = get_sigmas_logsnr(9, 0.1, 10.0)
    x = start()
    torch.testing.assert_close(
        sample_epd_plugin(Counting(), x, sigmas, max_order=1), sample_epd(Counting(), x, sigmas), rtol=0, atol=0
    )
    errs = errors_at([8, 16, 32], "direction", max_order=3)
    assert errs[2] < errs[1] < errs[0]


@pytest.mark.parametrize("form", ["direction", "data"])
def test_flow_parameterisation_converges_to_exact_solution(form: str) -> None:
    # Flow x_t = (1-t) x0 + t eps is VE on y = x / (1 - t) with sigma = t / (1 - t).
    t0, t1 = 0.9, 0.1
    x = start(sigma=t0 / (1 - t0)) * (1 - t0)
    exact = exact_ve(x / (1 - t0), t0 / (1 - t0), t1 / (1 - t1)) * (1 - t1)
    errs = []
    for steps in (20, 40):
        sigmas = torch.linspace(t0, t1, steps + 1, dtype=torch.float64)
        errs.append((sample_epd(Counting(flow=True), x, sigmas, kind="flow", form=form) - exact).abs().max().item())
    assert errs[1] < 1e-3
    assert errs[0] / errs[1] > 3.0, errs  # second order: about 4


@pytest.mark.parametrize("kind,flow", [("ve", False), ("flow", True)])
def test_afs_first_step_close_to_exact_at_high_noise(kind: str, flow: bool) -> None:
    sigma_max = 80.0 if kind == "ve" else 1.0
    sigmas = torch.tensor([sigma_max, sigma_max * 0.5, sigma_max * 0.25], dtype=torch.float64)
    x = start(sigma=sigma_max if kind == "ve" else 1.0)
    with_afs = sample_epd(Counting(flow), x, sigmas, kind=kind, afs=True)
    without = sample_epd(Counting(flow), x, sigmas, kind=kind, afs=False)
    # AFS assumes D(x, sigma_max) = 0; the data mean is 0.5, so the steps differ by O(mean * h / sigma).
    assert (with_afs - without).abs().max() < 0.5
    assert torch.isfinite(with_afs).all()


@pytest.mark.parametrize("form", ["direction", "data"])
def test_step_to_sigma_zero_is_finite_and_accurate(form: str) -> None:
    sigmas = torch.cat([get_sigmas_logsnr(12, 0.05, 10.0), torch.zeros(1, dtype=torch.float64)])
    x = start()
    y = sample_epd(Counting(), x, sigmas, form=form, tail="keep")
    assert torch.isfinite(y).all()
    assert (y - exact_ve(x, 10.0, 0.0)).abs().max() < 0.05


def test_prepare_sigmas_tail_rules() -> None:
    sigmas = torch.tensor([10.0, 5.0, 1.0, 0.1, 0.0])
    assert prepare_sigmas(sigmas, "drop").tolist() == pytest.approx([10.0, 5.0, 1.0, 0.0])
    assert prepare_sigmas(sigmas, "stop").tolist() == pytest.approx([10.0, 5.0, 1.0, 0.1])
    assert prepare_sigmas(sigmas, "keep").tolist() == pytest.approx(sigmas.tolist())
    assert prepare_sigmas(sigmas[:-1], "drop").tolist() == pytest.approx(sigmas[:-1].tolist())
    with pytest.raises(ValueError, match="tail='cut' is not one of"):
        prepare_sigmas(sigmas, "cut")


def test_callback_once_per_step_at_batch_b() -> None:
    seen = []
    sample_epd(Counting(), start(batch=2), get_sigmas_polynomial(5, 0.05, 10.0), num_points=3, callback=seen.append)
    assert [s["i"] for s in seen] == [0, 1, 2, 3]
    assert all(s["denoised"].shape == (2, 4) and s["x"].shape == (2, 4) for s in seen)


def test_table_step_count_mismatch_is_a_clear_error() -> None:
    sigmas = get_sigmas_polynomial(5, 0.05, 10.0)
    with pytest.raises(ValueError, match="EPD table has 4 steps but the sigmas give 6"):
        sample_epd(Counting(), start(), get_sigmas_polynomial(7, 0.05, 10.0), params=default_table(sigmas))


def test_table_grid_with_trailing_zero_drops_penultimate_for_default_table() -> None:
    model = Counting()
    sample_epd(model, start(), torch.tensor([10.0, 3.0, 1.0, 0.1, 0.0], dtype=torch.float64), tail="drop")
    assert model.calls == 2 * 3  # 10 -> 3 -> 1 -> 0 after dropping 0.1
    model = Counting()
    sample_epd(model, start(), torch.tensor([10.0, 3.0, 1.0, 0.1, 0.0], dtype=torch.float64))
    assert model.calls == 2 * 4  # the default keeps the grid as given


def test_bad_options_are_named() -> None:
    with pytest.raises(ValueError, match="form='euler' is not one of"):
        sample_epd(Counting(), start(), get_sigmas_polynomial(3, 0.1, 1.0), form="euler")
    with pytest.raises(ValueError, match="max_order=5 must be between 1 and 4"):
        sample_epd_plugin(Counting(), start(), get_sigmas_polynomial(3, 0.1, 1.0), max_order=5)


def test_dtype_follows_the_model_input() -> None:
    x = start().float()
    y = sample_epd(GAUSS.denoise, x, get_sigmas_polynomial(4, 0.1, 10.0))
    assert y.dtype == torch.float32


def test_a_table_is_applied_to_the_sigmas_it_is_given() -> None:
    # Positions are fractions of each step: a table made on grid A and run on grid B must equal
    # the same positions and weights built on grid B.
    grid_a, grid_b = get_sigmas_polynomial(5, 0.05, 10.0), get_sigmas_logsnr(5, 0.05, 10.0)
    r, lam = [0.2, 0.7], [0.3, 0.7]
    x = start()
    on_b = sample_epd(Counting(), x, grid_b, params=table(grid_a, r, lam))
    torch.testing.assert_close(on_b, sample_epd(Counting(), x, grid_b, params=table(grid_b, r, lam)), rtol=0, atol=0)
