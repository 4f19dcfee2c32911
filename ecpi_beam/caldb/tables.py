"""In-memory calibration tables (ICD section 3), as the `Caldb` reader returns them.

Arrays are read-only: the reader caches one copy per worker and shares it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STATUS_GOOD, STATUS_NOISY, STATUS_DEAD = 0, 1, 2


def frozen_array(values, dtype=None) -> np.ndarray:
    array = np.array(values, dtype=dtype)  # a private copy, then locked
    array.setflags(write=False)
    return array


@dataclass(frozen=True)
class PixelCalibration:
    """ECL-PIX-CAL as (80, 80) arrays indexed [IDET, JDET]: E = gain * PHA + offset (keV)."""
    gain: np.ndarray    # keV / ADU
    offset: np.ndarray  # keV
    status: np.ndarray  # 0 good, 1 noisy, 2 dead
    effic: np.ndarray   # relative efficiency (0 for dead pixels)

    @property
    def good(self) -> np.ndarray:
        return self.status == STATUS_GOOD

    @property
    def imaging_efficiency(self) -> np.ndarray:
        """The efficiency of the good pixels, 0 on the noisy and dead ones (what is imaged)."""
        return np.where(self.good, self.effic, 0.0)


@dataclass(frozen=True)
class Rmf:
    """ECL-RSP-RMF: matrix[i, c] = probability that a photon of energy bin i lands in PI c."""
    energ_lo: np.ndarray  # (n_e,) keV
    energ_hi: np.ndarray
    matrix: np.ndarray    # (n_e, 1500)
    e_min: np.ndarray     # (1500,) keV, EBOUNDS
    e_max: np.ndarray


@dataclass(frozen=True)
class Arf:
    """ECL-RSP-ARF: on-axis effective area (cm2) of the whole detector, mask open fraction in."""
    energ_lo: np.ndarray
    energ_hi: np.ndarray
    specresp: np.ndarray  # cm2


@dataclass(frozen=True)
class Irf:
    """ECL-RSP-IRF: effective-area factor against off-axis angle, relative to on axis."""
    theta_deg: np.ndarray   # (n_t,)
    energy_kev: np.ndarray  # (n_e,)
    factor: np.ndarray      # (n_t, n_e), factor[0, :] == 1

    def factor_at(self, theta_deg, energy_kev):
        """Bilinear interpolation, inputs broadcast together and clipped to the grid."""
        theta, energy = np.broadcast_arrays(np.asarray(theta_deg, dtype=float),
                                            np.asarray(energy_kev, dtype=float))
        points = np.stack([np.clip(theta, self.theta_deg[0], self.theta_deg[-1]),
                           np.clip(energy, self.energy_kev[0], self.energy_kev[-1])], axis=-1)
        # imported here: scipy.interpolate costs ~0.2 s of start-up and only this needs it
        from scipy.interpolate import RegularGridInterpolator

        interpolate = RegularGridInterpolator((self.theta_deg, self.energy_kev), self.factor)
        return interpolate(points.reshape(-1, 2)).reshape(theta.shape)


@dataclass(frozen=True)
class KnownSources:
    """ECL-SRC-CAT: known bright hard X-ray sources (ICRS degrees); NEW means none of these."""
    name: np.ndarray        # (n,) str
    ra_deg: np.ndarray      # (n,)
    dec_deg: np.ndarray     # (n,)
    flux: np.ndarray | None = None         # (n,) 1e-12 erg cm-2 s-1 in 14-195 keV (BAT)
    survey_name: np.ndarray | None = None  # (n,) str, the name in the survey catalogue
    source_type: np.ndarray | None = None  # (n,) str, e.g. 'LMXB', 'Sy2'

    def __len__(self) -> int:
        return len(self.name)
