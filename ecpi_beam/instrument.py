"""ECLAIRs instrument model: the constants, frames and projections of ICD section 1.

Conventions (pinned by tests/test_instrument.py):
- detector arrays are indexed [IDET, JDET]; IDET runs along LOS z, JDET along LOS y;
- mask arrays are indexed [IMSK, JMSK] the same way; the mask resampled to the detector pitch
  is a 120 x 120 array over the 540 mm mask plane, cell k centred at (k - 59.5) * 4.5 mm;
- sky images are indexed [row, col] = [z shift, y shift]: the sky pixel (row, col) is the
  direction whose tangent-plane coordinates are (u_z/u_x, u_y/u_x) = ((row - 99), (col - 99))
  * 4.5 / 460, so the sky grid is an exact gnomonic (TAN) projection on the boresight;
- sky images in products are that grid with the column axis reversed, so that east is on the
  left as an astronomer expects (ds9, CD1_1 < 0 at roll 0, det(CD) < 0): FITS pixel
  (x, y) = (199 - col, row + 1). Convert only with sky_image_to_fits, sky_pixel_to_fits,
  fits_to_sky_pixel and sky_wcs_keywords;
- a source in sky pixel (row, col) casts on detector pixel (i, j) the shadow of resampled mask
  cell (i + row - 79, j + col - 79).
"""
from __future__ import annotations

import numpy as np

# --- detector -------------------------------------------------------------------------------
N_PIX = 80
PIXEL_PITCH_MM = 4.5
PIXEL_SIZE_MM = 4.0
PIXEL_AREA_CM2 = (PIXEL_SIZE_MM / 10.0) ** 2
DETECTOR_AREA_CM2 = N_PIX * N_PIX * PIXEL_AREA_CM2  # 1024 cm2 of CdTe
LOW_THRESHOLD_KEV = 4.0
TIME_RESOLUTION_S = 20e-6
N_PHA = 4096
FLAG_MULTIPLE_PIXEL = 0x01  # EVENTS FLAG bit 0: a multiple-pixel event
FLAG_FORCED_TRIGGER = 0x02  # EVENTS FLAG bit 1: an electronic forced trigger, not a photon

# --- mask -----------------------------------------------------------------------------------
N_MASK = 46
MASK_WIDTH_MM = 540.0
MASK_PITCH_MM = MASK_WIDTH_MM / N_MASK
MASK_HEIGHT_MM = 460.0
MASK_OPEN_FRACTION = 0.4
N_MASK_CELLS = int(round(MASK_WIDTH_MM / PIXEL_PITCH_MM))  # 120

# --- sky ------------------------------------------------------------------------------------
N_SKY = N_MASK_CELLS + N_PIX - 1  # 199
SKY_CENTRE = (N_SKY - 1) // 2  # 99: the on-axis pixel
SKY_PIXEL_RAD = PIXEL_PITCH_MM / MASK_HEIGHT_MM
SKY_PIXEL_DEG = float(np.degrees(SKY_PIXEL_RAD))
SHADOW_OFFSET = N_PIX - 1  # sky index minus this is the mask-cell shift k - j
FULLY_CODED_HALF_ANGLE_DEG = float(np.degrees(np.arctan(90.0 / MASK_HEIGHT_MM)))
ZERO_RESPONSE_HALF_ANGLE_DEG = float(np.degrees(np.arctan(450.0 / MASK_HEIGHT_MM)))

# --- energy ---------------------------------------------------------------------------------
N_PI = 1500
PI_E0_KEV = 2.0
PI_WIDTH_KEV = 0.1
DEFAULT_BANDS = ((13, 60), (61, 140), (141, 300), (301, 620), (621, 1260))

# --- time -----------------------------------------------------------------------------------
MJDREFI = 57754
MJDREFF = 0.000800740741
TIMESYS = "TT"

# --- Earth ----------------------------------------------------------------------------------
EARTH_RADIUS_KM = 6371.0
ATMOSPHERE_KM = 100.0
OCCULTATION_TYPES = ("NEO", "PEO", "TEO")
PEOF_MIN_DEFAULT = 0.0
PEOF_MAX_DEFAULT = 0.95


# ============================================================================================
# Energy scale
# ============================================================================================
def fwhm_kev(energy_kev):
    """Detector energy resolution (ICD): FWHM(E) = sqrt(1.2**2 + 0.030 E) keV."""
    return np.sqrt(1.2**2 + 0.030 * np.asarray(energy_kev, dtype=float))


def sigma_kev(energy_kev):
    return fwhm_kev(energy_kev) / (2.0 * np.sqrt(2.0 * np.log(2.0)))


