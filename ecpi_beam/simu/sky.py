"""Photon spectra and light curves of the simulated sky (SCIENCE 'Backgrounds', 'Typical sources').

Spectra are photon spectra dN/dE in ph cm-2 s-1 keV-1 (point sources) or ph cm-2 s-1 sr-1 keV-1
(diffuse), E in keV. Each is folded with the detector efficiency into an `EnergySampler` that
draws true photon energies and knows how its counts spread over PI bands.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np
from scipy.special import ndtr

from ecpi_beam import instrument
from ecpi_beam.simu.scenario import Grb

# Energy grid on which spectra are folded and sampled: wide enough that redistribution from
# outside 4-150 keV is included.
ENERGY_GRID_EDGES_KEV = np.geomspace(1.0, 300.0, 4001)
N_QUANTILES = 2**16

# Broken power laws C / ((E/E_B)**G1 + (E/E_B)**G2) (SCIENCE 'Backgrounds')
CXB_MODELS = {
    "moretti2009": dict(norm=0.109, g1=1.40, g2=2.88, e_break=29.0),
    "ajello2008": dict(norm=0.1015, g1=1.32, g2=2.88, e_break=29.99),
}


def cxb_spectrum(energy_kev, model: str = "moretti2009"):
    p = CXB_MODELS[model]
    x = np.asarray(energy_kev, float) / p["e_break"]
    return p["norm"] / (x ** p["g1"] + x ** p["g2"])


def albedo_spectrum(energy_kev):
    """Earth albedo, Ajello et al. 2008: 0.0148 / ((E/33.7)**-5 + (E/33.7)**1.72)."""
    x = np.asarray(energy_kev, float) / 33.7
    return 0.0148 / (x ** -5.0 + x ** 1.72)


def power_law(energy_kev, norm, index):
    return norm * np.asarray(energy_kev, float) ** -index


def _band_shape(energy_kev, alpha, beta, epeak):
    """Band et al. 1993 function, unnormalised, pivot 100 keV."""
    e = np.asarray(energy_kev, float)
    e0 = epeak / (2.0 + alpha)
    e_break = (alpha - beta) * e0
    low = (e / 100.0) ** alpha * np.exp(-e / e0)
    high = (e_break / 100.0) ** (alpha - beta) * np.exp(beta - alpha) * (e / 100.0) ** beta
    return np.where(e < e_break, low, high)


def _cpl_shape(energy_kev, alpha, epeak):
    e = np.asarray(energy_kev, float)
    return (e / 100.0) ** alpha * np.exp(-e * (2.0 + alpha) / epeak)


def grb_spectrum(grb: Grb):
    """Photon spectrum at the light-curve peak, normalised to peak_flux in flux_band."""
    if grb.spectrum == "band":
        shape = partial(_band_shape, alpha=grb.alpha, beta=grb.beta, epeak=grb.epeak)
    else:
        shape = partial(_cpl_shape, alpha=grb.alpha, epeak=grb.epeak)
    e = np.geomspace(*grb.flux_band, 2001)
    norm = grb.peak_flux / np.trapezoid(shape(e), e)
    return lambda energy_kev: norm * shape(energy_kev)


def fred_integral(grb: Grb, t_lo, t_hi) -> float:
    """Integral over [t_lo, t_hi] (s after tstart) of the FRED profile (1 at the peak)."""
    rise_hi, decay_lo = min(t_hi, grb.t_peak), max(t_lo, grb.t_peak)
    total = 0.0
    if t_lo < grb.t_peak:
        total += grb.rise * (np.exp((rise_hi - grb.t_peak) / grb.rise)
                             - np.exp((t_lo - grb.t_peak) / grb.rise))
    if t_hi > grb.t_peak:
        total += grb.decay * (np.exp(-(decay_lo - grb.t_peak) / grb.decay)
                              - np.exp(-(t_hi - grb.t_peak) / grb.decay))
    return float(total)


def fred_profile(grb: Grb, t):
    t = np.asarray(t, float)
    return np.where(t < grb.t_peak, np.exp(np.minimum(t - grb.t_peak, 0.0) / grb.rise),
                    np.exp(-np.maximum(t - grb.t_peak, 0.0) / grb.decay))


def sample_fred_times(grb: Grb, t_lo, t_hi, n, rng) -> np.ndarray:
    """n arrival times in [t_lo, t_hi) (s after tstart) following the FRED profile."""
    grid = np.linspace(t_lo, t_hi, 4097)
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (fred_profile(grb, grid[1:])
                                                  + fred_profile(grb, grid[:-1])))])
    return np.interp(rng.random(n) * cdf[-1], cdf, grid)


@dataclass(frozen=True)
class EnergySampler:
    """A spectrum folded with the detector efficiency, on ENERGY_GRID_EDGES_KEV.

    folded_integral: integral of spectrum x efficiency (detected ph per unit of the spectrum's
    area and solid angle); band_fractions: fraction of the detected photons whose measured
    energy (after redistribution, above the 4 keV threshold) falls in each band.
    """
    quantiles: np.ndarray  # energies (keV) at probabilities 0, 1/N, ..., 1
    folded_integral: float
    band_fractions: np.ndarray

    @classmethod
    def fold(cls, spectrum, efficiency, bands=instrument.DEFAULT_BANDS):
        edges = ENERGY_GRID_EDGES_KEV
        centre = np.sqrt(edges[1:] * edges[:-1])
        weight = spectrum(centre) * efficiency(centre) * np.diff(edges)
        total = float(weight.sum())
        cdf = np.concatenate([[0.0], np.cumsum(weight)])
        cdf = cdf / cdf[-1] if total > 0 else np.linspace(0.0, 1.0, len(edges))
        # a table lookup per photon is ~10x faster than a binary search per photon
        probability = np.linspace(0.0, 1.0, N_QUANTILES + 1)
        upper = np.searchsorted(cdf, probability, side="left")  # cdf[upper-1] < p <= cdf[upper]
        upper[0] = np.searchsorted(cdf, 0.0, side="right")      # p = 0: first bin with weight
        upper = np.clip(upper, 1, len(edges) - 1)
        lo_cdf, hi_cdf = cdf[upper - 1], cdf[upper]
        frac = np.clip((probability - lo_cdf) / np.maximum(hi_cdf - lo_cdf, 1e-300), 0.0, 1.0)
        quantiles = edges[upper - 1] * (edges[upper] / edges[upper - 1]) ** frac
        sigma = instrument.sigma_kev(centre)
        fractions = []
        for band in bands:
            lo, hi = instrument.band_energy_range(band)
            lo = max(lo, instrument.LOW_THRESHOLD_KEV)
            p = ndtr((hi - centre) / sigma) - ndtr((lo - centre) / sigma)
            fractions.append(float((weight * p).sum() / total) if total > 0 else 0.0)
        return cls(quantiles, total, np.array(fractions))

    def draw(self, n, rng) -> np.ndarray:
        """True photon energies (keV): inverse CDF through a table of quantiles."""
        position = rng.random(n) * (len(self.quantiles) - 1)
        k = position.astype(np.int64)
        k = np.minimum(k, len(self.quantiles) - 2)
        lo, hi = self.quantiles[k], self.quantiles[k + 1]
        return lo * (hi / lo) ** (position - k)  # log interpolation between quantiles


def flat_band_fractions(e_lo, e_hi, bands=instrument.DEFAULT_BANDS) -> np.ndarray:
    """Fraction of a flat measured-energy spectrum over [e_lo, e_hi] keV in each band."""
    out = []
    for band in bands:
        lo, hi = instrument.band_energy_range(band)
        lo = max(lo, instrument.LOW_THRESHOLD_KEV)
        out.append(max(0.0, min(hi, e_hi) - max(lo, e_lo)) / (e_hi - e_lo))
    return np.array(out)
