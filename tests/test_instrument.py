"""Pins every ICD convention of ecpi_beam.instrument."""
import numpy as np
import pytest
from astropy.wcs import WCS
from astropy.io import fits

from ecpi_beam import instrument as ins


def random_pattern(seed=1):
    rng = np.random.default_rng(seed)
    return (rng.random((ins.N_MASK, ins.N_MASK)) < ins.MASK_OPEN_FRACTION).astype(np.uint8)


def test_icd_numbers():
    assert ins.N_SKY == 199 and ins.N_MASK_CELLS == 120 and ins.SKY_CENTRE == 99
    assert ins.MASK_PITCH_MM == pytest.approx(11.7391, abs=1e-4)
    assert ins.SKY_PIXEL_DEG == pytest.approx(0.5605, abs=1e-4)
    assert ins.FULLY_CODED_HALF_ANGLE_DEG == pytest.approx(11.1, abs=0.05)
    assert ins.ZERO_RESPONSE_HALF_ANGLE_DEG == pytest.approx(44.4, abs=0.05)
    assert ins.DETECTOR_AREA_CM2 == pytest.approx(1024.0)
    assert ins.fwhm_kev(59.5) == pytest.approx(1.8, abs=0.02)


def test_pixel_and_mask_centres():
    assert ins.pixel_centre_mm(0) == pytest.approx(-39.5 * 4.5)
    assert ins.pixel_centre_mm(79) == pytest.approx(39.5 * 4.5)
    assert ins.mask_element_centre_mm(0) == pytest.approx(-22.5 * 540 / 46)
    assert ins.mask_element_index(ins.mask_element_centre_mm(np.arange(46))).tolist() == list(range(46))
    assert ins.mask_element_index([-270.5, 270.5]).tolist() == [-1, -1]


def test_energy_scale_and_bands():
    assert ins.energy_to_pi([2.0, 2.05, 2.1, 59.5, 151.99, 500.0]).tolist() == [0, 0, 1, 575, 1499, 1499]
    lo, hi = ins.pi_to_energy(np.array([13, 60]))
    assert lo[0] == pytest.approx(3.3) and hi[1] == pytest.approx(8.1)
    assert ins.band_energy_range((61, 140)) == pytest.approx((8.1, 16.1))
    assert ins.band_name((13, 60)) == "13-60"


def test_resampled_mask_conserves_open_area():
    pattern = random_pattern()
    resampled = ins.resample_mask(pattern)
    assert resampled.shape == (120, 120)
    assert resampled.min() >= 0 and resampled.max() <= 1 + 1e-12
    cell_area, element_area = 4.5**2, ins.MASK_PITCH_MM**2
    assert resampled.sum() * cell_area == pytest.approx(pattern.sum() * element_area)
    # a cell well inside one element takes that element's value
    assert resampled[1, 1] == pattern[0, 0]


@pytest.mark.parametrize("row,col", [(99, 99), (40, 150), (120.0, 60.0), (10, 190)])
def test_direction_round_trip_and_shadow_convention(row, col):
    u = ins.sky_pixel_to_los(row, col)
    assert np.linalg.norm(u) == pytest.approx(1.0)
    back = ins.los_to_sky_pixel(u)
    assert back[0] == pytest.approx(row) and back[1] == pytest.approx(col)
    # the ICD photon path: detector pixel (i, j) sees the mask at y + 460 u_y/u_x; that point
    # falls in resampled cell (i + row - 79, j + col - 79) (module docstring convention)
    i, j = 30, 50
    y_mask, z_mask = ins.mask_crossing_mm(ins.pixel_centre_mm(j), ins.pixel_centre_mm(i), u)
    cell_j = (y_mask + ins.MASK_WIDTH_MM / 2) / ins.PIXEL_PITCH_MM - 0.5
    cell_i = (z_mask + ins.MASK_WIDTH_MM / 2) / ins.PIXEL_PITCH_MM - 0.5
    assert cell_i == pytest.approx(i + row - ins.SHADOW_OFFSET)
    assert cell_j == pytest.approx(j + col - ins.SHADOW_OFFSET)


def test_shadow_of_on_axis_source_is_the_mask():
    pattern = random_pattern(3)
    u = np.array([1.0, 0.0, 0.0])
    idx = np.arange(ins.N_PIX)
    z, y = np.meshgrid(ins.pixel_centre_mm(idx), ins.pixel_centre_mm(idx), indexing="ij")
    shadow = ins.mask_transmits(pattern, *ins.mask_crossing_mm(y, z, u))
    resampled = ins.resample_mask(pattern)[20:100, 20:100]
    # pixel centres fall in the cells of rows/cols 20..99: the shadow is the mask there
    assert np.all(shadow[resampled == 1.0]) and not np.any(shadow[resampled == 0.0])


def test_field_edges():
    edge = np.tan(np.radians(ins.ZERO_RESPONSE_HALF_ANGLE_DEG)) / ins.SKY_PIXEL_RAD
    assert edge == pytest.approx(99.0 + 1.0, abs=0.5)  # the last sky pixel reaches the edge
    assert ins.off_axis_angle_deg(ins.sky_pixel_to_los(99, 99)) == pytest.approx(0.0)
    omega = ins.sky_pixel_solid_angle()
    assert omega[99, 99] == pytest.approx(ins.SKY_PIXEL_RAD**2)
    assert omega.sum() == pytest.approx(4 * np.arcsin(np.sin(np.arctan(99.5 * ins.SKY_PIXEL_RAD)) ** 2), rel=0.02)


