"""[mosa] and [spex] parameter sections: optional, seed-style defaults, one-line errors."""
import pytest

from ecpi_beam.errors import EcpiError
from ecpi_beam.params import parse_params, params_text


def parse(**extra):
    return parse_params(params_text("in", "out", extra=extra), check_paths=False)


def test_files_without_the_sections_get_the_defaults():
    params = parse()
    assert params.mosa.out_files == () and params.spex.out_files == ()
    assert params.mosa.grid == ("healpix",) and params.mosa.nside == 0
    assert params.spex.sources == () and params.spex.time_bin == 1.0


def test_only_out_files_given_makes_every_product_with_the_defaults():
    params = parse(mosa={"out_files": "['ECL-MOS-IMA', 'ECL-MOS-SOP']"},
                   spex={"out_files": "ECL-SPS-S1, ECL-LCS-S1"})
    assert params.mosa.out_files == ("ECL-MOS-IMA", "ECL-MOS-SOP")
    assert params.spex.out_files == ("ECL-SPS-S1", "ECL-LCS-S1")
    assert set(params.wanted_products) >= {"ECL-MOS-IMA", "ECL-SPS-S1"}
    assert parse().fingerprint() != params.fingerprint()


def test_values_are_read():
    params = parse(mosa={"grid": "['healpix', 'car']", "nside": "256", "car_pixel_deg": "0.5",
                         "pcode_min": "0.3", "snr_ths": "5"},
                   spex={"sources": "[[83.63, 22.01], [299.59, 35.2]]", "time_bin": "0.5",
                         "pi_per_channel": "1"})
    assert params.mosa.grid == ("healpix", "car") and params.mosa.nside == 256
    assert params.mosa.car_pixel_deg == 0.5 and params.mosa.snr_ths == 5.0
    assert params.spex.sources == ((83.63, 22.01), (299.59, 35.2))
    assert params.spex.time_bin == 0.5 and params.spex.pi_per_channel == 1
    assert parse(spex={"sources": "[10, -5]"}).spex.sources == ((10.0, -5.0),)
    assert params.spex.sources_from == "list"
    assert parse(spex={"sources": "mosaic"}).spex.sources_from == "mosaic"
    assert parse(spex={"sources": "'imag'"}).spex.sources_from == "imag"
    assert parse(spex={"sources": "[]"}).spex.sources_from == "imag"


@pytest.mark.parametrize("section, key, value, message", [
    ("mosa", "out_files", "['ECL-MOS-IMG']", "did you mean 'ECL-MOS-IMA'"),
    ("mosa", "grid", "['mollweide']", "allowed: 'healpix', 'car'"),
    ("mosa", "nside", "100", "power of two from 16 to 1024"),
    ("mosa", "snr_ths", "2", ">= 3.0"),
    ("mosa", "tiles", "8", "unknown key"),
    ("spex", "sources", "[[400, 0]]", "0 <= RA < 360"),
    ("spex", "sources", "['Crab']", "[RA, Dec] pairs"),
    ("spex", "time_bin", "0", ">= 2e-05"),
    ("spex", "pi_per_channel", "0", "in [1, 1500]"),
])
def test_each_mistake_is_one_line_naming_section_and_key(section, key, value, message):
    with pytest.raises(EcpiError) as error:
        parse(**{section: {key: value}})
    text = str(error.value)
    assert f"[{section}] {key}" in text and message in text and "\n" not in text
