"""Found against injected: do the error bars hold what they promise? (docs/imaging.md, "Error
model").

Each injected source is matched to the nearest detection within MATCH_PIXELS sky pixels (a
field's sources are further apart than that, so a match is never another source). Per bin of
*reference* SNR (the SNR the true flux has in the image: true intensity / sqrt(VARIANCE) at
the true position, so the binning does not depend on the noise of the measurement itself):
the fraction of sources whose 90 % error circle (ERR_RAD) holds the true position (the
coverage, 0.90 if the radii are right), and the standard deviation of the flux pulls
(FLUX - true) / FLUX_ERR (1 if the flux errors are right).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ecpi_beam import instrument
from ecpi_beam.kernels.catalogue import angular_separation_deg

MATCH_PIXELS = 2.5  # one PSF half-width (2.6 pixels): beyond it a detection is not this source
SNR_BINS = ((7.0, 10.0), (10.0, 20.0), (20.0, np.inf))  # the bins the goals are set in


@dataclass(frozen=True)
class SourceScore:
    reference_snr: float
    row: float  # true 0-based sky-grid position
    col: float
    found: bool
    snr: float = np.nan  # measured (the detection statistic)
    offset_arcmin: float = np.nan  # found - true
    err_rad_arcmin: float = np.nan
    pull: float = np.nan  # (FLUX - true) / FLUX_ERR
    flux_ratio: float = np.nan  # FLUX / true


def reference_snr(true_flux, exposure, variance, row, col) -> float:
    """True corrected intensity (flux x exposure x pixel area, counts per open pixel) over the
    noise of the corrected intensity image at the nearest pixel of the true position."""
    value = variance[int(round(row)), int(round(col))]
    intensity = true_flux * exposure * instrument.PIXEL_AREA_CM2
    return float(intensity / np.sqrt(value)) if np.isfinite(value) and value > 0 else 0.0


def score_source(injected, rows, exposure, variance) -> SourceScore:
    """injected: ra, dec, row, col, flux; rows: the image's detections (row, col, ra, dec,
    err_rad_arcmin, snr, flux, flux_err, as sky_analysis.SourceRow)."""
    snr_ref = reference_snr(injected.flux, exposure, variance, injected.row, injected.col)
    nearest = min(rows, default=None,
                  key=lambda r: np.hypot(r.row - injected.row, r.col - injected.col))
    if nearest is None or np.hypot(nearest.row - injected.row,
                                   nearest.col - injected.col) > MATCH_PIXELS:
        return SourceScore(snr_ref, injected.row, injected.col, False)
    offset = 60.0 * float(angular_separation_deg(injected.ra, injected.dec, nearest.ra,
                                                 nearest.dec))
    return SourceScore(snr_ref, injected.row, injected.col, True, float(nearest.snr), offset,
                       float(nearest.err_rad_arcmin),
                       float((nearest.flux - injected.flux) / nearest.flux_err),
                       float(nearest.flux / injected.flux))


@dataclass(frozen=True)
class BinSummary:
    low: float
    high: float
    n_injected: int
    n_found: int
    coverage: float  # fraction of found sources whose ERR_RAD holds the truth
    pull_std: float
    pull_mean: float
    median_offset_arcmin: float
    median_err_rad_arcmin: float
    mean_flux_ratio: float

    def line(self) -> str:
        label = f"{self.low:g}-{self.high:g}" if np.isfinite(self.high) else f">= {self.low:g}"
        return (f"| {label} | {self.n_found}/{self.n_injected} | {self.coverage:.3f} | "
                f"{self.pull_std:.2f} | {self.pull_mean:+.2f} | {self.median_offset_arcmin:.2f} | "
                f"{self.median_err_rad_arcmin:.2f} | {self.mean_flux_ratio:.3f} |")


TABLE_HEADER = ("| reference SNR | found | 90 % coverage | pull std | pull mean | median offset ' "
                "| median ERR_RAD ' | mean FLUX / true |\n|---|---|---|---|---|---|---|---|")


def summarise(scores, bins=SNR_BINS) -> list[BinSummary]:
    summaries = []
    for low, high in bins:
        inside = [s for s in scores if low <= s.reference_snr < high]
        found = [s for s in inside if s.found]
        offset = np.array([s.offset_arcmin for s in found])
        radius = np.array([s.err_rad_arcmin for s in found])
        pull = np.array([s.pull for s in found])
        ratio = np.array([s.flux_ratio for s in found])

        def stat(function, values):
            return float(function(values)) if len(values) else np.nan
        summaries.append(BinSummary(low, high, len(inside), len(found),
                                    stat(np.mean, offset <= radius), stat(np.std, pull),
                                    stat(np.mean, pull), stat(np.median, offset),
                                    stat(np.median, radius), stat(np.mean, ratio)))
    return summaries
