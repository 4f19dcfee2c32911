"""Input slices for streaming (docs/streaming.md): naming, watching working_in, reading.

As data are downlinked, an observation arrives as short time slices, each a file of one of the
three ICD section 2 kinds with the ICD's extensions and columns:

    ECL-EVT-SEC_<obs_id>_<seq>.fits   EVENTS + GTI of [TSTART, TSTOP)
    SVO-ATT-CNV_<obs_id>_<seq>.fits   ATTITUDE samples covering [TSTART, TSTOP]
    SVO-ORB-CNV_<obs_id>_<seq>.fits   ORBIT samples covering [TSTART, TSTOP]

(each may end in .gz). <seq> is a decimal slice number, counting from 0 in time order; the
three files of one <seq> cover the same span (the primary header's TSTART/TSTOP), so an event
slice is calibrated with the attitude and orbit of its own <seq>. Writers put a file in place
by renaming it from a temporary name that does not match the pattern, so a watcher never sees
half a file.

`SliceWatcher` lists working_in (local directories or bucket prefixes, through io.fs), checks
each new file as it lands (headers and size: a bad file is a `SliceFault`, reported and
skipped), reports each slice set once it is complete, and keeps the event-time progress of
each observation. Its watermark is that of Flink's idle-aware sources: the smallest progress
of the observations still delivering, so that one observation's silence holds nobody back
(see `watermark`). It is small and picklable: the streaming source carries it from poll to
poll as its restriction (pipelines/stream.py), so a runner that resumes the watch elsewhere
resumes it exactly.
"""
from __future__ import annotations

import hashlib
import logging
import math
import re
import time
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from ecpi_beam.errors import EcpiError
from ecpi_beam.io import events as event_io
from ecpi_beam.io import fs

KINDS = {"evt": "ECL-EVT-SEC", "att": "SVO-ATT-CNV", "orb": "SVO-ORB-CNV"}
_PREFIX_KIND = {prefix: kind for kind, prefix in KINDS.items()}
# the extensions each kind must hold (ICD section 2), checked as the file lands
_EXTENSIONS = {"evt": ("EVENTS", "GTI"), "att": ("ATTITUDE",), "orb": ("ORBIT",)}
_KIND_WORDS = {"evt": "event", "att": "attitude", "orb": "orbit"}
SLICE_NAME = re.compile(r"^(?P<prefix>ECL-EVT-SEC|SVO-ATT-CNV|SVO-ORB-CNV)_(?P<obs_id>[A-Za-z0-9_-]+)"
                        r"_(?P<seq>\d+)\.fits(\.gz)?$")
SEQ_DIGITS = 6
LOG = logging.getLogger(__name__)


def slice_name(kind: str, obs_id: str, seq: int) -> str:
    """The file name of slice `seq` of one kind ('evt', 'att' or 'orb')."""
    return f"{KINDS[kind]}_{obs_id}_{seq:0{SEQ_DIGITS}d}.fits"


def parse_slice_name(name: str):
    """(kind, obs_id, seq) of a slice file name, or None when the name is not a slice's."""
    match = SLICE_NAME.match(name)
    if match is None:
        return None
    return _PREFIX_KIND[match["prefix"]], match["obs_id"], int(match["seq"])


class SliceSet(NamedTuple):
    """The three files of one slice: small and picklable, the element of the stream.

    clock_offset (s) is added to the slice's mission times to place it on the stream's clock:
    0 except for an observation that began behind the stream's watermark (SliceWatcher)."""

    obs_id: str
    seq: int
    evt_url: str
    att_url: str
    orb_url: str
    tstart: float
    tstop: float
    clock_offset: float = 0.0

    @property
    def stream_start(self) -> float:
        """TSTART on the stream's clock: the element's timestamp."""
        return self.tstart + self.clock_offset


class SliceFault(NamedTuple):
    """A slice file that cannot be used, and why: reported as it lands, then skipped."""

    obs_id: str
    seq: int
    url: str
    reason: str

    @property
    def line(self) -> str:
        return f"{self.url}: {self.reason}"


class Attitude(NamedTuple):
    time: np.ndarray
    qparam: np.ndarray  # (n, 4) scalar-last
    flag: np.ndarray


