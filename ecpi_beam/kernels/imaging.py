"""Coded-mask sky images by balanced weighted cross-correlation (docs/science.md, "Coded-mask
imaging"; Goldwurm et al. 2003, A&A 411 L223). Conventions are instrument.py's:

    sky[row, col] = sum_{i,j} D[i, j] G[i + row - 79, j + col - 79]

with G a 120 x 120 array over the mask plane (the mask resampled to the 4.5 mm pitch):
G+ = M (open fraction of each cell), G- = A - M (A = 1 on the mask plane; cells outside the
plane belong to neither). Cross-correlations are FFT products of size 200 >= 80 + 120 - 1, so
the circular correlation never wraps onto the 199 x 199 sky grid.

Normalisation: a point source giving n counts per fully open detector pixel has S = n at its
sky pixel (total counts = n x the sum of the open fractions it sees). V is the exact variance of
the linear estimator S given the per-pixel variance of the detector image, including the
G+ G- cross term that the fractional resampled mask makes non-zero.
"""
from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
from numpy import fft  # numpy's pocketfft: as fast here as scipy.fft, without its import

from ecpi_beam import instrument
from ecpi_beam.errors import EcpiError

FFT_SIZE = 200  # >= 80 + 120 - 1; 200 = 2^3 5^2 is a fast size
PCODE_MIN_IMAGE = 1e-3  # below this the estimator is undefined: intensity 0, variance inf
_KERNELS = ("positive", "negative", "positive_sq", "negative_sq", "cross", "aperture")
_BALANCE_CACHE_SIZE = 8  # sets of pixel weights whose balance terms a plan keeps


@dataclass(frozen=True, eq=False)
class CorrelationPlan:
    """The resampled mask and the FFTs of its correlation kernels, made once per worker."""

    resampled_mask: np.ndarray  # (120, 120) open fraction, [z cell, y cell]
    # name -> rfft2 of the (FFT_SIZE, FFT_SIZE) zero-padded kernel rolled by SHADOW_OFFSET on
    # both axes, so that an inverse FFT lands on the sky grid without a roll of its output
    kernel_fft: dict
    # balance terms of the last few weight sets (they depend on the weights only)
    balance_cache: OrderedDict = field(default_factory=OrderedDict, repr=False)


@dataclass(frozen=True, eq=False)
class SkyImages:
    intensity: np.ndarray  # (199, 199) S: counts per fully open detector pixel
    variance: np.ndarray  # (199, 199) variance of S; inf where S is not measured
    snr: np.ndarray  # (199, 199) S / sqrt(V); 0 where S is not measured
    pcode: np.ndarray  # (199, 199) partial coding fraction W (x) A / sum W


def make_correlation_plan(resampled_mask) -> CorrelationPlan:
    """Precompute the FFTs of G+, G-, G+^2, G-^2, G+ G- and A for a 120 x 120 resampled mask."""
    mask = np.asarray(resampled_mask, dtype=float)
    if mask.shape != (instrument.N_MASK_CELLS, instrument.N_MASK_CELLS):
        raise EcpiError(f"resampled mask must be {instrument.N_MASK_CELLS} x "
                        f"{instrument.N_MASK_CELLS}, got {mask.shape}")
    positive, aperture = mask, np.ones_like(mask)
    negative = aperture - mask
    kernels = {"positive": positive, "negative": negative, "positive_sq": positive**2,
               "negative_sq": negative**2, "cross": positive * negative, "aperture": aperture}
    kernel_fft = {name: fft.rfft2(_rolled_for_sky(kernels[name])) for name in _KERNELS}
    mask = mask.copy()
    mask.setflags(write=False)
    return CorrelationPlan(mask, kernel_fft)


def _rolled_for_sky(kernel):
    """The kernel zero-padded to FFT_SIZE and rolled by SHADOW_OFFSET: correlating with it
    gives circular[k] = sky[k] directly (sky shift row - 79 = k mod FFT_SIZE)."""
    padded = np.zeros((FFT_SIZE, FFT_SIZE))
    padded[:kernel.shape[0], :kernel.shape[1]] = kernel
    return np.roll(padded, instrument.SHADOW_OFFSET, axis=(0, 1))


def _detector_fft(detector_array):
    array = np.asarray(detector_array, dtype=float)
    if array.shape != (instrument.N_PIX, instrument.N_PIX):
        raise EcpiError(f"detector image must be {instrument.N_PIX} x {instrument.N_PIX}, "
                        f"got {array.shape}")
    # rfft2(array, s=(FFT_SIZE, FFT_SIZE)) with the same two passes (rows, then columns), but
    # the first pass skips the 120 rows of zero padding: the same numbers at half the cost
    rows = fft.rfft(array, n=FFT_SIZE, axis=1)
    return np.conj(fft.fft(rows, n=FFT_SIZE, axis=0))


