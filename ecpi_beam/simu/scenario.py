"""Simulation scenarios: frozen dataclasses, loaded from TOML or INI (docs/simulator.md).

A scenario says what the sky, the orbit, the attitude plan and the detector do during one
observation; `simulate` turns it into one ICD input triplet (ICD section 2). Times in a
scenario are seconds after the scenario's `tstart` (TT seconds since MJDREF), angles in degrees.
"""
from __future__ import annotations

import ast
import configparser
import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ecpi_beam import instrument
from ecpi_beam.errors import EcpiError


@dataclass(frozen=True)
class Pointing:
    """A stable attitude held from `start` for `duration` seconds (after the scenario tstart).

    `duration` None holds the pointing until the next one (or the end of the observation).
    Gaps between pointings are slews (FLAG_ATT 0x55).
    """
    ra: float
    dec: float
    roll: float = 0.0
    start: float = 0.0
    duration: float | None = None


@dataclass(frozen=True)
class Orbit:
    """Circular orbit; phase is the argument of latitude (deg from the ascending node) at tstart."""
    altitude_km: float = 625.0
    inclination_deg: float = 30.0
    raan_deg: float = 0.0
    phase_deg: float = 0.0


# The orbit and the SAA (ICD section 2: ORBIT table, FLAG_PVT; SCIENCE 'Earth and orbit'):
# circular Keplerian orbit in ICRS (Earth-centred, m and m/s) of radius Earth radius
# (instrument.EARTH_RADIUS_KM) + altitude. SAA: geographic longitude from the ICRS position
# minus the Earth rotation angle (IAU 2000, with TT used for UT1: about 0.3 deg of error,
# irrelevant for a box), geocentric latitude; outer box lon -90..+40, lat -50..0 deg
# (FLAG_PVT 0x80), deep box lon -70..+10, lat -40..-10 deg (0x80 | 0x40).
GM_EARTH = 3.986004418e14  # m3 s-2
FLAG_OUTER_SAA = 0x80
FLAG_DEEP_SAA = 0x40
SAA_OUTER_BOX = ((-90.0, 40.0), (-50.0, 0.0))  # (lon range, lat range) deg
SAA_DEEP_BOX = ((-70.0, 10.0), (-40.0, -10.0))


def orbit_state(orbit: Orbit, tstart: float, times) -> tuple[np.ndarray, np.ndarray]:
    """ICRS position (n, 3) m and velocity (n, 3) m/s of the circular orbit at `times`."""
    radius = (instrument.EARTH_RADIUS_KM + orbit.altitude_km) * 1e3
    mean_motion = np.sqrt(GM_EARTH / radius**3)
    u = np.radians(orbit.phase_deg) + mean_motion * (np.asarray(times, float) - tstart)
    raan, inc = np.radians(orbit.raan_deg), np.radians(orbit.inclination_deg)
    node = np.array([np.cos(raan), np.sin(raan), 0.0])
    normal_in_plane = np.array([-np.sin(raan) * np.cos(inc), np.cos(raan) * np.cos(inc),
                                np.sin(inc)])
    cos_u, sin_u = np.cos(u)[:, None], np.sin(u)[:, None]
    position = radius * (cos_u * node + sin_u * normal_in_plane)
    velocity = radius * mean_motion * (-sin_u * node + cos_u * normal_in_plane)
    return position, velocity


def earth_rotation_angle(time_tt) -> np.ndarray:
    """Earth rotation angle (rad) at TT seconds since MJDREF (IAU 2000, UT1 ~ TT)."""
    days = instrument.MJDREFI + instrument.MJDREFF + np.asarray(time_tt, float) / 86400.0 - 51544.5
    return 2.0 * np.pi * ((0.7790572732640 + 1.00273781191135448 * days) % 1.0)


def geographic_lon_lat(position_m, time_tt) -> tuple[np.ndarray, np.ndarray]:
    """Geographic longitude in [-180, 180) and geocentric latitude (deg) under the spacecraft."""
    pos = np.asarray(position_m, float)
    lon = np.degrees(np.arctan2(pos[:, 1], pos[:, 0]) - earth_rotation_angle(time_tt))
    lat = np.degrees(np.arcsin(pos[:, 2] / np.linalg.norm(pos, axis=1)))
    return (lon + 180.0) % 360.0 - 180.0, lat


