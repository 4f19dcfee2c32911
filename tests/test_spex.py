"""SPEX kernels and products on short simulated observations (the project's simulator):
a power-law source (photon index 2) fitted with the sherpa calls docs/spex.md gives (chi2 with
STAT_ERR), a GRB light curve (FRED peak
time and fluence), counts that agree between spectrum and light curve, a source-free position
consistent with zero, and products that fitsverify, sherpa, astropy and stingray read."""
import json
import warnings

import numpy as np
import pytest
from astropy.io import fits
from sky_fixtures import mask_pattern

from ecpi_beam import instrument
from ecpi_beam.caldb import Caldb, default_caldb_dir
from ecpi_beam.io.events import EVENT_DTYPE
from ecpi_beam.io.products import write_product
from ecpi_beam.io.spectral_products import (arf_hdus, light_curve_hdus, rmf_hdus,
                                            spectrum_hdus)
from ecpi_beam.kernels import background, calibrate, lightcurves, spectra
from ecpi_beam.simu import default_scenario, scenario_with, simulate

DURATION_S = 50.0
PL_OFFSET_DEG, GRB_OFFSET_DEG, EMPTY_OFFSET_DEG = (2.0, 1.5), (-4.0, 3.0), (7.0, -6.0)
GRB_T_PEAK = 20.0
TIME_BIN = 1.0
PI_PER_CHANNEL = 10
OBS_KEYWORDS = {"OBS_ID": "0000001301", "TSTART": 3.0e8, "TSTOP": 3.0e8 + DURATION_S}


def offset_radec(quaternion, dy, dz):
    los = np.array([1.0, np.tan(np.radians(dy)), np.tan(np.radians(dz))])
    ra, dec = instrument.los_to_radec(los / np.linalg.norm(los), quaternion)
    return float(ra), float(dec)


class Observation:
    """Simulated triplet, calibrated in memory: photons, good time, attitude, truth."""

    def __init__(self, directory, name, seed, **content):
        base = default_scenario()
        pointing = base.resolved_pointings()[0]
        self.quaternion = demo_quaternion()
        scenario = scenario_with(
            base, name=name, obs_id=OBS_KEYWORDS["OBS_ID"], seed=seed, duration=DURATION_S,
            initial_slew_deg=0.0, pointings=[dict(ra=pointing.ra, dec=pointing.dec,
                                                  roll=pointing.roll, start=0.0)],
            **{"sources": [], "grbs": [], **content})
        self.caldb = Caldb.open(default_caldb_dir())
        simulate(scenario, str(directory), self.caldb)
        self.truth = json.loads((directory / f"truth_{name}.json").read_text())
        table = fits.getdata(directory / f"ECL-EVT-SEC_{name}.fits", "EVENTS")
        events = np.zeros(len(table), EVENT_DTYPE)
        for column in EVENT_DTYPE.names:
            events[column] = table[column]
        self.gti = np.array(self.truth["gti"])
        calibrated, _ = calibrate.calibrate_events(events, self.caldb.pixel_calibration(),
                                                   self.gti)
        self.photons = calibrated[(calibrated["FLAG"] & instrument.FLAG_FORCED_TRIGGER) == 0]
        pixcal = self.caldb.pixel_calibration()
        efficiency = np.where(pixcal.status == 0, pixcal.effic, 0.0)
        self.weighter = spectra.SourceWeighter(
            mask_pattern(), efficiency, background.sky_illumination_template(mask_pattern(),
                                                                             efficiency))

    def weights(self, positions, index=1):
        sources = spectra.distinct_sources(positions, 0.0)
        mask_weights = self.weighter.weights(sources, index, self.quaternion)
        return mask_weights, mask_weights.of_events(self.photons["IDET"], self.photons["JDET"])


def demo_quaternion():
    pointing = default_scenario().resolved_pointings()[0]
    return instrument.quaternion_from_pointing(pointing.ra, pointing.dec, pointing.roll)