def _correlate(detector_fft_conj, kernel_fft) -> np.ndarray:
    """(199, 199) view of the circular correlation (the kernel FFT is rolled for the sky)."""
    circular = fft.irfft2(detector_fft_conj * kernel_fft, s=(FFT_SIZE, FFT_SIZE))
    return circular[:instrument.N_SKY, :instrument.N_SKY]


def cross_correlate(plan: CorrelationPlan, detector_array, kernel: str = "positive"):
    """(199, 199) sky[row, col] = sum D[i, j] G[i + row - 79, j + col - 79], G one of the
    plan's kernels ('positive' = G+, 'negative' = G-, 'positive_sq', 'negative_sq', 'cross',
    'aperture')."""
    return _correlate(_detector_fft(detector_array), plan.kernel_fft[kernel])


@dataclass(frozen=True, eq=False)
class BalanceTerms:
    """The weight-only terms of the estimator (per sky pixel): computed once per set of pixel
    weights, shared by the image, its PSF and the estimator coefficients."""

    b: np.ndarray
    norm: np.ndarray
    pcode: np.ndarray
    measured: np.ndarray

    @functools.cached_property
    def unmeasured(self) -> np.ndarray:
        return ~self.measured

    @functools.cached_property
    def two_b(self) -> np.ndarray:
        return 2.0 * self.b

    @functools.cached_property
    def b_squared(self) -> np.ndarray:
        return self.b**2

    @functools.cached_property
    def norm_squared(self) -> np.ndarray:
        return self.norm**2


def balance_terms(plan: CorrelationPlan, weights,
                  pcode_min: float = PCODE_MIN_IMAGE) -> BalanceTerms:
    """The BalanceTerms of these weights: computed once per plan and set of weights (five
    correlations), then taken from the plan's cache (read-only arrays)."""
    weights = np.asarray(weights, dtype=float)
    key = (weights.shape, weights.tobytes(), float(pcode_min))
    cache = plan.balance_cache
    terms = cache.get(key)
    if terms is None:
        terms = _compute_balance_terms(plan, weights, pcode_min)
        cache[key] = terms
        while len(cache) > _BALANCE_CACHE_SIZE:
            cache.popitem(last=False)
    return terms


def _compute_balance_terms(plan: CorrelationPlan, weights, pcode_min: float) -> BalanceTerms:
    total_weight = weights.sum()
    if total_weight <= 0:
        raise EcpiError("every detector pixel has weight 0: no sky image can be made")
    w_fft = _detector_fft(weights)
    w_pos, w_neg, w_pos2, w_cross, w_aperture = (
        _correlate(w_fft, plan.kernel_fft[k])
        for k in ("positive", "negative", "positive_sq", "cross", "aperture"))
    pcode = np.clip(w_aperture / total_weight, 0.0, 1.0)
    tiny = 1e-9 * total_weight  # FFT round-off level
    measured = (pcode >= pcode_min) & (w_neg > tiny)
    b = np.where(measured, w_pos / np.where(measured, w_neg, 1.0), 0.0)
    norm = w_pos2 - b * w_cross
    measured &= norm > tiny
    arrays = (b, np.where(measured, norm, 1.0), pcode, measured)
    for array in arrays:
        array.setflags(write=False)  # shared by every image made with these weights
    return BalanceTerms(*arrays)


def balanced_intensity(plan, detector, weights, terms: BalanceTerms | None = None) -> np.ndarray:
    """Only S, for images of noiseless models (PSF, shadowgrams)."""
    bal = balance_terms(plan, weights) if terms is None else terms
    d_fft = _detector_fft(np.asarray(weights, float) * np.asarray(detector, float))
    s = _correlate(d_fft, plan.kernel_fft["positive"])
    s -= bal.b * _correlate(d_fft, plan.kernel_fft["negative"])
    s /= bal.norm
    np.copyto(s, 0.0, where=bal.unmeasured)
    return np.ascontiguousarray(s)


def estimator_coefficients(plan: CorrelationPlan, weights, rows, cols,
                           terms: BalanceTerms | None = None) -> np.ndarray:
    """(k, 80, 80) linear coefficients c_p with S_p = sum c_p D for k sky pixels (rows, cols):
    W (G+ - b G-) / norm, shifted to the pixel (zero where S is not measured). They give the
    covariance of sky pixels, Cov(S_p, S_q) = sum c_p c_q Var, and are the mask weights of
    mask-weighted spectra."""
    weights = np.asarray(weights, dtype=float)
    bal = balance_terms(plan, weights) if terms is None else terms
    rows, cols = np.atleast_1d(rows).astype(int), np.atleast_1d(cols).astype(int)
    padded_mask = _pad_for_shadows(plan.resampled_mask)
    padded_aperture = _pad_for_shadows(np.ones_like(plan.resampled_mask))
    out = np.zeros((len(rows), instrument.N_PIX, instrument.N_PIX))
    for k, (row, col) in enumerate(zip(rows, cols)):
        if bal.measured[row, col]:
            positive = _integer_shadow(padded_mask, row, col)
            negative = _integer_shadow(padded_aperture, row, col) - positive
            out[k] = weights * (positive - bal.b[row, col] * negative) / bal.norm[row, col]
    return out


