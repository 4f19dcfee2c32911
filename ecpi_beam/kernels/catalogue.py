"""Source names in the IAU style and matching to the known-source catalogue (ECL-SRC-CAT).

IAU recommendation for designations (IAU Specifications for Nomenclature): the coordinates in
the name are truncated, not rounded, so a name never points to a neighbouring cell of the grid.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ecpi_beam import instrument
from ecpi_beam.kernels import isotime
from ecpi_beam.caldb.tables import KnownSources
from ecpi_beam.io.voevent import TransientAlert

__all__ = ["KnownSources", "iau_name", "match_known", "match_known_sources",
           "known_match_radius_arcmin", "angular_separation_deg", "associate", "build_catalogue",
           "ObservationCatalogue", "CatalogueSource", "BandMeasurement", "new_source_alerts",
           "detection_label"]


def iau_name(ra_deg: float, dec_deg: float, prefix: str = "ECL") -> str:
    """'<prefix> Jhhmmss.s+ddmmss' of an ICRS (J2000) position, truncated as the IAU asks."""
    ra_tenths = int(math.floor((float(ra_deg) % 360.0) / 15.0 * 36000.0 + 1e-6)) % 864000
    hours, rest = divmod(ra_tenths, 36000)
    minutes, tenths = divmod(rest, 600)
    sign = "-" if dec_deg < 0 else "+"
    dec_seconds = int(math.floor(min(abs(float(dec_deg)), 90.0) * 3600.0 + 1e-6))
    degrees, rest = divmod(dec_seconds, 3600)
    arcmin, arcsec = divmod(rest, 60)
    return (f"{prefix} J{hours:02d}{minutes:02d}{tenths // 10:02d}.{tenths % 10:d}"
            f"{sign}{degrees:02d}{arcmin:02d}{arcsec:02d}")


def _unit_vectors(ra_deg, dec_deg) -> np.ndarray:
    ra, dec = np.radians(np.asarray(ra_deg, float)), np.radians(np.asarray(dec_deg, float))
    return np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], axis=-1)


def angular_separation_deg(ra1, dec1, ra2, dec2) -> np.ndarray:
    """Great-circle separation (deg), broadcast; the chord form is exact at small angles."""
    chord = np.linalg.norm(_unit_vectors(ra1, dec1) - _unit_vectors(ra2, dec2), axis=-1)
    return np.degrees(2.0 * np.arcsin(np.clip(chord / 2.0, 0.0, 1.0)))


def match_known(ra_deg, dec_deg, radius_deg, known: KnownSources) -> np.ndarray:
    """Index in `known` of the nearest known source within `radius_deg` of each position.

    `radius_deg` is a scalar or one radius per position; -1 where no known source lies that
    close. Returns an (n,) int array. The geometry only: the association rule (which radius)
    is match_known_sources.
    """
    ra = np.atleast_1d(np.asarray(ra_deg, dtype=float))
    dec = np.atleast_1d(np.asarray(dec_deg, dtype=float))
    radius = np.broadcast_to(np.asarray(radius_deg, dtype=float), ra.shape)
    matched = np.full(ra.shape, -1, dtype=int)
    if ra.size == 0 or len(known) == 0:
        return matched
    separation = angular_separation_deg(ra[:, None], dec[:, None],
                                        np.asarray(known.ra_deg, float)[None, :],
                                        np.asarray(known.dec_deg, float)[None, :])
    nearest = np.argmin(separation, axis=1)
    within = separation[np.arange(ra.size), nearest] <= radius
    matched[within] = nearest[within]
    return matched


# ------------------------------------------------------------------------------------------
# The association with the known sources (one rule for IMAG's catalogue, streaming, mosaics)
# ------------------------------------------------------------------------------------------
NEW_SNR_MIN = 8.0  # an unmatched source this bright or brighter is NEW (raises an alert)
# matching radius to the known sources: the 99.9 % containment of the 90 % error circle
# (Rayleigh radii scale as sqrt(-2 ln(1 - p))), so a known source is missed 1 time in 1000
MATCH_RADIUS_PER_ERR_RAD = float(np.sqrt(np.log(1000.0) / np.log(10.0)))  # 1.732
# ... but never less than half the PSF's FWHM (one mask element seen from the detector, 87.7'):
# two known sources closer than the FWHM image as one peak between them, up to FWHM / 2 from each
MATCH_RADIUS_MIN_ARCMIN = 0.5 * float(np.degrees(instrument.MASK_PITCH_MM
                                                 / instrument.MASK_HEIGHT_MM)) * 60.0


def known_match_radius_arcmin(err_rad_arcmin):
    """The radius (arcmin) within which a detection is taken for a known source:
    MATCH_RADIUS_PER_ERR_RAD x its 90 % error radius, and never less than
    MATCH_RADIUS_MIN_ARCMIN (docs/imaging.md, "Known sources"). Scalar or array."""
    return np.maximum(MATCH_RADIUS_PER_ERR_RAD * np.asarray(err_rad_arcmin, dtype=float),
                      MATCH_RADIUS_MIN_ARCMIN)


def match_known_sources(ra_deg, dec_deg, err_rad_arcmin, known: KnownSources) -> np.ndarray:
    """THE association of detections with the known-source catalogue (ECL-SRC-CAT).

    ra_deg, dec_deg: ICRS positions (deg); err_rad_arcmin: their 90 % error radii (arcmin),
    one per position or one for all. Returns an (n,) int array: the index in `known` of the
    nearest known source within `known_match_radius_arcmin(err_rad)`, or -1. IMAG's catalogue
    (build_catalogue) and the streaming windows call this (and the mosaic's source list is
    to), so a source known in one is known in all: one that is matched is never NEW.
    """
    return match_known(ra_deg, dec_deg, known_match_radius_arcmin(err_rad_arcmin) / 60.0, known)


@dataclass(frozen=True)
class BandMeasurement:
    """One source's best detection in one band (the occultation type, and the pointing, where
    its SNR is highest)."""
    occ: str
    snr: float
    flux: float
    flux_err: float
    pointing: int = 0


@dataclass(frozen=True)
class CatalogueSource:
    name: str              # iau_name of the position
    ra: float              # position of the detection with the highest SNR (ICRS deg)
    dec: float
    err_rad_arcmin: float  # its 90 % error radius
    snr: float             # the highest SNR of all its detections
    best_band: str
    known_name: str        # '' when no known source is within the matching radius
    known_sep_arcmin: float  # NaN when unmatched
    new: bool
    bands: dict            # band -> BandMeasurement, for the bands it was detected in
    n_detections: int
    best_pointing: int = 0  # the stable pointing of the highest-SNR detection


@dataclass(frozen=True)
class ObservationCatalogue:
    sources: tuple         # of CatalogueSource, highest SNR first
    bands: tuple           # every band of the observation's images, in band order
    labels: dict           # detection_label(band, occ, row index, pointing) -> index in `sources`
    new_snr_min: float = NEW_SNR_MIN
    match_radius_factor: float = MATCH_RADIUS_PER_ERR_RAD
    match_radius_min_arcmin: float = MATCH_RADIUS_MIN_ARCMIN

    @property
    def n_new(self) -> int:
        return sum(source.new for source in self.sources)


def detection_label(band: str, occ: str, index: int, pointing: int = 0) -> tuple:
    """The key of a detection in ObservationCatalogue.labels: row `index` of image (band, occ)
    of the observation's stable pointing `pointing`, (band, occ, index), with the pointing
    appended when it is not the first (as image keys, transforms.base.image_key)."""
    label = (band, occ, int(index))
    return label + (int(pointing),) if pointing else label


def associate(positions_deg, err_rad_arcmin, snr, groups) -> np.ndarray:
    """Source index of each detection: brightest first, a detection joins the nearest source
    whose best position lies within MATCH_RADIUS_PER_ERR_RAD x the quadrature sum of the two
    90 % error radii (the 99.9 % containment of their difference) and that has no detection of
    the same group (band, occultation type) yet; otherwise it starts one.
    """
    ra, dec = (np.asarray(a, dtype=float) for a in positions_deg)
    radius_deg = np.asarray(err_rad_arcmin, dtype=float) / 60.0
    labels = np.full(ra.size, -1, dtype=int)
    seeds, taken = [], []  # per source: its first (brightest) detection, its groups
    for index in np.argsort(-np.asarray(snr, dtype=float), kind="stable"):
        best, best_sep = -1, np.inf
        for source, seed in enumerate(seeds):
            if groups[index] in taken[source]:
                continue
            sep = float(angular_separation_deg(ra[index], dec[index], ra[seed], dec[seed]))
            limit = MATCH_RADIUS_PER_ERR_RAD * np.hypot(radius_deg[index], radius_deg[seed])
            if sep <= limit and sep < best_sep:
                best, best_sep = source, sep
        if best < 0:
            seeds.append(index)
            taken.append(set())
            best = len(seeds) - 1
        taken[best].add(groups[index])
        labels[index] = best
    return labels


def build_catalogue(entries, known: KnownSources | None, new_snr_min: float = NEW_SNR_MIN,
                    bands=None) -> ObservationCatalogue:
    """The sources of one observation from its per-image detections.

    entries: [(band, occ, rows)] or [(band, occ, rows, pointing)] (the observation's stable
    pointing, 0 when absent), rows having ra, dec, err_rad_arcmin, snr, flux, flux_err
    (kernels.sky_analysis.SourceRow). A source gets at most one detection per image (band,
    occultation type, pointing), so a source seen in two pointings is one source. Best
    position: that of the detection with the highest SNR (each band or pointing is an
    independent measurement, but the systematic errors are common, so averaging would shrink
    the error radius below what holds); per band, the highest-SNR detection of any type and
    pointing. Known: match_known_sources (the one association rule). NEW: unmatched and SNR >=
    new_snr_min.
    """
    flat = [(band, occ, index, row, int(pointing[0]) if pointing else 0)
            for band, occ, rows, *pointing in entries for index, row in enumerate(rows)]
    bands = tuple(bands) if bands is not None else tuple(dict.fromkeys(e[0] for e in entries))
    if not flat:
        return ObservationCatalogue((), bands, {}, new_snr_min)
    labels = associate(([f[3].ra for f in flat], [f[3].dec for f in flat]),
                       [f[3].err_rad_arcmin for f in flat], [f[3].snr for f in flat],
                       [(band, occ, pointing) for band, occ, _, _, pointing in flat])
    members = {}
    for detection, label in zip(flat, labels):
        members.setdefault(int(label), []).append(detection)
    drafts = []
    for group in members.values():
        band, _, _, best, best_pointing = max(group, key=lambda member: member[3].snr)
        per_band = {}
        for b, o, _, row, pointing in sorted(group, key=lambda member: -member[3].snr):
            per_band.setdefault(b, BandMeasurement(o, float(row.snr), float(row.flux),
                                                   float(row.flux_err), pointing))
        drafts.append((best, band, per_band, group, best_pointing))
    drafts.sort(key=lambda draft: -draft[0].snr)
    ra = np.array([draft[0].ra for draft in drafts])
    dec = np.array([draft[0].dec for draft in drafts])
    err_rad = np.array([draft[0].err_rad_arcmin for draft in drafts])
    matched = (match_known_sources(ra, dec, err_rad, known)
               if known is not None else np.full(len(drafts), -1))
    sources, label_of = [], {}
    for number, ((best, band, per_band, group, best_pointing), match) in enumerate(
            zip(drafts, matched)):
        known_name = str(known.name[match]) if match >= 0 else ""
        separation = (float(angular_separation_deg(best.ra, best.dec, known.ra_deg[match],
                                                   known.dec_deg[match])) * 60.0
                      if match >= 0 else float("nan"))
        sources.append(CatalogueSource(
            name=iau_name(best.ra, best.dec), ra=float(best.ra), dec=float(best.dec),
            err_rad_arcmin=float(best.err_rad_arcmin), snr=float(best.snr), best_band=band,
            known_name=known_name, known_sep_arcmin=separation,
            new=bool(match < 0 and best.snr >= new_snr_min), bands=per_band,
            n_detections=len(group), best_pointing=best_pointing))
        for b, o, index, _, pointing in group:
            label_of[detection_label(b, o, index, pointing)] = number
    return ObservationCatalogue(tuple(sources), bands, label_of, new_snr_min)


def new_source_alerts(catalogue: ObservationCatalogue, obs_id: str, tstart: float, tstop: float,
                      mjdref: float | None = None, spans: dict | None = None) -> list:
    """A TransientAlert for each NEW source: its best band, the observation as the time window
    (or, with `spans` {pointing: (tstart, tstop)}, the stable pointing of its best detection),
    the window start (converted to UTC) as the detection time; mjdref defaults to the ICD's."""
    alerts = []
    for source in catalogue.sources:
        if not source.new:
            continue
        start, stop = (spans or {}).get(source.best_pointing, (tstart, tstop))
        measurement = source.bands[source.best_band]
        e_min, e_max = instrument.band_energy_range(
            tuple(int(part) for part in source.best_band.split("-")))
        coordinates = source.name.split(" ", 1)[1].replace(".", "").replace("+", "p") \
            .replace("-", "m")
        alerts.append(TransientAlert(
            event_id=f"{obs_id}_{coordinates}", name=source.name, ra_deg=source.ra % 360.0,
            dec_deg=source.dec, error_radius_deg=source.err_rad_arcmin / 60.0,
            time_utc=isotime.mission_time_utc_isot(start, mjdref), window_start=float(start),
            window_length=float(stop - start), snr=measurement.snr, band=source.best_band,
            e_min_kev=round(e_min, 6), e_max_kev=round(e_max, 6), obs_id=str(obs_id)))
    return alerts