class Orbit(NamedTuple):
    time: np.ndarray
    position: np.ndarray  # (n, 3) m
    velocity: np.ndarray
    flag: np.ndarray


@dataclass(frozen=True, eq=False)
class SliceData:
    """One slice read: what kernels.gti.good_time and kernels.timeline need, and the events."""

    obs_id: str
    seq: int
    keywords: dict  # TSTART, TSTOP of the event slice (good time is clipped to them)
    events: np.ndarray  # EVENT_DTYPE
    telemetry_gti: np.ndarray  # (n, 2) the GTI extension as read (kernels.gti merges it)
    attitude: Attitude
    orbit: Orbit


def check_slice_file(url: str, kind: str, obs_id: str) -> tuple[float, float]:
    """[TSTART, TSTOP] of a slice file that lands, after the checks that need no data read:
    the primary header (OBS_ID as in the file name, numeric TSTART < TSTOP) and each
    extension of its kind (a binary table, whole: a truncated file is caught here).
    EcpiError naming the file and what is wrong otherwise."""
    try:
        header = event_io.read_primary_header(url)
        for extname in _EXTENSIONS[kind]:
            event_io.table_layout(url, extname)
    except EcpiError:
        raise
    except Exception as error:  # noqa: BLE001 - any read fault of one file is that file's
        raise EcpiError(f"{url}: cannot be read ({type(error).__name__}: "
                        f"{' '.join(str(error).split())})") from None
    if str(header.get("OBS_ID", "")).strip() != obs_id:
        raise EcpiError(f"{url}: primary header OBS_ID = {header.get('OBS_ID')!r}, expected "
                        f"{obs_id!r} as in the file name")
    try:
        span = float(header["TSTART"]), float(header["TSTOP"])
    except (KeyError, TypeError, ValueError):
        raise EcpiError(f"{url}: primary header: expected numeric TSTART and TSTOP") from None
    if not (math.isfinite(span[0]) and math.isfinite(span[1]) and span[0] < span[1]):
        raise EcpiError(f"{url}: primary header: TSTART = {span[0]} must be before TSTOP = "
                        f"{span[1]}")
    return span


def read_slice(slice_set: SliceSet) -> SliceData:
    """Read the three files of a slice (all small: seconds to minutes of data)."""
    layout = event_io.table_layout(slice_set.evt_url, "EVENTS")
    events = event_io.read_rows(slice_set.evt_url, 0, layout.n_rows, layout)
    gti, _ = event_io.read_table(slice_set.evt_url, "GTI")
    attitude, _ = event_io.read_table(slice_set.att_url, "ATTITUDE")
    orbit, _ = event_io.read_table(slice_set.orb_url, "ORBIT")
    return SliceData(
        obs_id=slice_set.obs_id, seq=slice_set.seq,
        keywords={"TSTART": slice_set.tstart, "TSTOP": slice_set.tstop}, events=events,
        telemetry_gti=np.column_stack([gti["START"], gti["STOP"]]).astype(float),
        attitude=Attitude(attitude["TIME"], attitude["QPARAM"].reshape(-1, 4),
                          attitude["FLAG_ATT"]),
        orbit=Orbit(orbit["TIME"], orbit["POSITION"].reshape(-1, 3),
                    orbit["VELOCITY"].reshape(-1, 3), orbit["FLAG_PVT"]))


# ==============================================================================================
# Watching working_in
# ==============================================================================================
@dataclass(frozen=True)
class WatchSettings:
    """What the watcher needs of [stream] (docs/streaming.md, "Watermark")."""

    idle_after: float = 30.0  # wall-clock s without a new file: an observation stops holding
    idle_after_event: float = 60.0  # mission s a later observation has covered: likewise
    allowed_lateness: float = 120.0  # s of event time a slice may land behind the watermark
    longest_window: float = 1280.0  # s: a slice behind every open window is skipped
    clock_step: float = 640.0  # s, a multiple of every window period: shifts keep windows


