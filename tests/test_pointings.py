"""Observations of several stable pointings: every pointing is imaged on its own (its good time,
exposure, frame and background), slews are left out and reported, products name each
pointing's HDUs, the catalogue associates the detections of all pointings, MOSA and SPEX take
each pointing, streaming windows never mix two pointings; and observations of one pointing give
the products main gave (docs/imaging.md, "Pointings"; docs/products.md)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from ecpi_beam import instrument
from ecpi_beam.kernels.timeline import (POINTING_MIN_TIME_DEFAULT, POINTING_TOLERANCE_DEG,
                                        imaging_timeline)
from pipeline_fixtures import (angular_offset_arcmin, describe, run_ecpi, sources_table,
                               write_params)
from product_fingerprints import differences, product_fingerprint

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = ROOT / "ecpi_beam" / "simu" / "scenarios" / "two_pointings.toml"
DATA = Path(__file__).resolve().parent / "data"
OCC = ("NEO", "PEO", "TEO")
MAX_OFFSET_ARCMIN = 5.0  # bright sources (SNR > 100): their offsets are 1-2' (docs/imaging.md)


# ============================================================================================
# The timeline: stable pointings (kernels/timeline.py)
# ============================================================================================
def attitudes(*legs):
    """1 Hz attitude samples of (ra, dec, roll, seconds) legs, one after the other."""
    qparam = np.concatenate([np.tile(instrument.quaternion_from_pointing(ra, dec, roll),
                                     (int(seconds), 1)) for ra, dec, roll, seconds in legs])
    times = np.arange(len(qparam), dtype=float)
    far = np.tile([0.0, 0.0, -7.0e6], (len(times), 1))  # the Earth far from every field
    return times, qparam, far


def test_each_stable_pointing_has_its_own_good_time_and_frame():
    times, qparam, position = attitudes((100.0, 20.0, 0.0, 300), (120.0, 20.0, 0.0, 60),
                                        (150.0, 20.0, 30.0, 340))
    good = np.array([[0.0, 300.0], [360.0, 699.0]])  # the slew is not good time (FLAG_ATT)
    timeline = imaging_timeline(times, qparam, times, position, good, OCC)
    assert timeline.n_pointings == 2
    first, second = timeline.for_pointing(0), timeline.for_pointing(1)
    assert [p.pointing.index for p in (first, second)] == [0, 1]  # in time order
    for view, (ra, dec, roll) in ((first, (100.0, 20.0, 0.0)), (second, (150.0, 20.0, 30.0))):
        expected = instrument.quaternion_from_pointing(ra, dec, roll)
        assert abs(view.reference_quaternion @ expected) == pytest.approx(1.0, abs=1e-12)
    assert first.exposure("PEO") == pytest.approx(300.0, abs=1.0)
    assert second.exposure("PEO") == pytest.approx(339.0, abs=1.0)
    assert first.good_time[-1, 1] <= second.good_time[0, 0]  # disjoint
    assert (first.pointing.tstart, second.pointing.tstop) == (0.0, 699.0)
    assert timeline.off_pointing_seconds == pytest.approx(0.0, abs=1.0)
    # the observation's timeline is its first pointing's, so its users need not change
    assert timeline.reference_quaternion is first.reference_quaternion


def test_the_longest_held_pointing_alone_gives_the_timeline_of_one_pointing():
    times, qparam, position = attitudes((100.0, 20.0, 0.0, 400))
    timeline = imaging_timeline(times, qparam, times, position, np.array([[0.0, 399.0]]), OCC)
    assert (timeline.n_pointings, timeline.pointing, timeline.pointings) == (1, None, ())
    assert timeline.for_pointing(0) is timeline
    with pytest.raises(KeyError):
        timeline.for_pointing(1)


def test_a_pointing_held_too_briefly_is_not_imaged_and_is_counted():
    times, qparam, position = attitudes((100.0, 20.0, 0.0, 400), (130.0, 20.0, 0.0, 15))
    good = np.array([[0.0, 414.0]])
    timeline = imaging_timeline(times, qparam, times, position, good, OCC)
    assert timeline.n_pointings == 1
    assert timeline.off_pointing_seconds == pytest.approx(15.0, abs=1.0)
    shorter = imaging_timeline(times, qparam, times, position, good, OCC, min_pointing_s=10.0)
    assert shorter.n_pointings == 2 and shorter.off_pointing_seconds < 1.0
    # the longest-held pointing is imaged however short (as before pointings were counted)
    brief = imaging_timeline(times[:12], qparam[:12], times[:12], position[:12],
                             np.array([[0.0, 11.0]]), OCC)
    assert brief.exposure("PEO") == pytest.approx(11.0)


def test_a_pointing_revisited_is_one_pointing_and_a_roll_is_another():
    times, qparam, position = attitudes((100.0, 20.0, 0.0, 200), (140.0, 20.0, 0.0, 100),
                                        (100.0, 20.0, 0.0, 100), (100.0, 20.0, 1.0, 100))
    timeline = imaging_timeline(times, qparam, times, position, np.array([[0.0, 499.0]]), OCC)
    assert timeline.n_pointings == 3
    first = timeline.for_pointing(0)
    assert len(first.good_time) == 2  # both visits of the first attitude
    assert first.exposure("PEO") == pytest.approx(300.0, abs=1.0)
    # rolled by 1 deg, far beyond the tolerance: a pointing of its own
    assert POINTING_TOLERANCE_DEG < 1.0
    assert timeline.for_pointing(2).pointing.tstart == pytest.approx(399.5)


def test_held_longer_than_the_default_every_attitude_is_a_pointing():
    """The attitudes of tests/test_bube_imag_transforms.py's timeline test: 50 s elsewhere,
    530 s on target, then 20.5 s rolled; with the default minimum (20 s), three pointings."""
    times, qparam, position = attitudes((115.0, -30.0, 10.0, 50), (120.0, -30.0, 10.0, 530),
                                        (120.0, -30.0, 12.0, 21))
    timeline = imaging_timeline(times, qparam, times, position, np.array([[0.0, 600.0]]), OCC)
    assert POINTING_MIN_TIME_DEFAULT == 20.0
    assert timeline.n_pointings == 3
    assert [round(timeline.for_pointing(k).exposure("TEO")) for k in range(3)] == [50, 530, 20]


# ============================================================================================
# The held-out case: two pointings 50 deg apart, a bright source in each field only
# ============================================================================================
@pytest.fixture(scope="module")
def two_pointings(tmp_path_factory, pipeline_workspace):
    """The shipped scenario (450 s, a 60 s slew, 400 s; SrcA in the first field, SrcB in the
    second) run through every stage: BUBE, IMAG, MOSA (its accumulator and mosaic), SPEX."""
    from ecpi_beam.caldb import Caldb
    from ecpi_beam.simu import load_scenario, simulate

    root = tmp_path_factory.mktemp("two_pointings")
    scenario = load_scenario(SCENARIO)
    truth = simulate(scenario, str(root / "obs"),
                     Caldb.open(str(pipeline_workspace / ".ect" / "caldb")))
    out = root / "out"
    out.mkdir()
    params = write_params(
        root / "params.ini", root / "obs", out, cali_out=(),
        bube_out=("ECL-DET-IMA", "ECL-DET-UBC", "ECL-GTI-UBC", "ECL-EAR-OFM"),
        bkg_cor_mod=("shape_moretti_earth",), energy_channels=((13, 60), (61, 140)),
        extra={"mosa": {"out_files": "['ECL-MOS-IMA', 'ECL-MOS-SOP', 'ECL-MOS-LCS']"},
               "spex": {"out_files": "['ECL-SPS-S1', 'ECL-LCS-S1']"}})
    result = run_ecpi(params, "--runner", "DirectRunner", workspace=pipeline_workspace,
                      working_out=out)
    assert result.returncode == 0, describe(result)
    return scenario, truth, result


def product(result, name, obs_id="0000000226"):
    return result.working_out / f"{name}_{obs_id}.fits"


def truth_source(truth, name):
    return next(source for source in truth.sources if source["name"] == name)


def test_the_source_of_each_pointing_is_found(two_pointings, fitsverify):
    scenario, truth, result = two_pointings
    with fits.open(product(result, "ECL-SOP-IMA")) as hdul:
        catalog = hdul["CATALOG"].data
    assert len(catalog) == 2, catalog
    for name, pointing in (("SrcA", 0), ("SrcB", 1)):
        source = truth_source(truth, name)
        offsets = angular_offset_arcmin(source["ra"], source["dec"], catalog["RA"],
                                        catalog["DEC"])
        found = catalog[int(np.argmin(offsets))]
        assert offsets.min() < MAX_OFFSET_ARCMIN, (name, offsets)
        assert found["BEST_PNT"] == pointing and found["SNR"] > 50
        assert found["N_DET"] == 2  # its two bands, in its own pointing only
    rows = sources_table(product(result, "ECL-SOP-IMA"))
    assert sorted({row["PNT_ID"] for row in rows}) == [0, 1]
    for product_name in ("ECL-DET-IMA", "ECL-DET-UBC", "ECL-GTI-UBC", "ECL-EAR-OFM",
                         "ECL-SKY-IMA", "ECL-SOP-IMA", "ECL-MOS-ACC"):
        fitsverify(product(result, product_name))


def test_each_pointing_has_its_own_hdus_exposure_and_frame(two_pointings):
    scenario, truth, result = two_pointings
    first, second = scenario.pointings
    with fits.open(product(result, "ECL-SKY-IMA")) as hdul:
        names = [hdu.name for hdu in hdul]
        # the first pointing keeps the names of an observation of one pointing
        assert "SNR_13-60_PEO" in names and "SNR_13-60_PEO_P1" in names
        assert len(names) == 1 + 2 * 2 * 6  # 2 pointings x 2 bands x 6 maps
        for extname, pointing, seconds in (("SNR_13-60_PEO", first, 450.0),
                                           ("SNR_61-140_PEO_P1", second, 400.0)):
            header = hdul[extname].header
            assert header["PNT_ID"] == (0 if pointing is first else 1)
            assert header["EXPOSURE"] == pytest.approx(seconds, abs=2.0)
            assert header["TSTOP"] - header["TSTART"] == pytest.approx(seconds, abs=2.0)
            for key, value in (("RA_PNT", pointing.ra), ("CRVAL1", pointing.ra),
                               ("DEC_PNT", pointing.dec), ("CRVAL2", pointing.dec)):
                assert header[key] == pytest.approx(value, abs=0.01), (extname, key)
        # the primary header keeps the observation's span
        assert hdul[0].header["TSTOP"] - hdul[0].header["TSTART"] == pytest.approx(930.0)
    with fits.open(product(result, "ECL-GTI-UBC")) as hdul:
        assert [hdu.name for hdu in hdul[1:]] == ["GTI_PEO", "GTI_PEO_P1"]
        gti_first, gti_second = hdul["GTI_PEO"].data, hdul["GTI_PEO_P1"].data
        assert gti_first["STOP"].max() <= truth.tstart + 470.5  # the slew is in neither
        assert gti_second["START"].min() >= truth.tstart + 529.5
    with fits.open(product(result, "ECL-DET-IMA")) as hdul:
        assert [hdu.name for hdu in hdul[1:]] == [
            "COUNTS_13-60_PEO", "COUNTS_61-140_PEO", "COUNTS_13-60_PEO_P1",
            "COUNTS_61-140_PEO_P1", "PIXEL_MASK"]


def test_slews_are_reported_in_the_summary_line(two_pointings):
    _, _, result = two_pointings
    summary = re.search(r"stable pointings imaged (\d+), slews (\d+) s not imaged",
                        result.stdout)
    assert summary, result.stdout
    assert int(summary.group(1)) == 2
    assert 75 <= int(summary.group(2)) <= 81  # the opening 20 s and the 60 s between
    assert "good time not imaged" not in result.stdout


def test_mosa_takes_each_pointing_and_finds_both_sources(two_pointings):
    _, truth, result = two_pointings
    with fits.open(product(result, "ECL-MOS-ACC")) as hdul:
        residuals = [hdu.name for hdu in hdul if hdu.name.startswith("RESIDUAL_")]
        assert residuals == ["RESIDUAL_13-60_PEO", "RESIDUAL_61-140_PEO",
                             "RESIDUAL_13-60_PEO_P1", "RESIDUAL_61-140_PEO_P1"]
        assert hdul["RESIDUAL_13-60_PEO_P1"].header["PNT_ID"] == 1
    with fits.open(result.working_out / "ECL-MOS-IMA_MOSAIC.fits") as hdul:
        assert hdul["HEALPIX_13-60_PEO"].header["NOBS"] == 2  # one image per pointing
    with fits.open(result.working_out / "ECL-MOS-SOP_MOSAIC.fits") as hdul:
        catalog = hdul["CATALOG"].data
    for name in ("SrcA", "SrcB"):
        source = truth_source(truth, name)
        assert angular_offset_arcmin(source["ra"], source["dec"], catalog["RA"],
                                     catalog["DEC"]).min() < MAX_OFFSET_ARCMIN, name
    with fits.open(result.working_out / "ECL-MOS-LCS_MOSAIC.fits") as hdul:
        curves = [hdu.data for hdu in hdul if hdu.name.startswith("RATE_")]
    # each source's light curve: one point, in the pointing that sees it
    times = sorted(float(curve["TIME"][0]) - truth.tstart for curve in curves)
    assert all(len(curve) == 1 for curve in curves)
    assert times[0] == pytest.approx(245.0, abs=2.0) and times[-1] == pytest.approx(730.0,
                                                                                    abs=2.0)


def test_spex_extracts_each_source_from_the_pointing_that_sees_it(two_pointings):
    _, truth, result = two_pointings
    spectra = sorted(path.name for path in result.working_out.glob("ECL-SPS-S1_*.fits"))
    assert len(spectra) == 2, spectra
    for path in spectra:
        with fits.open(result.working_out / path) as hdul:
            header = hdul["SPECTRUM"].header
            source = truth_source(truth, "SrcB" if path.endswith("_P1.fits") else "SrcA")
            assert angular_offset_arcmin(source["ra"], source["dec"], header["RA_OBJ"],
                                         header["DEC_OBJ"]) < MAX_OFFSET_ARCMIN, path
            assert header["EXPOSURE"] == pytest.approx(400.0 if path.endswith("_P1.fits")
                                                       else 450.0, abs=2.0)
    assert sum(path.endswith("_PEO_P1.fits") for path in spectra) == 1
    curves = list(result.working_out.glob("ECL-LCS-S1_*_P1.fits"))
    assert len(curves) == 2  # SrcB's two bands


def test_quicklook_draws_each_pointing(two_pointings, tmp_path):
    from ecpi_beam.quicklook import quicklook

    _, _, result = two_pointings
    made = {path.name for path in quicklook(str(result.working_out), tmp_path)}
    assert {"0000000226_sky_snr.png", "0000000226_sky_snr_P1.png",
            "0000000226_detector_P1.png"} <= made


# ============================================================================================
# One source seen from two pointings: one catalogue entry
# ============================================================================================
def test_a_source_seen_from_two_pointings_is_one_catalogue_source(tmp_path, pipeline_workspace,
                                                                  capfd, monkeypatch):
    from ecpi_beam.caldb import Caldb
    from ecpi_beam.cli import ecpi_run
    from ecpi_beam.simu import default_scenario, scenario_with, simulate
    from ecpi_beam.simu.scenario import Pointing

    base = default_scenario()
    first = base.resolved_pointings()[0]
    pointings = (Pointing(first.ra, first.dec, first.roll, start=first.start, duration=100.0),
                 Pointing(first.ra + 5.0, first.dec, first.roll, start=first.start + 120.0))
    crab = base.sources[0]  # 3.6 deg from the first boresight, 2-3 deg from the second
    scenario = scenario_with(base, name="two_pointings_overlap", obs_id="0000000302",
                             duration=first.start + 180.0, pointings=pointings, sources=[crab])
    directory, out = tmp_path / "obs", tmp_path / "out"
    out.mkdir()
    simulate(scenario, str(directory), Caldb.open(str(pipeline_workspace / ".ect" / "caldb")))
    params = write_params(tmp_path / "params.ini", directory, out, cali_out=(), bube_out=(),
                          imag_out=("ECL-SOP-IMA",), energy_channels=((13, 60), (61, 140)))
    monkeypatch.setenv("ECPI_HOME", str(pipeline_workspace))
    capfd.readouterr()
    assert ecpi_run([str(params)]) == 0
    captured = capfd.readouterr()
    assert "stable pointings imaged 2" in captured.out, captured.out
    with fits.open(out / "ECL-SOP-IMA_0000000302.fits") as hdul:
        catalog, rows = hdul["CATALOG"].data, hdul["SOURCES"].data
    near = angular_offset_arcmin(crab.ra, crab.dec, catalog["RA"], catalog["DEC"]) < 30.0
    assert near.sum() == 1, catalog  # one entry, from both pointings' detections
    entry = catalog[near][0]
    seen = rows[np.asarray([name.strip() == entry["NAME"].strip() for name in rows["NAME"]])]
    assert sorted(set(seen["PNT_ID"])) == [0, 1]  # detected in each pointing
    assert entry["N_DET"] == len(seen) == 4
    best = seen[np.argmax(seen["SNR"])]
    assert entry["BEST_PNT"] == best["PNT_ID"] and entry["SNR"] == pytest.approx(best["SNR"])


# ============================================================================================
# Streaming: a window never mixes two pointings
# ============================================================================================
@pytest.fixture(scope="module")
def dripped_two_pointings(tmp_path_factory):
    """The held-out scenario shortened (60 s, a 20 s slew, 60 s), as 10 s slices; the orbit
    moved on by the time cut out (28 deg), so that the Earth stays out of both fields."""
    from ecpi_beam.simu import load_scenario, scenario_with
    from ecpi_beam.simu.scenario import Pointing
    from stream_fixtures import drip_at_once

    base = load_scenario(SCENARIO)
    first, second = base.pointings
    scenario = scenario_with(base, name="stream_two_pointings", duration=140.0,
                             orbit={"phase_deg": 246.0},
                             pointings=[Pointing(first.ra, first.dec, start=0.0, duration=60.0),
                                        Pointing(second.ra, second.dec, start=80.0)])
    directory = tmp_path_factory.mktemp("slices_two_pointings")
    return directory, drip_at_once(scenario, directory)


def test_a_window_across_the_slew_is_imaged_pointing_by_pointing(dripped_two_pointings):
    from ecpi_beam.caldb import default_caldb_dir
    from ecpi_beam.io.slices import SliceWatcher
    from ecpi_beam.transforms.windows import SearchWindow, SliceTiles, WindowSum
    from stream_fixtures import stream_params

    directory, truth = dripped_two_pointings
    params = stream_params(directory, directory)
    tiles = SliceTiles(default_caldb_dir(), params.bube, params.stream.energy_channels, 10)
    tiles.setup()
    combine = WindowSum()
    window = combine.create_accumulator()
    for slice_set in SliceWatcher([str(directory)]).poll()[0]:  # the whole 140 s as one window
        for tile in tiles.process(slice_set):
            window = combine.add_input(window, tile.value[1])
    assert len(window) == 2  # one sum per pointing
    assert [part.exposure for part in window] == [pytest.approx(60.0, abs=1.5)] * 2
    search = SearchWindow(default_caldb_dir(), params.bube, params.imag, params.stream)
    search.setup()
    key = (truth.obs_id, "13-1260", "PEO")
    found = list(search.process((key, (truth.tstart, truth.tstop), window)))
    offsets = {name: [angular_offset_arcmin(truth_source(truth, name)["ra"],
                                            truth_source(truth, name)["dec"], d.ra, d.dec)
                      for d in found] for name in ("SrcA", "SrcB")}
    assert all(min(values) < 20.0 for values in offsets.values()), found
    # nothing else: no source made of two pointings' events imaged in one frame
    assert all(min(a, b) < 20.0 for a, b in zip(offsets["SrcA"], offsets["SrcB"])), found


def test_the_stream_alerts_each_source_once_and_nothing_else(dripped_two_pointings, tmp_path):
    from stream_fixtures import replay

    directory, truth = dripped_two_pointings
    alerts = replay(directory, tmp_path)
    first = [alert for alert in alerts if alert["sequence"] == 0]
    assert len(first) == 2, alerts
    for alert in alerts:
        assert min(angular_offset_arcmin(source["ra"], source["dec"], alert["ra"], alert["dec"])
                   for source in truth.sources) < 20.0, alert


# ============================================================================================
# A campaign mixing both kinds, with ecpi_run's default options
# ============================================================================================
def test_a_campaign_images_every_pointing_and_leaves_single_pointings_as_they_were(
        tmp_path, pipeline_workspace, small_observation):
    """The two-pointing observation and a single-pointing one in one campaign (default
    options: DirectRunner, its waves) with MOSA: each source of the two pointings found, the
    single-pointing observation's products as main made them, one mosaic of all three
    pointings."""
    from ecpi_beam.caldb import Caldb
    from ecpi_beam.simu import load_scenario, simulate

    inputs = tmp_path / "input"
    inputs.mkdir()
    truth = simulate(load_scenario(SCENARIO), str(inputs / "obs_two"),
                     Caldb.open(str(pipeline_workspace / ".ect" / "caldb")))
    (inputs / "obs_one").symlink_to(small_observation.directory, target_is_directory=True)
    out = tmp_path / "out"
    out.mkdir()
    params = write_params(tmp_path / "params.ini", inputs / "obs_*", out,
                          extra={"mosa": {"out_files": "['ECL-MOS-IMA', 'ECL-MOS-SOP']"}})
    result = run_ecpi(params, workspace=pipeline_workspace, working_out=out)
    assert result.returncode == 0, describe(result)
    assert "2/2 observation(s) processed" in result.stdout, describe(result)
    assert "stable pointings imaged 3" in result.stdout, describe(result)

    rows = sources_table(out / f"ECL-SOP-IMA_{truth.obs_id}.fits")
    for name, pointing in (("SrcA", 0), ("SrcB", 1)):
        source = truth_source(truth, name)
        near = [row for row in rows if angular_offset_arcmin(
            source["ra"], source["dec"], row["RA"], row["DEC"]) < MAX_OFFSET_ARCMIN]
        assert near and {row["PNT_ID"] for row in near} == {pointing}, (name, rows)
    assert_same_as_main(out, DATA / "single_pointing_reference.json")
    with fits.open(out / "ECL-MOS-IMA_MOSAIC.fits") as hdul:
        assert hdul[1].header["NOBS"] == 3  # two pointings and one


# ============================================================================================
# Observations of one pointing: the products main made, unchanged
# ============================================================================================
def assert_same_as_main(working_out: Path, reference_file: Path):
    reference = json.loads(reference_file.read_text())
    found = {name: differences(product_fingerprint(working_out / name), fingerprint)
             for name, fingerprint in reference.items()}
    assert not any(found.values()), {name: d[:5] for name, d in found.items() if d}


def test_single_pointing_products_are_those_main_made(reference_run):
    """The shared end-to-end run (pipeline_fixtures.reference_run): ECL-DET-IMA, -DET-UBC,
    -GTI-UBC, -SKY-IMA, -SOP-IMA as main made them (tests/data, product_fingerprints.py)."""
    assert reference_run.returncode == 0, describe(reference_run)
    assert_same_as_main(reference_run.working_out, DATA / "single_pointing_reference.json")


def test_single_pointing_mosa_spex_and_earth_products_are_those_main_made(
        tmp_path, pipeline_workspace, small_observation):
    """The same observation with the default background mode, ECL-EAR-OFM, MOSA (accumulator,
    mosaic, its sources) and SPEX: every product as main made it."""
    out = tmp_path / "out"
    out.mkdir()
    params = write_params(
        tmp_path / "params.ini", small_observation.directory, out, cali_out=(),
        bube_out=("ECL-DET-IMA", "ECL-DET-UBC", "ECL-GTI-UBC", "ECL-EAR-OFM"),
        bkg_cor_mod=("shape_moretti_earth",), energy_channels=((13, 60), (61, 140)),
        extra={"mosa": {"out_files": "['ECL-MOS-IMA', 'ECL-MOS-SOP']"},
               "spex": {"out_files": "['ECL-SPS-S1', 'ECL-LCS-S1']"}})
    result = run_ecpi(params, workspace=pipeline_workspace, working_out=out)
    assert result.returncode == 0, describe(result)
    assert_same_as_main(out, DATA / "single_pointing_products.json")
