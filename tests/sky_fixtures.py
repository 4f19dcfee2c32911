"""Small, fast sky images for the MOSA and SPEX kernel tests: simulated detector images of a
point source over a flat background (the simulator's thin-mask response), imaged by the IMAG
kernels, with the TAN WCS of the pointing. No event file is written."""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from ecpi_beam import instrument
from ecpi_beam.caldb import Caldb, default_caldb_dir
from ecpi_beam.kernels import imaging

PIXEL_AREA = instrument.PIXEL_AREA_CM2


@functools.lru_cache(maxsize=1)
def mask_pattern():
    return np.asarray(Caldb.open(default_caldb_dir()).mask_pattern())


@functools.lru_cache(maxsize=1)
def correlation_plan():
    return imaging.make_correlation_plan(instrument.resample_mask(mask_pattern()))


@dataclass(frozen=True)
class SimulatedSky:
    intensity: np.ndarray
    variance: np.ndarray
    snr: np.ndarray
    pcode: np.ndarray
    exposure: float
    wcs_keywords: dict
    quaternion: np.ndarray


def detector_expectation(quaternion, exposure, sources, background_per_pixel):
    """Mean counts (80, 80): each (ra, dec, flux in count s-1 cm-2 on axis) through the mask
    (pixel area x cos(theta) x open fraction), plus a flat background."""
    expected = np.full((instrument.N_PIX, instrument.N_PIX), float(background_per_pixel))
    for ra, dec, flux in sources:
        los = instrument.radec_to_los(ra, dec, quaternion)
        expected += flux * exposure * PIXEL_AREA * max(los[0], 0.0) \
            * instrument.pixel_open_fraction(mask_pattern(), los)
    return expected


def simulated_sky(rng, pointing, sources=(), exposure=100.0, background_per_pixel=50.0,
                  roll=0.0) -> SimulatedSky:
    """Poisson detector image -> balanced sky image, cos(theta)-corrected as IMAG does."""
    quaternion = instrument.quaternion_from_pointing(*pointing, roll)
    expected = detector_expectation(quaternion, exposure, sources, background_per_pixel)
    counts = rng.poisson(expected).astype(float)
    sky = imaging.irf_correction("cos_theta")(imaging.balanced_sky_image(
        correlation_plan(), counts, expected, np.ones_like(counts)))
    return SimulatedSky(sky.intensity, sky.variance, sky.snr, sky.pcode, exposure,
                        instrument.sky_wcs_keywords(quaternion), quaternion)


def flux_scale(exposure):
    """Sky intensity (counts per open pixel) -> count s-1 cm-2."""
    return 1.0 / (exposure * PIXEL_AREA)
