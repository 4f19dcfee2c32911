"""CALI as Beam transforms: calibrated event chunks, ECL-GTI-CAL and ECL-EVT-CAL (ICD section 4).

- `Cali`: (obs_id, EventChunk) -> (obs_id, calibrated EventChunk), the pixel calibration loaded
  once per worker in `CalibrateChunk.setup`, the good time of each observation carried by the
  chunk (transforms/read.py: no side input, so that reading and calibration fuse).
- `WriteCaliProducts`: ECL-GTI-CAL from the observations; ECL-EVT-CAL without gathering the
  events: every calibrated chunk is written as a part (raw FITS rows) under a temporary folder
  of working_out, then one finalize step per observation streams the parts, in time order,
  into the FITS file (header, rows, padding, GTI extension), written under a temporary name and
  moved into place; the parts are removed afterwards. See docs/cali.md.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import uuid
from typing import NamedTuple

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from astropy.io import fits

from ecpi_beam import instrument
from ecpi_beam.caldb import Caldb
from ecpi_beam.io import fs
from ecpi_beam.io import gti as gti_io
from ecpi_beam.io import products
from ecpi_beam.io.events import CALIBRATED_DTYPE
from ecpi_beam.kernels import intervals
from ecpi_beam.kernels.calibrate import DROP_REASONS, calibrate_events
from ecpi_beam.kernels.gti import good_time
from ecpi_beam.transforms.base import DataclassTransform
from ecpi_beam.transforms.failures import isolating, with_failure_log
from ecpi_beam.transforms.read import EventChunk, chunk_events
from ecpi_beam.transforms.write import failed_obs_ids

NAMESPACE = "ecpi.cali"
WRITE_NAMESPACE = "ecpi.write"  # products_written: shared with transforms/write.py
LOG = logging.getLogger(__name__)
GTI_CAL, EVT_CAL = "ECL-GTI-CAL", "ECL-EVT-CAL"
CALI_PRODUCTS = (GTI_CAL, EVT_CAL)
GTI_EXTENSIONS = {"TLM": "GTI_TLM", "SAA": "GTI_SAA", "ATT": "GTI_ATT", "ALL": "GTI"}
PARTS_FOLDER = ".ecpi-parts"  # under working_out; removed once each product is final
FITS_BLOCK = 2880
COPY_BLOCK_BYTES = 1 << 24
ROW_DTYPE = CALIBRATED_DTYPE.newbyteorder(">")  # FITS rows: packed, big-endian
# column: (TFORM, TUNIT, (TLMIN, TLMAX) or None), in CALIBRATED_DTYPE order
EVENT_COLUMNS = {
    "TIME": ("D", "s", None),
    "IDET": ("B", "", (0, instrument.N_PIX - 1)),
    "JDET": ("B", "", (0, instrument.N_PIX - 1)),
    "PHA": ("I", "adu", (0, instrument.N_PHA - 1)),
    "FLAG": ("B", "", None),
    "PI": ("I", "chan", (0, instrument.N_PI - 1)),
    "ENERGY": ("E", "keV", None),
}


# ==============================================================================================
# Calibration
# ==============================================================================================
class CalibrateChunk(beam.DoFn):
    """(obs_id, EventChunk) -> (obs_id, calibrated EventChunk), with the chunk's good time; or
    (obs_id, events), {obs_id: good time} -> (obs_id, calibrated events). Drops counted by
    reason."""

    def __init__(self, caldb_dir: str):
        self._caldb_dir = caldb_dir
        self._events_in = Metrics.counter(NAMESPACE, "events_in")
        self._events_out = Metrics.counter(NAMESPACE, "events_out")
        self._chunks = Metrics.counter(NAMESPACE, "chunks")
        self._dropped = {reason: Metrics.counter(NAMESPACE, f"dropped_{reason}")
                         for reason in DROP_REASONS}

    def setup(self):
        self._pixcal = Caldb.open(self._caldb_dir).pixel_calibration()

    @isolating("cali")
    def process(self, element, good_times=None):
        obs_id, chunk = element
        events = chunk_events(chunk)
        good = good_times[obs_id] if good_times is not None else chunk.context.good
        calibrated, drops = calibrate_events(events, self._pixcal, good)
        self._chunks.inc()
        self._events_in.inc(len(events))
        self._events_out.inc(len(calibrated))
        for reason, count in drops.items():
            self._dropped[reason].inc(count)
        yield obs_id, (EventChunk(calibrated, chunk.context) if isinstance(chunk, EventChunk)
                       else calibrated)


@dataclasses.dataclass(eq=False)
class Cali(DataclassTransform):
    """(obs_id, EventChunk) -> (obs_id, calibrated EventChunk)."""

    caldb_dir: str
    failure_log: object = None  # failures.FailureLog

    def expand(self, chunks):
        return chunks | "Calibrate" >> beam.ParDo(
            with_failure_log(CalibrateChunk(self.caldb_dir), self.failure_log))


# ==============================================================================================
# ECL-GTI-CAL
# ==============================================================================================
def gti_product_hdus(good: dict, keywords: dict) -> list:
    """The four OGIP GTI extensions of ECL-GTI-CAL."""
    return [gti_io.gti_hdu(good[name], extname, keywords)
            for name, extname in GTI_EXTENSIONS.items()]


def write_gti_product(working_out, observation, fingerprint) -> str:
    keywords = products.standard_keywords(GTI_CAL, observation.keywords, fingerprint)
    url = products.product_url(working_out, GTI_CAL, observation.obs_id)
    return products.write_product(url, gti_product_hdus(good_time(observation), keywords), keywords)


# ==============================================================================================
# ECL-EVT-CAL, streamed from parts
# ==============================================================================================
class EventPart(NamedTuple):
    """One calibrated chunk stored as raw FITS rows; ordered by its first and last TIME."""

    first_time: float
    last_time: float
    n_rows: int
    url: str


def parts_folder(working_out: str, obs_id: str) -> str:
    return fs.inside(working_out, PARTS_FOLDER, f"{EVT_CAL}_{obs_id}")


def write_event_part(working_out: str, obs_id: str, calibrated) -> EventPart:
    """Store a calibrated chunk as big-endian FITS rows under the observation's parts folder."""
    folder = parts_folder(working_out, obs_id)
    fs.makedirs(folder)
    url = fs.inside(folder, f"{uuid.uuid4().hex}.rows")  # unique: retried bundles never collide
    fs.put_atomic(calibrated.astype(ROW_DTYPE).tobytes(), url, durable=False)  # a temporary part
    if len(calibrated) == 0:
        return EventPart(np.inf, np.inf, 0, url)
    return EventPart(float(calibrated["TIME"][0]), float(calibrated["TIME"][-1]),
                     len(calibrated), url)


