"""The Earth in the field: occultation fraction map (ECL-EAR-OFM) and the CXB / Earth templates.

ICD section 1 (Earth disc: 6371 + 100 km, seen from the spacecraft) and section 4 (ECL-EAR-OFM);
docs/science.md "Backgrounds". Everything here is linear in the sky, so the time average over a
key's good time is taken first, on the sky: the visibility weight of each sky direction (in the
frame of the key's reference attitude, fixed for the key) averaged over the good time; one
correlation of that weight map with the open mask then gives every pixel at once.

Sky directions are the 199 x 199 sky-image grid (TAN). Seen from a detector pixel centre, the
sky pixel (row, col) fills exactly the 4.5 mm mask-plane cell (i + row - 79, j + col - 79)
(both grids have the 4.5 mm pitch at 460 mm), so the projected solid angle that pixel (i, j)
sees through the open mask from sky pixel (row, col) is w(row, col) x open(cell), with
w = solid angle x cos(theta) and open the open area fraction of the cell. The occultation
fraction map is the ratio

    OFM(i, j) = sum w H open / sum w open,   H(row, col) = mean over the good time of the
                                             hidden fraction of the sky pixel,

and the Earth-aware templates keep the exact unocculted geometry of the `shape` template
(kernels/background.py, exact projected solid angles of the open elements):
CXB visible = shape x (1 - OFM), Earth disc = shape x OFM.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from numpy import fft

from ecpi_beam import instrument

# Time step of the average: the Earth moves 0.0625 deg/s on a 96 min orbit, a third of a sky
# pixel in 3 s.
AVERAGING_STEP_S = 3.0


@dataclass(frozen=True, eq=False)
class EarthTemplates:
    """Per key (obs_id, occ): the time-averaged geometry of the Earth in the field."""

    occultation_map: np.ndarray  # (80, 80) ECL-EAR-OFM, in [0, 1]
    averaging_time: float  # s of good time averaged over
    hidden_sky: np.ndarray  # (199, 199) mean hidden fraction of each sky pixel

    def split(self, unocculted):
        """(CXB-visible, Earth-disc) parts of an unocculted template (80, 80)."""
        unocculted = np.asarray(unocculted, dtype=float)
        return unocculted * (1.0 - self.occultation_map), unocculted * self.occultation_map


@functools.lru_cache(maxsize=1)
def _sky_geometry():
    """Sky-grid directions, their projected solid angle, and their angular size (rad)."""
    los = instrument.sky_grid_los()
    solid_angle = instrument.sky_pixel_solid_angle()
    weight = solid_angle * los[..., 0]
    for array in (los, weight):
        array.setflags(write=False)
    return los, weight, np.sqrt(solid_angle)


def hidden_fraction(earth_los, earth_radius_rad) -> np.ndarray:
    """(..., 199, 199) fraction of each sky pixel inside the Earth disc(s) of centre `earth_los`
    (unit LOS vectors (..., 3)) and angular radius `earth_radius_rad` (...): the limb is taken
    straight across a pixel, so the fraction is linear in the angular distance d over the
    pixel's width w; near the limb d - R = (cos R - cos d) / sin R to first order in w / R."""
    los, _, width = _sky_geometry()
    earth_los = np.asarray(earth_los, dtype=float)
    radius = np.asarray(earth_radius_rad, dtype=float)[..., None, None]
    # plain broadcasting: a K = 3 product is memory-bound, BLAS threads only thrash on it
    cos_distance = earth_los[..., 0, None, None] * los[..., 0]
    cos_distance += earth_los[..., 1, None, None] * los[..., 1]
    cos_distance += earth_los[..., 2, None, None] * los[..., 2]
    cos_distance -= np.cos(radius)
    cos_distance /= np.sin(radius) * width
    cos_distance += 0.5
    return np.clip(cos_distance, 0.0, 1.0, out=cos_distance)


def averaging_samples(good_time, sample_time, step=AVERAGING_STEP_S):
    """Times inside the good time, about `step` apart, and the good seconds each stands for."""
    good_time = np.asarray(good_time, dtype=float).reshape(-1, 2)
    if not len(good_time) or sample_time is None or len(sample_time) == 0:
        return np.zeros(0), np.zeros(0)
    lo, hi = float(good_time[:, 0].min()), float(good_time[:, 1].max())
    n = max(1, int(np.ceil((hi - lo) / step)))
    edges = np.linspace(lo, hi, n + 1)
    # good seconds before each edge, for disjoint good intervals
    before = np.clip(edges[:, None] - good_time[None, :, 0], 0.0,
                     good_time[None, :, 1] - good_time[None, :, 0]).sum(axis=1)
    weights = np.diff(before)
    centres = 0.5 * (edges[1:] + edges[:-1])
    keep = weights > 0
    return centres[keep], weights[keep]


def mean_hidden_sky(reference_quaternion, good_time, sample_time, earth_icrs, earth_radius,
                    step=AVERAGING_STEP_S):
    """(hidden (199, 199), seconds): the good-time mean hidden fraction of each sky pixel in
    the reference frame; the Earth direction and radius are interpolated from the samples."""
    hidden, seconds = hidden_sky_seconds(reference_quaternion, good_time, sample_time,
                                         earth_icrs, earth_radius, step)
    return (hidden / seconds if seconds > 0 else hidden), seconds


