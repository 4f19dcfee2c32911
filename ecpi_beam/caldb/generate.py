"""The default CALDB set (ICD section 3), generated reproducibly.

    python -m ecpi_beam.caldb.generate OUTDIR

Every random draw comes from a fixed seed (one per product) and every header is fixed (no
generation date), so the files, and their sha256 in `caldb.json`, are byte-identical on every run
(with the same numpy, scipy and astropy; other versions may differ in the last bits of floats).
The models are simple and documented in docs/caldb.md; the `*_model` functions return the
tables, the `write_*` functions write any table (also a test's own) as a valid FITS file.
"""
from __future__ import annotations

import argparse
import csv
import os

import numpy as np
from astropy.io import fits
from scipy import ndimage, signal
from scipy.special import erf

from ecpi_beam import instrument as ins
from ecpi_beam.caldb.manifest import entry_for_file, write_manifest
from ecpi_beam.caldb.tables import STATUS_DEAD, STATUS_NOISY, Arf, Irf, KnownSources, \
    PixelCalibration, Rmf

VERSION = "1.0"
VALID_FROM = "2024-06-22"  # SVOM launch; also the fixed DATE of every file (reproducibility)
SEEDS = {"ECL-MSK-PAT": 20240622, "ECL-PIX-CAL": 622}

# --- mask -------------------------------------------------------------------------------------
N_MASK_CANDIDATES = 400
N_OPEN = int(round(ins.MASK_OPEN_FRACTION * ins.N_MASK**2))  # 846 of 2116

# --- detector: 200 modules of 8 x 4 pixels (ICD), laid out 10 along JDET x 20 along IDET ---------
MODULE_SHAPE = (4, 8)  # (IDET, JDET) pixels per module
GAIN_MEAN, GAIN_SPREAD = 0.040, 0.02         # keV/ADU, relative 1-sigma spread
OFFSET_MEAN, OFFSET_SPREAD = 0.5, 0.3        # keV
EFFIC_MEAN, EFFIC_SPREAD = 0.95, 0.015
N_DEAD, N_NOISY = 32, 32                     # 0.5 % each
N_LOW_EFFIC_MODULES, LOW_EFFIC_FACTOR = 20, 0.8

# --- response -----------------------------------------------------------------------------------
ENERGY_GRID_KEV = np.linspace(1.0, 200.0, 399)  # 398 bins of 0.5 keV
RMF_LOW_THRESHOLD = 1e-6
CDTE_DENSITY, CDTE_THICKNESS_CM = 5.85, 0.1
# photo-absorption of Cd and Te: power law E^-2.7 with a K-edge jump, fitted by eye to NIST XCOM
# (edge keV, mass fraction, cm2/g just above the edge, K jump ratio)
CDTE_ELEMENTS = ((26.71, 0.468, 70.0, 6.5), (31.81, 0.532, 50.0, 6.3))
PHOTO_INDEX = 2.7
WINDOW_AL_CM = 5e-4  # thermal blanket and electrode: 5 um of aluminium equivalent
AL_DENSITY, AL_MU_10KEV = 2.70, 26.2
IRF_THETA_DEG = np.arange(0.0, 61.0, 1.0)  # the field corners reach 54 deg off axis
IRF_ENERGY_KEV = np.arange(1.0, 201.0, 1.0)
MASK_THICKNESS_CM = 0.06  # tantalum
TA_DENSITY, TA_K_EDGE_KEV, TA_MU_100KEV = 16.65, 67.42, 4.3

# --- known sources: the brightest of the Swift-BAT 105-month survey (Oh et al. 2018) ------------
KNOWN_SOURCES_CSV = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "sources",
                                 "swift_bat105m_bright.csv")


# ================================================================================================
# ECL-MSK-PAT
# ================================================================================================
def is_self_supporting(open_elements) -> bool:
    """Closed elements plus the surrounding frame form one 4-connected piece."""
    closed = np.pad(~np.asarray(open_elements, dtype=bool), 1, constant_values=True)
    _, n_pieces = ndimage.label(closed)  # default structure: 4-connectivity
    return n_pieces == 1


