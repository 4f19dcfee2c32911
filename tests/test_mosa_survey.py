"""MOSA at survey scale, as a user runs it (issue 23's "done when"): `ecpi_run` with default
options (the DirectRunner's waves of 4) on a campaign of 10 good observations of two fields
(six steady sources, the Crab among them, every observation seeing the whole simulated sky)
and one corrupt observation (NaN TIME in its events); then the same command again; then again
after two observations were added to working_in.

- one mosaic of exactly the 10 good observations (NOBS, OBSERVATIONS, EXPOSURE), the corrupt
  one in failures.jsonl and nowhere else;
- positions at the single-observation standard: bright sources (SNR >= 20) within 3' (median)
  and 5' (max) of the truth, the truth inside ERR_RAD for about 90 % of the sources and inside
  1.5 ERR_RAD for all; FLUX within 5 % of the mean of the single-observation FLUX values;
- the catalogue: the Crab by its ECL-SRC-CAT name, the others NEW;
- one long-term light curve per source, a row per observation that saw it, that astropy and
  stingray read;
- the rerun skips in seconds, touching nothing; the two added observations are processed
  alone and give a 12-observation mosaic, faster than the first run.
"""
from __future__ import annotations

import json
import shutil
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from ecpi_beam import instrument
from ecpi_beam.params import params_text
from ecpi_beam.simu import PointSource, Pointing, default_scenario, scenario_with
from ecpi_beam.simu.scenario import _phase_away_from

from pipeline_fixtures import angular_offset_arcmin, describe, run_ecpi
from test_dpco import edit_event_rows

DURATION_S = 100.0
CRAB = (83.6332, 22.0145)  # ECL-SRC-CAT's position
# (field centre, [(name, RA, Dec, Crab units)]): away from other catalogued sources
FIELDS = [
    (CRAB, [("Crab", *CRAB, 1.0), ("A2", 88.0, 17.5, 0.3), ("A3", 78.4, 25.3, 0.12)]),
    ((200.0, -30.0), [("B1", 201.7, -27.9, 0.6), ("B2", 195.5, -31.6, 0.25),
                      ("B3", 203.1, -33.8, 0.1)]),
]
PER_FIELD = 5  # good observations per field in the first run
CORRUPT = "0000002305"  # a copy of a field-B observation with NaN TIME in its events
ADDED = ("0000002306", "0000002307")  # field B, added for the third run
MOSA_PRODUCTS = ("ECL-MOS-IMA", "ECL-MOS-SOP", "ECL-MOS-LCS")
BANDS = ((13, 60), (61, 140))  # two of the default bands: the suite's time


def offset_pointing(rng, centre):
    angle, distance = rng.uniform(0, 2 * np.pi), rng.uniform(2.0, 9.0)
    los = np.array([1.0, np.tan(np.radians(distance * np.cos(angle))),
                    np.tan(np.radians(distance * np.sin(angle)))])
    ra, dec = instrument.los_to_radec(los / np.linalg.norm(los),
                                      instrument.quaternion_from_pointing(*centre))
    return Pointing(ra=float(ra), dec=float(dec), roll=float(rng.uniform(0, 360)), start=0.0)


def survey_scenarios():
    """{obs_id: scenario}: PER_FIELD observations of each field, then the corrupt one's and
    the two added ones' (field B); each sees every source of the sky."""
    rng = np.random.default_rng(23)
    sky = tuple(PointSource(name=name, ra=ra, dec=dec, norm=10.0 * crab, index=2.1)
                for _, sources in FIELDS for name, ra, dec, crab in sources)
    base = default_scenario()
    plan = [0] * PER_FIELD + [1] * PER_FIELD + [1] * (1 + len(ADDED))
    scenarios = {}
    for index, field in enumerate(plan):
        obs_id = f"{2300 + index:010d}"
        pointing = offset_pointing(rng, FIELDS[field][0])
        scenario = scenario_with(base, name=f"s{index:02d}", obs_id=obs_id, seed=2300 + index,
                                 tstart=3.0e8 + 4000.0 * index, duration=DURATION_S,
                                 pointings=(pointing,), sources=sky, initial_slew_deg=0.0)
        scenarios[obs_id] = replace(scenario, orbit=replace(
            scenario.orbit, phase_deg=_phase_away_from(pointing, scenario)))
    return scenarios


