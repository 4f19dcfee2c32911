"""MOSA on Beam: the campaign mosaic of stored accumulators (ECL-MOS-ACC) equals the kernel's,
and the products are valid FITS that healpy, astropy-healpix, astropy.wcs and fitsverify
accept."""
from types import SimpleNamespace

import apache_beam as beam
import healpy
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline  # not collected
from astropy.io import fits
from astropy.wcs import WCS
from astropy_healpix import HEALPix
from sky_fixtures import simulated_sky

from ecpi_beam.caldb import default_caldb_dir
from ecpi_beam.kernels import imaging, mosaic
from ecpi_beam.io.mosaic_products import mosaic_input_hdus, read_mosaic_inputs
from ecpi_beam.io.products import product_url, standard_keywords, write_product
from ecpi_beam.params import MosaParams
from ecpi_beam.transforms.imag import SkyProducts
from ecpi_beam.transforms.base import SumCombineFn
from ecpi_beam.transforms.mosa import ACCUMULATOR, CampaignMosaic, observation_rates

SOURCE = (40.0, -30.0)
POINTINGS = [(40.0 + 6.0 * np.cos(a) / np.cos(np.radians(30.0)), -30.0 + 6.0 * np.sin(a))
             for a in np.linspace(0.0, 2.0 * np.pi, 4, endpoint=False)]


def sky_element(index):
    """((obs_id, band, occ), SkyProducts) of campaign observation `index` (deterministic: the
    pipeline makes the images itself rather than pickling them into a Create)."""
    sky = simulated_sky(np.random.default_rng(40 + index), POINTINGS[index], [(*SOURCE, 0.1)])
    products = SkyProducts(images=imaging.SkyImages(sky.intensity, sky.variance, sky.snr,
                                                    sky.pcode),
                           residual_snr=sky.snr, exposure=sky.exposure,
                           wcs_keywords=sky.wcs_keywords, sources=())
    return (obs_id(index), "13-60", "PEO"), products


def obs_id(index):
    return f"00000009{index:02d}"


def observation(index):
    return obs_id(index), SimpleNamespace(keywords={
        "OBS_ID": obs_id(index), "TSTART": 1e8 + 1000 * index, "TSTOP": 1e8 + 1000 * index + 100})


def stored_accumulators(working_out):
    """Each observation's ECL-MOS-ACC written as the observation pipelines write it:
    [(obs_id, URL, tstart, tstop)]."""
    stored = []
    for index in range(len(POINTINGS)):
        (name, band, occ), sky = sky_element(index)
        keywords = observation(index)[1].keywords
        url = product_url(str(working_out), ACCUMULATOR, name)
        write_product(url, mosaic_input_hdus([(band, occ, observation_rates(sky))]),
                      standard_keywords(ACCUMULATOR, keywords, "0123456789abcdef"))
        stored.append((name, url, keywords["TSTART"], keywords["TSTOP"]))
    return stored


def test_combine_fn_merges_in_any_grouping():
    sums = [mosaic.MosaicSums(*(np.full(4, float(k + i)) for i in range(5))) for k in range(6)]
    combine = SumCombineFn()
    first = combine.add_input(combine.add_input(combine.create_accumulator(), sums[0]), sums[1])
    second = combine.add_input(combine.create_accumulator(), sums[2])
    merged = combine.merge_accumulators([first, combine.create_accumulator(), second])
    for k in range(3, 6):
        merged = combine.add_input(merged, sums[k])
    np.testing.assert_array_equal(combine.extract_output(merged).weight,
                                  sum(s.weight for s in sums))


