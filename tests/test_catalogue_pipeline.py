"""One catalogue per observation: association across bands, known sources matched by name, NEW
sources flagged with a VOEvent 2.0 alert, and no NEW in fields holding only known sources.

Fields are made with the simulator's physics (exact thin-mask shadows of sources at their RA/Dec
through a pointing, Poisson counts, the CALDB pixel efficiencies) and analysed by the IMAG kernel
the pipeline runs; one test reads the products of the shared end-to-end pipeline run.
"""
import numpy as np
import pytest
import voeventparse
from astropy.io import fits
from pipeline_fixtures import pipeline_workspace, reference_run, small_observation  # noqa: F401

from ecpi_beam import instrument
from ecpi_beam.caldb import Caldb, default_caldb_dir
from ecpi_beam.io.voevent import voevent_xml
from ecpi_beam.kernels import background
from ecpi_beam.kernels.catalogue import (MATCH_RADIUS_PER_ERR_RAD, angular_separation_deg,
                                         build_catalogue, new_source_alerts)
from ecpi_beam.kernels.occultation import geometric_partial_coding
from ecpi_beam.kernels.sky_analysis import SkyAnalyser, source_rows
from ecpi_beam.params import ImagParams

BANDS = ((110, 580), (581, 1480))  # 13-60 and 60-150 keV
EXPOSURE = 1000.0
CRAB_COUNTS = 60.0  # counts per fully open pixel of the Crab in 13-60 keV in EXPOSURE


@pytest.fixture(scope="module")
def instrument_model():
    caldb = Caldb.open(default_caldb_dir())
    pixcal = caldb.pixel_calibration()
    good, efficiency = pixcal.good, pixcal.imaging_efficiency
    return dict(caldb=caldb, pattern=caldb.mask_pattern(), good=good, efficiency=efficiency,
                template=background.sky_illumination_template(caldb.mask_pattern(), efficiency),
                analyser=SkyAnalyser(caldb.mask_pattern(), pixcal, ImagParams(),
                                     irf=caldb.irf(), arf=caldb.arf()),
                known=caldb.known_sources())


def analyse_field(model, quaternion, sources, seed, bands=BANDS):
    """[(band, 'NEO', SourceRows)] of (ra, dec, counts per open pixel in 13-60 keV) sources;
    the harder band gets half the counts."""
    rng = np.random.default_rng(seed)
    entries = []
    for band, scale in zip(bands, (1.0, 0.5)):
        expected = np.full((80, 80), 100.0 * scale)
        for ra, dec, counts in sources:
            los = instrument.radec_to_los(ra, dec, quaternion)
            expected += scale * counts * instrument.pixel_open_fraction(model["pattern"], los)
        observed = rng.poisson(expected * model["efficiency"]) * model["good"]
        corrected = background.correct_background("shape", observed, model["good"],
                                                  model["template"],
                                                  {"efficiency": model["efficiency"]})
        analysis = model["analyser"].analyse(corrected.corrected, corrected.variance,
                                             model["good"], model["efficiency"], "shape",
                                             band=band)
        entries.append((instrument.band_name(band), "NEO",
                        source_rows(analysis.detections, quaternion, EXPOSURE)))
    return entries


def in_field(quaternion, ra, dec, min_pcode=0.2):
    los = instrument.radec_to_los(ra, dec, quaternion)
    return los[0] > 0 and float(geometric_partial_coding(los)) >= min_pcode


def test_known_source_is_matched_by_name_and_a_grb_is_new(instrument_model):
    known = instrument_model["known"]
    crab = int(np.flatnonzero(known.name == "Crab")[0])
    quaternion = instrument.quaternion_from_pointing(86.0, 20.0, 30.0)
    grb_ra, grb_dec = 80.0, 14.0  # no known source within a degree
    assert angular_separation_deg(grb_ra, grb_dec, known.ra_deg, known.dec_deg).min() > 1.0
    entries = analyse_field(instrument_model, quaternion,
                            [(known.ra_deg[crab], known.dec_deg[crab], CRAB_COUNTS),
                             (grb_ra, grb_dec, 15.0)], seed=1)
    catalogue = build_catalogue(entries, known)
    # each source is one row, detected in both bands
    assert len(catalogue.sources) == 2
    crab_row, grb_row = sorted(catalogue.sources, key=lambda s: s.known_name != "Crab")
    assert crab_row.known_name == "Crab" and not crab_row.new
    assert crab_row.name.startswith("ECL J053") and set(crab_row.bands) == {"110-580", "581-1480"}
    assert crab_row.snr == max(m.snr for m in crab_row.bands.values())
    assert grb_row.new and grb_row.known_name == "" and grb_row.snr >= 8.0
    assert angular_separation_deg(grb_row.ra, grb_row.dec, grb_ra, grb_dec) * 60 \
        < grb_row.err_rad_arcmin * MATCH_RADIUS_PER_ERR_RAD
    alerts = new_source_alerts(catalogue, "0000000777", 3.0e8, 3.0e8 + EXPOSURE)
    assert [alert.name for alert in alerts] == [grb_row.name]
    event = voeventparse.loads(voevent_xml(alerts[0]))
    assert voeventparse.valid_as_v2_0(event)
    position = voeventparse.get_event_position(event)
    assert position.ra == pytest.approx(grb_row.ra % 360, abs=1e-4)
    assert position.err == pytest.approx(grb_row.err_rad_arcmin / 60.0, abs=1e-4)


