"""MOSA and SPEX in the whole pipeline: `ecpi_run` on a campaign of two small simulated
observations asks only for the mosaic and the spectra / light curves ([mosa] and [spex] with
their defaults: IMAG runs for them), and the products are checked against the truth."""
import warnings

import numpy as np
import pytest
from astropy.io import fits

from ecpi_beam.params import params_text

from pipeline_fixtures import (angular_offset_arcmin, describe, run_ecpi, simulate_observation)


def run_campaign(root, observations, workspace, extra, *options):
    """`ecpi_run` on the observations with the [mosa] and [spex] of `extra`: (result, params)."""
    working_out = root / "out"
    working_out.mkdir()
    params = root / "params.ini"
    params.write_text(params_text(
        f"['{observations[0].directory}', '{observations[1].directory}']", working_out,
        bkg_cor_mod=("shape",), extra=extra))
    result = run_ecpi(params, *options, workspace=workspace, working_out=working_out)
    assert result.returncode == 0, describe(result)
    return result, params


@pytest.fixture(scope="module")
def campaign_run(tmp_path_factory, pipeline_workspace, small_observation):
    root = tmp_path_factory.mktemp("mosa_spex")
    second = simulate_observation(root / "obs_0000000002", pipeline_workspace,
                                  obs_id="0000000002", duration=80.0, name="small2", seed=7)
    observations = (small_observation, second)
    result, _ = run_campaign(root, observations, pipeline_workspace, {
        "mosa": {"out_files": "['ECL-MOS-IMA', 'ECL-MOS-SOP']"},
        "spex": {"out_files": "['ECL-SPS-S1', 'ECL-LCS-S1']", "pi_per_channel": 1}})
    return result, observations


def test_one_mosaic_of_the_campaign_finds_the_source(campaign_run, fitsverify):
    result, observations = campaign_run
    truth = observations[0].source
    image, sources = (result.working_out / f"{name}_MOSAIC.fits"
                      for name in ("ECL-MOS-IMA", "ECL-MOS-SOP"))
    fitsverify(image)
    fitsverify(sources)
    with fits.open(image) as hdul:
        assert hdul[0].header["NOBS"] == 2
        assert sorted(hdul["OBSERVATIONS"].data["OBS_ID"]) == ["0000000001", "0000000002"]
        table = hdul["HEALPIX_13-60_PEO"].data
        assert table["NCONTRIB"].max() == 2
    with fits.open(sources) as hdul:
        rows = hdul["SOURCES"].data
        rows = rows[rows["BAND"] == "13-60"]
        offsets = angular_offset_arcmin(truth["ra"], truth["dec"], rows["RA"], rows["DEC"])
        assert offsets.min() < 60.0