def _attach_floating_elements(open_elements, rng) -> np.ndarray:
    """Open the closed elements not held by the frame; close as many open ones that touch it.

    Closing an element next to the held structure only extends it, so the result is
    self-supporting and the open count is unchanged.
    """
    pattern = open_elements.copy()
    closed = np.pad(~pattern, 1, constant_values=True)
    labels, _ = ndimage.label(closed)
    floating = (closed & (labels != labels[0, 0]))[1:-1, 1:-1]
    n_to_close = int(floating.sum())
    pattern[floating] = True
    while n_to_close > 0:
        held = np.pad(~pattern, 1, constant_values=True)  # now every closed element is held
        touching = (ndimage.binary_dilation(held) & ~held)[1:-1, 1:-1]  # its 4-neighbours
        candidates = np.flatnonzero(touching)
        chosen = rng.choice(candidates, min(n_to_close, candidates.size), replace=False)
        pattern.flat[chosen] = False
        n_to_close -= chosen.size
    return pattern


def balanced_autocorrelation(open_elements) -> np.ndarray:
    """sum_x M(x) G(x + s), G = M - b (1 - M) balanced to zero sum; zero shift at the centre."""
    m = np.asarray(open_elements, dtype=float)
    b = m.sum() / (m.size - m.sum())
    balanced = m - b * (1.0 - m)
    return signal.fftconvolve(balanced, m[::-1, ::-1], mode="full")


