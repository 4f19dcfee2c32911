"""Streaming transforms: slices -> timed partial images -> sliding windows -> new sources -> alerts.

docs/streaming.md. Every science step is the batch one (no second implementation):
- `SliceTiles`: a slice set is read, calibrated (kernels.calibrate, kernels.gti), given its
  stable pointings and occultation classes (kernels.timeline), and binned by
  transforms.bube.BinDetectorImages, one partial image per (band, occ), per tile of
  `tile_seconds` of event time and per pointing. Each image is emitted with its tile's event
  time as element timestamp, with its exposure and pointing.
- `WindowedSearch`: sliding event-time windows of one length and period (Beam's default
  trigger: one pane when the watermark passes the window's end, one more per late slice),
  summed pointing by pointing (`WindowSum`: per pointing, the images, exposure, attitude and
  the Earth's hidden sky; a window that crosses a slew holds one sum per pointing and never
  mixes them), each pane added to the window's earlier ones (`AccumulatePanes`: a late pane
  is the whole window again), each pointing's sum background-corrected by
  transforms.bube.CorrectBackground and imaged by transforms.imag.MakeSkyImages
  (kernels.sky_analysis.SkyAnalyser) in its own frame; sources associated with
  the known-source catalogue (ECL-SRC-CAT, kernels.catalogue.match_known_sources, the batch
  rule) are dropped, the others are `WindowDetection`s.
- `TransientAlerts`: a stateful DoFn keyed by obs_id (one pointing: its sky) turns detections
  into VOEvents, exactly once per transient: a detection within `match_radius` of a steady
  source of an earlier longest window is not new; one within `match_radius` of a transient
  already alerted is the same transient (an update, sequence > 0, when its SNR is higher).
  Detections are held in state until an event-time timer at their window's end, so that every
  earlier window has been seen whatever the order in which panes arrive.
"""
from __future__ import annotations

import dataclasses
import logging
import typing
from typing import NamedTuple

import apache_beam as beam
import numpy as np
from apache_beam.coders import PickleCoder
from apache_beam.metrics import Metrics
from apache_beam.portability.api import beam_runner_api_pb2
from apache_beam.transforms import trigger, userstate, window
from apache_beam.utils.timestamp import Duration, Timestamp

from ecpi_beam import instrument
from ecpi_beam.caldb import Caldb
from ecpi_beam.errors import EcpiError
from ecpi_beam.io import fs, slices
from ecpi_beam.io.voevent import TransientAlert, alert_file_name, write_voevent
from ecpi_beam.kernels import binning, catalogue, earth, intervals, isotime
from ecpi_beam.kernels.calibrate import calibrate_events
from ecpi_beam.kernels.gti import good_time, telemetry_gti
from ecpi_beam.kernels.timeline import POINTING_TOLERANCE_DEG, imaging_timeline, rotation_from_deg
from ecpi_beam.transforms.base import DataclassTransform, image_key_parts
from ecpi_beam.transforms.bube import BinDetectorImages, CorrectBackground
from ecpi_beam.transforms.failures import isolating, with_failure_log
from ecpi_beam.transforms.imag import MakeSkyImages

NAMESPACE = "ecpi.stream"
LOG = logging.getLogger(__name__)
ALERTS_FOLDER = "alerts"


@dataclasses.dataclass(frozen=True)
class StreamTimeline:
    """What CorrectBackground and MakeSkyImages ask of an observation's timeline, for a window:
    its pointing, exposure and the Earth's mean hidden sky over its good time (summed from its
    tiles; BackgroundCorrector.earth_templates makes the Earth templates from it)."""

    reference_quaternion: np.ndarray
    exposure_s: float
    hidden_sky: np.ndarray = None  # (199, 199) mean hidden fraction, or None without orbit
    hidden_seconds: float = 0.0  # good seconds the hidden sky is averaged over
    pointing = None  # a window's products name no pointing (kernels.timeline.ImagingTimeline)

    def exposure(self, occ_type: str) -> float:
        return self.exposure_s

    def for_pointing(self, index: int) -> "StreamTimeline":
        """A window's sum is of one pointing: the timeline is its own."""
        return self