@pytest.fixture(scope="module")
def power_law(tmp_path_factory):
    ra, dec = offset_radec(demo_quaternion(), *PL_OFFSET_DEG)
    return Observation(tmp_path_factory.mktemp("pl"), "pl", 1301,
                       sources=[dict(name="PL", ra=ra, dec=dec, norm=10.0, index=2.0)])


@pytest.fixture(scope="module")
def burst(tmp_path_factory):
    ra, dec = offset_radec(demo_quaternion(), *GRB_OFFSET_DEG)
    return Observation(tmp_path_factory.mktemp("grb"), "grb", 1302, grbs=[dict(
        name="GRB", ra=ra, dec=dec, t_peak=GRB_T_PEAK, peak_flux=5.0, rise=1.0, decay=6.0)])


def source_position(observation):
    source = observation.truth["sources"][0]
    return source["ra"], source["dec"]


def write_spectrum(directory, observation, positions, index=1):
    """PHA + RMF + ARF of one source, as SPEX writes them; returns the PHA path."""
    mask_weights, event_weights = observation.weights(positions, index)
    spectrum = spectra.weighted_spectrum(observation.photons["PI"], event_weights,
                                         PI_PER_CHANNEL, DURATION_S)
    caldb = observation.caldb
    stem = directory / f"src{index}"
    write_product(f"{stem}.rmf", rmf_hdus(spectra.rebinned_rmf(caldb.rmf(), PI_PER_CHANNEL)),
                  OBS_KEYWORDS)
    write_product(f"{stem}.arf", arf_hdus(caldb.arf(), spectra.source_arf(
        caldb.arf(), caldb.irf(), mask_weights), {}), OBS_KEYWORDS)
    write_product(f"{stem}.fits", spectrum_hdus(spectrum, f"src{index}.rmf", f"src{index}.arf",
                                                {}), OBS_KEYWORDS)
    return f"{stem}.fits", spectrum


def test_balanced_weights_cancel_flat_and_shaped_backgrounds_and_count_the_source():
    pattern = mask_pattern()
    efficiency = np.random.default_rng(3).uniform(0.8, 1.0, (80, 80))
    efficiency[:3] = 0.0  # dead rows
    template = background.sky_illumination_template(pattern, efficiency)
    direction = instrument.sky_pixel_to_los(95.0, 104.0)
    weights = spectra.balanced_mask_weights(pattern, efficiency, direction, (template,))
    assert abs(np.sum(weights.weights * efficiency)) < 1e-9 * np.abs(weights.weights).sum()
    assert abs(np.sum(weights.weights * template)) < 1e-9 * np.abs(weights.weights * template).sum()
    shadow = instrument.pixel_open_fraction(pattern, direction) * efficiency
    source_counts = 37.0 * shadow.sum()
    assert np.sum(weights.weights * 37.0 * shadow) == pytest.approx(source_counts, rel=1e-9)
    assert np.all(weights.weights[:3] == 0.0)


def documented_sherpa_calls() -> str:
    """The sherpa block of docs/spex.md ("Fitting a spectrum: read this first"), as written."""
    from pathlib import Path

    text = (Path(__file__).parents[1] / "docs" / "spex.md").read_text()
    block = text.split("```python\n", 1)[1].split("```", 1)[0]
    assert "use_errors=True" in block and 'set_stat("chi2")' in block
    return block


