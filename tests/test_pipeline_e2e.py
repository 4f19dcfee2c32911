"""End to end on the DirectRunner: `ecpi_run params.ini` in a subprocess, as a user runs it.

A small simulated observation (150 s, one 0.5 Crab source, see pipeline_fixtures) goes
through DPCO, CALI, BUBE and IMAG; the tests read the products back and check them against
the simulator's truth, FITS validity (fitsverify), the ICD keywords, and each other.
"""
import datetime
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning
from astropy.wcs import validate as wcs_validate

from ecpi_beam import instrument

from pipeline_fixtures import (
    ALL_PRODUCTS, DEFAULT_BANDS, angular_offset_arcmin, assert_same_hdu_data, describe,
    detector_counts, leftover_temporaries, nearest_source, run_ecpi, simulate_broken_campaign,
    sources_table, stderr_lines, write_params)

ICD_KEYWORDS = ("TELESCOP", "INSTRUME", "OBS_ID", "TSTART", "TSTOP", "MJDREFI", "MJDREFF",
                "TIMESYS", "CREATOR", "DATE")
MJDREFI, MJDREFF = 57754, 0.000800740741  # ICD: 2017-01-01T00:00:00 UTC in TT
SOURCE_RADIUS_ARCMIN = 5.0


def _icd_keyword_problems(header, observation, where, primary):
    problems = [f"{where}: {key} missing" for key in ICD_KEYWORDS if key not in header]
    if problems:
        return problems
    expected = {"TELESCOP": "SVOM", "INSTRUME": "ECLAIRs", "OBS_ID": observation.obs_id,
                "TIMESYS": "TT", "MJDREFI": MJDREFI}
    problems += [f"{where}: {key} = {header[key]!r}, expected {value!r}"
                 for key, value in expected.items() if header[key] != value]
    if abs(header["MJDREFF"] - MJDREFF) > 1e-11:
        problems.append(f"{where}: MJDREFF = {header['MJDREFF']}")
    tstart, tstop = observation.truth["tstart"], observation.truth["tstop"]
    if primary:
        wrong = abs(header["TSTART"] - tstart) > 1e-3 or abs(header["TSTOP"] - tstop) > 1e-3
    else:  # an extension may give the span of its own data, inside the observation
        wrong = not tstart - 1e-3 <= header["TSTART"] < header["TSTOP"] <= tstop + 1e-3
    if wrong:
        problems.append(f"{where}: TSTART/TSTOP = {header['TSTART']}/{header['TSTOP']}, expected "
                        f"{observation.truth['tstart']}/{observation.truth['tstop']}")
    if not str(header["CREATOR"]).startswith("ecpi_beam"):
        problems.append(f"{where}: CREATOR = {header['CREATOR']!r}")
    try:
        datetime.datetime.fromisoformat(header["DATE"])
    except ValueError:
        problems.append(f"{where}: DATE = {header['DATE']!r} is not ISO 8601")
    return problems


# ============================================================================================
# One good run, every product
# ============================================================================================
def test_every_requested_product_is_written_valid_with_icd_keywords(
        reference_run, small_observation, fitsverify):
    assert "1/1 observation(s) processed" in reference_run.stdout, describe(reference_run)
    written = sorted(p.name for p in reference_run.working_out.iterdir()
                     if not p.name.startswith("ECL-ALERT_"))  # VOEvents: test_catalogue_pipeline
    expected = sorted([f"{name}_{small_observation.obs_id}.fits" for name in ALL_PRODUCTS]
                      + [f"ECL-SOP-IMA_{small_observation.obs_id}.reg"])  # its DS9 regions
    assert written == expected  # nothing else: no temporary file, no failures.jsonl

    problems = []
    for name in ALL_PRODUCTS:
        path = reference_run.product(name, small_observation.obs_id)
        fitsverify(path)
        with fits.open(path) as hdul:
            assert hdul[0].header.get("PRODUCT") == name
            for index, hdu in enumerate(hdul):
                problems += _icd_keyword_problems(hdu.header, small_observation,
                                                  f"{path.name}[{index}] {hdu.name}",
                                                  primary=index == 0)
    assert problems == []


