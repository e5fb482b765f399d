"""Tests for epd_core.params."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from epd_core.params import (
    EPDParams,
    interp_sigma,
    logits_from_positions,
    logits_from_scales,
    logits_from_weights,
    positions_from_logits,
    scales_from_logits,
    weights_from_logits,
)

F64 = torch.float64


def _params(**changes: object) -> EPDParams:
    """A 3-step, K=2 table on the grid [10, 3, 1, 0]."""
    gen = torch.Generator().manual_seed(0)
    kw: dict[str, object] = {
        "r_logits": torch.randn(3, 2, generator=gen, dtype=F64),
        "weight_logits": torch.randn(3, 2, generator=gen, dtype=F64),
        "scale_dir_logits": torch.randn(3, 2, generator=gen, dtype=F64),
        "scale_time_logits": torch.randn(3, 2, generator=gen, dtype=F64),
        "sigmas": torch.tensor([10.0, 3.0, 1.0, 0.0], dtype=F64),
        "scale_dir": 0.05,
        "scale_time": 0.1,
    }
    kw.update(changes)
    return EPDParams(**kw)  # type: ignore[arg-type]


# --- pure helpers ---------------------------------------------------------------------------


def test_interp_sigma_geometric_and_linear_rules() -> None:
    # geometric: 1^0.5 * 4^0.5 = 2; r = 0 gives sigma, r = 1 gives sigma_next
    got = interp_sigma(
        torch.tensor(4.0, dtype=F64), torch.tensor(1.0, dtype=F64), torch.tensor([0.5, 0.0, 1.0], dtype=F64)
    )
    torch.testing.assert_close(got, torch.tensor([2.0, 4.0, 1.0], dtype=F64), rtol=0, atol=1e-15)
    # interval ending at 0: tau = (1 - r) sigma = 0.75 * 2 = 1.5
    torch.testing.assert_close(interp_sigma(2.0, 0.0, 0.25), torch.tensor(1.5, dtype=F64))


def test_interp_sigma_gradient_is_finite_on_interval_to_zero() -> None:
    r = torch.tensor([0.3, 0.7], dtype=F64, requires_grad=True)
    tau = interp_sigma(torch.tensor([[2.0], [1.0]], dtype=F64), torch.tensor([[1.0], [0.0]], dtype=F64), r)
    tau.sum().backward()
    assert r.grad is not None and bool(torch.isfinite(r.grad).all())
    # d/dr of (1 - r) * 1 is -1; d/dr of 1^r 2^(1-r) is -ln 2 * 2^(1-r)
    expected = torch.tensor([-math.log(2) * 2**0.7 - 1, -math.log(2) * 2**0.3 - 1], dtype=F64)
    torch.testing.assert_close(r.grad, expected)


def test_transforms_by_hand() -> None:
    assert positions_from_logits(torch.tensor(0.0, dtype=F64)).item() == 0.5
    # softmax([0, ln 3]) = [1/4, 3/4]
    torch.testing.assert_close(
        weights_from_logits(torch.tensor([[0.0, math.log(3)]], dtype=F64)), torch.tensor([[0.25, 0.75]], dtype=F64)
    )
    # c = 0.9 + 0.2 sigmoid(beta/2): beta = 0 -> 1.0, beta = 2 ln 3 -> 0.9 + 0.2 * 0.75 = 1.05
    beta = torch.tensor([0.0, 2 * math.log(3)], dtype=F64)
    torch.testing.assert_close(scales_from_logits(beta, 0.1), torch.tensor([1.0, 1.05], dtype=F64))
    assert bool((scales_from_logits(torch.tensor([-50.0, 7.0], dtype=F64), 0.0) == 1.0).all())  # exactly 1


def test_inverses_round_trip() -> None:
    x = torch.linspace(-6, 6, 13, dtype=F64)
    torch.testing.assert_close(logits_from_positions(positions_from_logits(x)), x, rtol=0, atol=1e-12)
    torch.testing.assert_close(logits_from_scales(scales_from_logits(x, 0.2), 0.2), x, rtol=0, atol=1e-12)
    lam = torch.tensor([[0.2, 0.3, 0.5]], dtype=F64)
    torch.testing.assert_close(weights_from_logits(logits_from_weights(lam)), lam, rtol=0, atol=1e-15)
    assert bool((logits_from_scales(torch.ones(2, 2), 0.0) == 0).all())


def test_logits_from_scales_needs_ones_when_range_is_zero() -> None:
    with pytest.raises(ValueError, match=r"must all be 1 when the scale range s is 0, got 1\.5"):
        logits_from_scales(torch.tensor([1.0, 1.5]), 0.0)


# --- EPDParams ------------------------------------------------------------------------------


def test_properties_shapes_and_dtype() -> None:
    p = EPDParams(
        [[0.0, 1.0]], torch.zeros(1, 2, dtype=torch.float32), [[0.0, 0.0]], [[0.0, 0.0]], torch.tensor([2.0, 0.5])
    )
    assert (p.num_steps, p.num_points) == (1, 2)
    for t in (p.r_logits, p.weight_logits, p.scale_dir_logits, p.scale_time_logits, p.sigmas):
        assert t.dtype == F64 and t.device.type == "cpu"
    for t in (p.r, p.lam, p.c, p.a, p.tau()):
        assert tuple(t.shape) == (1, 2)
    assert bool((p.c == 1).all()) and bool((p.a == 1).all())


def test_tau_matches_hand_computation() -> None:
    p = EPDParams.from_values([[0.5, 0.25], [0.5, 0.5]], [[0.5, 0.5]] * 2, [4.0, 1.0, 0.0])
    # step 0: sqrt(4 * 1) = 2, 1^0.25 4^0.75 = 2.828...; step 1 ends at 0: (1 - 0.5) * 1 = 0.5
    expected = torch.tensor([[2.0, 4**0.75], [0.5, 0.5]], dtype=F64)
    torch.testing.assert_close(p.tau(), expected, rtol=0, atol=1e-15)


def test_from_values_round_trip() -> None:
    r = torch.tensor([[0.1, 0.9], [0.3, 0.6]], dtype=F64)
    lam = torch.tensor([[0.25, 0.75], [0.5, 0.5]], dtype=F64)
    c, a = torch.tensor([[0.97, 1.02], [1.0, 1.04]], dtype=F64), torch.tensor([[1.05, 0.95], [1.0, 1.0]], dtype=F64)
    p = EPDParams.from_values(r, lam, [5.0, 1.0, 0.2], c=c, a=a, scale_dir=0.05, scale_time=0.1, afs=True)
    for got, want in ((p.r, r), (p.lam, lam), (p.c, c), (p.a, a)):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-14)
    assert p.afs is True and p.scale_dir == 0.05 and p.metadata == {}


def test_frozen_replace_and_revalidation() -> None:
    p = _params()
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.afs = True  # type: ignore[misc]
    q = p.replace(afs=True, metadata={"provenance": "test"})
    assert q.afs and not p.afs and torch.equal(q.r_logits, p.r_logits)
    with pytest.raises(ValueError, match=r"scale_dir must be a float in \[0, 1\), got 1\.0"):
        p.replace(scale_dir=1.0)


def test_metadata_is_copied_and_repr_is_short() -> None:
    meta = {"provenance": "unit-test", "nested": {"a": [1, 2]}}
    p = _params(metadata=meta)
    meta["nested"]["a"].append(3)
    assert p.metadata["nested"]["a"] == [1, 2]
    text = repr(p)
    assert "steps=3" in text and "K=2" in text and "provenance='unit-test'" in text and "tensor" not in text


def test_gradients_flow_from_leaf_logits() -> None:
    leaf = torch.zeros(3, 2, dtype=F64, requires_grad=True)
    p = _params(r_logits=leaf)
    assert p.r_logits is leaf
    p.tau().sum().backward()
    assert leaf.grad is not None and bool(torch.isfinite(leaf.grad).all())


def test_equals() -> None:
    p = _params()
    assert p.equals(p.replace()) and not p.equals(p.replace(afs=True))


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"r_logits": torch.zeros(3)}, r"r_logits must have shape \[steps, num_points\].*got \(3,\)"),
        ({"r_logits": torch.zeros(0, 2)}, r"r_logits must have shape \[steps, num_points\] with both >= 1"),
        ({"weight_logits": torch.zeros(3, 3)}, r"weight_logits has shape \(3, 3\) but r_logits has \(3, 2\)"),
        ({"scale_time_logits": torch.full((3, 2), math.nan)}, r"scale_time_logits contains non-finite"),
        ({"sigmas": torch.tensor([3.0, 1.0, 0.0])}, r"sigmas must be 1-D with steps \+ 1 = 4 values, got shape \(3,\)"),
        ({"sigmas": torch.tensor([1.0, 3.0, 5.0, 6.0])}, r"strictly descending.*got \[1\.0, 3\.0"),
        ({"sigmas": torch.tensor([3.0, 1.0, 1.0, 0.0])}, r"strictly descending"),
        ({"sigmas": torch.tensor([3.0, 1.0, 0.0, -1.0])}, r"sigmas must be finite and >= 0"),
        ({"sigmas": torch.tensor([math.inf, 3.0, 1.0, 0.0])}, r"sigmas must be finite and >= 0"),
        ({"scale_dir": -0.1}, r"scale_dir must be a float in \[0, 1\), got -0\.1"),
        ({"scale_time": True}, r"scale_time must be a float in \[0, 1\), got True"),
        ({"r_logits": "abc"}, r"r_logits must be a tensor or nested list of numbers, got str"),
        ({"metadata": {"x": object()}}, r"metadata must be JSON-serialisable"),
        ({"metadata": {"x": math.nan}}, r"metadata must be JSON-serialisable"),
    ],
)
def test_validation_errors(changes: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _params(**changes)


@pytest.mark.parametrize(
    ("changes", "match"),
    [({"afs": 1}, r"afs must be a bool, got 1"), ({"metadata": [("a", 1)]}, r"metadata must be a mapping")],
)
def test_type_errors(changes: dict[str, object], match: str) -> None:
    with pytest.raises(TypeError, match=match):
        _params(**changes)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"r": [[0.0, 0.5]]}, r"r must lie strictly inside \(0, 1\), got min 0\.0"),
        ({"r": [[0.5, 1.0]]}, r"r must lie strictly inside \(0, 1\).*max 1\.0"),
        ({"r": [0.5, 0.5]}, r"r and lam must both have shape \[steps, num_points\]"),
        ({"lam": [[0.0, 1.0]]}, r"lam must be finite and > 0, got min 0\.0"),
        ({"lam": [[0.5, 0.6]]}, r"each lam row must sum to 1, got row sums \[1\.1"),
        ({"c": [[1.0, 1.2]], "scale_dir": 0.1}, r"c must lie strictly inside \(1 - s, 1 \+ s\) = \(0\.9, 1\.1\)"),
        ({"a": [[1.0, 1.01]]}, r"must all be 1 when the scale range s is 0"),
        ({"c": [[1.0]], "scale_dir": 0.1}, r"c must have the shape of r \(1, 2\)"),
        ({"scale_time": 2.0}, r"scale_time must be a float in \[0, 1\)"),
    ],
)
def test_from_values_errors(kw: dict[str, object], match: str) -> None:
    args: dict[str, object] = {"r": [[0.3, 0.7]], "lam": [[0.5, 0.5]], "sigmas": [2.0, 1.0]}
    args.update(kw)
    with pytest.raises(ValueError, match=match):
        EPDParams.from_values(args.pop("r"), args.pop("lam"), args.pop("sigmas"), **args)  # type: ignore[arg-type]
