"""Products: ICD keywords on every HDU, fitsverify-clean, written atomically anywhere."""
import numpy as np
import pytest
from astropy.io import fits

import ecpi_beam
from ecpi_beam.errors import EcpiError
from ecpi_beam.io import fs, products
from ecpi_beam.io.gti import gti_hdu, read_gti

OBSERVATION = {"OBS_ID": "0123456789", "TSTART": 1000.0, "TSTOP": 6800.0, "MJDREFI": 57754,
               "MJDREFF": 0.000800740741, "TIMESYS": "TT", "TIMEUNIT": "s", "EXTRA": 1}
ICD_KEYWORDS = ("TELESCOP", "INSTRUME", "OBS_ID", "TSTART", "TSTOP", "MJDREFI", "MJDREFF",
                "TIMESYS", "CREATOR", "DATE")


def sample_hdus():
    image = fits.ImageHDU(np.arange(6400, dtype=np.float32).reshape(80, 80), name="DET_13-60_PEO")
    image.header.update({k: v for k, v in products.band_keywords((13, 60), "PEO").items()})
    return [image, gti_hdu([[1000.0, 2000.0], [2500.0, 6800.0]], "GTI_PEO")]


def keywords():
    return products.standard_keywords("ECL-DET-IMA", OBSERVATION, "0123abcd0123abcd")


def test_product_url():
    assert products.product_url("s3://b/out", "ECL-SKY-IMA", "0123456789") == \
        "s3://b/out/ECL-SKY-IMA_0123456789.fits"
    assert products.product_url("out", "ECL-GTI-CAL", "7").endswith("out/ECL-GTI-CAL_7.fits")


def test_standard_keywords():
    values = keywords()
    assert values["TELESCOP"][0] == "SVOM" and values["INSTRUME"][0] == "ECLAIRs"
    assert values["OBS_ID"][0] == "0123456789" and values["TSTOP"][0] == 6800.0
    assert values["CREATOR"][0] == ecpi_beam.CREATOR
    assert values["PARHASH"][0] == "0123abcd0123abcd"
    assert all(comment for _, comment in values.values())
    assert "EXTRA" not in values
    assert len(values["DATE"][0]) == 19 and values["DATE"][0][10] == "T"


def test_standard_keywords_need_the_observation():
    with pytest.raises(EcpiError, match="ECL-SKY-IMA: the observation keywords lack OBS_ID"):
        products.standard_keywords("ECL-SKY-IMA", {"TSTART": 0.0, "TSTOP": 1.0}, "x")


def test_band_keywords():
    values = {key: value for key, (value, _) in products.band_keywords((61, 140), "TEO").items()}
    assert values == {"BAND": "61-140", "PI_MIN": 61, "PI_MAX": 140, "E_MIN": 8.1,
                      "E_MAX": 16.1, "OCC_TYPE": "TEO"}


def test_written_product_passes_fitsverify(tmp_path, fitsverify):
    url = products.product_url(str(tmp_path), "ECL-DET-IMA", "0123456789")
    assert products.write_product(url, sample_hdus(), keywords()) == url
    fitsverify(url)
    with fits.open(url, checksum=True) as hdul:
        assert [hdu.name for hdu in hdul] == ["PRIMARY", "DET_13-60_PEO", "GTI_PEO"]
        for hdu in hdul:
            for key in ICD_KEYWORDS:
                assert key in hdu.header, (hdu.name, key)
            assert hdu.header["FILENAME"] == "ECL-DET-IMA_0123456789.fits"
            assert "CHECKSUM" in hdu.header and "DATASUM" in hdu.header
        assert hdul["DET_13-60_PEO"].header["BAND"] == "13-60"
        assert hdul["DET_13-60_PEO"].header["OCC_TYPE"] == "PEO"
        # an HDU's own keywords win over the product-wide ones
        assert hdul["GTI_PEO"].header["TSTART"] == 1000.0
        assert hdul["GTI_PEO"].header["ONTIME"] == 1000.0 + 4300.0


def test_overwrite_is_idempotent(tmp_path):
    url = str(tmp_path / "ECL-GTI-UBC_1.fits")
    products.write_product(url, sample_hdus(), keywords())
    products.write_product(url, sample_hdus(), keywords())
    with fits.open(url) as hdul:
        assert len(hdul) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ECL-GTI-UBC_1.fits"]


class ExplodingHDU(fits.ImageHDU):
    """An image whose data cannot be written (a full disk, a bug in a kernel...)."""

    def _writedata_internal(self, fileobj):
        raise RuntimeError("no space left on device")  # astropy re-wraps OSError


