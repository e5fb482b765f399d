"""The scale lists, compute proxy and SwD sigmas of the per-family scale-wise benchmark (issue 16 C)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from bench.fmnist.bench_families_scalewise import PATCH, SCALE_LISTS, SIDE, cost_of, sizes_of, swd_sigmas
from bench.fmnist.unet import UNet, UNetConfig


def test_every_scale_list_fits_the_unet_and_ends_at_full_size():
    for steps, factors in SCALE_LISTS.items():
        sizes = sizes_of(factors)
        assert len(sizes) == steps and sizes[-1] == (SIDE, SIDE)
        assert all(h % PATCH == 0 and h == w for h, w in sizes) and sizes == sorted(sizes)
    assert [h for h, _ in sizes_of(SCALE_LISTS[3])] == [16, 24, 28]  # 14 -> 21 -> 28, rounded up to 4
    assert [h for h, _ in sizes_of(SCALE_LISTS[6])] == [8, 12, 16, 20, 24, 28]
    # hand count: (16^2 + 20^2 + 24^2 + 28^2) / 28^2 = (256 + 400 + 576 + 784) / 784
    assert cost_of(sizes_of(SCALE_LISTS[4])) == pytest.approx(2016 / 784)


def test_the_unet_runs_at_every_scale_of_the_lists_and_not_at_the_unrounded_sides():
    # three levels as the trained UNets (28 -> 14 -> 7): sides must be multiples of 4
    net = UNet(UNetConfig(channels=(8, 16, 32), emb_dim=16, groups=4, attn_bottleneck=False)).eval()
    run = lambda side: net(torch.zeros(1, 1, side, side), torch.zeros(1), torch.zeros(1, dtype=torch.long))  # noqa: E731
    for side in {h for factors in SCALE_LISTS.values() for h, _ in sizes_of(factors)}:
        assert run(side).shape == (1, 1, side, side)
    with pytest.raises(RuntimeError):
        run(14)  # SwD's unrounded half scale


def test_swd_sigmas_are_flow_t_on_flow_models_and_t_over_1_minus_t_elsewhere():
    flow, edm = SimpleNamespace(sigma_max=1.0), SimpleNamespace(sigma_max=80.0)
    assert swd_sigmas(flow, 4).tolist() == [1.0, 0.8959, 0.7371, 0.6022, 0.0]
    ve = swd_sigmas(edm, 4)
    assert float(ve[0]) == 80.0 and float(ve[-1]) == 0.0
    assert float(ve[1]) == pytest.approx(0.8959 / (1 - 0.8959)) and bool((ve[1:] < ve[:-1]).all())