def make_corrupt(directory: Path):
    event_file = next(directory.glob("ECL-EVT-SEC*.fits"))
    edit_event_rows(str(event_file), lambda data: data["TIME"].__setitem__(40, np.nan))


def mosaic_rows(path):
    with fits.open(path) as hdul:
        return Table(hdul["SOURCES"].data), hdul[0].header["NOBS"]


def single_observation_rows(out: Path, obs_ids):
    rows = []
    for obs_id in obs_ids:
        with fits.open(out / f"ECL-SOP-IMA_{obs_id}.fits") as hdul:
            table = Table(hdul["SOURCES"].data)
            table["OBS_ID"] = obs_id
            rows.append(table)
    from astropy.table import vstack
    return vstack(rows)


def truth_table():
    return [(name, ra, dec) for _, sources in FIELDS for name, ra, dec, _ in sources]


def matched(rows, radius_arcmin=60.0):
    """[(truth name, row, offset arcmin)] of the mosaic rows nearest to each truth, per band."""
    pairs = []
    for name, ra, dec in truth_table():
        for band in sorted(set(np.char.strip(np.asarray(rows["BAND"], dtype=str)))):
            in_band = rows[np.char.strip(np.asarray(rows["BAND"], dtype=str)) == band]
            if not len(in_band):
                continue
            offsets = angular_offset_arcmin(ra, dec, in_band["RA"], in_band["DEC"])
            best = int(np.argmin(offsets))
            if offsets[best] < radius_arcmin:
                pairs.append((name, in_band[best], float(offsets[best])))
    return pairs


@pytest.fixture(scope="module")
def survey(tmp_path_factory, pipeline_workspace):
    """The three runs; returns what each left (results, copies of working_out, times)."""
    from ecpi_beam.caldb import Caldb
    from ecpi_beam.simu import simulate

    root = tmp_path_factory.mktemp("survey")
    caldb = Caldb.open(str(pipeline_workspace / ".ect" / "caldb"))
    scenarios = survey_scenarios()
    simulated = root / "simulated"
    for obs_id, scenario in scenarios.items():
        simulate(scenario, str(simulated / f"obs_{obs_id}"), caldb)
    working_in = root / "in"
    for obs_id in scenarios:
        if obs_id not in ADDED:
            shutil.copytree(simulated / f"obs_{obs_id}", working_in / f"obs_{obs_id}")
    make_corrupt(working_in / f"obs_{CORRUPT}")
    out = root / "out"
    out.mkdir()
    params = root / "params.ini"
    params.write_text(params_text(
        working_in / "obs_*", out, imag_out=("ECL-SOP-IMA",), energy_channels=BANDS,
        extra={"mosa": {"out_files": repr(list(MOSA_PRODUCTS))}}))
    runs = {}
    for name in ("first", "rerun", "added"):
        if name == "added":
            for obs_id in ADDED:
                shutil.copytree(simulated / f"obs_{obs_id}", working_in / f"obs_{obs_id}")
        before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
        started = time.monotonic()
        result = run_ecpi(params, workspace=pipeline_workspace, working_out=out, timeout=900)
        elapsed = time.monotonic() - started
        copy = root / f"out_{name}"
        shutil.copytree(out, copy)
        runs[name] = (result, copy, elapsed, before)
    return scenarios, runs


def good_ids(scenarios, added=False):
    return sorted(obs_id for obs_id in scenarios
                  if obs_id != CORRUPT and (added or obs_id not in ADDED))