def _padding(n_bytes: int) -> bytes:
    return b"\0" * (-n_bytes % FITS_BLOCK)


def events_header(n_rows: int, good_all, keywords: dict) -> fits.Header:
    """The EVENTS extension header (OGIP event file, OGIP/93-003) for n_rows rows."""
    columns = []
    for name, (tform, unit, limits) in EVENT_COLUMNS.items():
        column = fits.Column(name=name, format=tform, unit=unit or None,
                             array=np.zeros(0, dtype=CALIBRATED_DTYPE[name]))
        columns.append(column)
    header = fits.BinTableHDU.from_columns(columns, name="EVENTS").header
    for index, (tform, unit, limits) in enumerate(EVENT_COLUMNS.values(), start=1):
        if limits is not None:
            header[f"TLMIN{index}"] = (limits[0], "minimum legal value")
            header[f"TLMAX{index}"] = (limits[1], "maximum legal value")
    header["NAXIS2"] = n_rows
    if header["NAXIS1"] != ROW_DTYPE.itemsize:
        raise AssertionError(f"EVENTS row is {header['NAXIS1']} bytes, parts hold "
                             f"{ROW_DTYPE.itemsize}")
    ontime = intervals.duration(good_all)
    telapse = float(keywords["TSTOP"][0]) - float(keywords["TSTART"][0])
    ogip = {
        "HDUCLASS": ("OGIP", "format conforms to OGIP standards"),
        "HDUCLAS1": ("EVENTS", "photon event list"),
        "HDUCLAS2": ("ALL", "all calibrated events, bad pixels removed"),
        "TIMEZERO": (0.0, "[s] time offset"),
        "TIMEREF": ("LOCAL", "times are those at the spacecraft"),
        "TASSIGN": ("SATELLITE", "where the times are assigned"),
        "TIMEDEL": (instrument.TIME_RESOLUTION_S, "[s] time resolution"),
        "TELAPSE": (telapse, "[s] TSTOP - TSTART"),
        "ONTIME": (ontime, "[s] sum of the GTI"),
        "LIVETIME": (ontime, "[s] ONTIME, no dead-time correction"),
        "EXPOSURE": (ontime, "[s] LIVETIME"),
        "DEADC": (1.0, "dead-time correction, not applied"),
        "CHANTYPE": ("PI", "energy channels of the PI column"),
        "DETCHANS": (instrument.N_PI, "number of PI channels"),
    }
    for key, value in {**ogip, **keywords}.items():
        header[key] = value
    return header