def balanced_sky_image(plan: CorrelationPlan, detector, variance, weights,
                       pcode_min: float = PCODE_MIN_IMAGE,
                       terms: BalanceTerms | None = None) -> SkyImages:
    """Intensity, variance, SNR and partial coding of a detector image.

    detector: (80, 80) counts or background-corrected counts; variance: their per-pixel
    variance; weights: W (0 for dead/noisy pixels). Pixels with partial coding below pcode_min
    or no variance get S = 0, V = inf, SNR = 0. `terms`: balance_terms(plan, weights, pcode_min)
    when already computed for these weights (they depend on the weights only).
    """
    weights = np.asarray(weights, dtype=float)
    bal = balance_terms(plan, weights, pcode_min) if terms is None else terms
    d_fft = _detector_fft(weights * np.asarray(detector, dtype=float))
    v_fft = _detector_fft(weights**2 * np.asarray(variance, dtype=float))
    k = plan.kernel_fft
    intensity = _correlate(d_fft, k["positive"])
    intensity -= bal.b * _correlate(d_fft, k["negative"])
    intensity /= bal.norm
    var = _correlate(v_fft, k["positive_sq"])
    var -= bal.two_b * _correlate(v_fft, k["cross"])
    var += bal.b_squared * _correlate(v_fft, k["negative_sq"])
    var /= bal.norm_squared
    measured = bal.measured & (var > 1e-12 * max(float(var.max()), 1e-300))
    unmeasured = ~measured
    np.copyto(intensity, 0.0, where=unmeasured)
    np.copyto(var, np.inf, where=unmeasured)
    snr = intensity / np.sqrt(var)  # 0 / inf = 0 where not measured
    intensity, var = np.ascontiguousarray(intensity), np.ascontiguousarray(var)
    return SkyImages(intensity, var, snr, bal.pcode)


# ------------------------------------------------------------------------------------------
# Off-axis response corrections ([imag] irf_corr)
# ------------------------------------------------------------------------------------------
# The spectral assumption of `irf`: the band average of the off-axis factor weights each energy
# by the counts a source of this photon spectrum gives on axis (docs/imaging.md)
IRF_PHOTON_INDEX = 2.0  # N(E) ~ E^-2, close to the Crab's 2.1 and to most bright hard X-ray sources
IRF_SPECTRUM = f"power law, photon index {IRF_PHOTON_INDEX:g}, on-axis ARF counts"


@dataclass(frozen=True, eq=False)
class IrfCorrection:
    """An [imag] irf_corr: the response at each sky position relative to on axis, by which the
    intensity, the square root of the variance and the fluxes are divided (SNR unchanged)."""

    name: str
    factor_of_angle: Callable | None  # off-axis angle (deg) -> response relative to on axis
    spectrum: str = ""  # the spectral assumption, when the factor depends on the spectrum

    @functools.cached_property
    def factor(self) -> np.ndarray | None:
        """(199, 199) response of each sky pixel relative to on axis (None: no correction)."""
        if self.factor_of_angle is None:
            return None
        return np.asarray(self.factor_of_angle(_sky_off_axis_deg()), dtype=float)

    def factor_at(self, row: float, col: float) -> float:
        """The response at a fractional sky position."""
        if self.factor_of_angle is None:
            return 1.0
        angle = instrument.off_axis_angle_deg(instrument.sky_pixel_to_los(row, col))
        return float(self.factor_of_angle(angle))

    def __call__(self, sky: SkyImages) -> SkyImages:
        if self.factor is None:
            return sky
        return replace(sky, intensity=sky.intensity / self.factor,
                       variance=sky.variance / self.factor**2)


@functools.lru_cache(maxsize=1)
def _sky_off_axis_deg() -> np.ndarray:
    angle = instrument.off_axis_angle_deg(instrument.sky_grid_los())
    angle.setflags(write=False)
    return angle


def _cos_theta(angle_deg):
    return np.cos(np.radians(angle_deg))