# ============================================================================================
# First run: the corrupt observation is out, the 10 good ones are in
# ============================================================================================
def test_the_mosaic_combines_exactly_the_good_observations(survey, fitsverify):
    scenarios, runs = survey
    result, out, _, _ = runs["first"]
    assert result.returncode == 2, describe(result)  # the corrupt one failed
    good = good_ids(scenarios)
    assert len(good) == 10
    for product in MOSA_PRODUCTS:
        path = out / f"{product}_MOSAIC.fits"
        fitsverify(path)
        with fits.open(path) as hdul:
            assert hdul[0].header["NOBS"] == 10
            assert sorted(np.char.strip(hdul["OBSERVATIONS"].data["OBS_ID"])) == good
    # EXPOSURE: the good observations' good time, summed (each image's, from its accumulator)
    with fits.open(out / "ECL-MOS-IMA_MOSAIC.fits") as hdul:
        header = hdul["HEALPIX_13-60_PEO"].header
        assert header["NOBS"] == 10
    exposures = [fits.getheader(out / f"ECL-MOS-ACC_{obs_id}.fits", "RESIDUAL_13-60_PEO")
                 ["EXPOSURE"] for obs_id in good]
    assert header["EXPOSURE"] == pytest.approx(sum(exposures), rel=1e-9)
    assert sum(exposures) == pytest.approx(10 * DURATION_S, rel=0.02)


def test_the_corrupt_observation_is_in_failures_and_nowhere_else(survey):
    _, runs = survey
    result, out, _, _ = runs["first"]
    records = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    assert [record["obs_id"] for record in records] == [CORRUPT], records
    assert "TIME not finite" in records[0]["error"]
    assert [line for line in result.stderr.splitlines() if line.startswith("error: ")] == [
        f"error: {records[0]['error']}"]
    assert not [p.name for p in out.iterdir() if CORRUPT in p.name]
    for path in out.glob("ECL-MOS-*_MOSAIC.fits"):
        with fits.open(path) as hdul:
            for hdu in hdul:
                if isinstance(hdu, fits.BinTableHDU) and "OBS_ID" in hdu.columns.names:
                    assert CORRUPT not in np.char.strip(hdu.data["OBS_ID"]), (path.name, hdu.name)


def test_positions_meet_the_single_observation_standard(survey):
    _, runs = survey
    _, out, _, _ = runs["first"]
    rows, _ = mosaic_rows(out / "ECL-MOS-SOP_MOSAIC.fits")
    pairs = matched(rows)
    assert {name for name, _, _ in pairs} == {name for name, _, _ in truth_table()}
    bright = [offset for _, row, offset in pairs if row["SNR"] >= 20]
    assert len(bright) >= 8
    assert np.median(bright) <= 3.0, bright
    assert max(bright) <= 5.0, bright
    ratio = np.array([offset / row["ERR_RAD"] for _, row, offset in pairs])
    assert np.mean(ratio <= 1.0) >= 0.8, ratio  # about 90 %
    assert np.all(ratio <= 1.5), ratio


def test_fluxes_are_the_mean_of_the_single_observation_fluxes(survey):
    scenarios, runs = survey
    _, out, _, _ = runs["first"]
    rows, _ = mosaic_rows(out / "ECL-MOS-SOP_MOSAIC.fits")
    singles = single_observation_rows(out, good_ids(scenarios))
    checked = 0
    for name, row, _ in matched(rows):
        ra, dec = next((r, d) for n, r, d in truth_table() if n == name)
        band = row["BAND"].strip()
        in_band = singles[np.char.strip(np.asarray(singles["BAND"], dtype=str)) == band]
        near = in_band[angular_offset_arcmin(ra, dec, in_band["RA"], in_band["DEC"]) < 30.0]
        if len(near) < 5 or row["SNR"] < 20:  # a steady source seen in most observations
            continue
        checked += 1
        assert row["FLUX"] == pytest.approx(np.mean(near["FLUX"]), rel=0.05), (name, band)
    assert checked >= 6


def test_the_catalogue_names_the_known_source_and_flags_the_new_ones(survey):
    _, runs = survey
    _, out, _, _ = runs["first"]
    with fits.open(out / "ECL-MOS-SOP_MOSAIC.fits") as hdul:
        catalog = Table(hdul["CATALOG"].data)
    for name, ra, dec in truth_table():
        offsets = angular_offset_arcmin(ra, dec, catalog["RA"], catalog["DEC"])
        entry = catalog[int(np.argmin(offsets))]
        assert offsets.min() < 10.0, name
        if name == "Crab":
            assert entry["KNOWN_NAME"].strip() == "Crab" and not entry["NEW"]
        else:
            assert entry["KNOWN_NAME"].strip() == "" and entry["NEW"], name
    rows, _ = mosaic_rows(out / "ECL-MOS-SOP_MOSAIC.fits")
    assert all(name.strip() for name in rows["NAME"])  # every detection has its source's name


