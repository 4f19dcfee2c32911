"""Simulated fields as detector images, without events: hundreds of sources through the
pipeline's BUBE and IMAG kernels in seconds (the error-bar calibration, docs/imaging.md
"Error model").

The counts of a band are Poisson draws of the simulator's own expectation
(`simulate.expected_counts`: the same sources, spectra, exact thin-mask shadows, CXB through
the mask, internal and noisy-pixel backgrounds) on the good pixels, which is what the event
file gives after CALI and BUBE's binning (the PHA rounding of each event aside). The images
then go through the kernels the Beam transforms call: `bube.BackgroundCorrector` (the
background fit of the key) and `sky_analysis.SkyAnalyser` (flat field, sky images, cleaning,
detection, the off-axis correction), and `sky_analysis.source_rows` (RA, Dec, ERR_RAD, FLUX).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ecpi_beam import instrument
from ecpi_beam.kernels import error_model, imaging
from ecpi_beam.kernels.bube import BackgroundCorrector
from ecpi_beam.kernels.occultation import geometric_partial_coding
from ecpi_beam.kernels.sky_analysis import SkyAnalyser, source_rows
from ecpi_beam.kernels.timeline import ImagingTimeline
from ecpi_beam.params import ImagParams
from ecpi_beam.simu.detector import DetectorResponse
from ecpi_beam.simu.scenario import Pointing, PointSource, Scenario, orbit_state
from ecpi_beam.simu.simulate import SkyGrid, build_components, expected_counts

CRAB_INDEX = 2.1
MIN_SEPARATION_PIXELS = 12.0  # between the sources of a field: ~5 PSF half-widths, no confusion
MIN_PCODE = 0.3  # sources where at least this fraction of the detector sees them
# the Earth's limb stays this far beyond the boresight: the field (44.4 deg per axis, 59 deg in
# the corners) sees neither the Earth nor its albedo, and no source is occulted
EARTH_CLEARANCE_DEG = 65.0


@dataclass(frozen=True)
class InjectedSource:
    name: str
    ra: float
    dec: float
    row: float  # 0-based sky-grid position of the pointing
    col: float
    flux: float  # counts s-1 cm-2 in the band per open detector area, on-axis equivalent
    #              (what FLUX estimates with irf_corr = cos_theta, the simulator's thin mask)


@dataclass(frozen=True)
class FieldImage:
    band: tuple  # PI range (lo, hi)
    counts: np.ndarray  # (80, 80) counts of the good pixels, 0 elsewhere
    exposure: float  # s of stable pointing
    quaternion: np.ndarray
    sources: tuple  # of InjectedSource


@dataclass(frozen=True)
class AnalysedField:
    field: FieldImage
    rows: tuple  # of sky_analysis.SourceRow, brightest first (ERR_RAD, FLUX_ERR of the model)
    detections: tuple  # of detection.Detection, the same sources: the fits' statistical errors
    variance: np.ndarray  # (199, 199) variance of the corrected intensity (the SNR's noise)


class FieldSimulator:
    """CALDB-dependent state prepared once: the simulator's detector response, the BUBE and
    IMAG kernels with the pipeline's default [bube] mode and [imag] parameters."""

    def __init__(self, caldb, mode: str = "shape_moretti_earth", imag_params=None):
        self.response = DetectorResponse.from_caldb(caldb)
        self.grid = SkyGrid(self.response)
        pixcal = caldb.pixel_calibration()
        self.good, self.efficiency = pixcal.good, pixcal.imaging_efficiency
        self.mode = mode
        self.corrector = BackgroundCorrector.from_caldb(caldb)
        self.analyser = SkyAnalyser(caldb.mask_pattern(), pixcal, imag_params or ImagParams(),
                                    irf=caldb.irf(), arf=caldb.arf())

    def field_scenario(self, rng, index: int, n_sources: int, snr_ranges, band,
                       duration: float = 150.0, min_pcode: float = MIN_PCODE) -> Scenario:
        """A random field: a pointing (RA, Dec, roll) held from the start with the Earth
        behind the instrument, and n_sources Crab-like sources (photon index 2.1) at least
        MIN_SEPARATION_PIXELS apart where the partial coding is at least min_pcode. Source k
        is aimed at an SNR in the band drawn log-uniformly in snr_ranges[k % len(snr_ranges)]
        (ranges (low, high); from the background's noise, the measured SNR scatters about
        it). OBS_ID and seed are `index`."""
        snr_ranges = np.reshape(np.asarray(snr_ranges, dtype=float), (-1, 2))
        base = None
        while base is None:  # a pointing the orbit can keep the Earth well away from
            pointing = Pointing(ra=float(rng.uniform(0.0, 360.0)),
                                dec=float(np.degrees(np.arcsin(rng.uniform(-1.0, 1.0)))),
                                roll=float(rng.uniform(0.0, 360.0)), start=0.0)
            base = _earth_behind(Scenario(name=f"field{index:06d}", obs_id=f"{index:010d}",
                                          seed=index, duration=duration, pointings=(pointing,)))
        ra0, dec0 = pointing.ra, pointing.dec
        quaternion = instrument.quaternion_from_pointing(ra0, dec0, pointing.roll)
        noise, flux_per_norm = self._noise_and_flux_scale(base, band)
        positions, sources = [], []
        while len(sources) < n_sources:
            row, col = rng.uniform(10.0, instrument.N_SKY - 11.0, 2)
            los = instrument.sky_pixel_to_los(row, col)
            if float(geometric_partial_coding(los)) < min_pcode or any(
                    np.hypot(row - r, col - c) < MIN_SEPARATION_PIXELS for r, c in positions):
                continue
            snr = float(np.exp(rng.uniform(*np.log(snr_ranges[len(sources) % len(snr_ranges)]))))
            # corrected intensity n = flux x exposure x pixel area; its noise is V / cos^2
            sigma = np.sqrt(noise[int(round(row)), int(round(col))]) / los[0]
            flux = snr * sigma / (duration * instrument.PIXEL_AREA_CM2)
            ra, dec = instrument.los_to_radec(los, quaternion)
            positions.append((row, col))
            sources.append(PointSource(name=f"S{len(sources):02d}", ra=round(float(ra), 6),
                                       dec=round(float(dec), 6),
                                       norm=float(flux / flux_per_norm), index=CRAB_INDEX))
        return replace(base, sources=tuple(sources))

    def _noise_and_flux_scale(self, scenario, band):
        """Variance of the (uncorrected) sky image of the scenario's background alone, and the
        band flux of a source of norm 1."""
        probe = replace(scenario, sources=(PointSource(name="probe", ra=0.0, dec=0.0, norm=1.0,
                                                       index=CRAB_INDEX),))
        components, maps = expected_counts(probe, self.response, [band], grid=self.grid)
        background = maps[1:, 0].sum(axis=0) * self.good
        efficiency = np.where(self.good, self.efficiency, 1.0)
        sky = imaging.balanced_sky_image(self.analyser.plan, background / efficiency,
                                         background / efficiency**2, self.good.astype(float))
        return sky.variance, components[0].sampler.folded_integral * float(
            components[0].band_fractions()[0])

    def image(self, scenario: Scenario, band, rng) -> FieldImage:
        """One Poisson draw of the band's counts over the scenario's stable pointing (which
        must start at 0: no opening slew) with the truth of its point sources."""
        pointing = scenario.resolved_pointings()[0]
        if pointing.start > 0 or len(scenario.resolved_pointings()) > 1:
            raise ValueError("a field is one pointing held from the start")
        components, maps = expected_counts(scenario, self.response, [band], grid=self.grid)
        counts = rng.poisson(maps[:, 0].sum(axis=0)) * self.good
        return FieldImage(tuple(band), counts.astype(float), scenario.duration,
                          pointing_quaternion(scenario), injected_sources(scenario, components))

    def injected(self, scenario: Scenario, band) -> tuple:
        """The truth of the scenario's point sources in the band (no image)."""
        return injected_sources(scenario, build_components(scenario, self.response, (band,)))

    def analyse(self, field: FieldImage, obs_id: str = "0000000000",
                model=error_model.ERROR_MODEL) -> AnalysedField:
        """The key's background fit, then IMAG, as the pipeline runs them (occultation type
        NEO, the whole exposure); the rows' ERR_RAD and FLUX_ERR of the error `model`."""
        good_time = np.array([[0.0, field.exposure]])
        timeline = ImagingTimeline(reference_quaternion=field.quaternion, good_time=good_time,
                                   class_gti={"NEO": good_time})
        band = instrument.band_name(field.band)
        key = self.corrector.correct(self.mode, field.counts, obs_id, band, "NEO", timeline)
        analysis = self.analyser.analyse(key.correction.corrected, key.correction.variance,
                                         self.good, self.efficiency, self.mode, band=field.band,
                                         model_terms=key.correction.terms)
        return AnalysedField(field, source_rows(analysis.detections, field.quaternion,
                                                key.exposure, model),
                             analysis.detections, analysis.images.variance)



