"""MOSA: sky images of many observations combined on one all-sky grid (docs/mosa.md).

Each sky image (ECL-SKY-IMA: intensity S and variance V, counts per fully open detector pixel,
over an exposure T), cleaned of the sources IMAG found, becomes a rate per unit detector area,
f = S / (T a_pix), v = V / (T a_pix)^2 (the units of ECL-SOP-IMA FLUX): SkyRates, what each
observation stores (ECL-MOS-ACC). It is sampled at the centre of every pixel of an all-sky
grid: HEALPix (Gorski et al. 2005, nested, ICRS) or a plate carree (CAR). The sample is the
sky-image pixel the grid pixel's centre falls in (nearest neighbour), so each sample keeps the
exact variance of the image pixel, plus the restored sources' beams at their exact offsets.
Images combine by inverse-variance weighting

    F = sum(f / v) / sum(1 / v),   V = 1 / sum(1 / v),   significance F / sqrt(V),

and the sums (not the ratios) are what a tile keeps, with the exposure (T x partial coding), the
number of contributing images and the sum of their partial codings: two mosaics add exactly.

Directions go through the sky image's own TAN WCS (`_wcs_pixels`, what astropy.wcs gives),
never through an assumed sign of its axes. The grid is cut into tiles (HEALPix: the pixels of
one coarse NSIDE_TILE pixel, which are contiguous in the nested scheme; CAR: blocks of
CAR_TILE x CAR_TILE pixels), each of which is one key of a Beam CombineFn.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from astropy import units as u
from astropy.coordinates import ICRS
from astropy_healpix import HEALPix

from ecpi_beam import instrument
from ecpi_beam.errors import EcpiError
from ecpi_beam.kernels import detection, error_model
from ecpi_beam.kernels.sky_analysis import SourceRow

PSF_FWHM_DEG = float(np.degrees(instrument.MASK_PITCH_MM / instrument.MASK_HEIGHT_MM))  # 1.46
NSIDE_TILE = 8  # 768 HEALPix tiles over the sky
CAR_TILE = 64  # CAR tiles of 64 x 64 pixels
FIELD_RADIUS_DEG = 56.0  # beyond the 54 deg of the sky-image corners
PEAK_MERGE_DEG = PSF_FWHM_DEG  # two peaks closer than the PSF are one source


def automatic_nside(psf_fwhm_deg: float = PSF_FWHM_DEG) -> int:
    """The coarsest NSIDE (a power of two) whose pixels are finer than a third of the PSF
    (pixel size sqrt(4 pi / (12 NSIDE^2)); 128 for ECLAIRs' 1.46 deg: 0.46 deg pixels)."""
    nside = 1
    while np.degrees(np.sqrt(4.0 * np.pi / (12.0 * nside**2))) >= psf_fwhm_deg / 3.0:
        nside *= 2
    return nside


# ============================================================================================
# Grids
# ============================================================================================
@functools.lru_cache(maxsize=2)
def _healpix_centres(nside: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(RA, Dec, unit vectors) of every pixel centre, computed once per process."""
    lon, lat = HEALPix(nside=nside, order="nested").healpix_to_lonlat(np.arange(12 * nside**2))
    ra, dec = lon.to_value(u.deg), lat.to_value(u.deg)
    vectors = instrument.radec_to_unit(ra, dec)
    for array in (ra, dec, vectors):
        array.setflags(write=False)
    return ra, dec, vectors


@dataclass(frozen=True)
class HealpixGrid:
    """HEALPix, nested ordering, ICRS; a tile is one pixel of NSIDE_TILE (contiguous range)."""

    nside: int
    kind = "healpix"

    def __post_init__(self):
        if self.nside < NSIDE_TILE or self.nside & (self.nside - 1):
            raise EcpiError(f"[mosa] nside = {self.nside}: expected a power of two >= {NSIDE_TILE}")

    @property
    def healpix(self) -> HEALPix:
        return HEALPix(nside=self.nside, order="nested", frame=ICRS())

    @property
    def pixels_per_tile(self) -> int:
        return (self.nside // NSIDE_TILE) ** 2

    @property
    def pixel_deg(self) -> float:
        return float(self.healpix.pixel_resolution.to_value(u.deg))

    def pixels_near(self, ra_deg, dec_deg, radius_deg) -> np.ndarray:
        # a dot product with every pixel centre: far faster than a cone search this wide
        centre = instrument.radec_to_unit(ra_deg, dec_deg)
        near = _healpix_centres(self.nside)[2] @ centre >= np.cos(np.radians(radius_deg))
        return np.flatnonzero(near).astype(np.int64)

    def centres(self, pixels):
        ra, dec, _ = _healpix_centres(self.nside)
        pixels = np.asarray(pixels, dtype=np.int64)
        return ra[pixels], dec[pixels]

    def pixel_of(self, ra_deg, dec_deg) -> np.ndarray:
        return np.asarray(self.healpix.lonlat_to_healpix(np.asarray(ra_deg) * u.deg,
                                                         np.asarray(dec_deg) * u.deg), np.int64)

    def split(self, pixels):
        """(tile, index within the tile) of grid pixels."""
        return np.divmod(np.asarray(pixels, dtype=np.int64), self.pixels_per_tile)

    def join(self, tile: int, local) -> np.ndarray:
        return tile * self.pixels_per_tile + np.asarray(local, dtype=np.int64)

    def neighbours(self, pixels) -> np.ndarray:
        """(8, n) nested indices of the neighbours, -1 where there is none."""
        with np.errstate(invalid="ignore"):  # the ufunc flags the missing neighbours it marks -1
            return np.asarray(self.healpix.neighbours(np.asarray(pixels, dtype=np.int64)),
                              np.int64)


@dataclass(frozen=True)
class CarGrid:
    """Plate carree on ICRS, east to the left: column ix has RA 180 - (ix + 0.5) d (mod 360),
    row iy has Dec -90 + (iy + 0.5) d; pixel index iy * n_ra + ix."""

    pixel_deg: float
    kind = "car"

    def __post_init__(self):
        if not 0 < self.pixel_deg <= 10:
            raise EcpiError(f"[mosa] car_pixel_deg = {self.pixel_deg}: expected (0, 10] degrees")

    @property
    def n_ra(self) -> int:
        return int(round(360.0 / self.pixel_deg))

    @property
    def n_dec(self) -> int:
        return int(round(180.0 / self.pixel_deg))

    @property
    def step_ra(self) -> float:
        return 360.0 / self.n_ra

    @property
    def step_dec(self) -> float:
        return 180.0 / self.n_dec

    @property
    def tiles_ra(self) -> int:
        return -(-self.n_ra // CAR_TILE)

    @property
    def pixels_per_tile(self) -> int:
        return CAR_TILE * CAR_TILE

    def pixels_near(self, ra_deg, dec_deg, radius_deg) -> np.ndarray:
        rows = np.arange(self.n_dec)
        dec = -90.0 + (rows + 0.5) * self.step_dec
        rows = rows[np.abs(dec - dec_deg) <= radius_deg + self.step_dec]
        pixels = (rows[:, None] * self.n_ra + np.arange(self.n_ra)[None, :]).ravel()
        ra, dec = self.centres(pixels)
        centre = instrument.radec_to_unit(ra_deg, dec_deg)
        near = instrument.radec_to_unit(ra, dec) @ centre >= np.cos(np.radians(radius_deg))
        return pixels[near]

    def centres(self, pixels):
        iy, ix = np.divmod(np.asarray(pixels, dtype=np.int64), self.n_ra)
        return ((180.0 - (ix + 0.5) * self.step_ra) % 360.0,
                -90.0 + (iy + 0.5) * self.step_dec)

    def pixel_of(self, ra_deg, dec_deg) -> np.ndarray:
        ix = np.floor(((180.0 - np.asarray(ra_deg, float)) % 360.0) / self.step_ra).astype(np.int64)
        iy = np.floor((np.asarray(dec_deg, float) + 90.0) / self.step_dec).astype(np.int64)
        return np.clip(iy, 0, self.n_dec - 1) * self.n_ra + np.clip(ix, 0, self.n_ra - 1)

    def split(self, pixels):
        iy, ix = np.divmod(np.asarray(pixels, dtype=np.int64), self.n_ra)
        tile = (iy // CAR_TILE) * self.tiles_ra + ix // CAR_TILE
        return tile, (iy % CAR_TILE) * CAR_TILE + ix % CAR_TILE

    def join(self, tile: int, local) -> np.ndarray:
        tile_row, tile_col = divmod(int(tile), self.tiles_ra)
        local_row, local_col = np.divmod(np.asarray(local, dtype=np.int64), CAR_TILE)
        iy, ix = tile_row * CAR_TILE + local_row, tile_col * CAR_TILE + local_col
        inside = (iy < self.n_dec) & (ix < self.n_ra)
        return np.where(inside, iy * self.n_ra + ix, -1)

    def wcs_keywords(self, ix0: int = 0, iy0: int = 0) -> dict:
        """TAN-free CAR WCS of the cut-out whose first pixel is (ix0, iy0); CRVAL at (0, 0) makes
        the projection a plain plate carree (linear in RA and Dec)."""
        return {"WCSAXES": 2, "CTYPE1": "RA---CAR", "CTYPE2": "DEC--CAR",
                "CUNIT1": "deg", "CUNIT2": "deg", "CRVAL1": 0.0, "CRVAL2": 0.0,
                "CDELT1": -self.step_ra, "CDELT2": self.step_dec,
                "CRPIX1": self.n_ra / 2.0 + 0.5 - ix0, "CRPIX2": self.n_dec / 2.0 + 0.5 - iy0,
                "RADESYS": "ICRS", "EQUINOX": 2000.0, "LONPOLE": 0.0, "LATPOLE": 90.0}


def make_grid(kind: str, nside: int = 0, car_pixel_deg: float = 0.25):
    """The grid of a [mosa] grid name: 'healpix' (nside 0 = automatic_nside()) or 'car'."""
    if kind == "healpix":
        return HealpixGrid(nside or automatic_nside())
    if kind == "car":
        return CarGrid(car_pixel_deg)
    raise EcpiError(f"[mosa] grid = {kind!r}: expected 'healpix' or 'car'")


# ============================================================================================
# Sums: the accumulator of one tile
# ============================================================================================
@dataclass(frozen=True, eq=False)
class MosaicSums:
    """Per-pixel sums over contributing images, for one tile (arrays of pixels_per_tile)."""

    weighted_flux: np.ndarray  # sum f / v
    weight: np.ndarray  # sum 1 / v
    exposure: np.ndarray  # sum T x partial coding (s)
    ncontrib: np.ndarray  # number of images
    pcode: np.ndarray  # sum of partial codings

    @classmethod
    def empty(cls, n: int) -> "MosaicSums":
        return cls(*(np.zeros(n) for _ in range(4)), np.zeros(n))

    def __add__(self, other: "MosaicSums") -> "MosaicSums":
        return MosaicSums(self.weighted_flux + other.weighted_flux, self.weight + other.weight,
                          self.exposure + other.exposure, self.ncontrib + other.ncontrib,
                          self.pcode + other.pcode)


# ============================================================================================
# One observation's sky image, as MOSA combines it
# ============================================================================================
@dataclass(frozen=True)
class RestoredSource:
    """A source IMAG found in a sky image, put back as the restoring beam (count s-1 cm-2)."""

    ra: float
    dec: float
    flux: float


@dataclass(frozen=True, eq=False)
class SkyRates:
    """One sky image (one observation, band and occultation type) as MOSA combines it.

    `residual` is the image cleaned of the sources IMAG found, in rates per unit detector area
    (f = S / (T a_pix), the units of ECL-SOP-IMA FLUX), `variance` its variance (NaN or inf
    where not measured), `pcode` the partial coding, all (199, 199) in product orientation
    (east left) described by `wcs_keywords` (TAN). The `sources` are added back as the
    restoring beam wherever the image is sampled (`sample`), at their exact positions.
    """

    residual: np.ndarray
    variance: np.ndarray
    pcode: np.ndarray
    exposure: float  # s, the good time of the occultation type
    wcs_keywords: dict
    sources: tuple = ()  # of RestoredSource
    # the observation's stable pointing (kernels.timeline.Pointing) when it holds several
    pointing: object = None

    @classmethod
    def from_counts(cls, intensity, variance, pcode, exposure_s: float, wcs_keywords: dict,
                    sources=(), pointing=None) -> "SkyRates":
        """From an image in counts per fully open detector pixel (ECL-SKY-IMA units, product
        orientation): f = S / (T a_pix), v = V / (T a_pix)^2."""
        scale = 1.0 / (max(float(exposure_s), 1e-9) * instrument.PIXEL_AREA_CM2)
        variance = np.asarray(variance, dtype=float)
        measured = np.isfinite(variance) & (variance > 0)
        return cls(residual=np.where(measured, np.asarray(intensity, float), 0.0) * scale,
                   variance=np.where(measured, variance * scale**2, np.inf),
                   pcode=np.asarray(pcode, dtype=float), exposure=float(exposure_s),
                   wcs_keywords=dict(wcs_keywords), sources=tuple(sources), pointing=pointing)

    @property
    def boresight(self) -> tuple[float, float]:
        return float(self.wcs_keywords["CRVAL1"]), float(self.wcs_keywords["CRVAL2"])


def cleaned_rates(residual_snr, variance, pcode, exposure_s: float, wcs_keywords: dict,
                  sources, pointing=None) -> SkyRates:
    """SkyRates of an IMAG result (arrays on the sky grid, IMAG's orientation): the residual
    S = residual SNR x sqrt(V), flipped to the product orientation its WCS describes; the
    sources (rows with ra, dec, flux) to restore. A bright source's coding noise and side
    lobes, which a sum of raw images would pile up into spurious mosaic peaks, are gone; its
    flux stays (the CLEAN restoring step, Hogbom 1974)."""
    variance = np.asarray(variance, dtype=float)
    measured = np.isfinite(variance)
    residual = np.where(measured, np.asarray(residual_snr, float)
                        * np.sqrt(np.where(measured, variance, 0.0)), 0.0)
    as_product = instrument.sky_image_to_fits
    return SkyRates.from_counts(as_product(residual), as_product(variance), as_product(pcode),
                                exposure_s, wcs_keywords,
                                [RestoredSource(float(s.ra), float(s.dec), float(s.flux))
                                 for s in sources], pointing)


def gnomonic(ra_deg, dec_deg, ra0_deg, dec0_deg):
    """Standard coordinates (xi towards east, eta towards north; tangent units) of directions
    about (ra0, dec0): the TAN projection (Calabretta & Greisen 2002); NaN behind the plane."""
    ra, dec = np.radians(np.asarray(ra_deg, float)), np.radians(np.asarray(dec_deg, float))
    ra0, dec0 = np.radians(float(ra0_deg)), np.radians(float(dec0_deg))
    d_ra = ra - ra0
    cos_c = np.sin(dec0) * np.sin(dec) + np.cos(dec0) * np.cos(dec) * np.cos(d_ra)
    with np.errstate(divide="ignore", invalid="ignore"):
        cos_c = np.where(cos_c > 1e-6, cos_c, np.nan)
        xi = np.cos(dec) * np.sin(d_ra) / cos_c
        eta = (np.cos(dec0) * np.sin(dec) - np.sin(dec0) * np.cos(dec) * np.cos(d_ra)) / cos_c
    return xi, eta


def inverse_gnomonic(xi, eta, ra0_deg, dec0_deg):
    """(RA, Dec) in degrees of standard coordinates (xi, eta) about (ra0, dec0)."""
    xi, eta = np.asarray(xi, float), np.asarray(eta, float)
    ra0, dec0 = np.radians(float(ra0_deg)), np.radians(float(dec0_deg))
    x = np.cos(dec0) - eta * np.sin(dec0)
    ra = ra0 + np.arctan2(xi, x)
    dec = np.arctan2(np.sin(dec0) + eta * np.cos(dec0), np.hypot(xi, x))
    return np.degrees(ra) % 360.0, np.degrees(dec)


def tangent_pixels(ra_deg, dec_deg, ra0_deg, dec0_deg):
    """(rows towards north, cols towards east) of directions on the tangent plane at
    (ra0, dec0), in sky-image pixels at the centre (4.5 / 460 rad): the geometry of a sky
    image pointed there at roll 0."""
    xi, eta = gnomonic(ra_deg, dec_deg, ra0_deg, dec0_deg)
    return eta / instrument.SKY_PIXEL_RAD, xi / instrument.SKY_PIXEL_RAD


def restoring_beam(d_rows, d_cols):
    """The beam a restored source is given, at offsets in sky pixels on the tangent plane at
    the source (rows north, cols east): the instrument's on-axis PSF, detection.separable_psf
    (1 at the centre, 0 beyond 3.6 pixels)."""
    return detection.separable_psf(d_rows, d_cols)


BEAM_REACH_PIXELS = 4.0  # separable_psf is 0 beyond 2.609 + 1 pixels
# ERR_RAD of a candidate: the radius without a fit (error_model.SIGMA_PIXELS_TIMES_SNR / SNR
# per axis) with a single observation's 1 arcmin systematic in quadrature; the single
# observations' other terms are calibrated for IMAG's fits, not for mosaic peaks
CANDIDATE_ERROR_MODEL = error_model.ErrorModel(attitude_arcmin=1.0)


def _wcs_pixels(wcs_keywords: dict, ra, dec):
    """0-based (x, y) of directions in a TAN image with a CD matrix (what astropy.wcs'
    all_world2pix gives for these keywords, about 30 times faster)."""
    xi, eta = gnomonic(ra, dec, wcs_keywords["CRVAL1"], wcs_keywords["CRVAL2"])
    cd = np.array([[wcs_keywords["CD1_1"], wcs_keywords["CD1_2"]],
                   [wcs_keywords["CD2_1"], wcs_keywords["CD2_2"]]], dtype=float)
    inverse = np.linalg.inv(cd)
    world = np.degrees(np.stack([xi, eta]))  # intermediate world coordinates (deg)
    x, y = np.tensordot(inverse, world, axes=1)
    return x + float(wcs_keywords["CRPIX1"]) - 1.0, y + float(wcs_keywords["CRPIX2"]) - 1.0


def sample(rates: SkyRates, ra, dec, interpolate: bool = False):
    """(f, v, pcode) of an image at directions: the residual at the sky-image pixel each falls
    in (nearest neighbour, whose variance is exact) or interpolated bilinearly, plus every
    restored source's beam at its exact offset. v is NaN where the image does not measure."""
    ra, dec = np.asarray(ra, float), np.asarray(dec, float)
    x, y = _wcs_pixels(rates.wcs_keywords, ra, dec)
    n_rows, n_cols = np.shape(rates.residual)
    with np.errstate(invalid="ignore"):
        inside = np.isfinite(x) & np.isfinite(y) & (x > -0.5) & (x < n_cols - 0.5) \
            & (y > -0.5) & (y < n_rows - 0.5)
    if interpolate:
        rows, cols = np.where(inside, y, 0.0), np.where(inside, x, 0.0)
        variance = np.where(np.isfinite(rates.variance), rates.variance, np.nan)
        f, v, w = (detection.bilinear(image, rows, cols)
                   for image in (rates.residual, variance, rates.pcode))
    else:
        rows = np.where(inside, np.rint(y), 0).astype(np.intp)
        cols = np.where(inside, np.rint(x), 0).astype(np.intp)
        f, v, w = (np.asarray(image, float)[rows, cols]
                   for image in (rates.residual, rates.variance, rates.pcode))
    f = f + restored_sources(rates.sources, ra, dec)
    with np.errstate(invalid="ignore"):
        measured = inside & np.isfinite(v) & (v > 0)
    return f, np.where(measured, v, np.nan), np.where(measured, w, 0.0)


def restored_sources(sources, ra, dec) -> np.ndarray:
    """The sum of the sources' restoring beams at directions (count s-1 cm-2)."""
    total = np.zeros(np.shape(ra))
    reach = np.cos(np.radians(BEAM_REACH_PIXELS * 1.5 * instrument.SKY_PIXEL_DEG))
    if not len(sources):
        return total
    vectors = instrument.radec_to_unit(ra, dec)
    for source in sources:
        near = vectors @ instrument.radec_to_unit(source.ra, source.dec) >= reach
        if not near.any():
            continue
        d_rows, d_cols = tangent_pixels(ra[near], dec[near], source.ra, source.dec)
        total[near] += source.flux * restoring_beam(d_rows, d_cols)
    return total


def image_to_grid(grid, rates: SkyRates, pcode_min: float = 0.1) -> dict:
    """{tile: MosaicSums} of one image sampled at the centre of every grid pixel it covers
    (nearest sky-image pixel, the restored sources at their exact offsets)."""
    pixels = grid.pixels_near(*rates.boresight, FIELD_RADIUS_DEG)
    ra, dec = grid.centres(pixels)
    f, v, w = sample(rates, ra, dec)
    with np.errstate(invalid="ignore"):
        use = np.isfinite(v) & (w >= pcode_min)
    pixels, f, v, w = pixels[use], f[use], v[use], w[use]
    tiles, local = grid.split(pixels)
    out = {}
    order = np.argsort(tiles, kind="stable")
    tiles, local, f, v, w = tiles[order], local[order], f[order], v[order], w[order]
    starts = np.flatnonzero(np.diff(tiles, prepend=-1))
    for start, stop in zip(starts, np.append(starts[1:], len(tiles))):
        out[int(tiles[start])] = point_sums(grid.pixels_per_tile, local[start:stop],
                                            f[start:stop], v[start:stop], w[start:stop],
                                            rates.exposure)
    return out


def point_sums(n: int, index, f, v, w, exposure_s: float) -> "MosaicSums":
    """MosaicSums of n pixels, of which `index` take one image's samples (f, v, pcode)."""
    sums = MosaicSums.empty(n)
    sums.weighted_flux[index] = f / v
    sums.weight[index] = 1.0 / v
    sums.exposure[index] = float(exposure_s) * w
    sums.ncontrib[index] = 1.0
    sums.pcode[index] = w
    return sums


# ============================================================================================
# Maps and sources
# ============================================================================================
@dataclass(frozen=True, eq=False)
class MosaicMap:
    """The covered pixels of a mosaic (ncontrib > 0), sorted by grid pixel index."""

    pixels: np.ndarray
    intensity: np.ndarray  # F, count s-1 cm-2
    variance: np.ndarray  # V
    significance: np.ndarray  # F / sqrt(V)
    exposure: np.ndarray  # s
    ncontrib: np.ndarray  # int
    pcode: np.ndarray  # mean partial coding of the contributions

    def value_at(self, name: str, pixels) -> np.ndarray:
        """A column at grid pixels (NaN where not covered)."""
        index = np.searchsorted(self.pixels, pixels)
        index = np.clip(index, 0, max(len(self.pixels) - 1, 0))
        found = (len(self.pixels) > 0) & (self.pixels[index] == pixels)
        return np.where(found, getattr(self, name)[index], np.nan)


def mosaic_map(grid, tiles: dict) -> MosaicMap:
    """{tile: MosaicSums} -> the covered pixels with F, V, significance, exposure, ncontrib."""
    parts = []
    for tile in sorted(tiles):
        sums = tiles[tile]
        covered = np.flatnonzero(sums.weight > 0)
        pixels = grid.join(tile, covered)
        keep = pixels >= 0
        parts.append((pixels[keep], *(getattr(sums, name)[covered[keep]] for name in
                                      ("weighted_flux", "weight", "exposure", "ncontrib", "pcode"))))
    if not parts:
        return MosaicMap(*(np.zeros(0) for _ in range(7)))
    pixels, weighted, weight, exposure, ncontrib, pcode = (np.concatenate(c) for c in zip(*parts))
    order = np.argsort(pixels)
    pixels, weighted, weight, exposure, ncontrib, pcode = (
        a[order] for a in (pixels, weighted, weight, exposure, ncontrib, pcode))
    intensity = weighted / weight
    return MosaicMap(pixels=pixels.astype(np.int64), intensity=intensity, variance=1.0 / weight,
                     significance=weighted / np.sqrt(weight), exposure=exposure,
                     ncontrib=np.rint(ncontrib).astype(np.int64), pcode=pcode / ncontrib)


def _neighbour_pixels(grid, pixels) -> np.ndarray:
    """(8, n) neighbours on either grid, -1 where there is none."""
    if grid.kind == "healpix":
        return grid.neighbours(pixels)
    iy, ix = np.divmod(pixels, grid.n_ra)
    out = []
    for d_row in (-1, 0, 1):
        for d_col in (-1, 0, 1):
            if d_row or d_col:
                row, col = iy + d_row, (ix + d_col) % grid.n_ra  # RA wraps, Dec does not
                out.append(np.where((row >= 0) & (row < grid.n_dec), row * grid.n_ra + col, -1))
    return np.array(out)


def find_mosaic_sources(grid, mosaic: MosaicMap, snr_threshold: float,
                        max_sources: int = 200) -> list[SourceRow]:
    """The candidate sources of a mosaic (kernels.mosaic_sources refines them): local maxima
    of the significance over each pixel's 8 neighbours, above snr_threshold, brightest first;
    peaks within PEAK_MERGE_DEG of a brighter one are dropped. Position: the
    significance-weighted mean direction of the peak and its neighbours; SNR: the peak's
    significance; FLUX: the intensity of the peak pixel (count s-1 cm-2); ERR_RAD: the
    error model's radius for that significance without a fit, with the 1 arcmin systematic in
    quadrature (CANDIDATE_ERROR_MODEL: what a candidate that cannot be refined keeps)."""
    candidates = np.flatnonzero(mosaic.significance >= snr_threshold)
    if not len(candidates):
        return []
    neighbours = _neighbour_pixels(grid, mosaic.pixels[candidates])
    neighbour_snr = np.where(neighbours >= 0, mosaic.value_at("significance", neighbours), np.nan)
    is_peak = np.all(np.nan_to_num(neighbour_snr, nan=-np.inf)
                     <= mosaic.significance[candidates][None, :], axis=0)
    peaks = candidates[is_peak]
    peaks = peaks[np.argsort(-mosaic.significance[peaks], kind="stable")]
    kept_vectors, rows = [], []
    for index in peaks:
        if len(rows) >= max_sources:
            break
        group = np.append(mosaic.pixels[index], _neighbour_pixels(grid, mosaic.pixels[[index]])[:, 0])
        group = group[group >= 0]
        snr = np.nan_to_num(mosaic.value_at("significance", group), nan=0.0).clip(0.0, None)
        ra, dec = grid.centres(group)
        vector = (snr[:, None] * instrument.radec_to_unit(ra, dec)).sum(axis=0)
        vector /= np.linalg.norm(vector)
        if any(vector @ other > np.cos(np.radians(PEAK_MERGE_DEG)) for other in kept_vectors):
            continue
        kept_vectors.append(vector)
        peak_ra, peak_dec = instrument.unit_to_radec(vector)
        significance = float(mosaic.significance[index])
        radius = error_model.error_radius_arcmin(significance, np.nan, np.nan,
                                                 model=CANDIDATE_ERROR_MODEL)
        rows.append(SourceRow(ra=float(peak_ra), dec=float(peak_dec),
                              err_rad_arcmin=float(radius), snr=significance,
                              flux=float(mosaic.intensity[index]),
                              flux_err=float(np.sqrt(mosaic.variance[index])),
                              row=float("nan"), col=float("nan"),
                              pcode=float(mosaic.pcode[index])))
    return rows
