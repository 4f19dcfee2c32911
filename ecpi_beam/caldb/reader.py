"""Read a CALDB set (ICD section 3) from a local directory or an fsspec URL.

`Caldb.open(location)` is cached per process and each table is read once per `Caldb`, so a
Beam DoFn may call it in `setup` on every worker at no extra cost. A `Caldb` pickles without
its cache.
"""
from __future__ import annotations

import functools
import io
import os
import threading

import fsspec
import numpy as np
from astropy.io import fits

from ecpi_beam import instrument as ins
from ecpi_beam.caldb.manifest import MANIFEST_NAME, REQUIRED_PRODUCTS, ManifestEntry, \
    parse_manifest, sha256_bytes
from ecpi_beam.caldb.tables import Arf, Irf, KnownSources, PixelCalibration, Rmf, frozen_array
from ecpi_beam.errors import EcpiError

_DEFAULT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "default")


def default_caldb_dir() -> str:
    """The default set shipped inside the package (`caldb_init -s` installs a copy of it)."""
    return _DEFAULT_DIR


def _join(location: str, name: str) -> str:
    return location.rstrip("/") + "/" + name if "://" in location else os.path.join(location, name)


def _read_bytes(url: str, what: str) -> bytes:
    try:
        with fsspec.open(url, "rb") as stream:
            return stream.read()
    except FileNotFoundError:
        raise EcpiError(f"{what}: {url} does not exist") from None
    except (OSError, ValueError, ImportError) as err:
        raise EcpiError(f"{what}: cannot read {url} ({type(err).__name__}: {err})") from None


class Caldb:
    """A CALDB set: manifest entries by product, readers of the ICD tables."""

    def __init__(self, location: str, entries: dict[str, ManifestEntry], verify: bool = True):
        self.location = location
        self.entries = entries
        self.verify = verify
        self._cache: dict = {}
        self._lock = threading.Lock()

    @classmethod
    def open(cls, location, verify: bool = True) -> "Caldb":
        """The set at `location` (directory or URL holding caldb.json).

        verify=True checks each file's sha256 against the manifest when it is read.
        """
        location = os.fspath(location)
        return _open_cached(location, bool(verify), _local_manifest_stamp(location))

    # pickling drops the cache and the lock (Beam ships DoFns holding a Caldb to workers)
    def __getstate__(self):
        return {"location": self.location, "entries": self.entries, "verify": self.verify}

    def __setstate__(self, state):
        self.__init__(state["location"], state["entries"], state["verify"])

    def __repr__(self):
        return f"Caldb({self.location!r})"

    def entry(self, product: str) -> ManifestEntry:
        if product not in self.entries:
            raise EcpiError(f"{_join(self.location, MANIFEST_NAME)}: no product {product!r}; "
                            f"it lists {', '.join(sorted(self.entries))}")
        return self.entries[product]

    def url(self, product: str) -> str:
        return _join(self.location, self.entry(product).file)

    def version(self, product: str) -> str:
        return self.entry(product).version

    def _hdus(self, product: str) -> fits.HDUList:
        url = self.url(product)
        data = _read_bytes(url, product)
        expected = self.entry(product).sha256.lower()
        if self.verify and sha256_bytes(data) != expected:
            raise EcpiError(f"{url}: sha256 {sha256_bytes(data)} differs from {expected} in "
                            f"{MANIFEST_NAME} (corrupt or edited file)")
        try:
            return fits.open(io.BytesIO(data), memmap=False)
        except OSError as err:
            raise EcpiError(f"{url}: not a FITS file ({err}); expected {product}") from None

    def _cached(self, product: str, parse):
        with self._lock:
            if product not in self._cache:
                with self._hdus(product) as hdus:
                    try:
                        self._cache[product] = parse(hdus)
                    except (KeyError, IndexError, ValueError, TypeError) as err:
                        raise EcpiError(f"{self.url(product)}: not a valid {product} file "
                                        f"({type(err).__name__}: {err})") from None
            return self._cache[product]

    def mask_pattern(self) -> np.ndarray:
        """(46, 46) uint8 [IMSK, JMSK], 1 = open element."""
        return self._cached("ECL-MSK-PAT", lambda hdus: _parse_mask(hdus, self.url("ECL-MSK-PAT")))

    def pixel_calibration(self) -> PixelCalibration:
        return self._cached("ECL-PIX-CAL",
                            lambda hdus: _parse_pixel_calibration(hdus, self.url("ECL-PIX-CAL")))

    def rmf(self) -> Rmf:
        return self._cached("ECL-RSP-RMF", _parse_rmf)

    def arf(self) -> Arf:
        return self._cached("ECL-RSP-ARF", _parse_arf)

    def irf(self) -> Irf:
        return self._cached("ECL-RSP-IRF", _parse_irf)

    def known_sources(self) -> KnownSources:
        """ECL-SRC-CAT, the known hard X-ray sources (optional product: a set without it fails
        here, naming the manifest)."""
        return self._cached("ECL-SRC-CAT", _parse_known_sources)