def saa_flags(position_m, time_tt) -> np.ndarray:
    """FLAG_PVT: 0x80 inside the outer SAA box, plus 0x40 inside the deep box."""
    lon, lat = geographic_lon_lat(position_m, time_tt)

    def inside(box):
        (lon_lo, lon_hi), (lat_lo, lat_hi) = box
        return (lon >= lon_lo) & (lon <= lon_hi) & (lat >= lat_lo) & (lat <= lat_hi)

    return (np.where(inside(SAA_OUTER_BOX), FLAG_OUTER_SAA, 0)
            | np.where(inside(SAA_DEEP_BOX), FLAG_DEEP_SAA, 0)).astype(np.uint8)


@dataclass(frozen=True)
class PointSource:
    """Persistent source with a power law dN/dE = norm * E**-index (ph cm-2 s-1 keV-1, E in keV)."""
    name: str
    ra: float
    dec: float
    norm: float = 10.0
    index: float = 2.1


@dataclass(frozen=True)
class Grb:
    """Transient with a FRED light curve peaking at `t_peak` (s after tstart).

    Flux rises as exp((t - t_peak) / rise) and decays as exp(-(t - t_peak) / decay); the peak
    photon flux `peak_flux` (ph cm-2 s-1) is counted in `flux_band` (keV). Spectrum `cpl`
    (cut-off power law E**alpha exp(-E (2 + alpha) / epeak)) or `band` (Band et al. 1993).
    """
    name: str
    ra: float
    dec: float
    t_peak: float = 100.0
    peak_flux: float = 10.0
    flux_band: tuple[float, float] = (15.0, 150.0)
    rise: float = 1.0
    decay: float = 10.0
    spectrum: str = "band"
    alpha: float = -1.0
    beta: float = -2.3
    epeak: float = 100.0


@dataclass(frozen=True)
class Background:
    """Background switches and scales.

    cxb: Moretti et al. 2009 ('moretti2009') or Ajello et al. 2008 ('ajello2008') sky through the
    mask; earth: the Earth disc hides the CXB; albedo: Ajello et al. 2008 Earth albedo from the
    disc; internal_rate: flat particle background (counts/s/pixel, flat in energy over
    internal_band keV); noisy_rate: extra counts/s in each CALDB-noisy pixel (flat in energy
    over noisy_band keV).
    """
    cxb: bool = True
    cxb_model: str = "moretti2009"
    cxb_scale: float = 1.0
    earth: bool = True
    albedo: bool = True
    albedo_scale: float = 1.0
    internal_rate: float = 0.1
    internal_band: tuple[float, float] = (4.0, 150.0)
    noisy_rate: float = 5.0
    noisy_band: tuple[float, float] = (4.0, 12.0)


@dataclass(frozen=True)
class Detector:
    """Event-level effects: FLAG bit 0 fraction, forced triggers (FLAG bit 1, counts/s),
    optional TIME back-steps (< 100 us, ICD tolerance), telemetry gaps [(start, stop), ...]
    in seconds after tstart (no events there; GTI excludes them)."""
    multiple_fraction: float = 0.01
    forced_trigger_rate: float = 0.1
    back_step_fraction: float = 0.0
    telemetry_gaps: tuple[tuple[float, float], ...] = ()


@dataclass(frozen=True)
class Scenario:
    name: str = "demo"
    obs_id: str = "0000000001"
    seed: int = 1
    tstart: float = 3.0e8
    duration: float = 1000.0
    pointings: tuple[Pointing, ...] = ()
    initial_slew_deg: float = 5.0
    orbit: Orbit = field(default_factory=Orbit)
    sources: tuple[PointSource, ...] = ()
    grbs: tuple[Grb, ...] = ()
    background: Background = field(default_factory=Background)
    detector: Detector = field(default_factory=Detector)

    def __post_init__(self):
        _validate(self)

    @property
    def tstop(self) -> float:
        return self.tstart + self.duration

    def resolved_pointings(self) -> tuple[Pointing, ...]:
        """The pointing plan; with none given, one anti-solar pointing after a 20 s slew."""
        if self.pointings:
            return self.pointings
        ra, dec = antisolar_radec(self.tstart)
        return (Pointing(ra=ra, dec=dec, roll=0.0, start=min(20.0, self.duration / 10.0)),)


