"""The CALDB reader and the shipped default set (ICD section 3, docs/caldb.md)."""
import json
import os
import pickle
import shutil

import fsspec
import numpy as np
import pytest

from ecpi_beam import instrument as ins
from ecpi_beam.caldb import REQUIRED_PRODUCTS, Caldb, PixelCalibration, default_caldb_dir
from ecpi_beam.caldb import generate
from ecpi_beam.caldb.manifest import sha256_file
from ecpi_beam.errors import EcpiError


@pytest.fixture(scope="module")
def caldb():
    return Caldb.open(default_caldb_dir())


@pytest.fixture
def caldb_copy(tmp_path):
    target = tmp_path / "caldb"
    shutil.copytree(default_caldb_dir(), target)
    return target


def test_manifest_lists_every_product_with_matching_sha(caldb):
    assert set(REQUIRED_PRODUCTS) <= set(caldb.entries)
    for product in REQUIRED_PRODUCTS:
        entry = caldb.entry(product)
        assert sha256_file(caldb.url(product)) == entry.sha256
        assert entry.version and entry.valid_from and entry.description


@pytest.mark.parametrize("product", REQUIRED_PRODUCTS)
def test_default_files_pass_fitsverify(caldb, product, fitsverify):
    fitsverify(caldb.url(product))


def test_generator_reproduces_the_shipped_set(tmp_path, caldb):
    generate.main([str(tmp_path)])
    regenerated = Caldb.open(tmp_path)
    # integers from the seeded generator: byte-identical; floats: up to libm's last bits
    assert regenerated.entry("ECL-MSK-PAT").sha256 == caldb.entry("ECL-MSK-PAT").sha256
    np.testing.assert_array_equal(regenerated.pixel_calibration().status,
                                  caldb.pixel_calibration().status)
    for reader, field in [("pixel_calibration", "gain"), ("pixel_calibration", "effic"),
                          ("rmf", "matrix"), ("arf", "specresp"), ("irf", "factor")]:
        np.testing.assert_allclose(getattr(getattr(regenerated, reader)(), field),
                                   getattr(getattr(caldb, reader)(), field), rtol=1e-6, atol=1e-9)
    assert regenerated.entry("ECL-SRC-CAT").sha256 == caldb.entry("ECL-SRC-CAT").sha256


def test_mask_is_forty_percent_open_self_supporting_and_low_sidelobe(caldb):
    mask = caldb.mask_pattern()
    assert mask.shape == (46, 46) and mask.dtype == np.uint8
    assert mask.sum() in (846, 847)
    assert generate.is_self_supporting(mask.astype(bool))
    assert not mask.all(axis=0).any() and not mask.all(axis=1).any()
    # the figure quoted in docs/caldb.md; the median random candidate is about 0.23
    assert generate.max_sidelobe(mask) == pytest.approx(0.1149, abs=1e-4)


def test_self_supporting_detects_a_floating_closed_element():
    pattern = np.zeros((46, 46), dtype=bool)
    assert generate.is_self_supporting(pattern)
    pattern[10:13, 10:13] = True
    pattern[11, 11] = False  # a closed island surrounded by open elements
    assert not generate.is_self_supporting(pattern)


def test_pixel_calibration_maps_4_to_150_kev_inside_pha_range(caldb):
    calib = caldb.pixel_calibration()
    assert isinstance(calib, PixelCalibration) and calib.gain.shape == (80, 80)
    assert 0.037 < calib.gain.min() and calib.gain.max() < 0.043
    assert ((ins.LOW_THRESHOLD_KEV - calib.offset) / calib.gain > 0).all()
    assert ((150.0 - calib.offset) / calib.gain < ins.N_PHA - 1).all()
    assert (calib.status == 2).sum() == 32 and (calib.status == 1).sum() == 32
    assert (calib.effic[calib.status == 2] == 0).all()
    with pytest.raises(ValueError):
        calib.gain[0, 0] = 1.0  # shared cached arrays are read-only