def test_a_clean_run_prints_nothing_on_stderr(reference_run):
    """logger_level = warning and no problem: the summary on stdout, nothing on stderr."""
    assert stderr_lines(reference_run.stderr) == [], describe(reference_run)


@pytest.mark.parametrize("product, prefixes", [
    ("ECL-DET-IMA", ("COUNTS_",)),
    ("ECL-DET-UBC", ("UBC_", "VARIANCE_", "BACKGROUND_")),
    ("ECL-SKY-IMA", ("INTENSITY_", "VARIANCE_", "SNR_", "PCODE_", "EXPOSURE_")),
])
def test_image_hdus_carry_band_and_occultation_class(reference_run, small_observation,
                                                      product, prefixes):
    """One HDU per (kind, band, class) for the 5 default bands and PEO, keywords matching."""
    path = reference_run.product(product, small_observation.obs_id)
    with fits.open(path) as hdul:
        by_name = {hdu.name: hdu.header for hdu in hdul}
    for prefix in prefixes:
        for lo, hi in DEFAULT_BANDS:
            name = f"{prefix}{lo}-{hi}_PEO"
            assert name in by_name, f"{path.name}: no HDU {name}; has {sorted(by_name)}"
            header = by_name[name]
            assert (header["BAND"], header["OCC_TYPE"]) == (f"{lo}-{hi}", "PEO")
            assert (header["PI_MIN"], header["PI_MAX"]) == (lo, hi)
            assert header["E_MIN"] < header["E_MAX"]
            assert 0 < header["EXPOSURE"] <= small_observation.truth["tstop"] - \
                small_observation.truth["tstart"]


def test_gti_ubc_has_the_peo_good_time(reference_run, small_observation):
    with fits.open(reference_run.product("ECL-GTI-UBC", small_observation.obs_id)) as hdul:
        header, gti = hdul["GTI_PEO"].header, hdul["GTI_PEO"].data
    assert header["OCC_TYPE"] == "PEO"
    assert len(gti) >= 1 and np.all(gti["STOP"] > gti["START"])
    assert gti["START"].min() >= small_observation.truth["tstart"]
    assert gti["STOP"].max() <= small_observation.truth["tstop"]
    # The simulated pointing starts after a 20 s slew: the good time cannot start before it.
    truth = small_observation.truth
    slew_end = truth["tstart"] + truth["pointing"]["plan"][0]["start"]
    assert gti["START"].min() >= slew_end - 1.0
    assert np.isclose(np.sum(gti["STOP"] - gti["START"]), header["ONTIME"], atol=1e-3)


def test_injected_source_is_found_at_its_position(reference_run, small_observation):
    source = small_observation.source
    rows = sources_table(reference_run.product("ECL-SOP-IMA", small_observation.obs_id))
    assert rows, "ECL-SOP-IMA lists no source"
    lowest_band = f"{DEFAULT_BANDS[0][0]}-{DEFAULT_BANDS[0][1]}"
    best = nearest_source(rows, source["ra"], source["dec"], band=lowest_band)
    assert best is not None, f"no source in band {lowest_band}: {rows}"
    offset, row = best
    assert offset < SOURCE_RADIUS_ARCMIN, (offset, row)
    assert row["SNR"] > 20.0 and row["OCC_TYPE"] == "PEO"
    assert offset < 3.0 * max(row["ERR_RAD"], 1.0), (offset, row["ERR_RAD"])
    # It is the brightest thing in the band's list.
    assert row["SNR"] == max(r["SNR"] for r in rows if r["BAND"] == lowest_band)