def stream_event_file(url: str, parts, good: dict, keywords: dict) -> int:
    """Write ECL-EVT-CAL at `url` from parts (in TIME order), atomically; returns the rows.

    The headers get what write_product gives every product (products.finish_header); the
    EVENTS data sum is accumulated while the parts are copied and its header, written first
    with placeholders, is rewritten in place with DATASUM and CHECKSUM before the move.
    """
    n_rows = sum(part.n_rows for part in parts)
    keywords = {**keywords, "FILENAME": fs.basename(url)}
    primary = fits.PrimaryHDU()
    events = events_header(n_rows, good["ALL"], keywords)
    gti = gti_io.gti_hdu(good["ALL"], "GTI", keywords)
    for header in (primary.header, events, gti.header):
        products.finish_header(header, keywords)
    gti_bytes = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), gti]).writeto(gti_bytes, checksum=True,
                                                  output_verify="exception")
    gti_hdu_bytes = gti_bytes.getvalue()[len(fits.PrimaryHDU().header.tostring()):]
    datasum = products.FitsChecksum()
    with fs.atomic_write(url) as stream:
        stream.write(products.header_with_checksum(primary.header, 0))
        events_at = stream.tell()
        stream.write(products.header_with_checksum(events, 0))  # placeholder, same length
        written = 0
        for part in parts:
            with fs.open_file(part.url, "rb") as source:
                while block := source.read(COPY_BLOCK_BYTES):
                    stream.write(block)
                    datasum.update(block)
                    written += len(block)
        if written != n_rows * ROW_DTYPE.itemsize:
            raise OSError(f"{url}: the parts hold {written} bytes, expected "
                          f"{n_rows * ROW_DTYPE.itemsize}")
        stream.write(_padding(written))
        stream.write(gti_hdu_bytes)
        stream.seek(events_at)
        stream.write(products.header_with_checksum(events, datasum.value))
        stream.seek(0, io.SEEK_END)
    return n_rows


def remove_parts(working_out: str, obs_id: str) -> None:
    """Remove an observation's parts folder, including parts of retried bundles."""
    folder = parts_folder(working_out, obs_id)
    with contextlib.suppress(FileNotFoundError):
        for name in fs.listdir(folder):
            fs.remove(fs.inside(folder, name))
    for directory in (folder, fs.inside(working_out, PARTS_FOLDER)):
        filesystem, path = fs.filesystem(directory)
        with contextlib.suppress(Exception):  # absent, not empty (other observations) or keyless
            filesystem.rmdir(path)


class WriteEventPart(beam.DoFn):
    """(obs_id, calibrated chunk) -> (obs_id, EventPart)."""

    def __init__(self, working_out: str):
        self._working_out = working_out
        self._bytes = Metrics.counter(NAMESPACE, "part_bytes_written")

    @isolating("cali")
    def process(self, element):
        obs_id, calibrated = element
        part = write_event_part(self._working_out, obs_id, chunk_events(calibrated))
        self._bytes.inc(part.n_rows * ROW_DTYPE.itemsize)
        yield obs_id, part