class TileSums(NamedTuple):
    """One tile's (then one window's, summed) partial image and what goes with it."""

    image: object  # DetectorImage of the tile's events
    exposure: float  # good seconds of the key's occultation class in the tile
    weighted_quaternion: np.ndarray  # reference quaternion x exposure (a mean pointing)
    hidden_seconds: np.ndarray  # sum of seconds x hidden fraction (199, 199) (earth.py)
    earth_seconds: float  # those seconds
    clock_offset: float = 0.0  # the observation's, from its slices (io.slices.SliceSet)


def add_sums(first: TileSums, second: TileSums) -> TileSums:
    """Two tiles' (or windows') sums of one pointing: the sum of their events (the clock
    offset is the observation's, the same in both)."""
    return TileSums(binning.add(first.image, second.image), first.exposure + second.exposure,
                    first.weighted_quaternion + second.weighted_quaternion,
                    first.hidden_seconds + second.hidden_seconds,
                    first.earth_seconds + second.earth_seconds, first.clock_offset)


def _attitude(sums: TileSums) -> np.ndarray:
    """The mean attitude of a sum (its exposure-weighted quaternion, normalised)."""
    quaternion = np.asarray(sums.weighted_quaternion, dtype=float)
    return quaternion / max(float(np.linalg.norm(quaternion)), 1e-300)


def add_to_pointing(parts: tuple, tile: TileSums) -> tuple:
    """A window's sums, one TileSums per stable pointing, with `tile` added to the sum of its
    pointing (mean attitudes within kernels.timeline.POINTING_TOLERANCE_DEG, boresight and
    roll), or as the sum of a new one: a window that crosses a slew never mixes pointings."""
    attitude = _attitude(tile)
    for k, part in enumerate(parts):
        held = _attitude(part)
        if rotation_from_deg(attitude, held) <= POINTING_TOLERANCE_DEG:
            if attitude @ held < 0:  # q and -q are one attitude: add them with one sign
                tile = tile._replace(weighted_quaternion=-np.asarray(tile.weighted_quaternion))
            return parts[:k] + (add_sums(part, tile),) + parts[k + 1:]
    return tuple(parts) + (tile,)


def window_parts(window) -> tuple:
    """A window's sums per pointing (a TileSums alone is one pointing's)."""
    return (window,) if isinstance(window, TileSums) else tuple(window)


def merge_windows(first, second) -> tuple:
    """Two sums of one window (panes, accumulators), pointing by pointing."""
    merged = window_parts(first)
    for part in window_parts(second):
        merged = add_to_pointing(merged, part)
    return merged


# ==============================================================================================
# Slices -> timestamped partial images
# ==============================================================================================
TILE_TYPE = typing.Tuple[typing.Tuple[str, str, str], typing.Any]  # ((obs_id, band, occ), sums)