def test_detector_images_count_every_calibrated_event_in_peo_time(reference_run,
                                                                   small_observation):
    """sum over bands of ECL-DET-IMA == ECL-EVT-CAL photon events (not forced triggers) with PI
    in the band and TIME in GTI_PEO (ECL-GTI-UBC): the imaging chain neither loses nor invents
    events."""
    obs_id = small_observation.obs_id
    events = fits.getdata(reference_run.product("ECL-EVT-CAL", obs_id), "EVENTS")
    gti = fits.getdata(reference_run.product("ECL-GTI-UBC", obs_id), "GTI_PEO")
    in_gti = np.zeros(len(events), bool)
    photons = (events["FLAG"] & instrument.FLAG_FORCED_TRIGGER) == 0  # forced triggers not imaged
    assert np.count_nonzero(~photons) > 0  # the check covers them
    for start, stop in zip(gti["START"], gti["STOP"]):
        in_gti |= (events["TIME"] >= start) & (events["TIME"] < stop)
    counts = detector_counts(reference_run.product("ECL-DET-IMA", obs_id))
    total_images = total_events = 0
    for lo, hi in DEFAULT_BANDS:
        image = counts[f"COUNTS_{lo}-{hi}_PEO"]
        assert image.shape == (80, 80) and image.min() >= 0
        selected = int(np.count_nonzero(photons & in_gti & (events["PI"] >= lo)
                                        & (events["PI"] <= hi)))
        assert int(image.sum()) == selected, (lo, hi)
        total_images += int(image.sum())
        total_events += selected
    # And the check is not empty: most of the injected source counts are there.
    assert total_events > sum(small_observation.source["injected"]) * 0.5
    assert total_images == total_events


def test_sky_image_wcs_is_valid_and_points_at_the_source(reference_run, small_observation):
    path = reference_run.product("ECL-SKY-IMA", small_observation.obs_id)
    report = wcs_validate(str(path))
    notes = [line.strip() for line in str(report).splitlines()
             if line.strip().startswith("- ")]
    assert notes == [], str(report)  # DATEREF and MJD-END are written: nothing to fix

    source = small_observation.source
    band = f"{DEFAULT_BANDS[0][0]}-{DEFAULT_BANDS[0][1]}"
    with fits.open(path) as hdul, warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        hdu = hdul[f"SNR_{band}_PEO"]
        wcs = WCS(hdu.header)
        snr = np.nan_to_num(np.array(hdu.data), nan=-np.inf)
        pixel_deg = float(np.sqrt(abs(np.linalg.det(wcs.pixel_scale_matrix))))
    assert wcs.wcs.ctype[0] == "RA---TAN" and wcs.wcs.ctype[1] == "DEC--TAN"
    iy, ix = np.unravel_index(np.argmax(snr), snr.shape)
    ra, dec = wcs.pixel_to_world_values(ix, iy)
    offset_deg = float(angular_offset_arcmin(ra, dec, source["ra"], source["dec"])) / 60.0
    assert offset_deg < pixel_deg, (offset_deg, pixel_deg, (ix, iy))
    # The reference pixel is the pointing direction.
    ra0, dec0 = wcs.wcs.crval
    pointing = small_observation.truth["pointing"]
    assert float(angular_offset_arcmin(ra0, dec0, pointing["ra"], pointing["dec"])) < 1.0


# ============================================================================================
# The other entry point
# ============================================================================================
def test_module_entry_point_makes_the_same_products(tmp_path, pipeline_workspace,
                                                     small_observation, reference_run):
    out = tmp_path / "out"
    out.mkdir()
    params = write_params(tmp_path / "params.ini", small_observation.directory, out,
                          cali_out=[], bube_out=["ECL-DET-IMA"], imag_out=["ECL-SOP-IMA"])
    result = run_ecpi(params, "--runner", "DirectRunner", workspace=pipeline_workspace,
                      working_out=out, entry="module")
    assert result.returncode == 0, describe(result)
    obs_id = small_observation.obs_id
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith("ECL-ALERT_")) == [
        f"ECL-DET-IMA_{obs_id}.fits", f"ECL-SOP-IMA_{obs_id}.fits", f"ECL-SOP-IMA_{obs_id}.reg"]
    ours, reference = (detector_counts(r.product("ECL-DET-IMA", obs_id))
                       for r in (result, reference_run))
    assert ours.keys() == reference.keys()
    for name in reference:
        np.testing.assert_array_equal(ours[name], reference[name], err_msg=name)
    assert _source_keys(result.product("ECL-SOP-IMA", obs_id)) == \
        _source_keys(reference_run.product("ECL-SOP-IMA", obs_id))


