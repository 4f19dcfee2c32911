"""Detector response of the simulator (ICD section 1 'Frames and the photon path').

Thin mask: a photon along LOS direction u landing on a pixel's 4.0 mm active square crossed the
mask plane in that square shifted by 460 (u_y/u_x, u_z/u_x) mm; the pixel's open fraction is the
exact area overlap of the shifted square with the open mask elements (rectangles, so the
overlap separates into one matrix per axis: open = O_z @ pattern @ O_y.T). The flux per unit
area scales as u_x. The CdTe efficiency is the CALDB ARF divided by the geometric area it
includes (1024 cm2 x the nominal 0.4 open fraction) and by the probability that the measured
energy passes the 4 keV threshold (the ARF folds in that threshold; the simulator applies it to
the measured energy of each photon instead); the pixel EFFIC multiplies it. The off-axis IRF
is not applied (thin-mask model, as in the ICD).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import correlate
from scipy.special import ndtr

from ecpi_beam import instrument

STATUS_GOOD, STATUS_NOISY, STATUS_DEAD = 0, 1, 2

# The exact thin-mask shadow lives in the instrument model, shared with IMAG's source cleaning.
open_fraction = instrument.pixel_open_fraction


def cell_open_fraction(pattern) -> np.ndarray:
    """(120, 120): open fraction of a 4.0 mm active square centred on each 4.5 mm mask-plane
    cell; the shadow of sky-grid pixel (row, col) on pixel (i, j) is cell (i+row-79, j+col-79)."""
    centres = (np.arange(instrument.N_MASK_CELLS) - (instrument.N_MASK_CELLS - 1) / 2.0) \
        * instrument.PIXEL_PITCH_MM
    overlap = instrument.axis_overlap(centres, instrument.PIXEL_SIZE_MM)
    return overlap @ np.asarray(pattern, float) @ overlap.T


def redistribute(true_energy_kev, rng) -> np.ndarray:
    """Measured energies: Gaussian of sigma instrument.sigma_kev(E) around the true energy."""
    return true_energy_kev + instrument.sigma_kev(true_energy_kev) * rng.standard_normal(
        len(true_energy_kev))


@dataclass(frozen=True)
class DetectorResponse:
    """What the simulator needs from the CALDB, arrays indexed [IDET, JDET]."""
    pattern: np.ndarray
    gain: np.ndarray
    offset: np.ndarray
    status: np.ndarray
    effic: np.ndarray
    arf_energy_kev: np.ndarray
    arf_efficiency: np.ndarray
    cells: np.ndarray  # cell_open_fraction(pattern), padded for sky-grid correlation

    @classmethod
    def from_caldb(cls, caldb) -> "DetectorResponse":
        pattern = np.asarray(caldb.mask_pattern(), dtype=float)
        cal = caldb.pixel_calibration()
        arf = caldb.arf()
        centre = 0.5 * (np.asarray(arf.energ_lo, float) + np.asarray(arf.energ_hi, float))
        geometric = instrument.DETECTOR_AREA_CM2 * instrument.MASK_OPEN_FRACTION
        passes_threshold = ndtr((centre - instrument.LOW_THRESHOLD_KEV)
                                / instrument.sigma_kev(centre))
        efficiency = np.clip(np.asarray(arf.specresp, float) / geometric
                             / np.maximum(passes_threshold, 0.01), 0.0, 1.0)
        pad = instrument.N_PIX - 1
        cells = np.zeros((instrument.N_MASK_CELLS + 2 * pad,) * 2)
        cells[pad:-pad, pad:-pad] = cell_open_fraction(pattern)
        return cls(pattern=pattern, gain=np.asarray(cal.gain, float),
                   offset=np.asarray(cal.offset, float), status=np.asarray(cal.status),
                   effic=np.asarray(cal.effic, float), arf_energy_kev=centre,
                   arf_efficiency=efficiency, cells=cells)

    @property
    def live(self) -> np.ndarray:
        """EFFIC of each pixel, 0 for dead pixels."""
        return np.where(self.status == STATUS_DEAD, 0.0, self.effic)

    def efficiency(self, energy_kev):
        """CdTe detection efficiency (0..1) at true photon energies; 0 outside the ARF."""
        return np.interp(energy_kev, self.arf_energy_kev, self.arf_efficiency,
                         left=0.0, right=0.0)

    def point_source_map(self, direction_los) -> np.ndarray:
        """Detected photons per pixel per unit (ph cm-2) of efficiency-folded flux:
        pixel area x u_x x open fraction x EFFIC."""
        u = np.asarray(direction_los, float)
        return instrument.PIXEL_AREA_CM2 * max(u[0], 0.0) * open_fraction(self.pattern, u) \
            * self.live

    def diffuse_map(self, sky_weight) -> np.ndarray:
        """Detected photons per pixel per unit (ph cm-2 sr-1) of a diffuse sky whose per-sky-pixel
        weight (199, 199) is solid angle x u_x x visibility: sum over the sky grid of the
        weights times each pixel's open fraction towards that sky pixel."""
        seen = correlate(self.cells, sky_weight, mode="valid", method="fft")
        return instrument.PIXEL_AREA_CM2 * np.clip(seen, 0.0, None) * self.live

    def to_pha(self, idet, jdet, measured_kev) -> np.ndarray:
        """PHA = round((E - OFFSET) / GAIN) clipped to 0..4095 (inverse of ICD PHA to energy)."""
        pha = np.rint((measured_kev - self.offset[idet, jdet]) / self.gain[idet, jdet])
        return np.clip(pha, 0, instrument.N_PHA - 1).astype(np.int16)