class FinalizeEventFile(beam.DoFn):
    """(obs_id, {'observation': [Observation], 'parts': [EventPart...]}) -> product url."""

    def __init__(self, working_out: str, fingerprint: str):
        self._working_out = working_out
        self._fingerprint = fingerprint
        self._rows = Metrics.counter(NAMESPACE, "evt_rows_written")
        self._skipped = Metrics.counter(NAMESPACE, "products_skipped_failed")
        self._written = Metrics.counter(WRITE_NAMESPACE, "products_written")

    @isolating("write")
    def process(self, element, failed_obs_ids):
        obs_id, grouped = element
        if not grouped["observation"] or obs_id in failed_obs_ids:
            self._skipped.inc(bool(grouped["observation"]))
            remove_parts(self._working_out, obs_id)
            return
        observation = grouped["observation"][0]
        parts = sorted(grouped["parts"], key=lambda p: (p.first_time, p.last_time))
        keywords = products.standard_keywords(EVT_CAL, observation.keywords, self._fingerprint)
        url = products.product_url(self._working_out, EVT_CAL, obs_id)
        n_rows = stream_event_file(url, parts, good_time(observation), keywords)
        # only once the product is in place: a retried bundle still finds its parts
        remove_parts(self._working_out, obs_id)
        self._rows.inc(n_rows)
        self._written.inc()
        LOG.info("CALI %s: %s written, %d events", observation.obs_dir, fs.basename(url), n_rows)
        yield url


class WriteGtiProduct(beam.DoFn):
    """(obs_id, Observation) -> the URL of its ECL-GTI-CAL, unless the observation failed."""

    def __init__(self, working_out: str, fingerprint: str):
        self._working_out, self._fingerprint = working_out, fingerprint

    @isolating("write")
    def process(self, keyed, failed_obs_ids):
        obs_id, observation = keyed
        if obs_id not in failed_obs_ids:
            url = write_gti_product(self._working_out, observation, self._fingerprint)
            Metrics.counter(WRITE_NAMESPACE, "products_written").inc()
            yield url


@dataclasses.dataclass(eq=False)
class WriteCaliProducts(DataclassTransform):
    """Calibrated chunks -> the requested CALI products; returns the PCollection of their URLs.

    Observations in the `failed` side input get no product.
    """

    working_out: str
    out_files: tuple
    fingerprint: str
    observations: beam.PCollection  # (obs_id, Observation)
    failed: object = None  # side input: the set of failed obs_ids (write.failed_obs_ids)
    failure_log: object = None  # failures.FailureLog: a failed write fails one observation

    def __post_init__(self):
        super().__post_init__()
        unknown = sorted(set(self.out_files) - set(CALI_PRODUCTS))
        if unknown:
            raise ValueError(f"unknown CALI products {unknown}; expected among {CALI_PRODUCTS}")

    def expand(self, calibrated):
        pipeline = calibrated.pipeline
        failed = self.failed if self.failed is not None else failed_obs_ids(
            pipeline | "NoFailures" >> beam.Create([]))
        written = []
        if GTI_CAL in self.out_files:
            written.append(
                self.observations
                | "WriteGtiCal" >> beam.ParDo(with_failure_log(WriteGtiProduct(
                    self.working_out, self.fingerprint), self.failure_log), failed))
        if EVT_CAL in self.out_files:
            parts = calibrated | "WriteParts" >> beam.ParDo(
                with_failure_log(WriteEventPart(self.working_out), self.failure_log))
            written.append(
                {"observation": self.observations, "parts": parts}
                | "GroupParts" >> beam.CoGroupByKey()
                | "FinalizeEvtCal" >> beam.ParDo(
                    with_failure_log(FinalizeEventFile(self.working_out, self.fingerprint),
                                     self.failure_log), failed))
        if not written:
            return pipeline | "NoProducts" >> beam.Create([])
        return tuple(written) | "ProductUrls" >> beam.Flatten()