class SliceTiles(beam.DoFn):
    """SliceSet -> TimestampedValue(((obs_id, band, occ), TileSums), t).

    t is the tile's start (or the slice's, when the slice starts inside the tile), on the
    stream's clock (mission time + the observation's clock offset): window boundaries are
    multiples of the tile, so the image lands in the windows of its tile. The
    Earth's mean hidden sky of the tile's class good time (kernels/earth.py, the batch
    averaging) goes with it, weighted by its seconds, so that a window's sum is its own mean.
    """

    def __init__(self, caldb_dir: str, bube_params, bands, tile_seconds: int):
        self._caldb_dir = caldb_dir
        self._bube = bube_params
        self._bands = tuple(bands)
        self._tile = float(tile_seconds)
        self._binner = BinDetectorImages(self._bands, bube_params.ear_occ_bub)
        self._slices = Metrics.counter(NAMESPACE, "slices")
        self._events = Metrics.counter(NAMESPACE, "events")
        self._no_good_time = Metrics.counter(NAMESPACE, "slices_without_good_time")
        self._skipped = Metrics.counter(NAMESPACE, "slices_skipped")
        self.failure_log = None  # set by with_failure_log

    def setup(self):
        self._pixcal = Caldb.open(self._caldb_dir).pixel_calibration()

    def process(self, slice_set: slices.SliceSet):
        try:
            data = slices.read_slice(slice_set)
            data = dataclasses.replace(data, telemetry_gti=telemetry_gti(
                data.telemetry_gti[:, 0], data.telemetry_gti[:, 1]))
            good = good_time(data)["ALL"]
            calibrated, _ = calibrate_events(data.events, self._pixcal, good)
            tiles = list(self._tiles(slice_set, data, good, calibrated))  # all or none
        except Exception as error:  # noqa: BLE001 - a bad slice is skipped, the stream goes on
            self._skip(slice_set, error)
            return
        self._slices.inc()
        self._events.inc(len(calibrated))
        yield from tiles

    def _skip(self, slice_set: slices.SliceSet, error: Exception) -> None:
        """A slice that cannot be read or calibrated: one record naming it (failures.py)."""
        message = " ".join(str(error).split())
        if not isinstance(error, EcpiError):
            message = f"{type(error).__name__}: {message}"
        named = next((url for url in (slice_set.evt_url, slice_set.att_url, slice_set.orb_url)
                      if message.startswith(url + ": ")), None)
        url = named or slice_set.evt_url
        reason = message[len(url) + 2:] if named else message
        LOG.info("STREAM skipped %s: %s", url, reason)  # ecpi_run prints the record
        self._skipped.inc()
        if self.failure_log is not None:
            self.failure_log.record_slice(slice_set.obs_id, slice_set.seq, url, reason)

    def _tiles(self, slice_set, data, good, calibrated):
        if not len(good):
            self._no_good_time.inc()
            return
        # every attitude the slice holds: a slice is too short for [bube] pointing_min_time,
        # which is applied to the pointings of a window (SearchWindow)
        timeline = imaging_timeline(
            data.attitude.time, data.attitude.qparam, data.orbit.time, data.orbit.position,
            good, self._bube.ear_occ_bub, self._bube.peof_min, self._bube.peof_max,
            min_pointing_s=0.0)
        first_tile = np.floor(slice_set.tstart / self._tile) * self._tile
        for tile_start in np.arange(first_tile, slice_set.tstop, self._tile):
            span = np.array([[max(tile_start, slice_set.tstart),
                              min(tile_start + self._tile, slice_set.tstop)]])
            times = calibrated["TIME"]
            in_tile = calibrated[(times >= span[0, 0]) & (times < span[0, 1])]
            timestamp = Timestamp(float(span[0, 0]) + slice_set.clock_offset)
            hidden_by_class = {}  # the bands of one occultation class share its Earth
            for key, image in self._binner.process((slice_set.obs_id, in_tile),
                                                   {slice_set.obs_id: timeline}):
                obs_id, band, occ, pointing = image_key_parts(key)
                held = timeline.for_pointing(pointing)
                good_in_tile = intervals.intersect(held.class_gti[occ], span)
                exposure = float(intervals.duration(good_in_tile))
                if exposure <= 0:
                    continue
                if (occ, pointing) not in hidden_by_class:
                    hidden_by_class[(occ, pointing)] = earth.hidden_sky_seconds(
                        held.reference_quaternion, good_in_tile, held.sample_time,
                        held.earth_icrs, held.earth_radius)
                hidden_seconds, earth_seconds = hidden_by_class[(occ, pointing)]
                # the key names no pointing: a slice's pointings are numbered in the slice
                # only; the tile's attitude goes with it, and WindowSum sums by attitude
                yield window.TimestampedValue(
                    ((obs_id, band, occ), TileSums(
                        image, exposure, held.reference_quaternion * exposure, hidden_seconds,
                        earth_seconds, slice_set.clock_offset)), timestamp)


# ==============================================================================================
# Windows -> detections
# ==============================================================================================
class WindowDetection(NamedTuple):
    """A source found in one window's sky image, not in the known-source catalogue."""

    obs_id: str
    band: str
    occ: str
    window_start: float  # mission TIME, s
    window_length: float  # s
    ra: float
    dec: float
    err_rad_arcmin: float
    snr: float
    clock_offset: float = 0.0  # its observation's (io.slices.SliceSet): window times + it =
    #                           the stream's clock, on which DecideAlerts sets its timers

    @property
    def window_end(self) -> float:
        return self.window_start + self.window_length

    @property
    def stream_end(self) -> float:
        """The window's end on the stream's clock."""
        return self.window_end + self.clock_offset