def energy_to_pi(energy_kev):
    """PI channel of each energy, c covering [2.0 + 0.1 c, 2.1 + 0.1 c); clipped to 0..1499."""
    pi = np.array(energy_kev, dtype=float)  # a copy, then in place: events come by millions
    pi -= PI_E0_KEV
    pi /= PI_WIDTH_KEV
    pi += 1e-9
    np.floor(pi, out=pi)
    np.clip(pi, 0, N_PI - 1, out=pi)
    return pi.astype(np.int16)[()]  # [()]: a scalar for a scalar


def pi_to_energy(pi):
    """(low, high) energy edges in keV of PI channels."""
    pi = np.asarray(pi, dtype=float)
    return PI_E0_KEV + PI_WIDTH_KEV * pi, PI_E0_KEV + PI_WIDTH_KEV * (pi + 1)


def band_energy_range(band):
    """Energy range (keV) covered by an inclusive PI band (lo, hi)."""
    lo, hi = band
    return float(pi_to_energy(lo)[0]), float(pi_to_energy(hi)[1])


def band_name(band):
    """The string used in keys, extension names and tables: '13-60'."""
    return f"{int(band[0])}-{int(band[1])}"


# ============================================================================================
# Detector and mask geometry
# ============================================================================================
def pixel_centre_mm(index):
    """Centre (mm) of detector pixels along one axis: (index - 39.5) * 4.5."""
    return (np.asarray(index, dtype=float) - (N_PIX - 1) / 2.0) * PIXEL_PITCH_MM


def mask_element_centre_mm(index):
    """Centre (mm) of mask elements along one axis: (index - 22.5) * 540/46."""
    return (np.asarray(index, dtype=float) - (N_MASK - 1) / 2.0) * MASK_PITCH_MM


def mask_element_index(coord_mm):
    """Mask element index containing a mask-plane coordinate, -1 outside the mask plane."""
    idx = np.floor((np.asarray(coord_mm, dtype=float) + MASK_WIDTH_MM / 2.0) / MASK_PITCH_MM)
    return np.where((idx >= 0) & (idx < N_MASK), idx, -1).astype(np.int64)


def mask_transmits(pattern, y_mask_mm, z_mask_mm):
    """True where a mask-plane point falls in an open element (thin mask, ICD)."""
    j = mask_element_index(y_mask_mm)
    i = mask_element_index(z_mask_mm)
    inside = (i >= 0) & (j >= 0)
    out = np.zeros(np.broadcast(i, j).shape, dtype=bool)
    out[inside] = np.asarray(pattern)[i[inside], j[inside]] > 0
    return out


def axis_overlap(centres_mm, width_mm):
    """O[k, m]: fraction of a window of `width_mm` centred at centres_mm[k] (mask-plane
    coordinate along one axis) covered by mask element m. Mask elements are rectangles, so a
    2-D overlap with the open elements separates into O_z @ pattern @ O_y.T."""
    centres = np.asarray(centres_mm, dtype=float)
    elem_lo = -MASK_WIDTH_MM / 2.0 + MASK_PITCH_MM * np.arange(N_MASK)
    lo = np.maximum(centres[:, None] - width_mm / 2.0, elem_lo[None, :])
    hi = np.minimum(centres[:, None] + width_mm / 2.0, elem_lo[None, :] + MASK_PITCH_MM)
    return np.clip(hi - lo, 0.0, None) / width_mm


def resample_mask(pattern):
    """Open fraction of each 4.5 mm cell of the mask plane: 120 x 120, exact area overlap."""
    centres = (np.arange(N_MASK_CELLS) - (N_MASK_CELLS - 1) / 2.0) * PIXEL_PITCH_MM
    overlap = axis_overlap(centres, PIXEL_PITCH_MM)
    return overlap @ np.asarray(pattern, dtype=float) @ overlap.T


def pixel_open_fraction(pattern, direction_los):
    """(80, 80) [IDET, JDET]: exact open fraction of each pixel's 4.0 mm active area seen from
    direction u through the thin mask (ICD photon path: the active square shifted by
    460 (u_y/u_x, u_z/u_x) mm on the mask plane). Zero for directions behind the detector."""
    u = np.asarray(direction_los, dtype=float)
    if u[0] <= 0:
        return np.zeros((N_PIX, N_PIX))
    centres = pixel_centre_mm(np.arange(N_PIX))
    return (axis_overlap(centres + MASK_HEIGHT_MM * u[2] / u[0], PIXEL_SIZE_MM)
            @ np.asarray(pattern, dtype=float)
            @ axis_overlap(centres + MASK_HEIGHT_MM * u[1] / u[0], PIXEL_SIZE_MM).T)


def mask_crossing_mm(y_mm, z_mm, direction_los):
    """Where a photon landing at detector (y, z) along direction u crossed the mask plane."""
    u = np.asarray(direction_los, dtype=float)
    ty, tz = u[..., 1] / u[..., 0], u[..., 2] / u[..., 0]
    return y_mm + MASK_HEIGHT_MM * ty, z_mm + MASK_HEIGHT_MM * tz