@dataclass
class ObservationProgress:
    """The event-time progress of one observation, as its slices land (mission TIME, s)."""

    obs_id: str
    first_seq: int  # the coverage starts with this slice (the lowest seen at first sight)
    clock_offset: float = 0.0  # added to its times on the stream's clock (0 but when behind)
    next_seq: int = 0  # the first slice whose attitude and orbit are not yet both there
    coverage_end: float | None = None  # end of the attitude + orbit coverage, contiguous
    first_start: float = math.inf  # earliest TSTART of its files
    last_stop: float = -math.inf  # latest TSTOP of its files
    last_new_wall: float = 0.0  # wall-clock time of its last new file
    aux: dict = field(default_factory=dict)  # (kind, seq) -> (url, (tstart, tstop)): att/orb
    waiting: dict = field(default_factory=dict)  # seq -> (url, span): events awaiting att/orb
    rejected_aux: set = field(default_factory=set)  # seqs whose attitude or orbit was bad
    gap_since_wall: float | None = None  # a later slice waits for a missing one since then

    def head(self) -> float | None:
        """Its progress on the stream's clock: the coverage end, or before any attitude and
        orbit its first TSTART (nothing of it before that can be complete)."""
        if self.coverage_end is not None:
            return self.coverage_end + self.clock_offset
        return self.first_start + self.clock_offset if math.isfinite(self.first_start) else None


