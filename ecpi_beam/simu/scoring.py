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

import itertools
from dataclasses import dataclass, replace

import numpy as np

from ecpi_beam import instrument
from ecpi_beam.kernels.catalogue import angular_separation_deg
from ecpi_beam.kernels.error_model import RADIUS_90_PER_SIGMA, local_pixel_scale_arcmin

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
    pull_rms: float  # sqrt(std^2 + mean^2): the selection at the threshold moves mean and std
    median_offset_arcmin: float
    median_err_rad_arcmin: float
    mean_flux_ratio: float

    def line(self) -> str:
        label = f"{self.low:g}-{self.high:g}" if np.isfinite(self.high) else f">= {self.low:g}"
        return (f"| {label} | {self.n_found}/{self.n_injected} | {self.coverage:.3f} | "
                f"{self.pull_std:.2f} | {self.pull_mean:+.2f} | {self.pull_rms:.2f} | "
                f"{self.median_offset_arcmin:.2f} | {self.median_err_rad_arcmin:.2f} | "
                f"{self.mean_flux_ratio:.3f} |")


TABLE_HEADER = ("| reference SNR | found | 90 % coverage | pull std | pull mean | pull rms | "
                "median offset ' | median ERR_RAD ' | mean FLUX / true |\n"
                "|---|---|---|---|---|---|---|---|---|")


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
                                    stat(np.mean, pull),
                                    stat(lambda p: np.sqrt(np.mean(np.square(p))), pull),
                                    stat(np.median, offset),
                                    stat(np.median, radius), stat(np.mean, ratio)))
    return summaries


# ------------------------------------------------------------------------------------------
# Calibrating the error model (kernels/error_model.py) on found sources' statistical errors
# ------------------------------------------------------------------------------------------
CALIBRATION_BINS = ((7.0, 10.0), (10.0, 20.0), (20.0, 40.0), (40.0, 80.0), (80.0, np.inf))
COVERAGE_TARGET = 0.915  # the middle of the goal, 0.88 to 0.95
# the values tried for each term (a grid search: the cost is a step function of the radii)
POSITION_SCALES = np.arange(0.90, 1.3001, 0.02)
SNR_KNEES = np.arange(0.0, 10.01, 0.5)
GRID_PIXELS = np.arange(0.0, 0.0301, 0.0025)
FLUX_SCALES = np.arange(0.90, 1.3001, 0.01)
FLUX_RELATIVES = np.arange(0.0, 0.0201, 0.0005)


@dataclass(frozen=True)
class CalibrationPoint:
    """A found source: its fit's statistical errors and its truth."""

    reference_snr: float
    snr: float
    row: float  # found, 0-based sky grid
    col: float
    row_err: float  # the fit's 1-sigma, sky pixels
    col_err: float
    offset_arcmin: float
    flux: float  # any unit, the same for the three
    flux_err: float
    true_flux: float


def calibration_points(analysed) -> list[CalibrationPoint]:
    """The found sources of a simu.fields.AnalysedField (rows and detections in the same
    order), matched to its injected sources."""
    field, points = analysed.field, []
    scale = 1.0 / (field.exposure * instrument.PIXEL_AREA_CM2)
    for source in field.sources:
        score = score_source(source, analysed.rows, field.exposure, analysed.variance)
        if not score.found:
            continue
        index = min(range(len(analysed.rows)), key=lambda k: np.hypot(
            analysed.rows[k].row - source.row, analysed.rows[k].col - source.col))
        det = analysed.detections[index]
        points.append(CalibrationPoint(score.reference_snr, det.snr, det.row, det.col,
                                       det.row_err, det.col_err, score.offset_arcmin,
                                       det.flux * scale, det.flux_err * scale, source.flux))
    return points


def _columns(points):
    return {name: np.array([getattr(p, name) for p in points], dtype=float)
            for name in CalibrationPoint.__dataclass_fields__}


def scores_with(points, model) -> list[SourceScore]:
    """The points scored with the ERR_RAD and FLUX_ERR of an error model."""
    c = _columns(points)
    radius = model.error_radius_arcmin(c["snr"], c["row_err"], c["col_err"], c["row"], c["col"])
    flux_err = model.flux_error(c["flux"], c["flux_err"])
    return [SourceScore(p.reference_snr, p.row, p.col, True, p.snr, p.offset_arcmin,
                        float(r), float((p.flux - p.true_flux) / e), float(p.flux / p.true_flux))
            for p, r, e in zip(points, radius, flux_err)]


def calibrate_error_model(points, base, bins=CALIBRATION_BINS, target=COVERAGE_TARGET):
    """The error model whose coverage is closest to `target` in every bin of reference SNR
    (least squares weighted by the bins' numbers of sources) and whose flux pulls at SNR >= 10
    have a standard deviation closest to 1, its terms searched on grids of values; the
    attitude term is `base`'s (the simulator has none)."""
    c = _columns(points)
    in_bin = [(c["reference_snr"] >= low) & (c["reference_snr"] < high) for low, high in bins]
    in_bin = [b for b in in_bin if b.any()]
    sigma2 = 0.5 * (c["row_err"] ** 2 + c["col_err"] ** 2)
    radius_per_sigma = RADIUS_90_PER_SIGMA * local_pixel_scale_arcmin(c["row"], c["col"])
    snr = np.maximum(c["snr"], 1e-9)

    def coverage_cost(scale, knee, grid):
        sigma = np.sqrt(scale**2 * (1.0 + (knee / snr) ** 2) * sigma2 + grid**2)
        inside = c["offset_arcmin"] <= np.hypot(radius_per_sigma * sigma, base.attitude_arcmin)
        return sum(b.sum() * (inside[b].mean() - target) ** 2 for b in in_bin)

    scale, knee, grid = min(itertools.product(POSITION_SCALES, SNR_KNEES, GRID_PIXELS),
                            key=lambda terms: coverage_cost(*terms))
    residual = c["flux"] - c["true_flux"]
    flux_bins = [b for b in (b & (c["reference_snr"] >= 10.0) for b in in_bin) if b.sum() > 1]

    def pull_cost(flux_scale, relative):
        error = np.hypot(flux_scale * c["flux_err"], relative * c["flux"])
        return sum(b.sum() * (np.std(residual[b] / error[b]) - 1.0) ** 2 for b in flux_bins)

    flux_scale, relative = min(itertools.product(FLUX_SCALES, FLUX_RELATIVES),
                               key=lambda terms: pull_cost(*terms))
    return replace(base, position_scale=float(scale), snr_knee=float(knee),
                   grid_pixels=float(grid), flux_scale=float(flux_scale),
                   flux_relative=float(relative))