# ============================================================================================
# Validation
# ============================================================================================
def _validate(s: Scenario) -> None:
    def bad(key, value, expected):
        raise EcpiError(f"key '{key}': got {value!r}, expected {expected}")

    if not (isinstance(s.obs_id, str) and len(s.obs_id) == 10 and s.obs_id.isdigit()):
        bad("obs_id", s.obs_id, "a string of 10 digits")
    if not s.name or any(c in s.name for c in "/\\ "):
        bad("name", s.name, "a non-empty name without '/' or spaces")
    if not s.duration > 0:
        bad("duration", s.duration, "a positive number of seconds")
    if not 100.0 < s.orbit.altitude_km < 1e5:
        bad("orbit.altitude_km", s.orbit.altitude_km, "an altitude in km above 100")
    for k, p in enumerate(s.pointings):
        if not -90.0 <= p.dec <= 90.0:
            bad(f"pointings[{k}].dec", p.dec, "a declination in [-90, 90] deg")
        if p.duration is not None and p.duration <= 0:
            bad(f"pointings[{k}].duration", p.duration, "a positive duration or none")
        if k and p.start < pointing_end(s.pointings[k - 1]):
            bad(f"pointings[{k}].start", p.start, "a start after the previous pointing's end")
    for k, src in enumerate(s.sources):
        if not -90.0 <= src.dec <= 90.0:
            bad(f"sources[{k}].dec", src.dec, "a declination in [-90, 90] deg")
        if src.norm < 0:
            bad(f"sources[{k}].norm", src.norm, "a non-negative flux normalisation")
    for k, grb in enumerate(s.grbs):
        if grb.spectrum not in ("band", "cpl"):
            bad(f"grbs[{k}].spectrum", grb.spectrum, "'band' or 'cpl'")
        if grb.rise <= 0 or grb.decay <= 0:
            bad(f"grbs[{k}].rise/decay", (grb.rise, grb.decay), "positive times in s")
        if grb.spectrum == "cpl" and grb.alpha <= -2:
            bad(f"grbs[{k}].alpha", grb.alpha, "alpha > -2 for a cut-off power law")
    if s.background.cxb_model not in ("moretti2009", "ajello2008"):
        bad("background.cxb_model", s.background.cxb_model, "'moretti2009' or 'ajello2008'")
    for key in ("cxb_scale", "albedo_scale", "internal_rate", "noisy_rate"):
        if getattr(s.background, key) < 0:
            bad(f"background.{key}", getattr(s.background, key), "a non-negative number")
    if not 0.0 <= s.detector.multiple_fraction <= 1.0:
        bad("detector.multiple_fraction", s.detector.multiple_fraction, "a fraction in [0, 1]")
    if not 0.0 <= s.detector.back_step_fraction <= 0.01:
        bad("detector.back_step_fraction", s.detector.back_step_fraction, "a fraction in [0, 0.01]")
    for gap in s.detector.telemetry_gaps:
        if len(gap) != 2 or not gap[0] < gap[1]:
            bad("detector.telemetry_gaps", gap, "pairs [start, stop] with start < stop")


def pointing_end(p: Pointing) -> float:
    return p.start if p.duration is None else p.start + p.duration