class WindowSum(beam.CombineFn):
    """TileSums -> their sums, one per stable pointing (add_to_pointing); None for a pane
    without tiles (some runners fire one when a window closes)."""

    def create_accumulator(self):
        return None

    def add_input(self, accumulator, tile):
        return (tile,) if accumulator is None else add_to_pointing(accumulator, tile)

    def merge_accumulators(self, accumulators):
        total = None
        for accumulator in accumulators:
            if accumulator is not None:
                total = accumulator if total is None else merge_windows(total, accumulator)
        return total

    def extract_output(self, accumulator):
        return accumulator


PANE_KEY = typing.Tuple[str, str, str, int, int]  # obs_id, band, occ, window start, end (us)


class KeyByWindow(beam.DoFn):
    """((obs_id, band, occ), pane) -> ((obs_id, band, occ, start, end), pane): the window
    (stream clock, microseconds) in the key, for AccumulatePanes in the global window."""

    def process(self, element, window_param=beam.DoFn.WindowParam):
        (obs_id, band, occ), pane = element
        if pane is not None:  # None: nothing new in this window
            yield (obs_id, band, occ, int(window_param.start.micros),
                   int(window_param.end.micros)), pane


class AccumulatePanes(beam.DoFn):
    """((obs_id, band, occ, start, end), pane of new tiles) -> the window's sums so far: its
    earlier panes plus this one, as ((obs_id, band, occ), (start, end) in s, sums per
    pointing).

    Beam's ACCUMULATING mode would do it in the GroupByKey, but runners then hold the
    watermark downstream until each window closes (Prism keeps every element pending; Flink
    keeps the pane's hold), and DecideAlerts' timers would wait the allowed lateness. Here the
    state lives in the global window, keyed by window, and is dropped by an event-time timer
    when the window closes (end + allowed lateness), which holds nothing before then."""

    TOTAL = userstate.ReadModifyWriteStateSpec("total", PickleCoder())
    CLOSE = userstate.TimerSpec("close", userstate.TimeDomain.WATERMARK)

    def __init__(self, allowed_lateness: float):
        self._lateness = float(allowed_lateness)

    def process(self, element, total=beam.DoFn.StateParam(TOTAL),
                close=beam.DoFn.TimerParam(CLOSE)):
        (obs_id, band, occ, start, end), pane = element
        so_far = total.read()
        if so_far is None:
            close.set(Timestamp(micros=end) + Duration(seconds=self._lateness))
        window_sum = pane if so_far is None else merge_windows(so_far, pane)
        total.write(window_sum)
        yield (obs_id, band, occ), (start / 1e6, end / 1e6), window_sum

    @userstate.on_timer(CLOSE)
    def closed(self, total=beam.DoFn.StateParam(TOTAL)):
        total.clear()


def unknown_sources(rows, known) -> list:
    """The rows (kernels.sky_analysis.SourceRow) that no known source of ECL-SRC-CAT
    accounts for, by the batch chain's association (kernels.catalogue.match_known_sources)."""
    if not rows:
        return []
    matched = catalogue.match_known_sources([row.ra for row in rows], [row.dec for row in rows],
                                            [row.err_rad_arcmin for row in rows], known)
    return [row for row, match in zip(rows, matched) if match < 0]