@pytest.mark.parametrize("ra,dec,roll", [(0, 0, 0), (83.63, 22.01, 0), (250.0, -60.0, 37.0),
                                         (10.0, 89.9, 120.0)])
def test_quaternion_pointing(ra, dec, roll):
    q = ins.quaternion_from_pointing(ra, dec, roll)
    assert np.linalg.norm(q) == pytest.approx(1.0)
    got_ra, got_dec = ins.pointing_radec(q)
    assert got_dec == pytest.approx(dec, abs=1e-9)
    assert (got_ra - ra + 180) % 360 - 180 == pytest.approx(0, abs=1e-7)
    # LOS -> ICRS per ICD: v_icrs = R(q) v_los with scipy's scalar-last quaternion
    v = ins.attitude_matrix(q) @ np.array([1.0, 0.0, 0.0])
    assert v == pytest.approx(ins.radec_to_unit(ra, dec))


def test_roll_zero_has_z_north_and_y_east():
    q = ins.quaternion_from_pointing(0.0, 0.0, 0.0)
    matrix = ins.attitude_matrix(q)
    assert matrix[:, 2] == pytest.approx([0, 0, 1])  # +Z to celestial north
    assert matrix[:, 1] == pytest.approx([0, 1, 0])  # +Y to east (RA 90)


def test_radec_los_round_trip():
    q = ins.quaternion_from_pointing(120.0, -30.0, 15.0)
    u = ins.radec_to_los(125.0, -27.0, q)
    ra, dec = ins.los_to_radec(u, q)
    assert (ra, dec) == pytest.approx((125.0, -27.0))


@pytest.mark.parametrize("ra,dec,roll", [(83.63, 22.01, 0.0), (300.0, -45.0, 73.0), (10.0, 80.0, 200.0)])
def test_wcs_matches_the_projection(ra, dec, roll):
    q = ins.quaternion_from_pointing(ra, dec, roll)
    header = fits.Header()
    header.update(ins.sky_wcs_keywords(q))
    wcs = WCS(header)
    rng = np.random.default_rng(0)
    rows, cols = rng.uniform(0, 198, 50), rng.uniform(0, 198, 50)
    expected_ra, expected_dec = ins.los_to_radec(ins.sky_pixel_to_los(rows, cols), q)
    x, y = ins.sky_pixel_to_fits(rows, cols)
    world = wcs.pixel_to_world_values(x - 1, y - 1)  # astropy's pixels are 0-based
    chord = np.linalg.norm(ins.radec_to_unit(world[0], world[1])
                           - ins.radec_to_unit(expected_ra, expected_dec), axis=-1)
    assert np.degrees(chord).max() < 1e-7


def test_mean_quaternion_of_noisy_attitudes():
    q = ins.quaternion_from_pointing(40.0, 10.0, 5.0)
    rng = np.random.default_rng(2)
    noisy = q + rng.normal(0, 1e-5, (100, 4))
    noisy[::2] *= -1  # q and -q are the same attitude
    mean = ins.mean_quaternion(noisy / np.linalg.norm(noisy, axis=1, keepdims=True))
    assert abs(np.dot(mean, q)) == pytest.approx(1.0, abs=1e-8)


def test_earth_direction_and_radius():
    direction, radius = ins.earth_direction_and_radius(np.array([[6996e3, 0.0, 0.0]]))
    assert direction[0] == pytest.approx([-1, 0, 0])
    assert np.degrees(radius[0]) == pytest.approx(67.7, abs=0.1)


@pytest.mark.parametrize("roll", [0.0, 37.0, 200.0])
def test_sky_images_have_east_to_the_left(roll):
    """ds9's convention: det(CD) < 0 at any roll; at roll 0, CD1_1 < 0 and one pixel to the
    right (x + 1) near the centre is a smaller RA, one pixel up a larger Dec."""
    header = fits.Header()
    header.update(ins.sky_wcs_keywords(ins.quaternion_from_pointing(83.63, 22.01, roll)))
    cd = np.array([[header["CD1_1"], header["CD1_2"]], [header["CD2_1"], header["CD2_2"]]])
    assert np.linalg.det(cd) < 0
    if roll == 0.0:
        assert header["CD1_1"] < 0
        wcs = WCS(header)
        centre = header["CRPIX1"] - 1, header["CRPIX2"] - 1
        ra0, dec0 = wcs.pixel_to_world_values(*centre)
        ra_right, _ = wcs.pixel_to_world_values(centre[0] + 1, centre[1])
        _, dec_up = wcs.pixel_to_world_values(centre[0], centre[1] + 1)
        assert ra_right < ra0 and dec_up > dec0


def test_fits_sky_pixels_round_trip_and_match_the_stored_image():
    image = np.arange(ins.N_SKY * ins.N_SKY, dtype=float).reshape(ins.N_SKY, ins.N_SKY)
    stored = ins.sky_image_to_fits(image)
    row, col = 12, 150
    x, y = ins.sky_pixel_to_fits(row, col)
    assert stored[int(y) - 1, int(x) - 1] == image[row, col]
    assert ins.fits_to_sky_pixel(x, y) == pytest.approx((row, col))
    assert np.array_equal(ins.sky_image_to_fits(stored), image)