# ============================================================================================
# Sun direction (default anti-solar pointing)
# ============================================================================================
def antisolar_radec(time_tt: float) -> tuple[float, float]:
    """RA/Dec (deg) opposite to the Sun at TT seconds since MJDREF.

    Low-precision solar coordinates of the Astronomical Almanac (about 0.01 deg), referred to
    the J2000 equinox; enough for a default attitude law.
    """
    days = instrument.MJDREFI + instrument.MJDREFF + time_tt / 86400.0 - 51544.5  # since J2000
    mean_longitude = np.radians(280.460 + 0.9856474 * days)
    anomaly = np.radians(357.528 + 0.9856003 * days)
    ecl_lon = mean_longitude + np.radians(1.915 * np.sin(anomaly) + 0.020 * np.sin(2 * anomaly))
    ecl_lon -= np.radians(1.397 * days / 36525.0)  # precession: equinox of date -> J2000 (ICRS)
    obliquity = np.radians(23.439)
    sun = np.array([np.cos(ecl_lon), np.cos(obliquity) * np.sin(ecl_lon),
                    np.sin(obliquity) * np.sin(ecl_lon)])
    ra, dec = instrument.unit_to_radec(-sun)
    return float(ra), float(dec)


# ============================================================================================
# Loading from TOML / INI
# ============================================================================================
_LIST_KEYS = {"pointings": Pointing, "sources": PointSource, "grbs": Grb}
_SECTION_KEYS = {"orbit": Orbit, "background": Background, "detector": Detector}


def load_scenario(path) -> Scenario:
    """Read a scenario from a .toml file, or an .ini file (docs/simulator.md)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise EcpiError(f"{path}: cannot read the scenario file ({err.strerror})") from None
    if path.suffix.lower() in (".ini", ".cfg"):
        raw = _ini_to_dict(text, path)
    else:
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise EcpiError(f"{path}: not valid TOML ({err})") from None
    return scenario_from_dict(raw, source=str(path))


def scenario_from_dict(raw: dict, source: str = "scenario") -> Scenario:
    """Build a Scenario from a nested dict (TOML layout); errors name the key."""
    kwargs = {}
    for key, value in raw.items():
        if key in _LIST_KEYS:
            if not isinstance(value, list):
                raise EcpiError(f"{source}: key '{key}' must be a list of tables ([[{key}]])")
            kwargs[key] = tuple(_build(_LIST_KEYS[key], item, f"{key}[{k}]", source)
                                for k, item in enumerate(value))
        elif key in _SECTION_KEYS:
            kwargs[key] = _build(_SECTION_KEYS[key], value, key, source)
        else:
            kwargs[key] = value
    try:
        return _build(Scenario, kwargs, "", source)
    except EcpiError as err:
        msg = str(err)
        raise EcpiError(msg if msg.startswith(source) else f"{source}: {msg}") from None


def _build(cls, values, where: str, source: str):
    if not isinstance(values, dict):
        raise EcpiError(f"{source}: '{where}' must be a table of keys, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        full = f"{where}.{key}" if where else key
        if key not in names:
            raise EcpiError(f"{source}: unknown key '{full}' (known: {', '.join(sorted(names))})")
        kwargs[key] = value if dataclasses.is_dataclass(value) or (
            isinstance(value, tuple) and value and dataclasses.is_dataclass(value[0])) \
            else _coerce(value, hints[key], full, source)
    missing = [f.name for f in dataclasses.fields(cls) if f.name not in kwargs
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise EcpiError(f"{source}: missing key '{where + '.' if where else ''}{missing[0]}'")
    try:
        return cls(**kwargs)
    except EcpiError as err:
        raise EcpiError(f"{source}: {err}") from None


def _coerce(value, hint, key: str, source: str):
    """Check and convert one value against its annotation (float, int, str, bool, tuples)."""
    def bad(expected):
        raise EcpiError(f"{source}: key '{key}': got {value!r}, expected {expected}")

    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "")):
            return None
        return _coerce(value, options[0], key, source)
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, (list, tuple)):
            bad("a list")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], key, source) for v in value)
        if len(value) != len(args):
            bad(f"a list of {len(args)} values")
        return tuple(_coerce(v, a, key, source) for v, a in zip(value, args))
    if hint is bool:
        if not isinstance(value, bool):
            bad("true or false")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
            bad("a number")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            bad("an integer")
        return value
    if hint is str:
        if not isinstance(value, str):
            bad("a string (quote it)")
        return value
    return value


def _ini_to_dict(text: str, path: Path) -> dict:
    """INI layout: [scenario] top-level keys, [orbit]/[background]/[detector], and one section
    per list item named 'pointing <label>', 'source <name>', 'grb <name>'. Values are Python
    literals (numbers, 'strings', [lists], True/False) or bare words taken as strings."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # keep key case
    try:
        parser.read_string(text, source=str(path))
    except configparser.Error as err:
        raise EcpiError(f"{path}: not a valid INI file ({err.message.splitlines()[0]})") from None
    plural = {"pointing": "pointings", "source": "sources", "grb": "grbs"}
    raw: dict = {}
    for section in parser.sections():
        values = {k: _ini_value(v) for k, v in parser.items(section)}
        kind, _, label = section.partition(" ")
        if section == "scenario":
            raw.update(values)
        elif section in _SECTION_KEYS:
            raw[section] = values
        elif kind in plural and label:
            if kind in ("source", "grb"):
                values.setdefault("name", label.strip())
            raw.setdefault(plural[kind], []).append(values)
        else:
            raise EcpiError(f"{path}: unknown section [{section}] (expected [scenario], [orbit], "
                            "[background], [detector], [pointing X], [source X], [grb X])")
    return raw