class SearchWindow(beam.DoFn):
    """((obs_id, band, occ), (start, end), the window's sums per pointing) -> WindowDetections
    of unknown sources (start and end on the stream's clock). Each pointing's sum is imaged on
    its own: the one with the most good time always (as a window of one pointing is), each
    other one when it holds [bube] pointing_min_time seconds (counted otherwise)."""

    def __init__(self, caldb_dir: str, bube_params, imag_params, stream_params):
        self._caldb_dir = caldb_dir
        modes = {occ: bube_params.correction_for(occ) for occ in bube_params.ear_occ_bub}
        self._background = CorrectBackground(caldb_dir, modes)
        self._imaging = MakeSkyImages(
            caldb_dir, dataclasses.replace(imag_params, snr_ths=stream_params.snr_ths))
        self._min_time = float(bube_params.pointing_min_time)
        self._windows = Metrics.counter(NAMESPACE, "windows_imaged")
        self._split = Metrics.counter(NAMESPACE, "windows_across_slews")
        self._short = Metrics.counter(NAMESPACE, "window_pointings_too_short")
        self._known = Metrics.counter(NAMESPACE, "known_sources_seen")
        self._found = Metrics.counter(NAMESPACE, "unknown_detections")

    def setup(self):
        self._background.setup()
        self._imaging.setup()
        self._catalogue = Caldb.open(self._caldb_dir).known_sources()

    @isolating("search")
    def process(self, element):
        key, span, window_sums = element
        parts = sorted(window_parts(window_sums), key=lambda part: -part.exposure)
        self._windows.inc()
        if len(parts) > 1:
            self._split.inc()
        for rank, part in enumerate(parts):
            if rank and part.exposure < self._min_time:
                self._short.inc()
                continue
            yield from self._search(key, span, part)

    def _search(self, key, span, sums: TileSums):
        (start, end), (counts, exposure, weighted_quaternion, hidden_seconds, earth_seconds,
                       clock_offset) = span, sums
        obs_id, band, occ = key
        quaternion = np.asarray(weighted_quaternion, dtype=float)
        quaternion = quaternion / np.linalg.norm(quaternion)
        hidden = (np.asarray(hidden_seconds, dtype=float) / earth_seconds
                  if earth_seconds > 0 else None)
        timelines = {obs_id: StreamTimeline(quaternion, float(exposure), hidden,
                                            float(earth_seconds))}
        for corrected in self._background.process((key, counts), timelines):
            for _, sky in self._imaging.process(corrected, timelines):
                unknown = unknown_sources(sky.sources, self._catalogue)
                self._known.inc(len(sky.sources) - len(unknown))
                self._found.inc(len(unknown))
                for row in unknown:
                    yield WindowDetection(obs_id, band, occ, start - clock_offset, end - start,
                                          row.ra, row.dec, row.err_rad_arcmin, row.snr,
                                          clock_offset)


class _ClosingIfNonEmpty(beam.transforms.core.Windowing):
    """Beam's windowing with the closing behavior EMIT_IF_NONEMPTY (the Java SDK's default):
    no final pane when a window closes with nothing new. Python's SDK always asks for one
    (EMIT_ALWAYS), and for it the runners hold the watermark after the window's end until it
    closes (Flink's ReduceFnRunner: a hold at end + allowed lateness), so everything
    downstream (DecideAlerts' timers) would wait the allowed lateness (docs/streaming.md)."""

    def to_runner_api(self, context):
        proto = super().to_runner_api(context)
        proto.closing_behavior = beam_runner_api_pb2.ClosingBehavior.EMIT_IF_NONEMPTY
        return proto


class WindowIntoClosingIfNonEmpty(beam.WindowInto):
    """beam.WindowInto whose windows close without an empty final pane (_ClosingIfNonEmpty)."""

    def __init__(self, windowfn, **kwargs):
        super().__init__(windowfn, **kwargs)
        windowing = self.windowing
        self.windowing = _ClosingIfNonEmpty(
            windowing.windowfn, windowing.triggerfn, windowing.accumulation_mode,
            windowing.timestamp_combiner, windowing.allowed_lateness, windowing.environment_id)