def max_sidelobe(open_elements) -> float:
    """Largest |autocorrelation| off the zero shift, relative to the peak (the open count)."""
    correlation = balanced_autocorrelation(open_elements)
    centre = tuple(s // 2 for s in correlation.shape)
    peak = correlation[centre]
    correlation[centre] = 0.0
    return float(np.abs(correlation).max() / peak)


def mask_candidates(n_candidates: int = N_MASK_CANDIDATES, seed: int = SEEDS["ECL-MSK-PAT"]):
    """Random self-supporting 40 %-open patterns, no fully open row or column."""
    rng = np.random.default_rng(seed)
    n_cells = ins.N_MASK**2
    while n_candidates > 0:
        pattern = np.zeros(n_cells, dtype=bool)
        pattern[rng.choice(n_cells, N_OPEN, replace=False)] = True
        pattern = _attach_floating_elements(pattern.reshape(ins.N_MASK, ins.N_MASK), rng)
        if pattern.all(axis=0).any() or pattern.all(axis=1).any():
            continue
        n_candidates -= 1
        yield pattern


def mask_model(n_candidates: int = N_MASK_CANDIDATES) -> np.ndarray:
    """The candidate with the smallest maximum side-lobe: (46, 46) uint8, [IMSK, JMSK], 1 open."""
    best = min(mask_candidates(n_candidates), key=max_sidelobe)
    return best.astype(np.uint8)


# ================================================================================================
# ECL-PIX-CAL
# ================================================================================================
def module_index(idet, jdet):
    """Module number 0..199 of detector pixels: modules of 4 (IDET) x 8 (JDET), row-major."""
    per_row = ins.N_PIX // MODULE_SHAPE[1]
    return (np.asarray(idet) // MODULE_SHAPE[0]) * per_row + np.asarray(jdet) // MODULE_SHAPE[1]


def pixel_calibration_model(seed: int = SEEDS["ECL-PIX-CAL"]) -> PixelCalibration:
    rng = np.random.default_rng(seed)
    shape = (ins.N_PIX, ins.N_PIX)

    def clipped_normal(mean, sigma):  # 3-sigma clip keeps 4-150 keV inside PHA 0..4095
        return np.clip(rng.normal(mean, sigma, shape), mean - 3 * sigma, mean + 3 * sigma)

    gain = clipped_normal(GAIN_MEAN, GAIN_MEAN * GAIN_SPREAD)
    offset = clipped_normal(OFFSET_MEAN, OFFSET_SPREAD)
    effic = np.minimum(clipped_normal(EFFIC_MEAN, EFFIC_SPREAD), 1.0)
    modules = module_index(*np.indices(shape))
    low_modules = rng.choice(modules.max() + 1, N_LOW_EFFIC_MODULES, replace=False)
    effic[np.isin(modules, low_modules)] *= LOW_EFFIC_FACTOR
    status = np.zeros(shape, dtype=np.uint8)
    bad = rng.choice(status.size, N_DEAD + N_NOISY, replace=False)
    status.flat[bad[:N_DEAD]] = STATUS_DEAD
    status.flat[bad[N_DEAD:]] = STATUS_NOISY
    effic[status == STATUS_DEAD] = 0.0
    return PixelCalibration(gain=gain, offset=offset, status=status, effic=effic)


# ================================================================================================
# Responses
# ================================================================================================
def cdte_photo_mass_attenuation(energy_kev):
    """Photo-absorption mass attenuation (cm2/g) of CdTe; L edges (< 5 keV) ignored."""
    energy = np.asarray(energy_kev, dtype=float)
    total = np.zeros_like(energy)
    for edge, fraction, above_edge, jump in CDTE_ELEMENTS:
        scale = np.where(energy >= edge, above_edge, above_edge / jump)
        total += fraction * scale * (energy / edge) ** -PHOTO_INDEX
    return total


def cdte_absorption_efficiency(energy_kev, path_factor=1.0):
    """Fraction of photons absorbed in 1 mm of CdTe; path_factor = 1 / cos(theta) off axis."""
    depth = cdte_photo_mass_attenuation(energy_kev) * CDTE_DENSITY * CDTE_THICKNESS_CM
    return -np.expm1(-depth * np.asarray(path_factor, dtype=float))


def window_transmission(energy_kev):
    mu = AL_MU_10KEV * (np.asarray(energy_kev, dtype=float) / 10.0) ** -2.9
    return np.exp(-mu * AL_DENSITY * WINDOW_AL_CM)


def threshold_efficiency(energy_kev):
    """Soft 4 keV low threshold: an erf step of the detector resolution at 4 keV."""
    sigma = ins.sigma_kev(ins.LOW_THRESHOLD_KEV)
    above = np.asarray(energy_kev, dtype=float) - ins.LOW_THRESHOLD_KEV
    return 0.5 * (1.0 + erf(above / (np.sqrt(2) * sigma)))


def arf_model(energy_edges=ENERGY_GRID_KEV) -> Arf:
    centre = 0.5 * (energy_edges[:-1] + energy_edges[1:])
    area = (ins.DETECTOR_AREA_CM2 * ins.MASK_OPEN_FRACTION * cdte_absorption_efficiency(centre)
            * window_transmission(centre) * threshold_efficiency(centre))
    return Arf(energ_lo=energy_edges[:-1], energ_hi=energy_edges[1:], specresp=area)


def rmf_model(energy_edges=ENERGY_GRID_KEV) -> Rmf:
    """Gaussian redistribution of FWHM instrument.fwhm_kev at each bin centre onto PI channels."""
    centre = 0.5 * (energy_edges[:-1] + energy_edges[1:])
    e_min, e_max = ins.pi_to_energy(np.arange(ins.N_PI))
    channel_edges = np.append(e_min, e_max[-1])
    width = np.sqrt(2) * ins.sigma_kev(centre)[:, None]
    matrix = 0.5 * np.diff(erf((channel_edges[None, :] - centre[:, None]) / width), axis=1)
    matrix[matrix < RMF_LOW_THRESHOLD] = 0.0
    return Rmf(energ_lo=energy_edges[:-1], energ_hi=energy_edges[1:], matrix=matrix,
               e_min=e_min, e_max=e_max)


def tantalum_opacity(energy_kev, path_cm):
    """1 - transmission of a tantalum path; opaque below its K edge in the ECLAIRs band."""
    energy = np.asarray(energy_kev, dtype=float)
    mu = TA_MU_100KEV * (energy / 100.0) ** -2.6
    opacity = -np.expm1(-mu * TA_DENSITY * path_cm)
    return np.where(energy < TA_K_EDGE_KEV, 1.0, opacity)


def irf_model(theta_deg=IRF_THETA_DEG, energy_kev=IRF_ENERGY_KEV) -> Irf:
    """cos(theta) projection x longer CdTe path x shading by the mask element walls.

    The walls (thickness t) hide a strip t tan(theta) wide of each open element along each
    axis; averaged over azimuth the open area falls by (4 / pi) t tan(theta) / pitch.
    """
    theta = np.radians(np.asarray(theta_deg, dtype=float))[:, None]
    energy = np.asarray(energy_kev, dtype=float)[None, :]
    projection = np.cos(theta)
    depth_gain = (cdte_absorption_efficiency(energy, 1.0 / np.cos(theta))
                  / cdte_absorption_efficiency(energy))
    wall = 1.0 - (4.0 / np.pi) * np.tan(theta) * MASK_THICKNESS_CM * 10.0 / ins.MASK_PITCH_MM \
        * tantalum_opacity(energy, MASK_THICKNESS_CM)
    factor = projection * depth_gain * wall
    return Irf(theta_deg=np.asarray(theta_deg, float), energy_kev=np.asarray(energy_kev, float),
               factor=factor)


# ================================================================================================
# ECL-SRC-CAT
# ================================================================================================
def known_sources_model(path: str = KNOWN_SOURCES_CSV) -> KnownSources:
    """The shipped selection of the BAT 105-month catalogue (docs/caldb.md), in its order."""
    with open(path, newline="", encoding="utf-8") as stream:
        rows = list(csv.DictReader(line for line in stream if not line.startswith("#")))
    column = lambda key, dtype=str: np.array([row[key] for row in rows], dtype=dtype)  # noqa: E731
    return KnownSources(name=column("NAME"), ra_deg=column("RA", float),
                        dec_deg=column("DEC", float), flux=column("FLUX", float),
                        survey_name=column("BAT_NAME"), source_type=column("TYPE"))


# ================================================================================================
# FITS writers
# ================================================================================================
def _calibration_keywords(product: str, description: str, boundary: str = "") -> list:
    """Common and OGIP CALDB keywords (CAL/GEN/92-011); no date of writing, for reproducibility."""
    cards = [("TELESCOP", "SVOM", "mission"), ("INSTRUME", "ECLAIRs", "instrument"),
             ("ORIGIN", "ecpi_beam", "generated by ecpi_beam.caldb.generate"),
             ("DATE", VALID_FROM + "T00:00:00", "fixed so the file is reproducible"),
             ("CCLS0001", "CPF" if product.startswith("ECL-RSP") else "BCF", "OGIP class"),
             ("CDTP0001", "DATA", "OGIP type"),
             ("CCNM0001", product, "calibration product name"),
             ("CVSD0001", VALID_FROM, "UTC date when the file becomes valid"),
             ("CVST0001", "00:00:00", "UTC time when the file becomes valid"),
             ("CDES0001", description[:68], "description"),
             ("CALVERS", VERSION, "CALDB set version")]
    if boundary:
        cards.append(("CBD10001", boundary, "parameter boundary"))
    return cards


def _primary(product: str, description: str, data=None) -> fits.PrimaryHDU:
    hdu = fits.PrimaryHDU(data)
    for card in _calibration_keywords(product, description):
        hdu.header[card[0]] = card[1:]
    return hdu


def _extension(columns, name: str, product: str, description: str, keywords=(),
               boundary: str = "") -> fits.BinTableHDU:
    hdu = fits.BinTableHDU.from_columns(columns, name=name)
    for keyword, value, comment in list(_calibration_keywords(product, description, boundary)) \
            + list(keywords):
        hdu.header[keyword] = (value, comment)
    return hdu


def write_mask(path, pattern, description="Mask pattern, 1 = open element") -> None:
    pattern = np.asarray(pattern, dtype=np.uint8)
    hdu = _primary("ECL-MSK-PAT", description, pattern)
    hdu.header["NOPEN"] = (int(pattern.sum()), "number of open elements")
    hdu.header["MSKPITCH"] = (ins.MASK_PITCH_MM, "[mm] element pitch")
    hdu.header["COMMENT"] = "data[IMSK, JMSK]: FITS axis 1 is JMSK (LOS y), axis 2 is IMSK (LOS z)"
    hdu.writeto(path, overwrite=True)


def write_pixel_calibration(path, calibration: PixelCalibration,
                            description="Pixel gain, offset, status, efficiency") -> None:
    idet, jdet = np.indices((ins.N_PIX, ins.N_PIX))
    columns = [
        fits.Column("IDET", "B", array=idet.ravel()),
        fits.Column("JDET", "B", array=jdet.ravel()),
        fits.Column("GAIN", "E", unit="keV/ADU", array=np.ravel(calibration.gain)),
        fits.Column("OFFSET", "E", unit="keV", array=np.ravel(calibration.offset)),
        fits.Column("STATUS", "B", array=np.ravel(calibration.status)),
        fits.Column("EFFIC", "E", array=np.ravel(calibration.effic)),
    ]
    notes = [("COMMENT", "ENERGY = GAIN * PHA + OFFSET; STATUS 0 good, 1 noisy, 2 dead", "")]
    table = _extension(columns, "PIXEL_CAL", "ECL-PIX-CAL", description, notes)
    fits.HDUList([_primary("ECL-PIX-CAL", description), table]).writeto(path, overwrite=True)


def _ogip_keywords(hduclas2: str, hduvers: str, hduclas3: str | None = None) -> list:
    cards = [("FILTER", "NONE", "filter"), ("CHANTYPE", "PI", "channel type"),
             ("DETCHANS", ins.N_PI, "number of channels"),
             ("HDUCLASS", "OGIP", "format conforms to OGIP standard"),
             ("HDUCLAS1", "RESPONSE", "dataset relates to spectral response"),
             ("HDUCLAS2", hduclas2, ""), ("HDUVERS", hduvers, "version of format")]
    if hduclas3:
        cards.append(("HDUCLAS3", hduclas3, ""))
    return cards


def write_rmf(path, rmf: Rmf, description="Redistribution matrix, Gaussian resolution") -> None:
    """OGIP CAL/GEN/92-002 RMF: one channel group per row, MATRIX variable-length."""
    rows, first, lengths, values = [], [], [], []
    for row in np.asarray(rmf.matrix, dtype=np.float32):
        nonzero = np.flatnonzero(row)
        lo, hi = (nonzero[0], nonzero[-1] + 1) if nonzero.size else (0, 0)
        rows.append(1 if nonzero.size else 0)
        first.append(lo)
        lengths.append(hi - lo)
        values.append(row[lo:hi])
    matrix_columns = [
        fits.Column("ENERG_LO", "D", unit="keV", array=rmf.energ_lo),
        fits.Column("ENERG_HI", "D", unit="keV", array=rmf.energ_hi),
        fits.Column("N_GRP", "I", array=np.array(rows, dtype=np.int16)),
        fits.Column("F_CHAN", "I", array=np.array(first, dtype=np.int16)),
        fits.Column("N_CHAN", "I", array=np.array(lengths, dtype=np.int16)),
        fits.Column("MATRIX", f"PE({max(lengths)})", array=np.array(values, dtype=object)),
    ]
    energy_range = f"ENERG({rmf.energ_lo[0]:g}-{rmf.energ_hi[-1]:g})keV"
    matrix = _extension(matrix_columns, "MATRIX", "ECL-RSP-RMF", description,
                        _ogip_keywords("RSP_MATRIX", "1.3.0", "REDIST")
                        + [("TLMIN4", 0, "first channel number"),
                           ("TLMAX4", ins.N_PI - 1, "last channel number"),
                           ("LO_THRES", RMF_LOW_THRESHOLD, "lower threshold of stored values"),
                           ("NUMGRP", int(sum(rows)), "total number of channel groups"),
                           ("NUMELT", int(sum(lengths)), "total number of matrix elements")],
                        boundary=energy_range)
    channels = [
        fits.Column("CHANNEL", "I", array=np.arange(ins.N_PI, dtype=np.int16)),
        fits.Column("E_MIN", "D", unit="keV", array=rmf.e_min),
        fits.Column("E_MAX", "D", unit="keV", array=rmf.e_max),
    ]
    ebounds = _extension(channels, "EBOUNDS", "ECL-RSP-RMF", description,
                         _ogip_keywords("EBOUNDS", "1.2.0")
                         + [("TLMIN1", 0, "first channel number"),
                            ("TLMAX1", ins.N_PI - 1, "last channel number")])
    hdus = [_primary("ECL-RSP-RMF", description), matrix, ebounds]
    fits.HDUList(hdus).writeto(path, overwrite=True)


def write_arf(path, arf: Arf, description="On-axis effective area, mask open fraction in") -> None:
    """OGIP CAL/GEN/92-002 ARF (SPECRESP)."""
    columns = [
        fits.Column("ENERG_LO", "D", unit="keV", array=arf.energ_lo),
        fits.Column("ENERG_HI", "D", unit="keV", array=arf.energ_hi),
        fits.Column("SPECRESP", "E", unit="cm**2", array=arf.specresp),
    ]
    keywords = [card for card in _ogip_keywords("SPECRESP", "1.1.0")
                if card[0] not in ("CHANTYPE", "DETCHANS")]
    table = _extension(columns, "SPECRESP", "ECL-RSP-ARF", description, keywords,
                       boundary=f"ENERG({arf.energ_lo[0]:g}-{arf.energ_hi[-1]:g})keV")
    fits.HDUList([_primary("ECL-RSP-ARF", description), table]).writeto(path, overwrite=True)


def write_irf(path, irf: Irf, description="Off-axis effective-area factor") -> None:
    """One-row table: THETA (n_t), ENERGY (n_e), FACTOR (n_t x n_e, TDIM '(n_e,n_t)')."""
    n_theta, n_energy = np.shape(irf.factor)
    columns = [
        fits.Column("THETA", f"{n_theta}D", unit="deg", array=[irf.theta_deg]),
        fits.Column("ENERGY", f"{n_energy}D", unit="keV", array=[irf.energy_kev]),
        fits.Column("FACTOR", f"{n_theta * n_energy}D", dim=f"({n_energy},{n_theta})",
                    array=[np.asarray(irf.factor, dtype=float)]),
    ]
    notes = [("COMMENT", "FACTOR[THETA, ENERGY]: effective area relative to on axis", "")]
    table = _extension(columns, "IRF", "ECL-RSP-IRF", description, notes)
    fits.HDUList([_primary("ECL-RSP-IRF", description), table]).writeto(path, overwrite=True)


def write_known_sources(path, known: KnownSources,
                        description="Known hard X-ray sources, Swift-BAT 105-month") -> None:
    """Table KNOWN_SOURCES: NAME, RA, DEC (ICRS deg) and, when known, FLUX, BAT_NAME, TYPE."""
    def text_column(name, values):
        values = np.asarray(values, dtype=str)
        return fits.Column(name, f"{max(1, max((len(v) for v in values), default=1))}A",
                           array=values)

    columns = [text_column("NAME", known.name),
               fits.Column("RA", "D", unit="deg", array=np.asarray(known.ra_deg, float)),
               fits.Column("DEC", "D", unit="deg", array=np.asarray(known.dec_deg, float))]
    if known.flux is not None:
        columns.append(fits.Column("FLUX", "E", unit="1e-12 erg/(s cm2)",
                                   array=np.asarray(known.flux, float)))
    if known.survey_name is not None:
        columns.append(text_column("BAT_NAME", known.survey_name))
    if known.source_type is not None:
        columns.append(text_column("TYPE", known.source_type))
    notes = [("RADESYS", "ICRS", "frame of RA and DEC"),
             ("COMMENT", "Oh et al. 2018, ApJS 235, 4 (Swift-BAT 105-month survey); FLUX in "
                         "14-195 keV; positions of the counterparts", "")]
    table = _extension(columns, "KNOWN_SOURCES", "ECL-SRC-CAT", description, notes)
    fits.HDUList([_primary("ECL-SRC-CAT", description), table]).writeto(path, overwrite=True)


# ================================================================================================
# The set
# ================================================================================================
PRODUCT_FILES = {
    "ECL-MSK-PAT": ("ECL-MSK-PAT_v1.0.fits", write_mask,
                    "46x46 mask, 40% open, self-supporting, lowest side-lobe of 400 draws"),
    "ECL-PIX-CAL": ("ECL-PIX-CAL_v1.0.fits", write_pixel_calibration,
                    "per-pixel gain, offset, status, relative efficiency"),
    "ECL-RSP-RMF": ("ECL-RSP-RMF_v1.0.rmf", write_rmf,
                    "Gaussian redistribution, FWHM = sqrt(1.2^2 + 0.03 E) keV, 1-200 keV"),
    "ECL-RSP-ARF": ("ECL-RSP-ARF_v1.0.arf", write_arf,
                    "on-axis effective area: 1024 cm2 x 0.4 x CdTe 1 mm x window x threshold"),
    "ECL-RSP-IRF": ("ECL-RSP-IRF_v1.0.fits", write_irf,
                    "off-axis factor: cos(theta) x CdTe path x mask wall shading"),
    "ECL-SRC-CAT": ("ECL-SRC-CAT_v1.0.fits", write_known_sources,
                    "known sources: Swift-BAT 105-month, FLUX >= 3e-11 erg/cm2/s, 14-195 keV"),
}


def write_caldb(outdir, tables: dict, version: str = VERSION, valid_from: str = VALID_FROM) -> str:
    """Write a CALDB set (files plus caldb.json) from {product: table}; returns the directory.

    `tables` maps each product to what its writer takes (mask array or table dataclass), so a
    test can write a set with its own mask or pixel calibration.
    """
    os.makedirs(outdir, exist_ok=True)
    entries = []
    for product, table in tables.items():
        file, writer, description = PRODUCT_FILES[product]
        writer(os.path.join(outdir, file), table)
        entries.append(entry_for_file(outdir, product, file, version, valid_from, description))
    write_manifest(outdir, entries, telescope="SVOM", instrument="ECLAIRs", version=version)
    return os.fspath(outdir)


def default_tables() -> dict:
    return {"ECL-MSK-PAT": mask_model(), "ECL-PIX-CAL": pixel_calibration_model(),
            "ECL-RSP-RMF": rmf_model(), "ECL-RSP-ARF": arf_model(), "ECL-RSP-IRF": irf_model(),
            "ECL-SRC-CAT": known_sources_model()}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m ecpi_beam.caldb.generate",
                                     description="Write the default ECLAIRs CALDB set.")
    parser.add_argument("outdir", help="directory to write the files and caldb.json into")
    args = parser.parse_args(argv)
    tables = default_tables()
    write_caldb(args.outdir, tables)
    print(f"default CALDB written to {args.outdir}: mask max side-lobe "
          f"{max_sidelobe(tables['ECL-MSK-PAT']):.4f} of the peak")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
