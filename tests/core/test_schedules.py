"""Tests for epd_core.schedules."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from epd_core.schedules import (
    SCHEDULE_NAMES,
    append_zero,
    drop_penultimate,
    get_sigmas,
    get_sigmas_discrete,
    get_sigmas_flowmatch,
    get_sigmas_logsnr,
    get_sigmas_polynomial,
    get_sigmas_time_uniform,
    vp_discrete_sigmas,
)

_TABLE_NAMES = (
    "sd15-start", "sd15-distilled", "sd15-best",
    "sd3-512-start", "sd3-512-distilled", "sd3-512-best",
    "sd3-1024-start", "sd3-1024-distilled", "sd3-1024-best",
    "flux-start", "flux-best",
)  # fmt: skip


@pytest.fixture(scope="module")
def published(reference_tables: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["name"]: t for t in reference_tables["tables"]}


@pytest.fixture(scope="module")
def sd15_table() -> torch.Tensor:
    return vp_discrete_sigmas()


def _grid_for(table: dict[str, Any], sd15: torch.Tensor) -> torch.Tensor:
    """Rebuild a published grid from its metadata (§3.4); SD3's shift 3 comes from its scheduler config."""
    meta, n = table["metadata"], table["sigma_grid"]["num_values"]
    if meta["schedule_type"] == "discrete":
        return get_sigmas("discrete", n, model_sigmas=sd15, rho=meta["schedule_rho"])
    if meta.get("flowmatch_mu") is not None:
        return get_sigmas("flowmatch", n, mu=meta["flowmatch_mu"])
    return get_sigmas("flowmatch", n, shift=3.0)


def _assert_descending(s: torch.Tensor) -> None:
    assert s.dtype == torch.float64 and s.device.type == "cpu" and s.ndim == 1
    assert bool((s[1:] < s[:-1]).all()), s


# --- published grids --------------------------------------------------------------


@pytest.mark.parametrize("name", _TABLE_NAMES)
def test_published_grid_reproduced(name: str, published: dict, sd15_table: torch.Tensor) -> None:
    # The JSON rounds to 7 significant digits (<= 5e-7 relative); 1e-5 leaves room.
    expected = torch.tensor(published[name]["sigma_grid"]["values"], dtype=torch.float64)
    got = _grid_for(published[name], sd15_table)
    _assert_descending(got)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=0.0)


def test_every_published_table_is_covered(published: dict) -> None:
    assert set(published) == set(_TABLE_NAMES)


def test_discrete_from_comfy_float32_table(published: dict) -> None:
    # ComfyUI keeps model_sampling.sigmas in float32; that alone stays well inside 1e-5.
    table = vp_discrete_sigmas().float()
    before = table.clone()
    expected = torch.tensor(published["sd15-start"]["sigma_grid"]["values"], dtype=torch.float64)
    torch.testing.assert_close(get_sigmas_discrete(11, table), expected, rtol=1e-5, atol=0.0)
    assert torch.equal(table, before)


@pytest.mark.parametrize(
    ("beta_start", "beta_end", "lo", "hi"),
    [(0.00085, 0.012, 0.02917, 14.61), (0.0015, 0.0195, 0.03876, 83.82)],  # SD1.5, LSUN-LDM (§3.4 table)
)
def test_vp_discrete_sigma_range(beta_start: float, beta_end: float, lo: float, hi: float) -> None:
    s = vp_discrete_sigmas(beta_start, beta_end)
    assert s.shape == (1000,) and bool((s[1:] > s[:-1]).all())
    assert s[0].item() == pytest.approx(lo, abs=1e-5) and s[-1].item() == pytest.approx(hi, abs=5e-3)


def test_discrete_endpoints_are_model_sigmas(sd15_table: torch.Tensor) -> None:
    # t = 1 is knot j = 999, t = 1e-3 is knot j = 0, so the grid spans the whole table.
    for rho in (1.0, 2.0):
        s = get_sigmas_discrete(7, sd15_table, rho=rho)
        _assert_descending(s)
        torch.testing.assert_close(s[[0, -1]], sd15_table[[-1, 0]], rtol=1e-12, atol=0.0)


# --- EDM time_uniform (§3.4 printed values) ------------------------------------------