def test_spectra_and_light_curves_of_the_source_found(campaign_run, fitsverify):
    result, observations = campaign_run
    for observation in observations:
        truth = observation.source
        stem = result.working_out / f"ECL-SPS-S1_{observation.obs_id}_S01_PEO"
        spectrum_file = stem.with_suffix(".fits")
        for suffix in (".fits", ".rmf", ".arf"):
            fitsverify(stem.with_suffix(suffix))
        with fits.open(spectrum_file) as hdul:
            header, counts = hdul["SPECTRUM"].header, hdul["SPECTRUM"].data["COUNTS"]
            # the truth counts the whole observation, the products only its good time
            good_fraction = header["EXPOSURE"] / (observation.truth["tstop"]
                                                  - observation.truth["tstart"])
            assert header["RESPFILE"] == stem.with_suffix(".rmf").name
            assert header["POISSERR"] is False
            assert angular_offset_arcmin(truth["ra"], truth["dec"], header["RA_OBJ"],
                                         header["DEC_OBJ"]) < 30.0
        # the source's counts in the first band: the spectrum and the light curve agree
        # with each other and with the truth
        curve_file = result.working_out / f"ECL-LCS-S1_{observation.obs_id}_S01_13-60_PEO.fits"
        fitsverify(curve_file)
        with fits.open(curve_file) as hdul:
            rate = hdul["RATE"]
            curve_counts = np.sum(rate.data["RATE"] * rate.header["TIMEDEL"]
                                  * rate.data["FRACEXP"])
            assert rate.header["TIMESYS"] == "TT" and "GTI" in hdul
        assert curve_counts == pytest.approx(float(np.sum(counts[13:61], dtype=float)), rel=1e-4)
        assert curve_counts == pytest.approx(truth["injected"][0] * good_fraction, rel=0.1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from stingray import Lightcurve
            Lightcurve.read(str(curve_file), fmt="hea", skip_checks=True)


def _mtimes(out):
    """Modification times of the products (campaign.json, the summary, is rewritten)."""
    return {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name != "campaign.json"}


def test_a_rerun_with_mosa_and_spex_skips_everything(campaign_run, pipeline_workspace):
    """Resume: every observation's products and its mosaic accumulator are in place, so the
    rerun skips the observations and the up-to-date mosaic."""
    result, _ = campaign_run
    before = _mtimes(result.working_out)
    params = result.working_out.parent / "params.ini"
    rerun = run_ecpi(params, workspace=pipeline_workspace, working_out=result.working_out)
    assert rerun.returncode == 0, describe(rerun)
    assert "(2 already done, skipped)" in rerun.stdout
    assert "campaign: mosaic up to date with its 2 observation(s)" in rerun.stderr
    assert _mtimes(result.working_out) == before


def test_force_redoes_the_observations_and_the_mosaic(campaign_run, pipeline_workspace):
    result, _ = campaign_run
    before = _mtimes(result.working_out)
    params = result.working_out.parent / "params.ini"
    forced = run_ecpi(params, "--force", workspace=pipeline_workspace,
                      working_out=result.working_out)
    assert forced.returncode == 0, describe(forced)
    assert "skipped" not in forced.stdout + forced.stderr
    after = _mtimes(result.working_out)
    assert sorted(after) == sorted(before)
    assert all(after[name] != before[name] for name in before if name.endswith(".fits"))


@pytest.fixture(scope="module")
def spex_of_mosaic_run(tmp_path_factory, pipeline_workspace, campaign_run):
    """[spex] sources = mosaic on the same two observations, one per wave: SPEX runs once the
    whole campaign's mosaic is made."""
    _, observations = campaign_run
    result, params = run_campaign(tmp_path_factory.mktemp("spex_of_mosaic"), observations,
                                  pipeline_workspace, {
                                      "mosa": {"out_files": "['ECL-MOS-SOP']"},
                                      "spex": {"out_files": "['ECL-SPS-S1']",
                                               "sources": "mosaic"}},
                                  "--campaign_batch", "1")
    return result, observations, params


def test_spex_extracts_the_sources_of_the_whole_campaigns_mosaic(spex_of_mosaic_run):
    from ecpi_beam.pipelines.mosaic import mosaic_sources, sources_hash

    result, observations, _ = spex_of_mosaic_run
    out = result.working_out
    found = mosaic_sources(str(out / "ECL-MOS-SOP_MOSAIC.fits"))
    with fits.open(out / "ECL-MOS-SOP_MOSAIC.fits") as hdul:
        assert hdul[0].header["NOBS"] == 2  # both waves' observations
    brightest = max((row for _, rows in found for row in rows), key=lambda row: row.snr)
    for observation in observations:
        with fits.open(out / f"ECL-SPS-S1_{observation.obs_id}_S01_PEO.fits") as hdul:
            header = hdul["SPECTRUM"].header
            assert hdul[0].header["SRCHASH"] == sources_hash(found)
            assert angular_offset_arcmin(brightest.ra, brightest.dec, header["RA_OBJ"],
                                         header["DEC_OBJ"]) < 1e-3
    assert "campaign: SPEX of the mosaic's" in result.stderr


def test_spex_of_the_mosaic_is_not_redone_when_nothing_changed(spex_of_mosaic_run,
                                                               pipeline_workspace):
    result, _, params = spex_of_mosaic_run
    before = _mtimes(result.working_out)
    rerun = run_ecpi(params, workspace=pipeline_workspace, working_out=result.working_out)
    assert rerun.returncode == 0, describe(rerun)
    assert "(2 already done, skipped)" in rerun.stdout
    assert "SPEX of the mosaic" not in rerun.stderr
    assert _mtimes(result.working_out) == before
