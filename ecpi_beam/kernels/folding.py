"""Diffuse spectra folded through the CALDB response into a PI band (docs/science.md "Backgrounds").

The predicted count rate of a diffuse component in band [c_lo, c_hi] (PI channels, inclusive),
per cm2 of detector and per steradian of projected solid angle seen through open mask, is

    rate = sum_i S(E_i) dE_i  ARF_i / (A_det f_open)  sum_{c in band} RMF[i, c]

with S in ph cm-2 s-1 sr-1 keV-1. The ARF is the on-axis effective area of the whole detector
with the mask open fraction in (CALDB ECL-RSP-ARF), so dividing by the geometric area A_det x
f_open (1024 cm2 x 0.4) leaves the detection efficiency per unit area that a BUBE template
(projected solid angle x pixel efficiency) multiplies.

Spectra (E in keV):
- CXB, Moretti et al. 2009 (A&A 493 501): C / ((E/E_B)^G1 + (E/E_B)^G2), C = 0.109,
  G1 = 1.40, G2 = 2.88, E_B = 29.0 keV.
- Earth albedo, Ajello et al. 2008 (ApJ 689 666): 0.0148 / ((E/33.7)^-5 + (E/33.7)^1.72).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ecpi_beam import instrument


@dataclass(frozen=True)
class SmoothlyBrokenPowerLaw:
    """norm / ((E/e_break)^index_low + (E/e_break)^index_high), ph cm-2 s-1 sr-1 keV-1."""

    norm: float
    index_low: float
    index_high: float
    e_break_kev: float
    reference: str

    def __call__(self, energy_kev):
        scaled = np.asarray(energy_kev, dtype=float) / self.e_break_kev
        return self.norm / (scaled ** self.index_low + scaled ** self.index_high)


MORETTI_2009_CXB = SmoothlyBrokenPowerLaw(0.109, 1.40, 2.88, 29.0, "Moretti et al. 2009")
AJELLO_2008_ALBEDO = SmoothlyBrokenPowerLaw(0.0148, -5.0, 1.72, 33.7, "Ajello et al. 2008")


def band_rate_per_area_sr(spectrum, arf, rmf, band) -> float:
    """Predicted counts s-1 cm-2 sr-1 (projected) of `spectrum` in PI band (lo, hi) inclusive."""
    lo, hi = int(band[0]), int(band[1])
    energy_lo, energy_hi = np.asarray(rmf.energ_lo, float), np.asarray(rmf.energ_hi, float)
    centre = 0.5 * (energy_lo + energy_hi)
    # the ARF may sit on its own energy grid: its area at the RMF's energies
    arf_centre = 0.5 * (np.asarray(arf.energ_lo, float) + np.asarray(arf.energ_hi, float))
    area = np.interp(centre, arf_centre, np.asarray(arf.specresp, float), left=0.0, right=0.0)
    efficiency = area / (instrument.DETECTOR_AREA_CM2 * instrument.MASK_OPEN_FRACTION)
    in_band = np.asarray(rmf.matrix, float)[:, lo:hi + 1].sum(axis=1)
    photons = spectrum(centre) * (energy_hi - energy_lo)
    return float(np.sum(photons * efficiency * in_band))