# The spec prints upstream's float32 evaluation (e.g. 6.95028 in float32 vs 6.95024 in
# float64, 0.0020132 vs 0.002 at the end), so allow one unit of the last printed digit.
_EDM_TIME_UNIFORM = {
    3: ["80", "2.8237", "0.0020"],
    4: ["80", "6.9503", "1.2867", "0.0020"],
    5: ["80", "11.734", "2.8237", "0.8565", "0.0020"],
    6: ["80", "16.506", "4.7464", "1.7541", "0.6502", "0.0020"],
}


@pytest.mark.parametrize("n", sorted(_EDM_TIME_UNIFORM))
def test_time_uniform_edm_values(n: int) -> None:
    got = get_sigmas_time_uniform(n, 0.002, 80.0)
    _assert_descending(got)
    for value, text in zip(got.tolist(), _EDM_TIME_UNIFORM[n], strict=True):
        ulp = 10.0 ** -len(text.partition(".")[2])  # kept as text so "0.0020" keeps its 4 decimals
        assert abs(value - float(text)) <= ulp, (n, value, text)
    assert got[0].item() == pytest.approx(80.0, rel=1e-12) and got[-1].item() == pytest.approx(0.002, rel=1e-9)


# --- polynomial / logsnr / flowmatch ------------------------------------------------


def test_polynomial_endpoints_and_midpoint() -> None:
    s = get_sigmas_polynomial(3, 0.002, 80.0)
    _assert_descending(s)
    mid = ((80.0 ** (1 / 7) + 0.002 ** (1 / 7)) / 2) ** 7  # i/(N-1) = 1/2 in rho-space
    torch.testing.assert_close(s, torch.tensor([80.0, mid, 0.002], dtype=torch.float64), rtol=1e-12, atol=0.0)
    lin = get_sigmas_polynomial(5, 1.0, 5.0, rho=1.0)  # rho = 1 is a plain linspace
    torch.testing.assert_close(lin, torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0], dtype=torch.float64))


def test_logsnr_is_geometric() -> None:
    s = get_sigmas_logsnr(3, 0.002, 80.0)
    _assert_descending(s)
    # exp(mean(ln 80, ln 0.002)) = sqrt(80 * 0.002) = 0.4
    torch.testing.assert_close(s, torch.tensor([80.0, 0.4, 0.002], dtype=torch.float64), rtol=1e-12, atol=0.0)
    ratios = get_sigmas_logsnr(8, 0.03, 14.6)
    torch.testing.assert_close(ratios[1:] / ratios[:-1], (ratios[1] / ratios[0]).expand(7))


def test_flowmatch_unshifted_and_identities() -> None:
    plain = torch.linspace(1.0, 1e-3, 6, dtype=torch.float64)
    torch.testing.assert_close(get_sigmas_flowmatch(6), plain, rtol=1e-12, atol=0.0)
    torch.testing.assert_close(get_sigmas_flowmatch(6, shift=1.0), plain, rtol=1e-12, atol=0.0)
    # e^0 / (e^0 + 1/s - 1) = s
    torch.testing.assert_close(get_sigmas_flowmatch(6, mu=0.0), plain, rtol=1e-12, atol=0.0)
    # SD3 end point S(S(1e-3)) with S(s) = 3s / (1 + 2s): 0.003/1.002 -> 0.0089285714...
    s1 = 3e-3 / 1.002
    assert get_sigmas_flowmatch(11, shift=3.0)[-1].item() == pytest.approx(3 * s1 / (1 + 2 * s1), rel=1e-12)


def test_append_zero_and_drop_penultimate() -> None:
    s = get_sigmas_logsnr(4, 0.1, 10.0)
    z = append_zero(s)
    assert z.shape == (5,) and z[-1].item() == 0.0 and torch.equal(z[:-1], s) and z.dtype == torch.float64
    d = drop_penultimate(z)
    assert torch.equal(d, torch.cat([s[:-1], s.new_zeros(1)]))


# --- validation ------------------------------------------------------------------------


def test_unknown_schedule_lists_valid_names() -> None:
    with pytest.raises(ValueError, match=r"unknown schedule 'karras'.*polynomial.*flowmatch"):
        get_sigmas("karras", 5, sigma_min=0.1, sigma_max=10.0)
    assert set(SCHEDULE_NAMES) == {"polynomial", "logsnr", "time_uniform", "discrete", "flowmatch", "flow_uniform"}


