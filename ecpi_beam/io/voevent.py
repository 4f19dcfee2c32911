"""New-source alerts as VOEvent 2.0 documents (IVOA Recommendation, Seaman et al. 2011).

A VOEvent is the format of GCN notices: who raised the alert, what was measured (SNR, band,
time window), where and when (ICRS position with a 90 % error circle, detection time), and why
(a candidate new hard X-ray transient). The first document of a transient has sequence 0 and
the IVORN `ivo://svom.ecpi-beam/alert#<event_id>`; an update (sequence n > 0) has the IVORN
`...#<event_id>.<n>` ('.' never occurs in an event_id, so the two cannot collide) and cites the
first with `<EventIVORN cite="supersedes">`.

Only the standard library builds the XML, so the pipeline needs no VOEvent package; the tests
validate the documents against the VOEvent 2.0 schema with `voevent-parse`.
"""
from __future__ import annotations

import datetime
import math
import re
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass

from ecpi_beam.errors import EcpiError
from ecpi_beam.io import fs

VOEVENT_NAMESPACE = "http://www.ivoa.net/xml/VOEvent/v2.0"
SCHEMA_LOCATION = f"{VOEVENT_NAMESPACE} http://www.ivoa.net/xml/VOEvent/VOEvent-v2.0.xsd"
XSI_NAMESPACE = "http://www.w3.org/2001/XMLSchema-instance"
STREAM_IVORN = "ivo://svom.ecpi-beam/alert"
AUTHOR_IVORN = "ivo://svom.ecpi-beam/pipeline"
COORD_SYSTEM = "UTC-ICRS-GEO"  # position in ICRS, time in UTC, seen from (near) the Earth
ROLES = ("observation", "prediction", "utility", "test")

_EVENT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_SOURCE_NAME = re.compile(r"ECL J\d{6}\.\d[+-]\d{6}")
_BAND = re.compile(r"\d+(\.\d+)?-\d+(\.\d+)?")

ElementTree.register_namespace("voe", VOEVENT_NAMESPACE)
ElementTree.register_namespace("xsi", XSI_NAMESPACE)


@dataclass(frozen=True)
class TransientAlert:
    """What an alert says about one new source; checked by `validate_alert`."""
    event_id: str           # letters, digits, '-', '_'; unique per transient
    name: str               # "ECL Jhhmmss.s+ddmmss" (kernels.catalogue.iau_name)
    ra_deg: float           # ICRS
    dec_deg: float
    error_radius_deg: float  # 90 % containment
    time_utc: str           # ISO 8601, the detection time
    window_start: float     # mission TIME (s) of the start of the image's time window
    window_length: float    # s
    snr: float
    band: str               # "13-60" (keV)
    e_min_kev: float
    e_max_kev: float
    obs_id: str
    role: str = "observation"


def validate_alert(alert: TransientAlert) -> None:
    """Raise EcpiError naming the first field that a VOEvent cannot carry as given."""
    def fail(field, expected):
        raise EcpiError(f"alert {alert.event_id!r}: {field} = {getattr(alert, field)!r}; "
                        f"expected {expected}")

    if not isinstance(alert.event_id, str) or not _EVENT_ID.fullmatch(alert.event_id):
        fail("event_id", "1-64 letters, digits, '-' or '_'")
    if not isinstance(alert.name, str) or not _SOURCE_NAME.fullmatch(alert.name):
        fail("name", "'ECL Jhhmmss.s+ddmmss'")
    if not _finite(alert.ra_deg) or not 0.0 <= alert.ra_deg < 360.0:
        fail("ra_deg", "a finite value in [0, 360)")
    if not _finite(alert.dec_deg) or not -90.0 <= alert.dec_deg <= 90.0:
        fail("dec_deg", "a finite value in [-90, 90]")
    if not _finite(alert.error_radius_deg) or not 0.0 < alert.error_radius_deg <= 180.0:
        fail("error_radius_deg", "a finite value in (0, 180]")
    try:
        datetime.datetime.fromisoformat(str(alert.time_utc))
    except ValueError:
        fail("time_utc", "an ISO 8601 date and time")
    for field in ("window_start", "window_length", "snr", "e_min_kev", "e_max_kev"):
        if not _finite(getattr(alert, field)):
            fail(field, "a finite number")
    if alert.window_length <= 0:
        fail("window_length", "> 0 s")
    if not 0 < alert.e_min_kev < alert.e_max_kev:
        fail("e_max_kev", f"above e_min_kev = {alert.e_min_kev} > 0")
    if not isinstance(alert.band, str) or not _BAND.fullmatch(alert.band):
        fail("band", "'<e_min>-<e_max>' in keV, e.g. '13-60'")
    if not isinstance(alert.obs_id, str) or not alert.obs_id.strip():
        fail("obs_id", "a non-empty string")
    if alert.role not in ROLES:
        fail("role", " or ".join(ROLES))


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def alert_ivorn(event_id: str, sequence: int = 0) -> str:
    """IVORN of an alert document: the first (sequence 0) or its n-th update."""
    fragment = event_id if sequence == 0 else f"{event_id}.{int(sequence)}"
    return f"{STREAM_IVORN}#{fragment}"


def alert_file_name(alert: TransientAlert, sequence: int = 0) -> str:
    """'ECL-ALERT_<event_id>_<sequence>.xml', from validated parts only."""
    validate_alert(alert)
    return f"ECL-ALERT_{alert.event_id}_{_checked_sequence(sequence)}.xml"