def _ini_value(text: str):
    text = text.strip()
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def scenario_with(base: Scenario | None = None, **changes) -> Scenario:
    """A copy of `base` (default: `Scenario()`) with fields replaced; nested sections may be
    given as dicts of changes, e.g. scenario_with(background={'cxb': False})."""
    base = Scenario() if base is None else base
    for key in ("orbit", "background", "detector"):
        if isinstance(changes.get(key), dict):
            changes[key] = replace(getattr(base, key), **changes[key])
    for key, cls in _LIST_KEYS.items():
        if key in changes:
            changes[key] = tuple(cls(**v) if isinstance(v, dict) else v for v in changes[key])
    return replace(base, **changes)


def default_scenario() -> Scenario:
    """The demo: ~1000 s anti-solar pointing, a Crab-like source on axis-ish, 0.3 and 0.1 Crab
    further off axis, CXB + internal background, the orbit phased to keep the Earth away."""
    base = Scenario(name="demo", obs_id="0000000001", seed=20260101, tstart=3.0e8,
                    duration=1000.0)
    pointing = base.resolved_pointings()[0]
    quat = instrument.quaternion_from_pointing(pointing.ra, pointing.dec, pointing.roll)
    offsets = {"CrabLike": (2.0, 3.0, 1.0), "Src0.3Crab": (-12.0, 6.0, 0.3),
               "Src0.1Crab": (9.0, -18.0, 0.1)}  # (LOS y, z off-axis in deg, Crab units)
    sources = []
    for name, (dy, dz, crab) in offsets.items():
        los = np.array([1.0, np.tan(np.radians(dy)), np.tan(np.radians(dz))])
        ra, dec = instrument.los_to_radec(los / np.linalg.norm(los), quat)
        sources.append(PointSource(name=name, ra=round(float(ra), 4), dec=round(float(dec), 4),
                                   norm=round(10.0 * crab, 6), index=2.1))
    orbit = replace(base.orbit, phase_deg=_phase_away_from(pointing, base))
    return replace(base, pointings=(pointing,), sources=tuple(sources), orbit=orbit)


def _phase_away_from(pointing: Pointing, scenario: Scenario) -> float:
    """Orbit phase at tstart placing the spacecraft above the pointing at mid observation,
    so that the Earth stays behind the instrument, among the phases whose observation never
    enters the SAA (a demo without occultation and without lost time)."""
    target = instrument.radec_to_unit(pointing.ra, pointing.dec)
    times = scenario.tstart + np.linspace(0.0, scenario.duration, 51)
    t_mid = np.array([scenario.tstart + scenario.duration / 2.0])

    def score(phase):
        orbit = replace(scenario.orbit, phase_deg=phase)
        positions = orbit_state(orbit, scenario.tstart, times)[0]
        outside_saa = not np.any(saa_flags(positions, times))
        return (outside_saa, float(orbit_state(orbit, scenario.tstart, t_mid)[0][0] @ target))

    return float(max(np.arange(0.0, 360.0, 1.0), key=score))