def test_power_law_fitted_with_the_documented_sherpa_calls_gives_index_and_flux(power_law,
                                                                                  tmp_path):
    from sherpa.astro import ui
    path, spectrum = write_spectrum(tmp_path, power_law, [source_position(power_law)])
    truth = power_law.truth["sources"][0]
    assert spectrum.total == pytest.approx(truth["injected_total"], rel=0.05)
    ui.clean()
    block = documented_sherpa_calls().replace("ECL-SPS-S1_0000000001_S01_PEO.fits", path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exec(compile(block, "docs/spex.md", "exec"), {})  # noqa: S102 - the documented calls
    pl = ui.get_model_component("pl")
    result = ui.get_fit_results()
    true_flux = 10.0 * (1.0 / 15.0 - 1.0 / 150.0)  # ph cm-2 s-1 in 15-150 keV for norm 10, index 2
    assert pl.gamma.val == pytest.approx(truth["spectrum"]["index"], abs=0.1)
    assert ui.calc_photon_flux(15.0, 150.0) == pytest.approx(true_flux, rel=0.10)
    assert result.statval / result.dof < 1.0 + 4.0 * np.sqrt(2.0 / result.dof)
    assert ui.get_covar_results().parmaxes[0] < 0.1


def test_what_docs_spex_says_of_sherpas_defaults_holds(power_law, tmp_path):
    """Without use_errors chi2 has no errors; C-stat fails on net counts (docs/spex.md)."""
    from sherpa.astro import ui
    from sherpa.utils.err import StatErr
    path, spectrum = write_spectrum(tmp_path, power_law, [source_position(power_law)])
    assert (spectrum.counts < 0).any()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ui.clean()
        ui.load_pha(path)
        ui.set_source(ui.powlaw1d.pl)
        ui.set_stat("chi2")
        with pytest.raises(StatErr, match="must provide a staterror column"):
            ui.fit()
        ui.set_stat("cstat")
        with pytest.raises(Exception, match="likelihood calculation failed"):
            ui.fit()


def test_channels_below_the_threshold_or_without_events_are_bad_quality():
    counts, variance = np.ones(150), np.ones(150)
    variance[140] = 0.0  # no event
    spectrum = spectra.finish_spectrum(counts, variance, 10, 1.0)
    bad = np.flatnonzero(spectrum.quality == spectra.QUALITY_BAD).tolist()
    assert bad == [0, 1, 140]  # 2-3 and 3-4 keV, then the empty one
    fine = spectra.finish_spectrum(np.ones(1500), np.ones(1500), 1, 1.0)
    assert np.flatnonzero(fine.quality).tolist() == list(range(20))  # 2.0-4.0 keV


def test_the_response_has_nothing_below_the_threshold_and_keeps_its_row_sums():
    rmf = Caldb.open(default_caldb_dir()).rmf()
    truncated = spectra.threshold_truncated(rmf)
    below = rmf.e_min < instrument.LOW_THRESHOLD_KEV
    assert not truncated[:, below].any()
    rows = np.asarray(rmf.matrix, float).sum(axis=1)
    kept = truncated.sum(axis=1) > 0
    np.testing.assert_allclose(truncated.sum(axis=1)[kept], rows[kept], rtol=1e-9)
    centre = 0.5 * (rmf.energ_lo + rmf.energ_hi)
    assert kept[(centre > 4.5) & (centre < 150.0)].all()


def test_a_source_free_position_is_consistent_with_zero(power_law):
    positions = [source_position(power_law),
                 offset_radec(power_law.quaternion, *EMPTY_OFFSET_DEG)]
    _, event_weights = power_law.weights(positions, index=2)
    spectrum = spectra.weighted_spectrum(power_law.photons["PI"], event_weights, 100, DURATION_S)
    chi2 = np.sum((spectrum.counts / spectrum.stat_err) ** 2)
    assert chi2 < len(spectrum.counts) + 4.0 * np.sqrt(2.0 * len(spectrum.counts))
    assert abs(spectrum.total) < 3.0 * np.sqrt(np.sum(spectrum.stat_err**2))
    curve = lightcurves.weighted_light_curve(power_law.photons["TIME"], event_weights,
                                             power_law.gti, 5.0)
    chi2 = np.sum((curve.counts / curve.counts_err) ** 2)
    assert chi2 < len(curve.counts) + 4.0 * np.sqrt(2.0 * len(curve.counts))


def test_grb_light_curve_recovers_the_fred_peak_and_the_fluence(burst):
    _, event_weights = burst.weights([source_position(burst)])
    band = instrument.DEFAULT_BANDS[0]
    in_band = (burst.photons["PI"] >= band[0]) & (burst.photons["PI"] <= band[1])
    curve = lightcurves.weighted_light_curve(burst.photons["TIME"][in_band],
                                             event_weights[in_band], burst.gti, TIME_BIN)
    peak_time = curve.time[np.argmax(curve.rate)] - burst.truth["tstart"]
    assert abs(peak_time - GRB_T_PEAK) <= TIME_BIN
    expected = burst.truth["sources"][0]["expected"][0]  # mean counts in the band
    assert curve.counts.sum() == pytest.approx(expected, rel=0.15)


def test_light_curve_counts_add_up_to_the_spectrum(burst):
    _, event_weights = burst.weights([source_position(burst)])
    gti = np.array([[burst.gti[0, 0], burst.gti[0, 0] + 30.0], [burst.gti[0, 0] + 32.5,
                                                                 burst.gti[0, 1]]])
    edges = lightcurves.bin_edges(gti, 2.0)
    sums = spectra.source_sums(burst.photons, event_weights, gti, edges,
                               [(0, instrument.N_PI - 1), (13, 60)], 1)
    curve = lightcurves.finish_light_curve(edges, *sums.light_curves[:, 0], gti)
    assert curve.counts.sum() == pytest.approx(sums.spectrum[0].sum(), rel=1e-12)
    assert sums.light_curves[0, 1].sum() == pytest.approx(sums.spectrum[0, 13:61].sum(),
                                                          rel=1e-12)
    assert np.isclose(curve.fracexp, 0.75).sum() == 1  # the bin cut by the gap
    assert len(curve.time) == len(edges) - 2  # the bin inside the gap is left out


def test_products_are_ogip_files_that_fitsverify_astropy_and_stingray_read(burst, tmp_path,
                                                                          fitsverify):
    path, spectrum = write_spectrum(tmp_path, burst, [source_position(burst)])
    for suffix in (".fits", ".rmf", ".arf"):
        fitsverify(path.replace(".fits", suffix))
    with fits.open(path) as hdul:
        header = hdul["SPECTRUM"].header
        assert header["POISSERR"] is False and header["RESPFILE"] == "src1.rmf"
        assert header["EXPOSURE"] == DURATION_S and header["BACKSCAL"] == 1.0
    _, event_weights = burst.weights([source_position(burst)])
    curve = lightcurves.weighted_light_curve(burst.photons["TIME"], event_weights, burst.gti,
                                             TIME_BIN)
    lc_path = tmp_path / "lc.fits"
    write_product(str(lc_path), light_curve_hdus(curve, burst.gti, {}), OBS_KEYWORDS)
    fitsverify(lc_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # stingray: no numba; "FITS light curves under testing"
        from stingray import Lightcurve
        read = Lightcurve.read(str(lc_path), fmt="hea", skip_checks=True)
    np.testing.assert_allclose(np.asarray(read.time, float), curve.time, rtol=0, atol=1e-6)
    np.testing.assert_allclose(read.counts, curve.counts, rtol=1e-5, atol=1e-3)


def test_a_detection_is_named_as_its_catalogue_source():
    from ecpi_beam.kernels.catalogue import CatalogueSource, ObservationCatalogue
    from ecpi_beam.transforms.spex import catalogue_name

    def source(name, known_name):
        return CatalogueSource(name=name, ra=83.6, dec=22.0, err_rad_arcmin=2.0, snr=30.0,
                               best_band="13-60", known_name=known_name, known_sep_arcmin=1.0,
                               new=not known_name, bands={}, n_detections=1)

    catalogue = ObservationCatalogue(
        (source("ECL J053424.0+220000", "Crab"), source("ECL J010000.0+100000", "")),
        ("13-60",), {("13-60", "PEO", 0): 0, ("13-60", "PEO", 1): 1})
    assert catalogue_name(catalogue, "13-60", "PEO", 0) == "Crab"
    assert catalogue_name(catalogue, "13-60", "PEO", 1) == "ECL J010000.0+100000"
    assert catalogue_name(None, "13-60", "PEO", 0) == ""
    named = spectra.distinct_sources([(83.6, 22.0), (15.0, 10.0)], 1.0, names=["Crab", ""])
    assert [s.name for s in named] == ["Crab", "ECL J010000.0+100000"]