def test_low_efficiency_batch_is_twenty_whole_modules(caldb):
    calib = caldb.pixel_calibration()
    modules = generate.module_index(*np.indices((80, 80)))
    assert np.bincount(modules.ravel()).tolist() == [32] * 200
    alive = calib.status != 2
    low = alive & (calib.effic < 0.85)
    low_modules = np.unique(modules[low])
    assert len(low_modules) == 20
    assert (calib.effic[np.isin(modules, low_modules) & alive] < 0.85).all()
    assert 0.9 < np.median(calib.effic[alive & ~low]) <= 1.0


def test_rmf_is_gaussian_with_the_icd_resolution(caldb):
    rmf = caldb.rmf()
    assert rmf.matrix.shape == (len(rmf.energ_lo), ins.N_PI)
    np.testing.assert_allclose(rmf.e_min, ins.pi_to_energy(np.arange(ins.N_PI))[0])
    centre = 0.5 * (rmf.energ_lo + rmf.energ_hi)
    inside = (centre > 4) & (centre < 145)
    np.testing.assert_allclose(rmf.matrix[inside].sum(axis=1), 1.0, atol=1e-4)
    row = rmf.matrix[np.argmin(np.abs(centre - 59.75))]
    channel_centre = 0.5 * (rmf.e_min + rmf.e_max)
    mean = (row * channel_centre).sum()
    sigma = np.sqrt((row * (channel_centre - mean) ** 2).sum())
    assert mean == pytest.approx(59.75, abs=0.01)
    assert 2.3548 * sigma == pytest.approx(ins.fwhm_kev(59.75), rel=0.02)


def test_arf_is_detector_area_times_open_fraction_times_efficiency(caldb):
    arf = caldb.arf()
    ceiling = ins.DETECTOR_AREA_CM2 * ins.MASK_OPEN_FRACTION
    centre = 0.5 * (arf.energ_lo + arf.energ_hi)
    assert arf.specresp.max() <= ceiling
    assert arf.specresp[np.argmin(np.abs(centre - 30))] > 0.95 * ceiling
    assert arf.specresp[np.argmin(np.abs(centre - 3))] < 0.01 * ceiling  # below the threshold
    assert arf.specresp[np.argmin(np.abs(centre - 150))] < 0.5 * ceiling  # 1 mm CdTe thins out
    np.testing.assert_array_equal(arf.energ_lo, caldb.rmf().energ_lo)


def test_irf_is_one_on_axis_and_falls_off_axis(caldb):
    irf = caldb.irf()
    assert irf.factor.shape == (len(irf.theta_deg), len(irf.energy_kev))
    np.testing.assert_allclose(irf.factor[0], 1.0)
    assert (np.diff(irf.factor, axis=0) < 0).all()
    assert (irf.factor <= 1.0 + 1e-12).all()  # a longer CdTe path never beats the projection
    # the low-energy factor is the projection times the wall shading only
    expected = np.cos(np.radians(30)) * (1 - 4 / np.pi * np.tan(np.radians(30)) * 0.6
                                         / ins.MASK_PITCH_MM)
    assert irf.factor_at(30.0, 10.0) == pytest.approx(expected, rel=1e-3)
    mid = irf.factor_at(30.5, 10.0)
    assert irf.factor_at(31.0, 10.0) < mid < irf.factor_at(30.0, 10.0)
    assert irf.factor_at(np.array([0.0, 100.0]), 60.0).shape == (2,)


def test_open_is_cached_and_pickles_without_cache(caldb, caldb_copy):
    assert Caldb.open(default_caldb_dir()) is caldb
    first = Caldb.open(caldb_copy)
    (caldb_copy / "caldb.json").write_text((caldb_copy / "caldb.json").read_text() + "\n")
    assert Caldb.open(caldb_copy) is not first  # a rewritten manifest is read afresh
    caldb.mask_pattern()
    clone = pickle.loads(pickle.dumps(caldb))
    assert clone._cache == {} and np.array_equal(clone.mask_pattern(), caldb.mask_pattern())