def test_every_source_has_a_long_term_light_curve_of_the_observations_that_saw_it(survey):
    scenarios, runs = survey
    _, out, _, _ = runs["first"]
    path = out / "ECL-MOS-LCS_MOSAIC.fits"
    rows, _ = mosaic_rows(out / "ECL-MOS-SOP_MOSAIC.fits")
    with fits.open(path) as hdul:
        curves = [hdu for hdu in hdul if hdu.name.startswith("RATE_")]
        assert len(curves) == len(rows)  # one per mosaic detection (source, band, occ)
        crab = [hdu for hdu in curves if hdu.header["OBJECT"].strip().endswith(
            hdul[1].header["OBJECT"].strip()) and hdu.header["BAND"] == "13-60"][0]
        data = crab.data
        # the Crab is in every field-A observation, at the rate of the mosaic
        assert sorted(np.char.strip(data["OBS_ID"])) == good_ids(scenarios)[:PER_FIELD] or \
            len(data) >= PER_FIELD
        assert np.all(np.diff(data["TIME"]) > 0)
        assert np.all(data["ERROR"] > 0) and np.all(data["EXPOSURE"] > 0)
        mean = np.sum(data["RATE"] / data["ERROR"]**2) / np.sum(1 / data["ERROR"]**2)
        assert mean == pytest.approx(crab.header["MOSFLUX"], rel=1e-5)
        assert crab.header["TIMESYS"] == "TT" and crab.header["MJDREFI"] == instrument.MJDREFI
        assert "GTI" in hdul
    table = Table.read(path, hdu=crab.name)
    assert table["RATE"].unit is not None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from stingray import Lightcurve

        curve = Lightcurve.read(str(path), fmt="hea", skip_checks=True, ratehdu=crab.name)
    assert len(curve.time) == len(data)


# ============================================================================================
# Rerun: skipped in seconds; added observations: processed alone, the mosaic updated
# ============================================================================================
def test_the_rerun_skips_everything_in_seconds(survey):
    _, runs = survey
    result, out, elapsed, before = runs["rerun"]
    assert result.returncode == 2, describe(result)  # the corrupt one is tried again, fails
    assert "(10 already done, skipped)" in result.stdout
    assert "campaign: mosaic up to date with its 10 observation(s), skipped" in result.stderr
    after = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    touched = {name for name in after if before.get(name) != after[name]}
    assert touched <= {"campaign.json", "failures.jsonl"}, touched
    assert elapsed < 30.0  # the first run takes minutes; most of this is the interpreter


def test_added_observations_update_the_mosaic_faster_than_the_first_run(survey):
    scenarios, runs = survey
    result, out, elapsed, before = runs["added"]
    assert result.returncode == 2, describe(result)
    assert "(10 already done, skipped)" in result.stdout
    assert "12/13 observation(s) processed" in result.stdout
    with fits.open(out / "ECL-MOS-IMA_MOSAIC.fits") as hdul:
        assert hdul[0].header["NOBS"] == 12
        assert sorted(np.char.strip(hdul["OBSERVATIONS"].data["OBS_ID"])) == \
            good_ids(scenarios, added=True)
    # the ten observations' own products were not remade: only the added ones ran
    first_out = runs["first"][1]
    for obs_id in good_ids(scenarios):
        for product in ("ECL-SOP-IMA", "ECL-MOS-ACC"):
            name = f"{product}_{obs_id}.fits"
            assert before[name] == (out / name).stat().st_mtime_ns
    rows, nobs = mosaic_rows(out / "ECL-MOS-SOP_MOSAIC.fits")
    assert nobs == 12
    first_rows, _ = mosaic_rows(first_out / "ECL-MOS-SOP_MOSAIC.fits")
    # field B's sources gained two observations: their errors shrink
    for name, row, _ in matched(rows):
        if name.startswith("B") and row["BAND"].strip() == "13-60":
            first = [r for n, r, _ in matched(first_rows)
                     if n == name and r["BAND"].strip() == "13-60"][0]
            assert row["FLUX_ERR"] < first["FLUX_ERR"]
    assert elapsed < runs["first"][2], (elapsed, runs["first"][2])