def test_no_new_source_in_ten_fields_of_known_sources(instrument_model):
    known = instrument_model["known"]
    crab_flux = float(known.flux[known.name == "Crab"][0])
    bright = np.flatnonzero(known.flux >= 0.02 * crab_flux)  # the 39 brightest
    rng = np.random.default_rng(10)
    n_known_found = 0
    for field in range(10):
        centre = known.ra_deg[bright[field * 3]], known.dec_deg[bright[field * 3]]
        quaternion = instrument.quaternion_from_pointing(
            centre[0] + rng.uniform(-5, 5), centre[1] + rng.uniform(-5, 5), rng.uniform(0, 360))
        sources = [(known.ra_deg[i], known.dec_deg[i], CRAB_COUNTS * known.flux[i] / crab_flux)
                   for i in range(len(known)) if in_field(quaternion, known.ra_deg[i],
                                                          known.dec_deg[i])]
        catalogue = build_catalogue(analyse_field(instrument_model, quaternion, sources,
                                                  seed=100 + field, bands=BANDS[:1]), known)
        assert not any(source.new for source in catalogue.sources), [
            (s.name, round(s.snr, 1)) for s in catalogue.sources if s.new]
        n_known_found += sum(bool(source.known_name) for source in catalogue.sources)
    assert n_known_found >= 10  # the fields did hold detected sources


def test_pipeline_catalogue_and_alert_of_the_simulated_source(reference_run, small_observation):
    """The end-to-end run's source (a 0.5 Crab where no catalogued source is) is one CATALOG
    row, named in SOURCES, flagged NEW, with a schema-valid VOEvent beside the products."""
    path = reference_run.product("ECL-SOP-IMA", small_observation.obs_id)
    with fits.open(path) as hdul:
        sources, catalog = hdul["SOURCES"].data, hdul["CATALOG"].data
        header = hdul["CATALOG"].header
    assert header["KNOWNCAT"] == "ECL-SRC-CAT" and header["NEWSNR"] == 8.0
    assert len(catalog) >= 1 and len(catalog) <= len(sources)
    best = catalog[np.argmax(catalog["SNR"])]
    assert set(sources["NAME"]) == set(catalog["NAME"])
    assert best["NEW"] and best["KNOWN_NAME"] == ""
    assert "ecpi_run: 1/1" in reference_run.stdout and f"sources {len(catalog)} " \
        in reference_run.stdout
    alerts = sorted(reference_run.working_out.glob("ECL-ALERT_*.xml"))
    assert len(alerts) == int(np.sum(catalog["NEW"]))
    events = [voeventparse.load(open(alert, "rb")) for alert in alerts]
    assert all(voeventparse.valid_as_v2_0(event) for event in events)
    names = {voeventparse.get_toplevel_params(e)["Source_Name"]["value"] for e in events}
    assert best["NAME"].strip() in names


@pytest.fixture(scope="module")
def crab_and_grb(tmp_path_factory):
    """The shipped Crab-on-axis scenario, shortened, with a GRB 10 deg off axis; one ecpi_run."""
    from pathlib import Path

    from ecpi_beam import run
    from ecpi_beam.params import params_text
    from ecpi_beam.simu import Grb, load_scenario, scenario_with, simulate

    root = tmp_path_factory.mktemp("crab_grb")
    base = load_scenario(Path(instrument.__file__).parent / "simu" / "scenarios"
                         / "crab_onaxis.toml")
    pointing = base.resolved_pointings()[0]
    quaternion = instrument.quaternion_from_pointing(pointing.ra, pointing.dec, pointing.roll)
    los = np.array([1.0, np.tan(np.radians(-8.0)), np.tan(np.radians(-6.0))])
    grb_ra, grb_dec = (float(v) for v in instrument.los_to_radec(los / np.linalg.norm(los),
                                                                quaternion))
    scenario = scenario_with(base, duration=150.0, grbs=(
        Grb(name="GRB", ra=grb_ra, dec=grb_dec, t_peak=80.0, peak_flux=3.0),))
    simulate(scenario, str(root / "obs"), Caldb.open(default_caldb_dir()))
    out = root / "out"
    out.mkdir()
    params = root / "params.ini"
    params.write_text(params_text(root / "obs", out, default_caldb_dir(),
                                  imag_out=("ECL-SOP-IMA",)))
    assert run.main([str(params)]) == 0
    return out, scenario.obs_id, (grb_ra, grb_dec)


def test_pipeline_matches_the_crab_by_name_and_alerts_on_the_grb(crab_and_grb, capsys):
    out, obs_id, (grb_ra, grb_dec) = crab_and_grb
    known = Caldb.open(default_caldb_dir()).known_sources()
    assert angular_separation_deg(grb_ra, grb_dec, known.ra_deg, known.dec_deg).min() > 1.0
    with fits.open(out / f"ECL-SOP-IMA_{obs_id}.fits") as hdul:
        catalog, sources = hdul["CATALOG"].data, hdul["SOURCES"].data
    crab = catalog[catalog["KNOWN_NAME"] == "Crab"]
    assert len(crab) == 1 and not crab["NEW"][0] and crab["KNOWN_SEP"][0] < 10.0
    assert crab["NAME"][0].startswith("ECL J053")
    assert set(sources["KNOWN_NAME"][sources["NAME"] == crab["NAME"][0]]) == {"Crab"}
    new = catalog[catalog["NEW"]]
    assert len(new) == 1
    assert angular_separation_deg(new["RA"][0], new["DEC"][0], grb_ra, grb_dec) * 60.0 \
        < 2 * new["ERR_RAD"][0]
    alerts = list(out.glob("ECL-ALERT_*.xml"))
    assert [a.name for a in alerts] == [f"ECL-ALERT_{obs_id}_" + new["NAME"][0].split()[1]
                                        .replace(".", "").replace("+", "p").replace("-", "m")
                                        + "_0.xml"]
    event = voeventparse.load(open(alerts[0], "rb"))
    assert voeventparse.valid_as_v2_0(event)
    assert voeventparse.get_toplevel_params(event)["OBS_ID"]["value"] == obs_id