def pointing_quaternion(scenario: Scenario) -> np.ndarray:
    pointing = scenario.resolved_pointings()[0]
    return instrument.quaternion_from_pointing(pointing.ra, pointing.dec, pointing.roll)


def injected_sources(scenario: Scenario, components) -> tuple:
    """The truth of the point-source components (built for one band, simulate.build_components
    or expected_counts) on the sky grid of the scenario's first pointing."""
    quaternion = pointing_quaternion(scenario)
    sources = []
    for component in components:
        if component.kind != "point":
            continue
        source = component.source
        row, col = instrument.los_to_sky_pixel(
            instrument.radec_to_los(source.ra, source.dec, quaternion))
        flux = component.sampler.folded_integral * float(component.band_fractions()[0])
        sources.append(InjectedSource(source.name, source.ra, source.dec, float(row),
                                      float(col), flux))
    return tuple(sources)


def _earth_behind(scenario: Scenario) -> Scenario | None:
    """The scenario with the orbit phase that keeps the Earth's limb furthest from the
    boresight over the observation; None if even that phase brings it within
    EARTH_CLEARANCE_DEG (a pointing far from the orbital plane)."""
    pointing = scenario.resolved_pointings()[0]
    boresight = instrument.radec_to_unit(pointing.ra, pointing.dec)
    times = scenario.tstart + np.linspace(0.0, scenario.duration, 11)

    def clearance(phase):
        position, _ = orbit_state(replace(scenario.orbit, phase_deg=phase), scenario.tstart,
                                  times)
        direction, radius = instrument.earth_direction_and_radius(position)
        return float(np.min(np.degrees(np.arccos(direction @ boresight) - radius)))

    phase = max(np.arange(0.0, 360.0, 2.0), key=clearance)
    if clearance(phase) < EARTH_CLEARANCE_DEG:
        return None
    return replace(scenario, orbit=replace(scenario.orbit, phase_deg=float(phase)))


def analysed_fields(simulator: FieldSimulator, seed: int, n_fields: int, n_sources: int,
                    snr_ranges, bands, duration: float = 150.0, min_pcode: float = MIN_PCODE,
                    model=error_model.ERROR_MODEL):
    """Random fields from `seed` (simulator.field_scenario, OBS_ID and seed seed x 10000 +
    index, sources aimed at their SNR in bands[0]), each band drawn and analysed: yields
    (scenario, AnalysedField) per field and band."""
    rng = np.random.default_rng(seed)
    for index in range(n_fields):
        scenario = simulator.field_scenario(rng, seed * 10000 + index, n_sources, snr_ranges,
                                            bands[0], duration, min_pcode)
        draws = np.random.default_rng(scenario.seed)
        for band in bands:
            yield scenario, simulator.analyse(simulator.image(scenario, band, draws),
                                              scenario.obs_id, model)
