"""SPEX: mask-weighted (balanced) source spectra from calibrated events (docs/spex.md).

Each event is weighted by the open fraction of its pixel towards the source, balanced so that a
background of known shapes over the detector cancels, as HEASoft's batmaskwtevt does for
Swift-BAT. For pixel p: f_p its open fraction towards the source (instrument.pixel_open_fraction,
the thin-mask ICD model), e_p its efficiency (0 for dead or noisy pixels). The counts are

    n_p = s x_p + sum_k b_k B_kp,    x_p = f_p e_p,

with s the source counts per fully open pixel and B_k the background shapes (at least the flat
one, e_p; BUBE's sky-illumination template when given). The least-squares estimate of s is
linear, s = sum_p w_p n_p with w = r / (r . x), r = x minus its projection on the B_k: so
sum_p w_p B_kp = 0 (the backgrounds cancel exactly) and sum_p w_p x_p = 1. Each event then
carries the weight W_p = w_p sum_q x_q, so that summed weights estimate the source's counts over
the good detector, and sum W_p^2 is their variance. The spectrum is the sum of W per PI channel
group; its ARF is the CALDB on-axis ARF times the IRF at the source's off-axis angle times the
fraction of the on-axis open area the source sees, sum_q x_q a_pix / (0.4 A_det).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ecpi_beam import instrument
from ecpi_beam.caldb.tables import Rmf
from ecpi_beam.errors import EcpiError
from ecpi_beam.kernels import intervals, lightcurves
from ecpi_beam.kernels.catalogue import iau_name

NOMINAL_OPEN_AREA_CM2 = instrument.DETECTOR_AREA_CM2 * instrument.MASK_OPEN_FRACTION


@dataclass(frozen=True, eq=False)
class MaskWeights:
    """The per-pixel event weights of one source direction."""

    weights: np.ndarray  # (80, 80) W_p: summed over events, the source's detected counts
    open_pixels: float  # sum_p f_p e_p: efficiency-weighted fully-open pixels seen by the source
    off_axis_deg: float

    @property
    def open_area_fraction(self) -> float:
        """The source's open detector area relative to the nominal on-axis one (the ARF's)."""
        return self.open_pixels * instrument.PIXEL_AREA_CM2 / NOMINAL_OPEN_AREA_CM2

    def of_events(self, idet, jdet) -> np.ndarray:
        return self.weights[np.asarray(idet, np.intp), np.asarray(jdet, np.intp)]


def balanced_mask_weights(pattern, efficiency, direction_los, background_shapes=()) -> MaskWeights:
    """Mask weights towards LOS direction u; `efficiency` is 0 on pixels not to be used.
    The flat background (the efficiency itself) always cancels; `background_shapes` are more
    (80, 80) shapes that must (e.g. the CXB seen through the mask)."""
    efficiency = np.asarray(efficiency, dtype=float)
    u = np.asarray(direction_los, dtype=float)
    open_fraction = instrument.pixel_open_fraction(pattern, u)
    source = (open_fraction * efficiency).ravel()
    used = efficiency.ravel() > 0
    shapes = np.array([efficiency.ravel()] + [np.ravel(s) for s in background_shapes]).T[used]
    coefficients, *_ = np.linalg.lstsq(shapes, source[used], rcond=None)
    residual = np.zeros_like(source)
    residual[used] = source[used] - shapes @ coefficients
    norm = float(residual @ source)
    open_pixels = float(source.sum())
    if not norm > 1e-9 * max(open_pixels, 1e-300):
        raise EcpiError(f"the source at {instrument.off_axis_angle_deg(u):.1f} deg off axis "
                        "casts no usable mask shadow (outside the field of view?)")
    weights = (residual / norm * open_pixels).reshape(efficiency.shape)
    return MaskWeights(weights, open_pixels, float(instrument.off_axis_angle_deg(u)))


# ------------------------------------------------------------------------------------------
# Channels, spectra and responses
# ------------------------------------------------------------------------------------------
def channel_groups(pi_per_channel: int):
    """(first PI, last PI) of each spectral channel: consecutive groups of pi_per_channel."""
    if not 1 <= pi_per_channel <= instrument.N_PI:
        raise EcpiError(f"[spex] pi_per_channel = {pi_per_channel}: expected 1..{instrument.N_PI}")
    first = np.arange(0, instrument.N_PI, pi_per_channel)
    return first, np.minimum(first + pi_per_channel, instrument.N_PI) - 1


# OGIP/92-007 QUALITY: 0 good, 1 bad (set by the software), which XSPEC ignores by itself and
# sherpa after ignore_bad()
QUALITY_GOOD, QUALITY_BAD = 0, 1


@dataclass(frozen=True, eq=False)
class Spectrum:
    counts: np.ndarray  # (n_channels,) summed weights: net source counts
    stat_err: np.ndarray  # sqrt(sum W^2)
    first_pi: np.ndarray
    last_pi: np.ndarray
    exposure: float  # s

    @property
    def total(self) -> float:
        return float(self.counts.sum())

    @property
    def quality(self) -> np.ndarray:
        """QUALITY_BAD for the channels no fit should use: those reaching below the 4 keV low
        threshold (it cuts the measured energy, which the RMF and ARF do not model, so the
        model predicts counts the detector never records), and those without a single event
        (sum W^2 = 0: no Gaussian error; chi2 would divide by zero)."""
        below_threshold = instrument.pi_to_energy(self.first_pi)[0] \
            < instrument.LOW_THRESHOLD_KEV - 1e-9
        no_event = ~(self.stat_err > 0)
        return np.where(below_threshold | no_event, QUALITY_BAD, QUALITY_GOOD).astype(np.int16)


def channel_sums(pi, event_weights, pi_per_channel: int):
    """(sum W, sum W^2) per spectral channel (groups of pi_per_channel PI channels)."""
    n = len(channel_groups(pi_per_channel)[0])
    channel = np.asarray(pi, dtype=np.int64) // pi_per_channel
    weights = np.asarray(event_weights, dtype=float)
    return (np.bincount(channel, weights=weights, minlength=n)[:n],
            np.bincount(channel, weights=weights**2, minlength=n)[:n])


def finish_spectrum(counts, variance, pi_per_channel: int, exposure: float) -> Spectrum:
    first, last = channel_groups(pi_per_channel)
    return Spectrum(np.asarray(counts, float), np.sqrt(np.asarray(variance, float)), first,
                    last, float(exposure))


def weighted_spectrum(pi, event_weights, pi_per_channel: int, exposure: float) -> Spectrum:
    """Sum of the event weights per channel group, and their Poisson error sqrt(sum W^2)."""
    return finish_spectrum(*channel_sums(pi, event_weights, pi_per_channel), pi_per_channel,
                           exposure)


def rebinned_rmf(rmf: Rmf, pi_per_channel: int) -> Rmf:
    """The CALDB RMF as the spectra need it: measured below the 4 keV low threshold, nothing
    (threshold_truncated), and the PI columns summed into the spectral channel groups."""
    first, last = channel_groups(pi_per_channel)
    matrix = np.add.reduceat(threshold_truncated(rmf), first, axis=1)
    return Rmf(energ_lo=rmf.energ_lo, energ_hi=rmf.energ_hi, matrix=matrix,
               e_min=np.asarray(rmf.e_min)[first], e_max=np.asarray(rmf.e_max)[last])


def threshold_truncated(rmf: Rmf) -> np.ndarray:
    """The RMF matrix (n_energies, n_PI) with no response in the PI channels below the low
    threshold, each row scaled to keep its sum.

    The threshold cuts the *measured* energy: a photon of energy E is recorded only in a
    channel above 4 keV. The CALDB's ARF holds the probability that it passes (P(E), docs/
    caldb.md) and its RMF the full Gaussian spread R(E, c) (no efficiency), so ARF x RMF would
    predict counts below 4 keV and too few just above it (fits of a power law came out 0.1
    steeper). The detected counts are A(E) R(E, c) [c above 4 keV], i.e. ARF(E) x R(E, c)
    [c above] / P(E), with P(E) the fraction of the row above the threshold: that matrix."""
    matrix = np.array(rmf.matrix, dtype=float)
    below = np.asarray(rmf.e_min, dtype=float) < instrument.LOW_THRESHOLD_KEV - 1e-9
    total = matrix.sum(axis=1)
    matrix[:, below] = 0.0
    above = matrix.sum(axis=1)
    usable = above > 1e-3 * np.maximum(total, 1e-300)  # else the ARF is ~0 there anyway
    matrix[usable] *= (total[usable] / above[usable])[:, None]
    matrix[~usable] = 0.0
    return matrix


def source_arf(arf, irf, weights: MaskWeights) -> np.ndarray:
    """SPECRESP (cm2) towards the source: on-axis ARF x IRF(theta, E) x open-area fraction.
    The IRF carries the cos(theta) projection and the mask-wall shading."""
    centre = 0.5 * (np.asarray(arf.energ_lo, float) + np.asarray(arf.energ_hi, float))
    factor = irf.factor_at(np.full_like(centre, weights.off_axis_deg), centre)
    return np.asarray(arf.specresp, float) * factor * weights.open_area_fraction


# ------------------------------------------------------------------------------------------
# Several sources in one observation
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SpexSource:
    """One source SPEX extracts: where, and the name it carries (OBJECT)."""

    index: int  # 1-based, per observation: names the product files (S01, S02...)
    name: str
    ra: float
    dec: float


def distinct_sources(positions, merge_radius_deg: float, names=None) -> tuple:
    """SpexSources from (RA, Dec) positions, brightest (first) kept when two lie within
    merge_radius_deg (the same source found in several bands). A source is named by `names`
    (the observation's catalogue: the known source's name, else its 'ECL Jhhmmss.s+ddmmss'),
    else by the catalogue name of its position."""
    kept = []
    for k, (ra, dec) in enumerate(positions):
        vector = instrument.radec_to_unit(ra, dec)
        if all(vector @ instrument.radec_to_unit(s.ra, s.dec) < np.cos(np.radians(merge_radius_deg))
               for s in kept):
            index = len(kept) + 1
            name = names[k] if names is not None and names[k] else iau_name(ra, dec)
            kept.append(SpexSource(index, str(name), float(ra), float(dec)))
    return tuple(kept)


class SourceWeighter:
    """Mask weights of each source of an observation, every other source's shadow (and the
    CXB seen through the mask) cancelled; prepared once per worker from the CALDB."""

    def __init__(self, pattern, efficiency, sky_template=None):
        self.pattern = np.asarray(pattern)
        self.efficiency = np.asarray(efficiency, dtype=float)
        self.shapes = () if sky_template is None else (np.asarray(sky_template, float),)

    def shadow(self, direction_los) -> np.ndarray:
        return instrument.pixel_open_fraction(self.pattern, direction_los) * self.efficiency

    def weights(self, sources, index: int, quaternion) -> MaskWeights:
        """Weights towards sources[k].index == index, in the frame of attitude `quaternion`."""
        directions = {s.index: instrument.radec_to_los(s.ra, s.dec, quaternion) for s in sources}
        others = tuple(self.shadow(u) for k, u in directions.items()
                       if k != index and u[0] > 0 and self.shadow(u).any())
        return balanced_mask_weights(self.pattern, self.efficiency, directions[index],
                                     self.shapes + others)


@dataclass(frozen=True, eq=False)
class SourceSums:
    """What the events of a source add up to: the accumulator of SPEX (associative sums)."""

    spectrum: np.ndarray  # (2, n_channels): sum W, sum W^2
    light_curves: np.ndarray  # (2, n_bands, n_bins)

    def __add__(self, other: "SourceSums") -> "SourceSums":
        return SourceSums(self.spectrum + other.spectrum, self.light_curves + other.light_curves)


def source_sums(events, event_weights, gti, edges, bands, pi_per_channel: int) -> SourceSums:
    """Sums of the weighted events inside `gti`: spectrum per channel, light curve per band.

    `events`: structured array with TIME and PI (photons only)."""
    inside = intervals.mask_times(events["TIME"], gti)
    pi, times = events["PI"][inside], events["TIME"][inside]
    weights = np.asarray(event_weights, float)[inside]
    spectrum = np.array(channel_sums(pi, weights, pi_per_channel))
    curves = np.zeros((2, len(bands), len(edges) - 1))
    for k, (lo, hi) in enumerate(bands):
        in_band = (pi >= lo) & (pi <= hi)
        curves[:, k] = lightcurves.binned_sums(times[in_band], weights[in_band], gti, edges)
    return SourceSums(spectrum, curves)