# ============================================================================================
# LOS directions <-> sky-image pixels
# ============================================================================================
def los_to_sky_pixel(direction_los):
    """(row, col) of LOS directions on the sky grid, floats (pixel centres are integers)."""
    u = np.asarray(direction_los, dtype=float)
    row = SKY_CENTRE + (u[..., 2] / u[..., 0]) / SKY_PIXEL_RAD
    col = SKY_CENTRE + (u[..., 1] / u[..., 0]) / SKY_PIXEL_RAD
    return row, col


def sky_pixel_to_los(row, col):
    """Unit LOS vectors (..., 3) of sky-grid positions (row, col)."""
    tz = (np.asarray(row, dtype=float) - SKY_CENTRE) * SKY_PIXEL_RAD
    ty = (np.asarray(col, dtype=float) - SKY_CENTRE) * SKY_PIXEL_RAD
    tz, ty = np.broadcast_arrays(tz, ty)
    u = np.stack([np.ones_like(ty), ty, tz], axis=-1)
    return u / np.linalg.norm(u, axis=-1, keepdims=True)


def off_axis_angle_deg(direction_los):
    u = np.asarray(direction_los, dtype=float)
    return np.degrees(np.arccos(np.clip(u[..., 0] / np.linalg.norm(u, axis=-1), -1.0, 1.0)))


def sky_grid_los():
    """LOS unit vectors of every sky pixel, shape (199, 199, 3)."""
    rows, cols = np.mgrid[0:N_SKY, 0:N_SKY]
    return sky_pixel_to_los(rows, cols)


def sky_pixel_solid_angle():
    """Solid angle (sr) of each sky pixel: d(tan) ** 2 * cos(theta) ** 3 for a TAN grid."""
    return SKY_PIXEL_RAD**2 * sky_grid_los()[..., 0] ** 3


# ============================================================================================
# Attitude: LOS <-> ICRS
# ============================================================================================
def attitude_matrix(qparam):
    """Rotation matrices (..., 3, 3) taking LOS vectors to ICRS; QPARAM is scalar-last
    (normalised here, as scipy's Rotation.from_quat does)."""
    q = np.asarray(qparam, dtype=float)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    x, y, z, w = np.moveaxis(q, -1, 0)
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
        np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
        np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
    ], -2)


def quaternion_from_matrix(matrix) -> np.ndarray:
    """Scalar-last unit quaternion of one rotation matrix, by the method of scipy's
    Rotation.from_matrix (the largest of w, x, y, z first: no cancellation), same signs."""
    m = np.asarray(matrix, dtype=float)
    trace = np.trace(m)
    diagonal = [m[0, 0], m[1, 1], m[2, 2], trace]
    choice = int(np.argmax(diagonal))
    q = np.empty(4)
    if choice == 3:
        q[:] = m[2, 1] - m[1, 2], m[0, 2] - m[2, 0], m[1, 0] - m[0, 1], 1 + trace
    else:
        i, j, k = choice, (choice + 1) % 3, (choice + 2) % 3
        q[i] = 1 - trace + 2 * m[i, i]
        q[j] = m[j, i] + m[i, j]
        q[k] = m[k, i] + m[i, k]
        q[3] = m[k, j] - m[j, k]
    return q / np.linalg.norm(q)


def quaternion_product(p, q) -> np.ndarray:
    """Scalar-last Hamilton product p q: the rotation q, then p."""
    p, q = np.asarray(p, dtype=float), np.asarray(q, dtype=float)
    return np.concatenate([p[3] * q[:3] + q[3] * p[:3] + np.cross(p[:3], q[:3]),
                           [p[3] * q[3] - np.dot(p[:3], q[:3])]])


def radec_to_unit(ra_deg, dec_deg):
    ra, dec = np.radians(ra_deg), np.radians(dec_deg)
    return np.stack(np.broadcast_arrays(np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra),
                                        np.sin(dec)), axis=-1)


def unit_to_radec(vector):
    v = np.asarray(vector, dtype=float)
    v = v / np.linalg.norm(v, axis=-1, keepdims=True)
    ra = np.degrees(np.arctan2(v[..., 1], v[..., 0])) % 360.0
    dec = np.degrees(np.arcsin(np.clip(v[..., 2], -1.0, 1.0)))
    return ra, dec


def pointing_radec(qparam):
    """(RA, Dec) in degrees of the boresight R(q) (1, 0, 0)."""
    return unit_to_radec(attitude_matrix(qparam)[..., :, 0])


