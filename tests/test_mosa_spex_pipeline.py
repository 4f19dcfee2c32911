"""MOSA and SPEX in the whole pipeline: `ecpi_run` on a campaign of two small simulated
observations asks only for the mosaic and the spectra / light curves ([mosa] and [spex] with
their defaults: IMAG runs for them), and the products are checked against the truth."""
import warnings

import numpy as np
import pytest
from astropy.io import fits

from ecpi_beam.params import params_text

from pipeline_fixtures import (angular_offset_arcmin, describe, run_ecpi, simulate_observation)


@pytest.fixture(scope="module")
def campaign_run(tmp_path_factory, pipeline_workspace, small_observation):
    root = tmp_path_factory.mktemp("mosa_spex")
    second = simulate_observation(root / "obs_0000000002", pipeline_workspace,
                                  obs_id="0000000002", duration=80.0, name="small2", seed=7)
    working_out = root / "out"
    working_out.mkdir()
    params = root / "params.ini"
    params.write_text(params_text(
        f"['{small_observation.directory}', '{second.directory}']", working_out,
        bkg_cor_mod=("shape",), extra={
            "mosa": {"out_files": "['ECL-MOS-IMA', 'ECL-MOS-SOP']"},
            "spex": {"out_files": "['ECL-SPS-S1', 'ECL-LCS-S1']", "pi_per_channel": 1}}))
    result = run_ecpi(params, workspace=pipeline_workspace, working_out=working_out)
    assert result.returncode == 0, describe(result)
    return result, (small_observation, second)


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