def hidden_sky_seconds(reference_quaternion, good_time, sample_time, earth_icrs, earth_radius,
                       step=AVERAGING_STEP_S):
    """(sum over the averaging samples of seconds x hidden fraction (199, 199), seconds): the
    mean's numerator and denominator, which add up over pieces of good time (a streaming
    window's tiles)."""
    times, seconds = averaging_samples(good_time, sample_time, step)
    hidden = np.zeros(_sky_geometry()[1].shape)
    if not len(times) or earth_icrs is None:  # no good time, or a timeline made without orbit
        return hidden, 0.0
    rotation = instrument.attitude_matrix(reference_quaternion)
    earth = np.stack([np.interp(times, sample_time, earth_icrs[:, k]) for k in range(3)], -1)
    earth /= np.linalg.norm(earth, axis=-1, keepdims=True)
    earth_los = earth @ rotation  # R^T e per sample
    radius = np.interp(times, sample_time, earth_radius)
    for direction, angle, weight in zip(earth_los, radius, seconds):
        hidden += weight * hidden_fraction(direction, angle)
    return hidden, float(seconds.sum())


def seen_through_mask(pattern, sky_weight) -> np.ndarray:
    """(80, 80): sum over sky pixels of sky_weight x the open fraction of the mask-plane cell
    that each detector pixel centre sees it through (cell i + row - 79, j + col - 79)."""
    cells = instrument.resample_mask(pattern)
    # valid correlation[n] = sum_k w[n + k] cells[k], and n = 79 - i
    return valid_correlation(np.asarray(sky_weight, float), cells)[::-1, ::-1]


def _next_fast_length(n: int) -> int:
    """The smallest 2^a 3^b 5^c >= n (a fast FFT length)."""
    best, power2 = 2 * n, 1
    while power2 < 2 * n:
        power3 = power2
        while power3 < 2 * n:
            length = power3
            while length < n:
                length *= 5
            best = min(best, length)
            power3 *= 3
        power2 *= 2
    return best


def valid_correlation(image, kernel) -> np.ndarray:
    """out[n] = sum_k image[n + k] kernel[k] over the kernel inside the image, by FFT (what
    scipy.signal.correlate(image, kernel, 'valid') gives, without the 0.4 s import of
    scipy.signal)."""
    shape = [a + b - 1 for a, b in zip(image.shape, kernel.shape)]
    fast = [_next_fast_length(n) for n in shape]
    full = fft.irfft2(fft.rfft2(image, fast) * fft.rfft2(kernel[::-1, ::-1], fast), fast)
    return full[kernel.shape[0] - 1:image.shape[0], kernel.shape[1] - 1:image.shape[1]]


def occultation_map(pattern, hidden_sky) -> np.ndarray:
    """ECL-EAR-OFM from a mean hidden-fraction sky map: per pixel, the projected-solid-angle
    weighted fraction of the sky seen through the open mask that the Earth hides."""
    _, weight, _ = _sky_geometry()
    total = seen_through_mask(pattern, weight)
    hidden = seen_through_mask(pattern, weight * hidden_sky)
    return np.clip(np.divide(hidden, total, out=np.zeros_like(total), where=total > 0), 0.0, 1.0)


def no_earth() -> EarthTemplates:
    """The geometry of a timeline that carries no Earth track: nothing hidden, nothing averaged."""
    return EarthTemplates(occultation_map=np.zeros((instrument.N_PIX,) * 2), averaging_time=0.0,
                          hidden_sky=np.zeros(_sky_geometry()[1].shape))


def earth_templates(pattern, timeline, occ_type, step=AVERAGING_STEP_S) -> EarthTemplates:
    """The EarthTemplates of one (observation, occultation type) from its ImagingTimeline."""
    hidden, seconds = mean_hidden_sky(timeline.reference_quaternion, timeline.class_gti[occ_type],
                                      timeline.sample_time, timeline.earth_icrs,
                                      timeline.earth_radius, step)
    return templates_from_hidden(pattern, hidden, seconds)


def templates_from_hidden(pattern, hidden_sky, seconds: float) -> EarthTemplates:
    """The EarthTemplates of a mean hidden-fraction sky map averaged over `seconds` (a batch
    key's, or a streaming window's summed from its tiles: seconds-weighted sums merge)."""
    ofm = (occultation_map(pattern, hidden_sky) if seconds > 0
           else np.zeros((instrument.N_PIX,) * 2))
    return EarthTemplates(occultation_map=ofm, averaging_time=float(seconds),
                          hidden_sky=np.asarray(hidden_sky, dtype=float))


def predicted_background_images(unocculted, templates: EarthTemplates, cxb_rate, earth_rate,
                                exposure) -> dict:
    """Predicted counts images of a key for the physics modes of kernels/background.py.

    unocculted: (80, 80) projected solid angle (sr) x pixel efficiency of the open mask (the
    `shape` template); cxb_rate, earth_rate: counts s-1 cm-2 sr-1 in the band
    (kernels/folding.py); exposure: the key's good time (s).
    """
    unocculted = np.asarray(unocculted, dtype=float)
    per_steradian = instrument.PIXEL_AREA_CM2 * float(exposure)
    visible, disc = templates.split(unocculted)
    return {"cxb_unocculted": cxb_rate * per_steradian * unocculted,
            "cxb_visible": cxb_rate * per_steradian * visible,
            "earth_emission": earth_rate * per_steradian * disc}