@dataclasses.dataclass(eq=False)
class WindowedSearch(DataclassTransform):
    """Timestamped partial images -> WindowDetections in sliding windows of one length."""

    length: int
    period: int
    allowed_lateness: float
    caldb_dir: str
    params: object  # the whole Params: [bube], [imag], [stream]
    failure_log: object = None

    def expand(self, tiles):
        params = self.params
        return (tiles
                # Beam's default trigger: one pane when the watermark passes the window's
                # end, then one more per late slice; each pane holds the new tiles only, and
                # AccumulatePanes adds it to the window's earlier ones (a late pane is the
                # whole window again)
                | "Window" >> WindowIntoClosingIfNonEmpty(
                    window.SlidingWindows(self.length, self.period),
                    accumulation_mode=trigger.AccumulationMode.DISCARDING,
                    allowed_lateness=Duration(seconds=self.allowed_lateness))
                | "Sum" >> beam.CombinePerKey(WindowSum())
                | "KeyByWindow" >> beam.ParDo(KeyByWindow()).with_output_types(
                    typing.Tuple[PANE_KEY, typing.Any])
                # from here on the global window: detections of every length meet in it
                # (DecideAlerts), and nothing holds the watermark until windows close
                | "Unwindow" >> beam.WindowInto(window.GlobalWindows())
                | "Accumulate" >> beam.ParDo(AccumulatePanes(self.allowed_lateness))
                | "Search" >> beam.ParDo(with_failure_log(
                    SearchWindow(self.caldb_dir, params.bube, params.imag, params.stream),
                    self.failure_log)))


# ==============================================================================================
# Detections -> one alert per transient
# ==============================================================================================
def alert_of(detection: WindowDetection, event_id: str, band_range) -> TransientAlert:
    lo, hi = instrument.band_energy_range(band_range)
    return TransientAlert(
        event_id=event_id, name=catalogue.iau_name(detection.ra, detection.dec),
        ra_deg=float(detection.ra), dec_deg=float(detection.dec),
        error_radius_deg=float(detection.err_rad_arcmin) / 60.0,
        time_utc=isotime.mission_time_utc_isot(detection.window_start) + "Z",
        window_start=float(detection.window_start), window_length=float(detection.window_length),
        snr=float(detection.snr), band=detection.band, e_min_kev=float(lo), e_max_kev=float(hi),
        obs_id=detection.obs_id)


def transient_event_id(detection: WindowDetection) -> str:
    """obs_id, window start (ms), band and IAU-name digits: unique per transient, and the same
    for the same detection (letters, digits, '-' and '_' only, as VOEvent IDs ask)."""
    digits = catalogue.iau_name(detection.ra, detection.dec)[len("ECL J"):]
    position = digits.replace(".", "").replace("+", "p").replace("-", "m")
    return (f"{detection.obs_id}_{int(round(detection.window_start * 1000))}_"
            f"{detection.band}_{position}")


def _band_range(band: str) -> tuple[int, int]:
    lo, hi = band.split("-")
    return int(lo), int(hi)