@pytest.mark.parametrize("existing", [False, True])
def test_failed_write_leaves_no_file_at_the_final_name(tmp_path, existing):
    url = str(tmp_path / "ECL-SKY-IMA_1.fits")
    if existing:
        products.write_product(url, sample_hdus(), keywords())
        before = open(url, "rb").read()
    hdus = sample_hdus() + [ExplodingHDU(np.zeros((4, 4), np.float32), name="BOOM")]
    with pytest.raises(RuntimeError, match="no space left"):
        products.write_product(url, hdus, keywords())
    names = sorted(p.name for p in tmp_path.iterdir())
    if existing:
        assert names == ["ECL-SKY-IMA_1.fits"] and open(url, "rb").read() == before
    else:
        assert names == []


def test_write_to_memory_and_read_back(tmp_path):
    url = "memory://products-test/out/ECL-DET-IMA_0123456789.fits"
    products.write_product(url, sample_hdus(), keywords())
    np.testing.assert_array_equal(read_gti(url, "GTI_PEO"), [[1000.0, 2000.0], [2500.0, 6800.0]])
    assert fs.listdir("memory://products-test/out") == ["ECL-DET-IMA_0123456789.fits"]


def test_write_to_s3_atomically(s3_bucket, tmp_path, fitsverify):
    url = products.product_url(f"{s3_bucket}/out", "ECL-DET-IMA", "0123456789")
    products.write_product(url, sample_hdus(), keywords())
    with pytest.raises(RuntimeError):
        products.write_product(url, sample_hdus() + [ExplodingHDU(np.zeros(3), name="X")],
                               keywords())
    assert fs.listdir(f"{s3_bucket}/out") == ["ECL-DET-IMA_0123456789.fits"]
    local = tmp_path / "copy.fits"
    local.write_bytes(fs.read_bytes(url))
    fitsverify(str(local))


def test_gti_hdu_is_ogip(tmp_path, fitsverify):
    hdu = gti_hdu(np.array([[0.0, 10.0], [20.0, 25.0]]), "GTI_ALL", {"OBS_ID": "42"})
    header = hdu.header
    assert (header["HDUCLASS"], header["HDUCLAS1"], header["HDUCLAS2"]) == \
        ("OGIP", "GTI", "STANDARD")
    assert header["ONTIME"] == 15.0 and header["TSTART"] == 0.0 and header["TSTOP"] == 25.0
    assert header["TUNIT1"] == "s" and header["TFORM2"] == "D" and header["OBS_ID"] == "42"
    assert header["MJDREFI"] == 57754 and header["TIMESYS"] == "TT" and header["TIMEZERO"] == 0
    path = str(tmp_path / "gti.fits")
    products.write_product(path, [hdu, gti_hdu(np.empty((0, 2)), "GTI_EMPTY")], keywords())
    fitsverify(path)
    np.testing.assert_array_equal(read_gti(path, "GTI_ALL"), [[0.0, 10.0], [20.0, 25.0]])
    assert read_gti(path, "GTI_EMPTY").shape == (0, 2)


def test_gti_rejects_reversed_intervals():
    with pytest.raises(ValueError, match="ends before it starts"):
        gti_hdu([[5.0, 1.0]])


def test_streamed_checksums_match_astropys(tmp_path):
    """FitsChecksum over pieces of any length, and header_with_checksum, as astropy writes them."""
    import warnings

    from ecpi_beam.io.products import FitsChecksum, header_with_checksum

    rows = np.random.default_rng(3).integers(0, 255, 19 * 1001, dtype=np.uint8)
    reference = tmp_path / "reference.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(rows)]).writeto(reference, checksum=True)
    expected = fits.getheader(reference, 1)
    datasum = FitsChecksum()
    for start in range(0, len(rows), 19):  # the row size of ECL-EVT-CAL: words straddle pieces
        datasum.update(rows[start:start + 19].tobytes())
    assert str(datasum.value) == expected["DATASUM"]
    header = fits.ImageHDU(rows).header
    streamed = tmp_path / "streamed.fits"
    padding = b"\0" * (-len(rows) % 2880)
    streamed.write_bytes(header_with_checksum(fits.PrimaryHDU().header, 0)
                         + header_with_checksum(header, datasum.value) + rows.tobytes() + padding)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # astropy warns on a wrong checksum
        with fits.open(streamed, checksum=True) as hdul:  # (CHECKSUM differs from the
            assert np.array_equal(hdul[1].data, rows)     # reference: its comment is dated)
    damaged = bytearray(streamed.read_bytes())
    damaged[2 * 2880 + 100] ^= 1
    streamed.write_bytes(bytes(damaged))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with fits.open(streamed, checksum=True):
            pass
    assert {"Checksum", "Datasum"} <= {str(w.message).split()[0] for w in caught}