def _checked_sequence(sequence) -> int:
    if isinstance(sequence, bool) or not isinstance(sequence, int) or sequence < 0:
        raise EcpiError(f"VOEvent sequence {sequence!r}: expected an integer >= 0")
    return sequence


def _sub(parent, tag: str, text=None, **attributes):
    element = ElementTree.SubElement(parent, tag, {k: str(v) for k, v in attributes.items()})
    if text is not None:
        element.text = str(text)
    return element


def _param(parent, name, value, data_type, unit=None, ucd=None, description=None):
    attributes = {"name": name, "value": value, "dataType": data_type}
    if unit:
        attributes["unit"] = unit
    if ucd:
        attributes["ucd"] = ucd
    element = _sub(parent, "Param", **attributes)
    if description:
        _sub(element, "Description", description)
    return element


def voevent_xml(alert: TransientAlert, sequence: int = 0) -> bytes:
    """The VOEvent 2.0 document (UTF-8 bytes) of an alert; sequence > 0 is an update."""
    validate_alert(alert)
    sequence = _checked_sequence(sequence)
    root = ElementTree.Element(f"{{{VOEVENT_NAMESPACE}}}VOEvent", {
        "version": "2.0", "role": alert.role, "ivorn": alert_ivorn(alert.event_id, sequence),
        f"{{{XSI_NAMESPACE}}}schemaLocation": SCHEMA_LOCATION})

    who = _sub(root, "Who")
    _sub(who, "AuthorIVORN", AUTHOR_IVORN)
    _sub(who, "Date", datetime.datetime.now(datetime.timezone.utc)
         .strftime("%Y-%m-%dT%H:%M:%S"))
    author = _sub(who, "Author")
    _sub(author, "title", "ECLAIRs ground pipeline (ecpi_beam)")
    _sub(author, "shortName", "ECL")

    what = _sub(root, "What")
    _param(what, "Sequence", sequence, "int", ucd="meta.number",
           description="0 for the first alert of this transient, n for its n-th update")
    _param(what, "Event_ID", alert.event_id, "string", ucd="meta.id")
    _param(what, "Source_Name", alert.name, "string", ucd="meta.id")
    _param(what, "OBS_ID", alert.obs_id, "string", ucd="meta.id;obs")
    _param(what, "SNR", f"{alert.snr:.2f}", "float", unit="sigma", ucd="stat.snr")
    energy = _sub(what, "Group", name="Band", type="energy_band")
    _param(energy, "Band", alert.band, "string", unit="keV", ucd="instr.bandpass")
    _param(energy, "E_Min", f"{alert.e_min_kev:g}", "float", unit="keV", ucd="em.energy;stat.min")
    _param(energy, "E_Max", f"{alert.e_max_kev:g}", "float", unit="keV", ucd="em.energy;stat.max")
    window = _sub(what, "Group", name="Time_Window", type="time_interval")
    _param(window, "Window_Start", f"{alert.window_start:.3f}", "float", unit="s",
           ucd="time.start", description="mission TIME (TT s since MJDREF)")
    _param(window, "Window_Length", f"{alert.window_length:.3f}", "float", unit="s",
           ucd="time.duration")

    where_when = _sub(root, "WhereWhen")
    location = _sub(where_when, "ObsDataLocation")
    _sub(location, "ObservatoryLocation", id="GEOLUN")  # a low Earth orbit: geocentric
    observation = _sub(location, "ObservationLocation")
    _sub(observation, "AstroCoordSystem", id=COORD_SYSTEM)
    coords = _sub(observation, "AstroCoords", coord_system_id=COORD_SYSTEM)
    instant = _sub(_sub(coords, "Time", unit="s"), "TimeInstant")
    _sub(instant, "ISOTime", alert.time_utc)
    position = _sub(coords, "Position2D", unit="deg")
    _sub(position, "Name1", "RA")
    _sub(position, "Name2", "Dec")
    value = _sub(position, "Value2")
    _sub(value, "C1", f"{alert.ra_deg:.5f}")
    _sub(value, "C2", f"{alert.dec_deg:.5f}")
    _sub(position, "Error2Radius", f"{alert.error_radius_deg:.5f}")
    _sub(where_when, "Description",
         "Position in ICRS; Error2Radius is the 90 % containment radius in degrees.")

    how = _sub(root, "How")
    _sub(how, "Description", "SVOM/ECLAIRs coded-mask imaging, ecpi_beam IMAG component")

    why = _sub(root, "Why", importance="0.5")
    inference = _sub(why, "Inference", probability="0.5")
    _sub(inference, "Name", alert.name)
    _sub(inference, "Concept", "process.variation.burst;em.X-ray.hard")
    _sub(why, "Description", "Source above the detection threshold with no counterpart in the "
                             "known-source catalogue (ECL-SRC-CAT) within its error radius")

    if sequence > 0:
        citations = _sub(root, "Citations")
        _sub(citations, "EventIVORN", alert_ivorn(alert.event_id, 0), cite="supersedes")
        _sub(citations, "Description", f"update {sequence} of this transient")
    return ElementTree.tostring(root, encoding="UTF-8", xml_declaration=True)


def write_voevent(alert: TransientAlert, url: str, sequence: int = 0) -> str:
    """Write the VOEvent of an alert at `url` atomically (io layer); returns `url`."""
    return fs.put_atomic(voevent_xml(alert, sequence), url)