class DecideAlerts(beam.DoFn):
    """(obs_id, WindowDetection) -> alert URLs, exactly one first alert per transient.

    State per obs_id: detections waiting for their window's end (PENDING), the detections of
    the longest windows (STEADY: what the background image holds), the transients alerted
    (ALERTED: event_id, position, best SNR, sequence) and when the timer is set (TIMER_AT).
    """

    PENDING = userstate.BagStateSpec("pending", PickleCoder())
    STEADY = userstate.BagStateSpec("steady", PickleCoder())
    ALERTED = userstate.ReadModifyWriteStateSpec("alerted", PickleCoder())
    TIMER_AT = userstate.ReadModifyWriteStateSpec("timer_at", PickleCoder())
    WINDOW_END = userstate.TimerSpec("window_end", userstate.TimeDomain.WATERMARK)

    def __init__(self, working_out: str, longest_window: float, match_radius_arcmin: float):
        self._alerts_dir = fs.inside(working_out, ALERTS_FOLDER)
        self._longest = float(longest_window)
        self._radius_deg = float(match_radius_arcmin) / 60.0
        self._alerts = Metrics.counter(NAMESPACE, "alerts")
        self._updates = Metrics.counter(NAMESPACE, "alert_updates")
        self._steady = Metrics.counter(NAMESPACE, "detections_steady")

    def process(self, element, pending=beam.DoFn.StateParam(PENDING),
                steady=beam.DoFn.StateParam(STEADY), timer_at=beam.DoFn.StateParam(TIMER_AT),
                timer=beam.DoFn.TimerParam(WINDOW_END)):
        _, detection = element
        pending.add(detection)
        if detection.window_length >= self._longest:
            steady.add(detection)
        current = timer_at.read()
        if current is None or detection.stream_end < current:
            timer.set(Timestamp(detection.stream_end))
            timer_at.write(detection.stream_end)

    @userstate.on_timer(WINDOW_END)
    def window_end(self, key=beam.DoFn.KeyParam, fired=beam.DoFn.TimestampParam,
                   pending=beam.DoFn.StateParam(PENDING), steady=beam.DoFn.StateParam(STEADY),
                   alerted=beam.DoFn.StateParam(ALERTED),
                   timer_at=beam.DoFn.StateParam(TIMER_AT),
                   timer=beam.DoFn.TimerParam(WINDOW_END)):
        now = float(fired.micros) / 1e6
        waiting = list(pending.read())
        ready = sorted((d for d in waiting if d.stream_end <= now + 1e-6),
                       key=lambda d: (d.window_end, d.window_length, -d.snr))
        rest = [d for d in waiting if d.stream_end > now + 1e-6]
        background = [d for d in steady.read() if d.stream_end >= now - 3 * self._longest]
        transients = list(alerted.read() or [])
        for detection in ready:
            if self._is_steady(detection, background):
                self._steady.inc()
                continue
            yield from self._alert(key, detection, transients)
        alerted.write(transients)
        pending.clear()
        for detection in rest:
            pending.add(detection)
        steady.clear()
        for detection in background:  # bounded: only the last few longest windows
            steady.add(detection)
        if rest:
            next_end = min(d.stream_end for d in rest)
            timer.set(Timestamp(next_end))
            timer_at.write(next_end)
        else:
            timer_at.clear()

    def _is_steady(self, detection, background) -> bool:
        """In the background image: a longest window that ended before this one began."""
        earlier = [d for d in background if d.window_end <= detection.window_start + 1e-6]
        return bool(earlier) and bool(np.any(catalogue.angular_separation_deg(
            detection.ra, detection.dec, np.array([d.ra for d in earlier]),
            np.array([d.dec for d in earlier])) <= self._radius_deg))

    def _alert(self, obs_id, detection, transients):
        for transient in transients:
            separation = float(catalogue.angular_separation_deg(
                detection.ra, detection.dec, transient["ra"], transient["dec"]))
            if separation <= self._radius_deg:
                if detection.snr <= transient["snr"]:
                    return  # the same transient, no better seen: nothing to say
                transient.update(ra=detection.ra, dec=detection.dec, snr=detection.snr,
                                 sequence=transient["sequence"] + 1)
                self._updates.inc()
                yield self._write(detection, transient)
                return
        # deterministic: a retried bundle rewrites the same file, never a second alert
        event_id = transient_event_id(detection)
        transient = dict(event_id=event_id, ra=detection.ra, dec=detection.dec,
                         snr=detection.snr, sequence=0)
        transients.append(transient)
        self._alerts.inc()
        yield self._write(detection, transient)

    def _write(self, detection, transient) -> str:
        alert = alert_of(detection, transient["event_id"], _band_range(detection.band))
        url = fs.inside(self._alerts_dir, alert_file_name(alert, transient["sequence"]))
        fs.makedirs(self._alerts_dir)
        write_voevent(alert, url, transient["sequence"])
        # a first alert is what an operator must see (WARNING); its updates are routine
        LOG.log(logging.WARNING if transient["sequence"] == 0 else logging.INFO,
                "STREAM %s: %s %s at RA %.3f Dec %.3f (SNR %.1f, window %.0f s from %.1f)",
                detection.obs_id, "alert" if transient["sequence"] == 0 else "update",
                alert.name, alert.ra_deg, alert.dec_deg, alert.snr, alert.window_length,
                alert.window_start)
        return url


@dataclasses.dataclass(eq=False)
class TransientAlerts(DataclassTransform):
    """WindowDetections -> URLs of the VOEvents written under <working_out>/alerts/."""

    working_out: str
    longest_window: float
    match_radius_arcmin: float

    def expand(self, detections):
        return (detections
                | "ByObservation" >> beam.Map(lambda d: (d.obs_id, d)).with_output_types(
                    typing.Tuple[str, typing.Any])
                | "GlobalWindow" >> beam.WindowInto(window.GlobalWindows())
                | "Decide" >> beam.ParDo(DecideAlerts(self.working_out, self.longest_window,
                                                      self.match_radius_arcmin)))