def band_irf_factor(irf, arf, energy_range_kev, photon_index: float = IRF_PHOTON_INDEX):
    """Off-axis angle (deg) -> the ECL-RSP-IRF factor averaged over a band, each energy
    weighted by the on-axis counts of a power law of that photon index (ARF x E^-index)."""
    e_min, e_max = (float(e) for e in energy_range_kev)
    energy = np.linspace(e_min, e_max, max(8, int(np.ceil(e_max - e_min)) * 4 + 1))
    arf_centre = 0.5 * (np.asarray(arf.energ_lo, float) + np.asarray(arf.energ_hi, float))
    weight = np.interp(energy, arf_centre, np.asarray(arf.specresp, float), left=0.0,
                       right=0.0) * energy ** -photon_index
    if not weight.sum() > 0:
        raise EcpiError(f"[imag] irf_corr = 'irf': the ARF is zero over {e_min:g}-{e_max:g} keV")
    theta = np.asarray(irf.theta_deg, dtype=float)
    table = irf.factor_at(theta[:, None], energy[None, :])  # (n_theta, n_energy)
    averaged = (table * weight).sum(axis=1) / weight.sum()
    return lambda angle_deg: np.interp(angle_deg, theta, averaged)


def _no_correction(**_):
    return IrfCorrection("no_correction", None)


def _cos_theta_correction(**_):
    """Flux per detector area falls as cos(theta), the projected area."""
    return IrfCorrection("cos_theta", _cos_theta)


def _irf_correction(irf=None, arf=None, energy_range_kev=None):
    """ECL-RSP-IRF averaged over the band with the IRF_SPECTRUM assumption."""
    if irf is None or arf is None or energy_range_kev is None:
        raise EcpiError("[imag] irf_corr = 'irf' needs the CALDB ECL-RSP-IRF and ECL-RSP-ARF "
                        "and the band's energy range")
    return IrfCorrection("irf", band_irf_factor(irf, arf, energy_range_kev), IRF_SPECTRUM)


IRF_CORRECTIONS: dict[str, Callable[..., IrfCorrection]] = {
    "no_correction": _no_correction,
    "cos_theta": _cos_theta_correction,
    "irf": _irf_correction,
}
PLANNED_IRF_CORRECTIONS: tuple[str, ...] = ()


def check_irf_correction(name: str) -> None:
    """Raise the one-line error for an [imag] irf_corr that is not available."""
    if name not in IRF_CORRECTIONS:
        what = "is not available yet" if name in PLANNED_IRF_CORRECTIONS else "is not known"
        raise EcpiError(f"[imag] irf_corr = {name!r} {what}; available: "
                        f"{', '.join(IRF_CORRECTIONS)}")


def irf_correction(name: str, irf=None, arf=None, energy_range_kev=None) -> IrfCorrection:
    """The [imag] irf_corr of that name; 'irf' needs the CALDB IRF and ARF and the band."""
    check_irf_correction(name)
    return IRF_CORRECTIONS[name](irf=irf, arf=arf, energy_range_kev=energy_range_kev)


# ------------------------------------------------------------------------------------------
# Forward projection
# ------------------------------------------------------------------------------------------
def _pad_for_shadows(mask):
    return np.pad(np.asarray(mask, dtype=float), instrument.N_PIX)


def _integer_shadow(padded, row, col):
    """Detector image of resampled-mask cell (i + row - 79, j + col - 79), 0 off the plane;
    `padded` is the mask padded by 80 cells (_pad_for_shadows)."""
    top, left = row + 1, col + 1  # i + row - 79 + 80
    n_padded = padded.shape[0]
    if not (0 <= top <= n_padded - instrument.N_PIX and 0 <= left <= n_padded - instrument.N_PIX):
        return np.zeros((instrument.N_PIX, instrument.N_PIX))
    return padded[top:top + instrument.N_PIX, left:left + instrument.N_PIX]


def forward_project(mask_or_plan, row: float, col: float, counts_per_open_pixel: float = 1.0):
    """(80, 80) shadowgram of a point source at a (fractional) sky position, n counts per fully
    open pixel: the resampled mask shifted per instrument.py, bilinear in the sub-pixel shift
    (exact wherever a 4.5 mm cell lies within one mask element)."""
    mask = (mask_or_plan.resampled_mask if isinstance(mask_or_plan, CorrelationPlan)
            else np.asarray(mask_or_plan, dtype=float))
    row0, col0 = int(np.floor(row)), int(np.floor(col))
    frac_row, frac_col = row - row0, col - col0
    padded = _pad_for_shadows(mask)
    image = np.zeros((instrument.N_PIX, instrument.N_PIX))
    for d_row, w_row in ((0, 1.0 - frac_row), (1, frac_row)):
        for d_col, w_col in ((0, 1.0 - frac_col), (1, frac_col)):
            if w_row * w_col > 0:
                image += w_row * w_col * _integer_shadow(padded, row0 + d_row, col0 + d_col)
    return counts_per_open_pixel * image