@pytest.mark.filterwarnings("ignore::astropy.wcs.FITSFixedWarning")  # DATEREF from MJDREF
def test_mosa_writes_healpix_and_car_mosaics_and_their_sources(tmp_path, fitsverify):
    params = MosaParams(out_files=("ECL-MOS-IMA", "ECL-MOS-SOP"), grid=("healpix", "car"),
                        car_pixel_deg=0.5)
    stored = stored_accumulators(tmp_path)
    fitsverify(stored[0][1])
    with BeamTestPipeline() as pipeline:
        pipeline | CampaignMosaic(params, stored, default_caldb_dir(), str(tmp_path),
                                  "0123456789abcdef", params.out_files)
    image_file, source_file = tmp_path / "ECL-MOS-IMA_MOSAIC.fits", tmp_path / "ECL-MOS-SOP_MOSAIC.fits"
    fitsverify(image_file)
    fitsverify(source_file)

    # the mosaic is the sum of the stored accumulators, as the kernel makes it
    grid = mosaic.make_grid("healpix")
    tiles = {}
    for _, url, *_ in stored:
        for _, _, rates in read_mosaic_inputs(url)[1]:
            for tile, sums in mosaic.image_to_grid(grid, rates).items():
                tiles[tile] = tiles[tile] + sums if tile in tiles else sums
    expected = mosaic.mosaic_map(grid, tiles)
    with fits.open(image_file) as hdul:
        table = hdul["HEALPIX_13-60_PEO"]
        header = table.header
        assert (header["PIXTYPE"], header["ORDERING"], header["COORDSYS"], header["NSIDE"],
                header["INDXSCHM"]) == ("HEALPIX", "NESTED", "C", 128, "EXPLICIT")
        np.testing.assert_array_equal(table.data["PIXEL"], expected.pixels)
        np.testing.assert_allclose(table.data["SIGNIFICANCE"], expected.significance, rtol=1e-6)
        assert hdul[0].header["OBS_ID"] == "MOSAIC" and hdul[0].header["NOBS"] == 4
        assert len(hdul["OBSERVATIONS"].data) == 4
        assert (header["NOBS"], header["EXPOSURE"]) == (4, 4 * 100.0)
        # astropy-healpix from the header alone puts the brightest pixel at the source
        healpix = HEALPix(nside=header["NSIDE"], order=header["ORDERING"].lower())
        peak = table.data["PIXEL"][np.argmax(table.data["SIGNIFICANCE"])]
        lon, lat = healpix.healpix_to_lonlat(peak)
        assert abs(lon.deg - SOURCE[0]) < 1.0 and abs(lat.deg - SOURCE[1]) < 1.0
        # CAR: the WCS of the cut-out puts the CAR peak at the source too
        car = hdul["SIGNIFICANCE_13-60_PEO"]
        row, col = np.unravel_index(np.nanargmax(car.data), car.data.shape)
        ra, dec = WCS(car.header).all_pix2world(col, row, 0)
        assert abs(ra - SOURCE[0]) < 1.0 and abs(dec - SOURCE[1]) < 1.0
    # healpy reads the partial-sky map, nested (with partial=True, field 0 is INTENSITY)
    significance = healpy.read_map(str(image_file), hdu=1, field=2, partial=True, nest=True)
    assert significance.size == 12 * 128**2
    assert np.argmax(np.where(significance == healpy.UNSEEN, -np.inf, significance)) == peak
    with fits.open(source_file) as hdul:
        rows = hdul["SOURCES"].data
        assert len(rows) == 1
        assert abs(rows["RA"][0] - SOURCE[0]) < 0.5 and abs(rows["DEC"][0] - SOURCE[1]) < 0.5
        assert rows["BAND"][0] == "13-60" and rows["OCC_TYPE"][0] == "PEO"
        assert rows["SNR"][0] > 7.0


def test_spex_takes_the_sources_found_on_the_mosaic_for_every_observation():
    from apache_beam.testing.util import assert_that, equal_to

    from ecpi_beam.kernels.sky_analysis import SourceRow
    from ecpi_beam.kernels.spectra import SpexSource
    from ecpi_beam.transforms.spex import sources_of_mosaic

    def row(ra, dec, snr):
        return SourceRow(ra=ra, dec=dec, err_rad_arcmin=10.0, snr=snr, flux=1.0, flux_err=0.1,
                         row=float("nan"), col=float("nan"), pcode=1.0)

    found = [(("13-60", "PEO"), [row(10.0, 5.0, 9.0), row(40.0, -3.0, 20.0)]),
             (("61-140", "PEO"), [row(10.2, 5.1, 8.0)])]  # the same source in another band
    # named by their positions, as catalogue sources are (OBJECT of the spectra)
    expected = (SpexSource(1, "ECL J024000.0-030000", 40.0, -3.0),
                SpexSource(2, "ECL J004000.0+050000", 10.0, 5.0))
    with BeamTestPipeline() as pipeline:
        observations = pipeline | "Obs" >> beam.Create([observation(0), observation(1)])
        sources = sources_of_mosaic(observations, pipeline | "Found" >> beam.Create(found))
        assert_that(sources, equal_to([(obs_id(0), expected), (obs_id(1), expected)]))
