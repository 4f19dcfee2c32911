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

`SliceWatcher` lists working_in (local directories or bucket prefixes, through io.fs) and
reports each slice set once it is complete (its three files present), and the coverage
watermark: the end of the attitude and orbit coverage, contiguous from the first slice, of the
latest observation (one spacecraft observes one thing at a time, so mission time only moves
forward across observations).
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from ecpi_beam.errors import EcpiError
from ecpi_beam.io import events as event_io
from ecpi_beam.io import fs

KINDS = {"evt": "ECL-EVT-SEC", "att": "SVO-ATT-CNV", "orb": "SVO-ORB-CNV"}
_PREFIX_KIND = {prefix: kind for kind, prefix in KINDS.items()}
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
    """The three files of one slice: small and picklable, the element of the stream."""

    obs_id: str
    seq: int
    evt_url: str
    att_url: str
    orb_url: str
    tstart: float
    tstop: float


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


def _span(url: str, obs_id: str) -> tuple[float, float]:
    """[TSTART, TSTOP] of a slice, after checking that its OBS_ID is the one in its name."""
    header = event_io.read_primary_header(url)
    if str(header.get("OBS_ID", "")).strip() != obs_id:
        raise EcpiError(f"{url}: primary header OBS_ID = {header.get('OBS_ID')!r}, expected "
                        f"{obs_id!r} as in the file name")
    try:
        span = float(header["TSTART"]), float(header["TSTOP"])
    except (KeyError, TypeError, ValueError):
        raise EcpiError(f"{url}: primary header: expected numeric TSTART and TSTOP") from None
    if not span[0] < span[1]:
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


@dataclass
class _ObservationSlices:
    files: dict = field(default_factory=dict)  # (kind, seq) -> url
    spans: dict = field(default_factory=dict)  # (kind, seq) -> (tstart, tstop)
    emitted: set = field(default_factory=set)  # seqs already reported

    def coverage_end(self):
        """End of the attitude and orbit coverage contiguous from the first slice, or None."""
        seqs = sorted(seq for kind, seq in self.spans if kind == "att")
        end = None
        for seq in seqs:
            if ("orb", seq) not in self.spans:
                break
            start, stop = self.spans[("att", seq)]
            if end is not None and start > end + 1e-6:
                break
            end = min(stop, self.spans[("orb", seq)][1])
        return end

    def first_start(self):
        starts = [span[0] for span in self.spans.values()]
        return min(starts) if starts else None


class SliceWatcher:
    """Polls working_in for slices; each complete slice set is reported once."""

    def __init__(self, locations):
        self.locations = tuple(locations)
        self._observations: dict[str, _ObservationSlices] = {}
        self._seen: set = set()  # urls already inspected
        self.rejected: list[str] = []  # one line per file that is not a valid slice

    def poll(self) -> list[SliceSet]:
        """The slice sets completed since the last poll, in (obs_id, seq) order."""
        for location in self.locations:
            for name in _listing(location):
                parsed = parse_slice_name(name)
                url = fs.join(location, name)
                if parsed is None or url in self._seen:
                    continue
                self._seen.add(url)
                kind, obs_id, seq = parsed
                try:
                    span = _span(url, obs_id)
                except EcpiError as error:  # one bad file stops no stream: reported, skipped
                    LOG.error("STREAM %s", error)
                    self.rejected.append(str(error))
                    continue
                observation = self._observations.setdefault(obs_id, _ObservationSlices())
                observation.files[(kind, seq)] = url
                observation.spans[(kind, seq)] = span
        ready = []
        for obs_id, observation in sorted(self._observations.items()):
            for (kind, seq), url in sorted(observation.files.items()):
                if kind != "evt" or seq in observation.emitted:
                    continue
                if ("att", seq) in observation.files and ("orb", seq) in observation.files:
                    observation.emitted.add(seq)
                    tstart, tstop = observation.spans[("evt", seq)]
                    ready.append(SliceSet(obs_id, seq, url, observation.files[("att", seq)],
                                          observation.files[("orb", seq)], tstart, tstop))
        return ready

    def watermark(self):
        """The coverage watermark (mission TIME, s), None before any attitude and orbit."""
        current = [obs for obs in self._observations.values() if obs.coverage_end() is not None]
        if not current:
            return None
        latest = max(current, key=lambda obs: obs.first_start())
        return latest.coverage_end()


def _listing(location: str) -> list[str]:
    try:
        return fs.listdir(location)
    except FileNotFoundError:
        return []  # a prefix that does not exist yet: nothing has landed