def test_unknown_argument_for_schedule() -> None:
    with pytest.raises(ValueError, match=r"'logsnr' got unknown arguments \['rho'\]"):
        get_sigmas("logsnr", 5, sigma_min=0.1, sigma_max=10.0, rho=7.0)


@pytest.mark.parametrize(
    ("call", "pattern"),
    [
        (lambda: get_sigmas_polynomial(1, 0.1, 10.0), r"n must be an int >= 2.*got 1"),
        (lambda: get_sigmas_logsnr(4.0, 0.1, 10.0), r"n must be an int >= 2.*got 4.0"),
        (lambda: get_sigmas_logsnr(True, 0.1, 10.0), r"n must be an int >= 2.*got True"),
        (lambda: get_sigmas_polynomial(5, 10.0, 0.1), r"0 < sigma_min < sigma_max.*sigma_min=10.0"),
        (lambda: get_sigmas_logsnr(5, 0.0, 10.0), r"0 < sigma_min < sigma_max.*sigma_min=0.0"),
        (lambda: get_sigmas_time_uniform(5, 0.1, math.inf), r"sigma_max=inf"),
        (lambda: get_sigmas_polynomial(5, 0.1, 10.0, rho=0.0), r"rho must be finite and > 0, got 0.0"),
        (lambda: get_sigmas_time_uniform(5, 0.1, 10.0, eps_s=1.0), r"eps_s must lie in \(0, 1\), got 1.0"),
        (lambda: get_sigmas_discrete(5, vp_discrete_sigmas(), t_min=0.0), r"t_min must lie in \(0, 1\)"),
        (lambda: get_sigmas_discrete(5, vp_discrete_sigmas().flip(0)), r"strictly ascending"),
        (lambda: get_sigmas_discrete(5, torch.ones(2, 3)), r"1-D with >= 2 entries, got shape \(2, 3\)"),
        (lambda: get_sigmas_discrete(5, torch.tensor([0.0, 1.0])), r"finite and > 0"),
        (lambda: get_sigmas_flowmatch(5, shift=3.0, mu=1.15), r"either shift \(3.0.*or mu \(1.15"),
        (lambda: get_sigmas_flowmatch(5, shift=0.0), r"shift must be finite and > 0, got 0.0"),
        (lambda: get_sigmas_flowmatch(5, mu=math.nan), r"mu must be finite, got nan"),
        (lambda: get_sigmas_flowmatch(5, sigma_min_t=1.5), r"sigma_min_t must lie in \(0, 1\), got 1.5"),
        (lambda: vp_discrete_sigmas(schedule="cosine"), r"unknown beta schedule 'cosine'.*scaled_linear"),
        (lambda: vp_discrete_sigmas(steps=1), r"steps must be an int >= 2, got 1"),
        (lambda: vp_discrete_sigmas(0.02, 0.01), r"0 < beta_start < beta_end < 1, got 0.02, 0.01"),
        (lambda: drop_penultimate(torch.tensor([1.0, 0.0])), r"1-D grid of >= 3 sigmas, got shape \(2,\)"),
    ],
)
def test_bad_arguments_raise(call: Any, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        call()


def test_flow_uniform_is_uniform_in_shifted_time() -> None:
    from epd_core.schedules import get_sigmas_flow_uniform

    plain = get_sigmas_flow_uniform(4)
    torch.testing.assert_close(plain, torch.tensor([1.0, 0.75, 0.5, 0.25], dtype=torch.float64), rtol=0, atol=1e-15)
    sd3 = get_sigmas_flow_uniform(3, shift=3.0)
    torch.testing.assert_close(sd3, torch.tensor([1.0, 6 / 7, 0.6], dtype=torch.float64), rtol=1e-12, atol=0)
    assert get_sigmas_flow_uniform(1, mu=1.15).tolist() == [1.0]
    with pytest.raises(ValueError, match="either shift"):
        get_sigmas_flow_uniform(3, shift=3.0, mu=1.0)
    with pytest.raises(ValueError, match="whole number >= 1"):
        get_sigmas_flow_uniform(0)