def test_open_reads_an_fsspec_url():
    fs = fsspec.filesystem("memory")
    for name in os.listdir(default_caldb_dir()):
        with open(os.path.join(default_caldb_dir(), name), "rb") as stream:
            fs.pipe(f"/caldb-url-test/{name}", stream.read())
    caldb = Caldb.open("memory://caldb-url-test")
    assert caldb.url("ECL-MSK-PAT").startswith("memory://caldb-url-test/")
    assert caldb.mask_pattern().sum() == 846


def test_write_caldb_accepts_custom_tables(tmp_path, caldb):
    ones = np.ones((80, 80))
    flat = PixelCalibration(gain=0.04 * ones, offset=0 * ones, status=np.zeros((80, 80), int),
                            effic=ones)
    tables = {"ECL-MSK-PAT": caldb.mask_pattern(), "ECL-PIX-CAL": flat, "ECL-RSP-RMF": caldb.rmf(),
              "ECL-RSP-ARF": caldb.arf(), "ECL-RSP-IRF": caldb.irf()}
    custom = Caldb.open(generate.write_caldb(tmp_path / "custom", tables))
    assert (custom.pixel_calibration().gain == np.float32(0.04)).all()
    assert custom.pixel_calibration().good.all()
    np.testing.assert_allclose(custom.rmf().matrix, caldb.rmf().matrix, atol=1e-6)
    np.testing.assert_array_equal(custom.irf().factor, caldb.irf().factor)


def test_missing_directory_and_manifest_are_named(tmp_path):
    with pytest.raises(EcpiError, match="does not exist"):
        Caldb.open(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(EcpiError, match="caldb.json"):
        Caldb.open(tmp_path / "empty")


@pytest.mark.parametrize("text, message", [
    ("{not json", "not valid JSON"),
    ('{"files": 3}', "no 'files' list"),
    ('{"files": [{"product": "ECL-MSK-PAT"}]}', "lacks file"),
    ('{"files": []}', "lacks ECL-MSK-PAT"),
])
def test_corrupt_manifest_is_reported(caldb_copy, text, message):
    (caldb_copy / "caldb.json").write_text(text)
    with pytest.raises(EcpiError, match=message):
        Caldb.open(caldb_copy)


def test_manifest_paths_must_stay_inside_the_caldb(caldb_copy):
    manifest = json.loads((caldb_copy / "caldb.json").read_text())
    manifest["files"][0]["file"] = "../outside.fits"
    (caldb_copy / "caldb.json").write_text(json.dumps(manifest))
    with pytest.raises(EcpiError, match="relative path inside"):
        Caldb.open(caldb_copy)


def test_sha_mismatch_is_caught_unless_verification_is_off(caldb_copy):
    mask_file = caldb_copy / Caldb.open(default_caldb_dir()).entry("ECL-MSK-PAT").file
    data = bytearray(mask_file.read_bytes())
    data[-1] ^= 1  # flip one element of the (padded) image
    mask_file.write_bytes(bytes(data))
    with pytest.raises(EcpiError, match="sha256"):
        Caldb.open(caldb_copy).mask_pattern()
    assert Caldb.open(caldb_copy, verify=False).mask_pattern().shape == (46, 46)


def test_unknown_product_and_bad_content_are_named(caldb_copy):
    with pytest.raises(EcpiError, match="no product 'ECL-XXX-YYY'"):
        Caldb.open(caldb_copy).url("ECL-XXX-YYY")
    generate.write_mask(caldb_copy / "ECL-MSK-PAT_v1.0.fits", np.ones((10, 10)))
    with pytest.raises(EcpiError, match="expected 46 x 46"):
        Caldb.open(caldb_copy, verify=False).mask_pattern()
    (caldb_copy / "ECL-RSP-ARF_v1.0.arf").write_text("not fits")
    with pytest.raises(EcpiError, match="not a FITS file"):
        Caldb.open(caldb_copy, verify=False).arf()