def quaternion_from_pointing(ra_deg, dec_deg, roll_deg=0.0):
    """Scalar-last quaternion pointing the boresight at (RA, Dec).

    Roll 0 puts LOS +Z towards celestial north and LOS +Y towards east; a positive roll turns
    the instrument about the boresight (right-handed about +X).
    """
    x = radec_to_unit(ra_deg, dec_deg)
    north = np.array([0.0, 0.0, 1.0])
    if abs(x[2]) > 1.0 - 1e-12:  # at a pole, take RA 0 meridian as "north"
        north = np.array([-np.sign(x[2]), 0.0, 0.0])
    z = north - np.dot(north, x) * x
    z /= np.linalg.norm(z)
    y = np.cross(z, x)
    matrix = np.column_stack([x, y, z])
    half_roll = np.radians(roll_deg) / 2.0
    roll = np.array([np.sin(half_roll), 0.0, 0.0, np.cos(half_roll)])  # about LOS +X
    return quaternion_product(quaternion_from_matrix(matrix), roll)


def los_to_radec(direction_los, qparam):
    return unit_to_radec(np.einsum("...ij,...j->...i", attitude_matrix(qparam), direction_los))


def radec_to_los(ra_deg, dec_deg, qparam):
    matrix = attitude_matrix(qparam)
    return np.einsum("...ji,...j->...i", matrix, radec_to_unit(ra_deg, dec_deg))


def mean_quaternion(qparams, weights=None):
    """Average attitude (Markley et al. 2007): principal eigenvector of sum w q q^T."""
    q = np.asarray(qparams, dtype=float).reshape(-1, 4)
    w = np.ones(len(q)) if weights is None else np.asarray(weights, dtype=float)
    _, vectors = np.linalg.eigh(np.einsum("n,ni,nj->ij", w, q, q))
    mean = vectors[:, -1]
    return mean if mean[3] >= 0 else -mean


def east_north(ra_deg: float, dec_deg: float):
    """ICRS unit vectors towards east and north at (RA, Dec)."""
    ra_r, dec_r = np.radians(ra_deg), np.radians(dec_deg)
    east = np.array([-np.sin(ra_r), np.cos(ra_r), 0.0])
    north = np.array([-np.sin(dec_r) * np.cos(ra_r), -np.sin(dec_r) * np.sin(ra_r), np.cos(dec_r)])
    return east, north


def sky_image_to_fits(image):
    """A sky-grid array [row, col] as stored in products (column axis reversed: east left);
    the same function turns a product's array back into the sky grid."""
    return np.asarray(image)[..., ::-1]


def sky_pixel_to_fits(row, col):
    """1-based FITS pixel (x, y) of a product sky image for sky-grid position (row, col)."""
    return N_SKY - np.asarray(col, dtype=float), np.asarray(row, dtype=float) + 1.0


def fits_to_sky_pixel(x, y):
    """Sky-grid (row, col) of 1-based FITS pixel (x, y) of a product sky image."""
    return np.asarray(y, dtype=float) - 1.0, N_SKY - np.asarray(x, dtype=float)


def sky_wcs_keywords(qparam):
    """FITS TAN WCS keywords of a product sky image (sky_image_to_fits) for attitude q.

    FITS axis 1 runs along -col (east to the left at roll 0), axis 2 along row. The sky grid is
    gnomonic in LOS tangent coordinates; those differ from the standard (east, north)
    intermediate coordinates at the pointing only by a rotation (and a flip), so the CD matrix
    below is exact, not an approximation.
    """
    matrix = attitude_matrix(qparam)
    ra0, dec0 = unit_to_radec(matrix[:, 0])
    east, north = east_north(float(ra0), float(dec0))
    east_los, north_los = matrix.T @ east, matrix.T @ north
    scale = SKY_PIXEL_DEG
    x_centre, y_centre = sky_pixel_to_fits(SKY_CENTRE, SKY_CENTRE)
    return {
        "WCSAXES": 2,
        "CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN",
        "CUNIT1": "deg", "CUNIT2": "deg",
        "CRPIX1": float(x_centre), "CRPIX2": float(y_centre),
        "CRVAL1": float(ra0), "CRVAL2": float(dec0),
        # axis 1 is -col (LOS -y), axis 2 is row (LOS +z)
        "CD1_1": float(-scale * east_los[1]), "CD1_2": float(scale * east_los[2]),
        "CD2_1": float(-scale * north_los[1]), "CD2_2": float(scale * north_los[2]),
        "RADESYS": "ICRS", "EQUINOX": 2000.0, "LONPOLE": 180.0,
    }


# ============================================================================================
# Earth
# ============================================================================================
def earth_direction_and_radius(position_m):
    """Unit vector to the Earth centre and the angular radius (rad) of Earth + atmosphere."""
    pos = np.asarray(position_m, dtype=float)
    distance = np.linalg.norm(pos, axis=-1)
    radius = np.arcsin(np.clip((EARTH_RADIUS_KM + ATMOSPHERE_KM) * 1e3 / distance, 0.0, 1.0))
    return -pos / distance[..., None], radius
