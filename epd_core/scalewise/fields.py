"""Power-law Gaussian random fields: data whose exact denoiser works at any resolution (other-seeds.md C.7).

A field at latent size (h, w) is real white noise filtered in Fourier space (orthonormal
FFT) so that each coefficient has variance S(nu) = h * w * s(nu), with the physical power
law s(nu) = amplitude * (|nu|^2 + nu0^2)^(-alpha / 2) and nu in cycles per image height.
Then the field at a smaller size is the ideal low-pass subsample of the larger one (the
same pixel statistics at every resolution), and the exact denoiser is a Wiener filter:
    E[x0 | x0 + sigma n] = IFFT( S / (S + sigma^2) * FFT(x) )          (ve)
and, for flow states x = (1 - t) x0 + t n, the same filter on x / (1 - t) at sigma = t / (1 - t).
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class PowerLawField(NamedTuple):
    """s(nu) = amplitude * (|nu|^2 + nu0^2)^(-alpha / 2): alpha 2 is the 1/f^2 power of natural images."""

    alpha: float = 2.0
    nu0: float = 1.0
    amplitude: float = 1.0

    def spectrum(self, h: int, w: int) -> torch.Tensor:
        """S [h, w] (float64): the variance of each orthonormal FFT coefficient at latent size (h, w)."""
        ny = torch.fft.fftfreq(h, dtype=torch.float64) * h
        nx = torch.fft.fftfreq(w, dtype=torch.float64) * h  # cycles per image height: the same units on both axes
        nu2 = ny[:, None] ** 2 + nx[None, :] ** 2
        return h * w * self.amplitude * (nu2 + self.nu0**2) ** (-self.alpha / 2)

    def sample(self, batch: int, channels: int, h: int, w: int, generator: torch.Generator) -> torch.Tensor:
        """Exact draws [batch, channels, h, w], float64."""
        white = torch.randn(batch, channels, h, w, generator=generator, dtype=torch.float64)
        return filtered(white, self.spectrum(h, w).sqrt())

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """E[x0 | x] for x = x0 + sigma n, per image sigma [B] (sigma = 0 returns x)."""
        spec = self.spectrum(*x.shape[-2:]).to(x.device)
        s2 = sigma.to(torch.float64).reshape(-1, 1, 1, 1) ** 2
        return filtered(x.double(), spec / (spec + s2)).to(x.dtype)

    def posterior_sample(self, x: torch.Tensor, sigma: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """A draw of x0 | x for x = x0 + sigma n: the Wiener mean plus noise of variance S sigma^2 / (S + sigma^2).

        An ideal one-step generator (what a distilled student approximates), not a posterior mean.
        """
        spec = self.spectrum(*x.shape[-2:]).to(x.device)
        s2 = sigma.to(torch.float64).reshape(-1, 1, 1, 1) ** 2
        white = torch.randn(x.shape, generator=generator, dtype=torch.float64).to(x.device)
        return (self.denoise(x, sigma).double() + filtered(white, (spec * s2 / (spec + s2)).sqrt())).to(x.dtype)

    def denoise_flow(self, x: torch.Tensor, t: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """E[x0 | x] for x = (1 - t) x0 + t n (at t = 1 the mean, 0); a posterior draw when a generator is given."""
        t = t.to(torch.float64).reshape(-1)
        keep = t < 1
        out = torch.zeros_like(x)
        if generator is not None and not bool(keep.all()):
            out[~keep] = self.sample(int((~keep).sum()), x.shape[1], *x.shape[-2:], generator).to(x)
        if bool(keep.any()):
            tk = t[keep]
            y = x[keep] / (1 - tk).reshape(-1, 1, 1, 1).to(x.dtype)
            s = tk / (1 - tk)
            out[keep] = self.denoise(y, s) if generator is None else self.posterior_sample(y, s, generator)
        return out


def filtered(x: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
    """IFFT(gain * FFT(x)) with orthonormal FFTs over the last two dims; gain symmetric, so the result is real."""
    return torch.fft.ifft2(torch.fft.fft2(x, norm="ortho") * gain, norm="ortho").real


def radial_spectrum(x: torch.Tensor) -> torch.Tensor:
    """Radially averaged power of a square batch [B, C, n, n]: bins |nu| = 1 .. n // 2 (rounded), float64."""
    n = x.shape[-1]
    power = torch.fft.fft2(x.double(), norm="ortho").abs().pow(2).mean(dim=(0, 1))
    f = torch.fft.fftfreq(n, dtype=torch.float64) * n
    radius = (f[:, None] ** 2 + f[None, :] ** 2).sqrt().round().long()
    return torch.stack([power[radius == r].mean() for r in range(1, n // 2 + 1)])


def spectrum_error(x: torch.Tensor, field: PowerLawField) -> float:
    """RMS over radial bins of log10(measured power / the field's expected power): 0 is exact."""
    n = x.shape[-1]
    expected = radial_spectrum_expected(field, n)
    return float(torch.log10(radial_spectrum(x) / expected).pow(2).mean().sqrt())


def radial_spectrum_expected(field: PowerLawField, n: int) -> torch.Tensor:
    """The expected radial_spectrum of exact n x n draws."""
    spec = field.spectrum(n, n)
    f = torch.fft.fftfreq(n, dtype=torch.float64) * n
    radius = (f[:, None] ** 2 + f[None, :] ** 2).sqrt().round().long()
    return torch.stack([spec[radius == r].mean() for r in range(1, n // 2 + 1)])