class SliceWatcher:
    """Polls working_in; each complete slice set is reported once, each bad file once.

    The watermark (`watermark`, on the stream's clock) is the smallest head (coverage end) of
    the observations that still hold it, as Flink does for idle sources; an observation holds
    it unless
    - it has delivered no new file for `idle_after` wall-clock seconds (processing time), or
    - a later observation (one that began after its last slice ended) has covered
      `idle_after_event` seconds of mission time (event time: the next pointing is under way), or
    - its head is already behind the watermark (it cannot hold what has passed it; its slices
      are late data).
    With no observation holding it, the watermark is the furthest head. It never goes back.

    An observation whose first slice lands more than the allowed lateness behind the watermark
    (a late downlink of an earlier observation, a stray file) would find every window closed:
    it is placed on the stream's clock with a `clock_offset`, a whole number of `clock_step`
    (so its windows are the same mission-time windows), ahead of every observation, and is
    processed on its own under its OBS_ID. A missing slice holds its observation's coverage at
    most `idle_after` seconds while later slices wait.
    """

    def __init__(self, locations, settings: WatchSettings = WatchSettings(),
                 now: float | None = None):
        self.locations = tuple(locations)
        self.settings = settings
        self.observations: dict[str, ObservationProgress] = {}
        self.seen: set = set()  # url_key of the files already inspected
        self.early_rejects: dict = {}  # obs_id -> seqs of bad attitude/orbit before any good file
        self.watermark: float | None = None  # on the stream's clock, never decreasing
        self.last_new_wall = time.time() if now is None else now
        self.next_poll_wall = 0.0
        self.polls = 0
        self.finished = False  # a checkpoint's primary: nothing left to watch

    @classmethod
    def finished_watch(cls, locations=()) -> "SliceWatcher":
        watcher = cls(locations, now=0.0)
        watcher.finished = True
        return watcher

    # ------------------------------------------------------------------------------------------
    def poll(self, now: float | None = None) -> tuple[list[SliceSet], list[SliceFault]]:
        """List working_in once: (slice sets completed since the last poll, in (obs_id, seq)
        order, and the files found bad); advances `watermark`."""
        now = time.time() if now is None else now
        if not self.polls:
            LOG.info("STREAM watching %s", ", ".join(self.locations))
        self.polls += 1
        faults = []
        for location in self.locations:
            for name in _listing(location):
                parsed = parse_slice_name(name)
                url = fs.join(location, name)
                if parsed is None or url_key(url) in self.seen:
                    continue
                self.seen.add(url_key(url))
                self.last_new_wall = now
                faults += self._landed(url, *parsed, now)
        ready = []
        for obs_id in sorted(self.observations):
            observation = self.observations[obs_id]
            self._advance_coverage(observation, now)
            sets, skipped = self._complete(observation)
            ready += sets
            faults += skipped + self._abandoned(observation, now)
        # late against the watermark the stream had before them (not the one they advance)
        on_time = []
        for slice_set in ready:
            fault = self._too_late(slice_set)
            if fault is None:
                on_time.append(slice_set)
            else:
                faults.append(fault)
        self._advance_watermark(now)
        return on_time, faults

    def _landed(self, url, kind, obs_id, seq, now) -> list[SliceFault]:
        try:
            span = check_slice_file(url, kind, obs_id)
        except EcpiError as error:
            reason = str(error)
            reason = reason[len(url) + 2:] if reason.startswith(url + ": ") else reason
            if kind != "evt":
                observation = self.observations.get(obs_id)
                if observation is not None:
                    observation.rejected_aux.add(seq)
                else:
                    self.early_rejects.setdefault(obs_id, set()).add(seq)
            return [SliceFault(obs_id, seq, url, reason)]
        observation = self.observations.get(obs_id)
        if observation is None:
            observation = self._new_observation(obs_id, seq, span)
        observation.first_start = min(observation.first_start, span[0])
        observation.last_stop = max(observation.last_stop, span[1])
        observation.last_new_wall = now
        if kind == "evt":
            observation.waiting[seq] = (url, span)
        else:
            observation.aux[(kind, seq)] = (url, span)
        return []

    def _new_observation(self, obs_id, seq, span) -> ObservationProgress:
        observation = ObservationProgress(obs_id, first_seq=seq, next_seq=seq)
        observation.rejected_aux |= self.early_rejects.pop(obs_id, set())
        behind = (self.watermark is not None
                  and span[0] < self.watermark - self.settings.allowed_lateness)
        if behind:
            heads = [h for h in (o.head() for o in self.observations.values()) if h is not None]
            stream_time = max([self.watermark, *heads])
            step = self.settings.clock_step
            observation.clock_offset = math.ceil((stream_time - span[0]) / step) * step
            LOG.warning("STREAM observation %s begins %.0f s behind the stream's watermark "
                        "(a late downlink?): processed on its own, %+.0f s on the stream's "
                        "clock; its alerts carry its own times", obs_id,
                        self.watermark - span[0], observation.clock_offset)
        else:
            LOG.info("STREAM new observation %s", obs_id)
        self.observations[obs_id] = observation
        return observation

    def _advance_coverage(self, observation: ObservationProgress, now: float) -> None:
        """Extend the coverage over consecutive slices whose attitude and orbit are both
        there (a rejected one is passed over: its events are skipped); a missing slice is
        passed over once later ones have waited `idle_after` seconds."""
        while True:
            seq = observation.next_seq
            if seq in observation.rejected_aux:
                observation.next_seq += 1
                continue
            att, orb = observation.aux.get(("att", seq)), observation.aux.get(("orb", seq))
            if att is not None and orb is not None:
                end = min(att[1][1], orb[1][1])
                if observation.coverage_end is None or end > observation.coverage_end:
                    observation.coverage_end = end
                observation.next_seq += 1
                observation.gap_since_wall = None
                continue
            later = [s for _, s in observation.aux if s > seq] + [
                s for s in observation.waiting if s > seq] + [
                s for s in observation.rejected_aux if s > seq]
            if not later:
                observation.gap_since_wall = None
                return
            if observation.gap_since_wall is None:
                observation.gap_since_wall = now
            if now - observation.gap_since_wall < self.settings.idle_after:
                return
            LOG.warning("STREAM observation %s: slice %d has not come in %.0f s while later "
                        "slices wait: the stream goes on without it (late if it comes)",
                        observation.obs_id, seq, self.settings.idle_after)
            observation.next_seq = min(later)
            observation.gap_since_wall = None

    def _complete(self, observation: ObservationProgress):
        """The event slices whose attitude and orbit are there; those whose attitude or orbit
        was rejected are faults."""
        ready, faults = [], []
        for seq in sorted(observation.waiting):
            url, (tstart, tstop) = observation.waiting[seq]
            if seq in observation.rejected_aux:
                del observation.waiting[seq]
                faults.append(SliceFault(observation.obs_id, seq, url,
                                         "skipped: the attitude or orbit slice of the same "
                                         "number was rejected"))
                continue
            att, orb = observation.aux.get(("att", seq)), observation.aux.get(("orb", seq))
            if att is None or orb is None:
                continue
            del observation.waiting[seq]
            del observation.aux[("att", seq)], observation.aux[("orb", seq)]
            ready.append(SliceSet(observation.obs_id, seq, url, att[0], orb[0], tstart, tstop,
                                  observation.clock_offset))
        return ready, faults

    def _abandoned(self, observation: ObservationProgress, now: float) -> list[SliceFault]:
        """Event slices still without their attitude or orbit once their observation has
        delivered nothing for `idle_after` seconds: skipped (a late attitude is too late)."""
        if now - observation.last_new_wall < self.settings.idle_after:
            return []
        faults = [SliceFault(observation.obs_id, seq, url,
                             f"skipped: no attitude and orbit slice {seq} came within "
                             f"{self.settings.idle_after:g} s")
                  for seq, (url, _) in sorted(observation.waiting.items())]
        observation.waiting.clear()
        return faults

    # ------------------------------------------------------------------------------------------
    def is_idle(self, observation: ObservationProgress, now: float) -> bool:
        """No longer holding the watermark (class docstring)."""
        if now - observation.last_new_wall >= self.settings.idle_after:
            return True
        for later in self.observations.values():
            if (later is not observation and later.coverage_end is not None
                    and later.first_start >= observation.last_stop - 1e-6
                    and later.coverage_end - later.first_start
                    >= self.settings.idle_after_event):
                return True
        return False

    def holds(self, observation: ObservationProgress, now: float) -> bool:
        """Whether the observation holds the watermark back (class docstring)."""
        head = observation.head()
        return (head is not None and (self.watermark is None or head >= self.watermark)
                and not self.is_idle(observation, now))

    def _advance_watermark(self, now: float) -> None:
        heads, holding = [], []
        for observation in self.observations.values():
            head = observation.head()
            if head is None:
                continue
            heads.append(head)
            if self.holds(observation, now):
                holding.append(head)
        candidate = min(holding) if holding else (max(heads) if heads else None)
        if candidate is not None and (self.watermark is None or candidate > self.watermark):
            self.watermark = candidate

    def _too_late(self, slice_set: SliceSet) -> SliceFault | None:
        """A slice behind even the longest window still open is skipped (reported); one
        behind the shorter windows only is used where it still can be (a warning)."""
        if self.watermark is None:
            return None
        behind = self.watermark - (slice_set.tstop + slice_set.clock_offset)
        if behind <= self.settings.allowed_lateness:
            return None
        if behind > self.settings.allowed_lateness + self.settings.longest_window:
            return SliceFault(slice_set.obs_id, slice_set.seq, slice_set.evt_url,
                              f"skipped: lands {behind:.0f} s behind the stream's watermark, "
                              f"beyond the allowed lateness ({self.settings.allowed_lateness:g}"
                              f" s) of every window")
        LOG.warning("STREAM %s: lands %.0f s behind the watermark, beyond the allowed lateness "
                    "(%g s): only the windows still open use it", slice_set.evt_url, behind,
                    self.settings.allowed_lateness)
        return None

    def status(self, now: float) -> dict:
        """What the watch stands at (docs/streaming.md, "Watching a stream"): the watermark
        and, per observation, its progress and whether it still holds the watermark."""
        return {"watermark": self.watermark, "polls": self.polls, "time": now,
                "observations": {
                    obs_id: {"coverage_end": o.coverage_end, "clock_offset": o.clock_offset,
                             "next_slice": o.next_seq, "holds_watermark": self.holds(o, now),
                             "quiet_for_s": round(now - o.last_new_wall, 1)}
                    for obs_id, o in sorted(self.observations.items())}}

    def idle_for(self, now: float | None = None) -> float:
        """Wall-clock seconds since the last new file."""
        return (time.time() if now is None else now) - self.last_new_wall


def url_key(url: str) -> int:
    """A stable 64-bit digest of a URL: the watch keeps these rather than the URLs, so that
    it stays small (a day of 10 s slices is 26 000 files) as it travels from poll to poll."""
    return int.from_bytes(hashlib.blake2b(url.encode(), digest_size=8).digest(), "big")


def _listing(location: str) -> list[str]:
    try:
        return fs.listdir(location)
    except FileNotFoundError:
        return []  # a prefix that does not exist yet: nothing has landed
