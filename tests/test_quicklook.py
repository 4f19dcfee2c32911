"""ecpi_quicklook (PNGs from products) and the DS9 region files of the source lists."""
import shutil
import subprocess
import sys

import pytest
from astropy.io import fits
from regions import Regions

from ecpi_beam.io.regions import COLOURS, regions_url, write_regions

from pipeline_fixtures import angular_offset_arcmin, sources_table

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_ecpi_run_writes_a_region_file_that_parses_back(reference_run, small_observation):
    sop = reference_run.product("ECL-SOP-IMA", small_observation.obs_id)
    rows = sources_table(sop)
    regions = Regions.read(regions_url(str(sop)), format="ds9")
    assert len(regions) == len(rows) > 0
    for region, row in zip(regions, rows):
        assert float(angular_offset_arcmin(region.center.ra.deg, region.center.dec.deg,
                                           row["RA"], row["DEC"])) < 1e-3
        assert region.radius.to_value("arcmin") == pytest.approx(max(row["ERR_RAD"], 1.0),
                                                                 rel=1e-4)
        assert row["BAND"] in region.meta["text"]


def test_known_and_new_sources_are_drawn_differently(tmp_path):
    columns = [fits.Column("RA", "D", array=[10.0, 20.0, 30.0]),
               fits.Column("DEC", "D", array=[-5.0, 5.0, 15.0]),
               fits.Column("ERR_RAD", "E", array=[2.0, 3.0, 0.5]),
               fits.Column("SNR", "E", array=[9.0, 12.0, 7.5]),
               fits.Column("BAND", "12A", array=["13-60"] * 3),
               fits.Column("NAME", "24A", array=["ECL J004000.0-050000"] * 3),
               fits.Column("KNOWN_NAME", "24A", array=["Crab", "", ""]),
               fits.Column("NEW", "L", array=[False, True, False])]
    sop = tmp_path / "ECL-SOP-IMA_0000000007.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(columns, name="SOURCES")]
                 ).writeto(sop)
    regions = Regions.read(write_regions(str(sop)), format="ds9")
    assert [region.visual["edgecolor"] for region in regions] == [
        COLOURS["known"], COLOURS["new"], COLOURS["other"]]
    assert regions[0].meta["text"].startswith("Crab")
    assert regions[2].radius.to_value("arcmin") == pytest.approx(1.0)  # the smallest circle


def test_quicklook_makes_every_png(reference_run, small_observation, tmp_path):
    products = tmp_path / "products"
    shutil.copytree(reference_run.working_out, products)
    (products / f"ECL-SOP-IMA_{small_observation.obs_id}.reg").unlink()
    out = tmp_path / "pngs"
    result = subprocess.run([sys.executable, "-m", "ecpi_beam.quicklook", str(products),
                             "--out", str(out), "--band", "13-60", "--occ", "PEO"],
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    obs_id = small_observation.obs_id
    for kind in ("detector", "sky_snr", "gti", "lightcurve"):
        png = out / f"{obs_id}_{kind}.png"
        assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 5000, kind
    assert (products / f"ECL-SOP-IMA_{obs_id}.reg").is_file()  # made again when missing
    assert result.stderr.strip() == ""


def test_quicklook_mistakes_are_one_line(tmp_path):
    from ecpi_beam.cli import ecpi_quicklook

    assert ecpi_quicklook([str(tmp_path / "nowhere")]) == 2
    assert ecpi_quicklook([str(tmp_path)]) == 2
    assert ecpi_quicklook([str(tmp_path), "--band", "13-60"]) == 2  # no product there


@pytest.mark.parametrize("options", [["--band", "13-60"], ["--occ", "PEO"], ["--band", "61-140"],
                                     []])
def test_band_or_occ_alone_picks_the_first_image_of_what_is_given(reference_run, tmp_path,
                                                                   small_observation, options,
                                                                   capsys):
    """`--band` without `--occ` failed although the help gives both defaults."""
    from ecpi_beam.cli import ecpi_quicklook

    assert ecpi_quicklook([str(reference_run.working_out), "--out", str(tmp_path), *options]) == 0
    assert (tmp_path / f"{small_observation.obs_id}_sky_snr.png").is_file()
    assert ecpi_quicklook([str(reference_run.working_out), "--out", str(tmp_path),
                           "--band", "14-60"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "no HDU COUNTS_14-60_*" in error[0] and "COUNTS_13-60_PEO" in error[0]


def test_the_sky_quicklook_shows_the_cleaned_image_and_names_the_sources(reference_run,
                                                                          small_observation):
    """What a coded-mask quick-look shows: the residual SNR (the noise) with each source put back
    as a clean PSF of its SNR, and the catalogue's name beside each mark."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from ecpi_beam.quicklook import draw_sky, sky_view

    obs_id = small_observation.obs_id
    view = sky_view(str(reference_run.product("ECL-SKY-IMA", obs_id)),
                    str(reference_run.product("ECL-SOP-IMA", obs_id)), "13-60", "PEO")
    rows = [row for row in sources_table(reference_run.product("ECL-SOP-IMA", obs_id))
            if row["BAND"] == "13-60"]
    assert len(view.sources) == len(rows) > 0
    for row in rows:  # the source where it was found, as bright as in the SNR image
        x, y = int(round(row["SKY_X"] - 1)), int(round(row["SKY_Y"] - 1))
        assert view.restored[y, x] == pytest.approx(view.raw[y, x], rel=0.15)
        assert view.restored[y, x] > 0.6 * row["SNR"]
    coded = view.raw != 0
    assert np.std(view.residual[coded]) == pytest.approx(1.0, abs=0.15)
    fig = plt.figure()
    ax = draw_sky(fig, 111, view, injected=[("HalfCrab", small_observation.source["ra"],
                                              small_observation.source["dec"])])
    labels = [text.get_text() for text in ax.texts]
    plt.close(fig)
    for row in rows:
        name = (row["KNOWN_NAME"] or row["NAME"]).strip()
        assert any(label.startswith(name) and f"SNR {row['SNR']:.0f}" in label
                   for label in labels), (name, labels)
    assert any("injected HalfCrab" in label for label in labels)