def _local_manifest_stamp(location: str):
    """Identity of a local manifest, so a set reinstalled in place is read afresh."""
    if "://" in location:
        return None
    try:
        stat = os.stat(os.path.join(location, MANIFEST_NAME))
    except OSError:
        return None
    return stat.st_ino, stat.st_mtime_ns, stat.st_size


@functools.lru_cache(maxsize=16)
def _open_cached(location: str, verify: bool, manifest_stamp) -> Caldb:
    manifest_url = _join(location, MANIFEST_NAME)
    if "://" not in location and not os.path.isdir(location):
        raise EcpiError(f"CALDB directory {location} does not exist (expected a directory "
                        f"holding {MANIFEST_NAME}; `caldb_init -s` installs the default set)")
    entries = parse_manifest(_read_bytes(manifest_url, "CALDB manifest"), manifest_url)
    missing = [product for product in REQUIRED_PRODUCTS if product not in entries]
    if missing:
        raise EcpiError(f"{manifest_url}: lacks {', '.join(missing)} (ICD section 3)")
    return Caldb(location, entries, verify)


def _parse_mask(hdus, url) -> np.ndarray:
    pattern = np.asarray(hdus[0].data)
    if pattern.shape != (ins.N_MASK, ins.N_MASK) or not np.isin(pattern, (0, 1)).all():
        raise EcpiError(f"{url}: primary image has shape {pattern.shape}; expected "
                        f"{ins.N_MASK} x {ins.N_MASK} of 0 and 1")
    return frozen_array(pattern, np.uint8)


def _parse_pixel_calibration(hdus, url) -> PixelCalibration:
    table = hdus[1].data
    idet, jdet = np.asarray(table["IDET"], int), np.asarray(table["JDET"], int)
    covered = np.zeros((ins.N_PIX, ins.N_PIX), dtype=int)
    inside = (idet >= 0) & (idet < ins.N_PIX) & (jdet >= 0) & (jdet < ins.N_PIX)
    np.add.at(covered, (idet[inside], jdet[inside]), 1)
    if len(table) != ins.N_PIX**2 or not inside.all() or not (covered == 1).all():
        raise EcpiError(f"{url}: {len(table)} rows; expected one row per pixel "
                        f"(IDET, JDET in 0..{ins.N_PIX - 1}, {ins.N_PIX**2} rows)")

    def image(column, dtype):
        values = np.zeros((ins.N_PIX, ins.N_PIX), dtype=dtype)
        values[idet, jdet] = table[column]
        return frozen_array(values)

    return PixelCalibration(gain=image("GAIN", float), offset=image("OFFSET", float),
                            status=image("STATUS", np.uint8), effic=image("EFFIC", float))


def _parse_rmf(hdus) -> Rmf:
    """Dense matrix from OGIP groups (N_GRP, F_CHAN, N_CHAN scalar or vector per row)."""
    matrix_hdu, ebounds = hdus["MATRIX"], hdus["EBOUNDS"]
    table = matrix_hdu.data
    first_channel = int(matrix_hdu.header.get("TLMIN" + str(table.names.index("F_CHAN") + 1), 1))
    channels = np.asarray(ebounds.data["CHANNEL"], int)
    dense = np.zeros((len(table), len(channels)))
    for row, (n_groups, firsts, lengths, values) in enumerate(
            zip(table["N_GRP"], table["F_CHAN"], table["N_CHAN"], table["MATRIX"])):
        values = np.atleast_1d(values)
        start = 0
        for first, length in list(zip(np.atleast_1d(firsts), np.atleast_1d(lengths)))[:n_groups]:
            column = int(first) - first_channel
            dense[row, column:column + int(length)] = values[start:start + int(length)]
            start += int(length)
    return Rmf(energ_lo=frozen_array(table["ENERG_LO"], float),
               energ_hi=frozen_array(table["ENERG_HI"], float), matrix=frozen_array(dense),
               e_min=frozen_array(ebounds.data["E_MIN"], float),
               e_max=frozen_array(ebounds.data["E_MAX"], float))


def _parse_arf(hdus) -> Arf:
    table = hdus["SPECRESP"].data
    return Arf(energ_lo=frozen_array(table["ENERG_LO"], float),
               energ_hi=frozen_array(table["ENERG_HI"], float),
               specresp=frozen_array(table["SPECRESP"], float))


def _parse_irf(hdus) -> Irf:
    table = hdus["IRF"].data
    return Irf(theta_deg=frozen_array(table["THETA"][0], float),
               energy_kev=frozen_array(table["ENERGY"][0], float),
               factor=frozen_array(table["FACTOR"][0], float))


def _parse_known_sources(hdus) -> KnownSources:
    table = hdus["KNOWN_SOURCES"].data
    names = table.columns.names

    def optional(column, dtype):
        return frozen_array(np.char.strip(table[column]) if dtype is str else table[column],
                            dtype) if column in names else None

    return KnownSources(name=frozen_array(np.char.strip(table["NAME"]), str),
                        ra_deg=frozen_array(table["RA"], float),
                        dec_deg=frozen_array(table["DEC"], float),
                        flux=optional("FLUX", float), survey_name=optional("BAT_NAME", str),
                        source_type=optional("TYPE", str))