def _source_keys(sop_path):
    return sorted((row["BAND"], row["OCC_TYPE"], round(float(row["RA"]), 3),
                   round(float(row["DEC"]), 3)) for row in sources_table(sop_path))


# ============================================================================================
# User mistakes: one line, exit code 2, no traceback, no product
# ============================================================================================
def _obs_id_mismatch(directory: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "mismatch"
    shutil.copytree(directory, copy)
    attitude = next(copy.glob("SVO-ATT-CNV*.fits"))
    fits.setval(attitude, "OBS_ID", value="0000009999", ext=0)
    return copy


BAD_INPUTS = {
    "unknown background mode": (
        dict(bkg_cor_mod=["shape_moretti_bogus"]), ["bkg_cor_mod", "shape_moretti_bogus"]),
    "empty working_in": ("empty", ["working_in", "ECL-EVT-SEC"]),
    "OBS_ID mismatch": ("mismatch", ["OBS_ID", "0000009999", "SVO-ATT-CNV"]),
}


def _bad_input_params(case, tmp_path, small_observation):
    change, words = BAD_INPUTS[case]
    working_in = small_observation.directory
    overrides = {}
    if change == "empty":
        working_in = tmp_path / "empty_input"
        working_in.mkdir()
    elif change == "mismatch":
        working_in = _obs_id_mismatch(small_observation.directory, tmp_path)
    else:
        overrides = change
    out = tmp_path / "out"
    out.mkdir()
    return write_params(tmp_path / "params.ini", working_in, out, **overrides), out, words


def _check_one_line_error(code, stdout, stderr, out, words):
    lines = stderr_lines(stderr)
    assert code == 2, f"exit code {code}\n{stdout}\n{stderr}"
    assert "Traceback" not in stderr and "Traceback" not in stdout
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{stderr}"
    assert lines[0].startswith("error: "), lines[0]
    for word in words:
        assert word in lines[0], f"{word!r} not in {lines[0]!r}"
    assert list(out.iterdir()) == [], "a product was written despite the error"


SUBPROCESS_CASES = ("unknown background mode", "OBS_ID mismatch")


@pytest.mark.parametrize("case", SUBPROCESS_CASES)
def test_bad_input_is_one_line_exit_2_and_no_product(case, tmp_path, pipeline_workspace,
                                                      small_observation):
    """`ecpi_run` in a subprocess: what the user sees, import-time noise included."""
    params, out, words = _bad_input_params(case, tmp_path, small_observation)
    result = run_ecpi(params, workspace=pipeline_workspace, working_out=out, timeout=120)
    _check_one_line_error(result.returncode, result.stdout, result.stderr, out, words)


@pytest.mark.parametrize("case", [case for case in BAD_INPUTS if case not in SUBPROCESS_CASES])
def test_bad_input_in_process(case, tmp_path, pipeline_workspace, small_observation, capfd,
                              monkeypatch):
    """The same through the console-script function, in this process (cheaper)."""
    from ecpi_beam.cli import ecpi_run

    params, out, words = _bad_input_params(case, tmp_path, small_observation)
    monkeypatch.setenv("ECPI_HOME", str(pipeline_workspace))
    capfd.readouterr()
    code = ecpi_run([str(params)])
    captured = capfd.readouterr()
    _check_one_line_error(code, captured.out, captured.err, out, words)


# ============================================================================================
# Re-running, and campaigns
# ============================================================================================
def test_rerun_overwrites_products_cleanly(tmp_path, pipeline_workspace, small_observation,
                                           reference_run, fitsverify):
    """Products of a previous run (one of them damaged) and a stale failures.jsonl are in
    working_out: the re-run replaces the products it makes with the same data, leaves the
    others alone, and leaves no temporary file."""
    obs_id = small_observation.obs_id
    rerun = ("ECL-GTI-CAL", "ECL-DET-IMA", "ECL-SKY-IMA", "ECL-SOP-IMA")
    out = tmp_path / "out"
    shutil.copytree(reference_run.working_out, out)
    damaged = out / f"ECL-SOP-IMA_{obs_id}.fits"
    damaged.write_bytes(damaged.read_bytes()[:2880])
    (out / "failures.jsonl").write_text(json.dumps({"obs_dir": "old", "error": "old"}) + "\n")
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    params = write_params(tmp_path / "params.ini", small_observation.directory, out,
                          cali_out=["ECL-GTI-CAL"], bube_out=["ECL-DET-IMA"],
                          imag_out=["ECL-SKY-IMA", "ECL-SOP-IMA"])
    result = run_ecpi(params, workspace=pipeline_workspace, working_out=out)
    assert result.returncode == 0, describe(result)
    names = sorted(p.name for p in out.iterdir() if not p.name.startswith("ECL-ALERT_"))
    assert names == sorted([f"{name}_{obs_id}.fits" for name in ALL_PRODUCTS]
                           + [f"ECL-SOP-IMA_{obs_id}.reg"])  # no failures.jsonl
    assert leftover_temporaries(out) == []
    for name in ALL_PRODUCTS:
        path = out / f"{name}_{obs_id}.fits"
        if name not in rerun:
            assert path.stat().st_mtime_ns == before[path.name], f"{path.name} was touched"
            continue
        assert path.stat().st_mtime_ns != before[path.name], f"{path.name} not rewritten"
        fitsverify(path)
        assert_same_hdu_data(path, reference_run.product(name, obs_id))


@pytest.fixture(scope="module")
def campaign(tmp_path_factory, pipeline_workspace):
    """Three 60 s observations; the middle one's event file is cut in half."""
    root = tmp_path_factory.mktemp("campaign")
    observations, broken = simulate_broken_campaign(root, pipeline_workspace)
    return root, observations, broken


def test_campaign_with_one_broken_observation(campaign, pipeline_workspace, fitsverify):
    root, observations, broken = campaign
    out = root / "out"
    out.mkdir()
    params = write_params(root / "params.ini", root / "input" / "obs_*", out,
                          cali_out=["ECL-GTI-CAL"], bube_out=["ECL-DET-IMA"],
                          imag_out=["ECL-SOP-IMA"])
    result = run_ecpi(params, workspace=pipeline_workspace, working_out=out)
    assert result.returncode != 0, describe(result)
    assert "Traceback" not in result.stderr
    assert "2/3 observation(s) processed" in result.stdout, describe(result)
    failures = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()
                if line.strip()]
    assert len(failures) == 1, failures
    assert Path(failures[0]["obs_dir"]) == broken.directory
    assert "truncated" in failures[0]["error"]
    assert any(line.startswith("error: ") and str(broken.directory) in line
               and "truncated" in line for line in stderr_lines(result.stderr)), result.stderr
    for observation in observations:
        products = sorted(out.glob(f"*_{observation.obs_id}.fits"))
        if observation is broken:
            assert products == []
            continue
        assert [p.name.split("_")[0] for p in products] == \
            ["ECL-DET-IMA", "ECL-GTI-CAL", "ECL-SOP-IMA"]
        for product in products:
            fitsverify(product)
            assert fits.getval(product, "OBS_ID") == observation.obs_id
    assert leftover_temporaries(out) == []
