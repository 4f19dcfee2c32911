"""io/fitsfile: headers and units written without astropy's objects give the bytes astropy
writes (cards, data, padding), with checksums astropy and fitsverify accept."""
import re
import warnings

import numpy as np
import pytest
from astropy.io import fits

from ecpi_beam.io import fitsfile
from ecpi_beam.io.products import standard_keywords, write_product

OBSERVATION = {"OBS_ID": "0000000042", "TSTART": 1000.0, "TSTOP": 2000.0,
               "RA_PNT": 83.63, "DEC_PNT": 22.01, "PA_PNT": 0.0}
CARD_VALUES = [
    "SVOM", "", "it's", "a" * 60, "x" * 90, True, False, np.bool_(True), 0, -7, np.int64(57754),
    np.int32(-3), 300000000.0, 0.000800740741, -22.817358536305456, 1.42808178272715e-15, 1e-20,
    123456789012345678.0, 2.5e300, np.float32(3.3), np.float64(-0.5), 0.0, -0.0,
]


@pytest.mark.parametrize("value", CARD_VALUES, ids=repr)
@pytest.mark.parametrize("comment", ["", "a comment", "c" * 70])
def test_cards_are_formatted_as_astropy_formats_them(value, comment):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # astropy warns where it cuts a comment too long
        expected = fits.Card("KEY", value, comment).image
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert fitsfile.format_card("KEY", value, comment) == expected


def test_commentary_cards_and_bad_values():
    assert fitsfile.format_card("COMMENT", "1 = good pixel") == \
        fits.Card("COMMENT", "1 = good pixel").image
    for value in (float("nan"), float("inf"), "caf\u00e9", "tab\there"):
        with pytest.raises(ValueError, match="KEY"):
            fitsfile.format_card("KEY", value)


def test_a_header_orders_its_cards_as_astropy_does():
    ours, theirs = fitsfile.Header(), fits.Header()
    for header in (ours, theirs):
        header["A"] = (1, "first")
        header["COMMENT"] = "a remark"
        header["B"] = "two"  # before the trailing COMMENT
        header["A"] = 3  # the value changes, the comment stays
        header["COMMENT"] = "another"
        header.comments["B"] = "second"
    assert ours.tostring() == theirs.tostring()
    assert ours["A"] == 3 and "B" in ours and ours.get("C", 9) == 9 and len(ours) == 4


def units():
    rng = np.random.default_rng(5)
    images = [fitsfile.ImageUnit(rng.normal(size=(7, 5)).astype(np.float32), "SNR_13-60_PEO"),
              fitsfile.ImageUnit(rng.integers(0, 9, (80, 80)).astype(np.int32), "COUNTS"),
              fitsfile.ImageUnit(rng.integers(0, 2, (80, 80)).astype(np.uint8), "PIXEL_MASK"),
              fitsfile.ImageUnit(rng.normal(size=(3, 4, 2)), "CUBE")]
    images[0].header["BAND"] = ("13-60", "PI band")
    images[0].header["COMMENT"] = "a comment, kept last"
    columns = [("RA", "D", "deg", [1.5, -2.25]), ("SNR", "E", None, [7.5, float("nan")]),
               ("N", "J", None, [3, -4]), ("NAME", "24A", None, ["ECL J0534+2200", ""]),
               ("NEW", "L", None, [True, False]), ("CHAN", "I", "chan", [1, 1500])]
    table = fitsfile.TableUnit("SOURCES", columns, 2)
    empty = fitsfile.TableUnit("CATALOG", [(name, fmt, unit, []) for name, fmt, unit, _
                                           in columns], 0)
    return images + [table, empty]


def _masked(data: bytes) -> bytes:
    """The file with the dates of DATE and of the checksum comments, and the checksums, out."""
    cards = bytearray(data)
    for at in range(0, len(data), 80):
        card = bytes(data[at:at + 80])
        if card[:8] in (b"DATE    ", b"CHECKSUM", b"DATASUM "):
            cards[at:at + 80] = re.sub(rb"(= +'?)[^/]*/ (.*?) (updated .*)?$", rb"\1/ \2",
                                       card).ljust(80)[:80]
    return bytes(cards)


def test_units_are_written_as_astropy_writes_them(tmp_path, fitsverify):
    keywords = standard_keywords("ECL-SKY-IMA", OBSERVATION, "cafe+f00d")
    ours = write_product(str(tmp_path / "ours" / "p.fits"), units(), keywords)
    # the same units through astropy: write_product converts them when a list mixes both kinds
    theirs = write_product(str(tmp_path / "astropy" / "p.fits"),
                           [fits.PrimaryHDU(), *units()], keywords)
    ours_bytes, theirs_bytes = (open(path, "rb").read() for path in (ours, theirs))
    assert len(ours_bytes) == len(theirs_bytes)
    assert _masked(ours_bytes) == _masked(theirs_bytes)
    fitsverify(ours)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a wrong CHECKSUM or DATASUM warns
        with fits.open(ours, checksum=True) as hdul:
            assert [hdu.name for hdu in hdul] == ["PRIMARY", "SNR_13-60_PEO", "COUNTS",
                                                  "PIXEL_MASK", "CUBE", "SOURCES", "CATALOG"]
            assert np.array_equal(hdul["COUNTS"].data, units()[1].data)
            assert hdul["CUBE"].data.shape == (3, 4, 2)
            table = hdul["SOURCES"].data
            assert list(table["NAME"]) == ["ECL J0534+2200", ""]
            assert list(table["NEW"]) == [True, False] and np.isnan(table["SNR"][1])
            assert hdul["SNR_13-60_PEO"].header["HDUCLAS2"] == "SIGNIFICANCE"
            assert hdul["SNR_13-60_PEO"].header["OBS_ID"] == "0000000042"
            assert len(hdul["CATALOG"].data) == 0


def test_an_image_of_an_unwritable_type_is_refused():
    with pytest.raises(ValueError, match="UINT"):
        fitsfile.ImageUnit(np.zeros(3, np.uint16), "UINT")
