"""The user's parameter file (.ini) -> one frozen, typed `Params` object.

Keys, defaults and allowed values are the seed's (eclairs-gp installation page, "Filling the
parameter file"); the few extra keys are listed in docs/parameters.md. Every validation happens
here, and every mistake is one `EcpiError` line: "<file>: [section] key = <value>: <allowed>".
"""
from __future__ import annotations

import ast
import configparser
import dataclasses
import difflib
import hashlib
import json
import math
import os
from dataclasses import dataclass

from ecpi_beam import instrument
from ecpi_beam.errors import EcpiError
from ecpi_beam.io import fs  # pure fsspec, no Beam: lets the file and working_out be URLs
from ecpi_beam.kernels.timeline import POINTING_MIN_TIME_DEFAULT

LOGGER_LEVELS = ("debug", "info", "warning", "error", "critical")
CALI_PRODUCTS = ("ECL-GTI-CAL", "ECL-EVT-CAL")
BUBE_PRODUCTS = ("ECL-DET-IMA", "ECL-DET-UBC", "ECL-GTI-UBC", "ECL-EAR-OFM")
IMAG_PRODUCTS = ("ECL-SKY-IMA", "ECL-SOP-IMA")
DPCO_PRODUCTS: tuple[str, ...] = ()  # "No possible products at the time."
BACKGROUND_CORRECTIONS = ("no_correction", "flat", "shape", "flat_moretti", "shape_moretti",
                          "shape_moretti_earth", "shape_moretti_earth_ref",
                          "shape_moretti_smart")
IRF_CORRECTIONS = ("no_correction", "cos_theta", "irf")
MOSA_PRODUCTS = ("ECL-MOS-IMA", "ECL-MOS-SOP", "ECL-MOS-LCS")  # one per campaign
MOSA_ACCUMULATOR = "ECL-MOS-ACC"  # one per observation, whenever the campaign has a mosaic
SPEX_PRODUCTS = ("ECL-SPS-S1", "ECL-LCS-S1")
MOSAIC_GRIDS = ("healpix", "car")
SPEX_SOURCE_ORIGINS = ("imag", "mosaic")  # or a list of [RA, Dec]
DETECTION_SNR_DEFAULT = 7.0  # the seed's "Minimum value: 7"; snr_ths = 0 means this
CALDB_LOCAL = "@local"


@dataclass(frozen=True)
class GeneralParams:
    working_in: tuple[str, ...]
    working_out: str
    logger_level: str = "warning"
    caldb_dir: str = CALDB_LOCAL  # raw string; "@local" is resolved by the workspace module


@dataclass(frozen=True)
class DpcoParams:
    out_files: tuple[str, ...] = ()


@dataclass(frozen=True)
class CaliParams:
    out_files: tuple[str, ...] = ()
    chunk_size: int = 1_000_000  # events per chunk read from the EVENTS table


@dataclass(frozen=True)
class BubeParams:
    out_files: tuple[str, ...] = ()
    energy_channels: tuple[tuple[int, int], ...] = instrument.DEFAULT_BANDS
    ear_occ_bub: tuple[str, ...] = ("PEO",)
    bkg_cor_mod: tuple[str, ...] = ("shape_moretti_earth",)  # one per ear_occ_bub entry
    peof_min: float = instrument.PEOF_MIN_DEFAULT
    peof_max: float = instrument.PEOF_MAX_DEFAULT
    # s of good time a pointing other than the longest-held needs to be imaged (docs/imaging.md)
    pointing_min_time: float = POINTING_MIN_TIME_DEFAULT

    def correction_for(self, occ: str) -> str:
        """The background-correction mode chosen for occultation type `occ`."""
        return self.bkg_cor_mod[self.ear_occ_bub.index(occ)]


@dataclass(frozen=True)
class ImagParams:
    out_files: tuple[str, ...] = ()
    snr_ths: float = 0.0
    win_dim: float = 5.0
    irf_corr: str = "cos_theta"
    pcode_min: float = 0.1

    @property
    def effective_snr_threshold(self) -> float:
        """The seed's default snr_ths = 0 means "use the detection default" (7)."""
        return self.snr_ths if self.snr_ths > 0 else DETECTION_SNR_DEFAULT


@dataclass(frozen=True)
class MosaParams:
    out_files: tuple[str, ...] = ()
    grid: tuple[str, ...] = ("healpix",)  # 'healpix' (nested, ICRS) and/or 'car'
    nside: int = 0  # 0: the coarsest NSIDE whose pixels are finer than a third of the PSF
    car_pixel_deg: float = 0.25
    pcode_min: float = 0.1  # sky-image pixels less coded than this are left out of the mosaic
    snr_ths: float = DETECTION_SNR_DEFAULT  # detection threshold on the mosaic significance


@dataclass(frozen=True)
class SpexParams:
    out_files: tuple[str, ...] = ()
    sources: tuple[tuple[float, float], ...] = ()  # (RA, Dec) deg, when sources_from = 'list'
    sources_from: str = "imag"  # 'imag' (every source IMAG finds), 'mosaic' (MOSA's), 'list'
    time_bin: float = 1.0  # s, light-curve bin width
    pi_per_channel: int = 10  # PI channels (0.1 keV each) summed into one spectral channel


@dataclass(frozen=True)
class StreamParams:
    """[stream]: the streaming search (docs/streaming.md; `ecpi_run --streaming` only)."""

    window_lengths: tuple[int, ...] = (20, 80, 320, 1280)  # s, sliding event-time windows
    window_periods: tuple[int, ...] = (10, 40, 160, 640)  # s, one per length
    snr_ths: float = 7.0  # a NEW source is alerted above this SNR
    allowed_lateness: float = 120.0  # s of event time a slice may land after the watermark
    energy_channels: tuple[tuple[int, int], ...] = ((13, 1260),)  # PI bands searched
    match_radius: float = 60.0  # arcmin: one transient, several windows -> one alert
    poll_interval: float = 1.0  # s between two listings of working_in
    idle_after: float = 30.0  # wall s without a new slice: an observation stops holding
    idle_after_event: float = 60.0  # mission s covered by a later observation: likewise

    @property
    def tile_seconds(self) -> int:
        """Event-time step of the partial images: divides every window length and period."""
        return math.gcd(*self.window_lengths, *self.window_periods)

    @property
    def clock_step(self) -> int:
        """A multiple of every window period (s): shifting an observation by it keeps its
        windows (docs/streaming.md, "Watermark")."""
        return math.lcm(*self.window_periods)


# Parameters that only say where data lives or how the work is split: they never change a
# product's content, so they stay out of the fingerprint (PARHASH).
_NOT_IN_FINGERPRINT = {("general", "logger_level"), ("general", "working_in"),
                       ("general", "working_out"), ("cali", "chunk_size")}


@dataclass(frozen=True)
class Params:
    general: GeneralParams
    dpco: DpcoParams
    cali: CaliParams
    bube: BubeParams
    imag: ImagParams
    mosa: MosaParams = MosaParams()
    spex: SpexParams = SpexParams()
    stream: StreamParams = StreamParams()
    source: str = dataclasses.field(default="", compare=False)  # the file it came from

    def as_dict(self) -> dict:
        return {section.name: dataclasses.asdict(getattr(self, section.name))
                for section in dataclasses.fields(self) if section.name != "source"}

    def fingerprint(self) -> str:
        """Short sha256 of every parameter that can change a product (header PARHASH)."""
        canonical = {section: {key: value for key, value in values.items()
                               if (section, key) not in _NOT_IN_FINGERPRINT}
                     for section, values in self.as_dict().items()
                     if section != "stream"}  # batch products do not depend on [stream]
        text = json.dumps(canonical, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def wanted_products(self) -> tuple[str, ...]:
        return (self.dpco.out_files + self.cali.out_files + self.bube.out_files
                + self.imag.out_files + self.mosa.out_files + self.spex.out_files)

    @property
    def spex_from_mosaic(self) -> bool:
        """SPEX extracts the mosaic's sources: it runs once the campaign's mosaic is made."""
        return bool(self.spex.out_files) and self.spex.sources_from == "mosaic"

    @property
    def wants_mosaic(self) -> bool:
        return bool(self.mosa.out_files) or self.spex_from_mosaic

    @property
    def observation_products(self) -> tuple[str, ...]:
        """What each observation leaves in working_out once done in a campaign's waves: the
        products named after it, its mosaic accumulator instead of the campaign's MOSA
        products (made after the waves), and SPEX's unless it extracts the mosaic's sources
        (made after the mosaic)."""
        own = (self.dpco.out_files + self.cali.out_files + self.bube.out_files
               + self.imag.out_files)
        mosaic = (MOSA_ACCUMULATOR,) if self.wants_mosaic else ()
        spex = () if self.spex_from_mosaic else self.spex.out_files
        return own + mosaic + spex


# ============================================================================================
# Reading
# ============================================================================================
SECTIONS = {
    "general": ("logger_level", "working_in", "working_out", "caldb_dir"),
    "dpco": ("out_files",),
    "cali": ("out_files", "chunk_size"),
    "bube": ("energy_channels", "ear_occ_bub", "bkg_cor_mod", "out_files", "peof_min",
             "peof_max", "pointing_min_time"),
    "imag": ("snr_ths", "win_dim", "irf_corr", "out_files", "pcode_min"),
    "mosa": ("out_files", "grid", "nside", "car_pixel_deg", "pcode_min", "snr_ths"),
    "spex": ("out_files", "sources", "time_bin", "pi_per_channel"),
    "stream": ("window_lengths", "window_periods", "snr_ths", "allowed_lateness",
               "energy_channels", "match_radius", "poll_interval", "idle_after",
               "idle_after_event"),
}
MANDATORY = {("general", "working_in"), ("general", "working_out"), ("dpco", "out_files"),
             ("cali", "out_files"), ("bube", "out_files"), ("imag", "out_files")}


def load_params(path: str, check_paths: bool = True) -> Params:
    """Read and validate a parameter file (a local path or any fsspec URL)."""
    try:
        with fs.open_file(path, "rb") as stream:
            text = stream.read().decode("utf-8")
    except FileNotFoundError:
        raise EcpiError(f"{path}: parameter file not found") from None
    except UnicodeDecodeError as err:
        raise EcpiError(f"{path}: parameter file is not UTF-8 text ({err.reason})") from None
    return parse_params(text, source=path, check_paths=check_paths)


def parse_params(text: str, source: str = "<parameters>", check_paths: bool = True) -> Params:
    """Validate the text of a parameter file; `source` names it in error messages.

    `check_paths=False` skips the check that working_out exists (for tests and tools that
    only inspect a file).
    """
    reader = _SectionReader(_parse_ini(text, source), source)
    general = GeneralParams(
        working_in=reader.locations("general", "working_in"),
        working_out=reader.location("general", "working_out"),
        logger_level=reader.choice("general", "logger_level", LOGGER_LEVELS, "warning",
                                   case_insensitive=True),
        caldb_dir=reader.text("general", "caldb_dir", CALDB_LOCAL),
    )
    if check_paths:
        reader.check_output_location(general.working_out)
    ear_occ_bub = reader.names("bube", "ear_occ_bub", instrument.OCCULTATION_TYPES, ("PEO",))
    bube = BubeParams(
        out_files=reader.products("bube", BUBE_PRODUCTS),
        energy_channels=reader.bands("bube", "energy_channels"),
        ear_occ_bub=ear_occ_bub,
        bkg_cor_mod=reader.corrections(len(ear_occ_bub)),
        peof_min=reader.number("bube", "peof_min", instrument.PEOF_MIN_DEFAULT, 0.0, 1.0),
        peof_max=reader.number("bube", "peof_max", instrument.PEOF_MAX_DEFAULT, 0.0, 1.0),
        pointing_min_time=reader.number("bube", "pointing_min_time", POINTING_MIN_TIME_DEFAULT,
                                        1.0),
    )
    if not bube.peof_min < bube.peof_max:
        reader.fail("bube", "peof_max", bube.peof_max,
                    f"must be greater than peof_min = {bube.peof_min}")
    params = Params(
        general=general,
        dpco=DpcoParams(out_files=reader.products("dpco", DPCO_PRODUCTS)),
        cali=CaliParams(out_files=reader.products("cali", CALI_PRODUCTS),
                        chunk_size=int(reader.number("cali", "chunk_size", 1_000_000, 1000,
                                                     integer=True))),
        bube=bube,
        imag=ImagParams(
            out_files=reader.products("imag", IMAG_PRODUCTS),
            snr_ths=reader.snr_threshold(),
            # at most the sky image half size (ICD 1): a larger fit window holds no more sky
            win_dim=reader.number("imag", "win_dim", 5.0, 1.0, float(instrument.SKY_CENTRE)),
            irf_corr=reader.choice("imag", "irf_corr", IRF_CORRECTIONS, "cos_theta"),
            pcode_min=reader.number("imag", "pcode_min", 0.1, 0.0, 1.0, low_open=True),
        ),
        mosa=MosaParams(
            out_files=reader.names("mosa", "out_files", MOSA_PRODUCTS, ()),
            grid=reader.names("mosa", "grid", MOSAIC_GRIDS, ("healpix",)),
            nside=reader.nside(),
            car_pixel_deg=reader.number("mosa", "car_pixel_deg", 0.25, 0.0, 10.0, low_open=True),
            pcode_min=reader.number("mosa", "pcode_min", 0.1, 0.0, 1.0, low_open=True),
            snr_ths=reader.number("mosa", "snr_ths", DETECTION_SNR_DEFAULT, 3.0),
        ),
        spex=SpexParams(
            out_files=reader.names("spex", "out_files", SPEX_PRODUCTS, ()),
            sources=reader.positions("spex", "sources"),
            sources_from=reader.source_origin(),
            time_bin=reader.number("spex", "time_bin", 1.0, instrument.TIME_RESOLUTION_S),
            pi_per_channel=int(reader.number("spex", "pi_per_channel", 10, 1, instrument.N_PI,
                                             integer=True)),
        ),
        stream=reader.stream(),
        source=source,
    )
    return params


def _parse_ini(text: str, source: str) -> dict[str, dict[str, str]]:
    # No interpolation ('%' is legal in URLs); [DEFAULT] is not special, so it is reported
    # as an unknown section instead of silently leaking its keys into every section.
    parser = configparser.ConfigParser(interpolation=None, strict=True,
                                       default_section="\0no-default",
                                       inline_comment_prefixes=("#",), empty_lines_in_values=False)
    try:
        parser.read_string(text, source=source)
    except configparser.DuplicateOptionError as err:
        raise EcpiError(f"{source}: [{err.section}] {err.option}: key given twice "
                        f"(line {err.lineno}); keep one") from None
    except configparser.DuplicateSectionError as err:
        raise EcpiError(f"{source}: [{err.section}]: section given twice (line {err.lineno}); "
                        "merge them") from None
    except configparser.MissingSectionHeaderError as err:
        raise EcpiError(f"{source}: line {err.lineno}: {err.line.strip()!r} comes before any "
                        "[section] header; expected e.g. [general]") from None
    except configparser.Error as err:
        raise EcpiError(f"{source}: not a valid parameter file: {err.message}") from None
    sections = {name: dict(parser.items(name)) for name in parser.sections()}
    for name, values in sections.items():
        if name not in SECTIONS:
            raise EcpiError(f"{source}: [{name}]: unknown section{_did_you_mean(name, SECTIONS)}"
                            f"; allowed sections: {', '.join(SECTIONS)}")
        for key, value in values.items():
            if key not in SECTIONS[name]:
                raise EcpiError(f"{source}: [{name}] {key} = {value}: unknown key"
                                f"{_did_you_mean(key, SECTIONS[name])}; allowed keys: "
                                f"{', '.join(SECTIONS[name])}")
    return sections


def _did_you_mean(word: str, candidates) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


class _SectionReader:
    """Typed getters over the raw strings; each failure names file, section, key and value."""

    def __init__(self, sections: dict[str, dict[str, str]], source: str):
        self.sections = sections
        self.source = source

    def fail(self, section: str, key: str, value, allowed: str):
        raise EcpiError(f"{self.source}: [{section}] {key} = {value}: {allowed}")

    def raw(self, section: str, key: str) -> str:
        """The value as written, '' when absent or empty; a MANDATORY key must be present."""
        value = self.sections.get(section, {}).get(key)
        if value is None and (section, key) in MANDATORY:
            raise EcpiError(f"{self.source}: [{section}] {key}: MANDATORY key is missing")
        return (value or "").strip()

    def text(self, section: str, key: str, default: str) -> str:
        return self.raw(section, key) or default

    def choice(self, section, key, allowed, default, case_insensitive=False) -> str:
        value = self.raw(section, key).strip("'\"")
        if not value:
            return default
        if case_insensitive:
            value = value.lower()
        if value not in allowed:
            self.fail(section, key, value, f"expected one of {', '.join(allowed)}"
                      f"{_did_you_mean(value, allowed)}")
        return value

    def number(self, section, key, default, minimum=None, maximum=None, integer=False,
               low_open=False):
        """A finite number (never inf or nan: either would silently turn a stage off or make
        its arithmetic nonsense), within [minimum, maximum] where given."""
        value = self.raw(section, key)
        if not value:
            return default
        kind = "an integer" if integer else "a number"
        bounds = _range_text(minimum, maximum, low_open)
        try:
            number = int(value.replace("_", "")) if integer else float(value)
        except ValueError:
            self.fail(section, key, value, f"expected {kind}{bounds}")
        if not math.isfinite(number):
            self.fail(section, key, value, f"expected a finite number{bounds}")
        if (minimum is not None and (number < minimum or (low_open and number == minimum))) or (
                maximum is not None and number > maximum):
            self.fail(section, key, value, f"expected {kind}{bounds}")
        return number

    def literal(self, section, key, example):
        value = self.raw(section, key)
        try:
            return ast.literal_eval(value)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            self.fail(section, key, value, f"expected a Python list like {example}")

    def names(self, section, key, allowed, default, example=None) -> tuple[str, ...]:
        """A list of names: ['PEO', 'TEO'], or, leniently, a bare PEO or PEO, TEO."""
        value = self.raw(section, key)
        if not value:
            return default
        example = example or "[" + ", ".join(repr(name) for name in allowed[:2]) + "]"
        if value.startswith(("[", "(", "'", '"')):
            items = self.literal(section, key, example)
            items = [items] if isinstance(items, str) else items
        else:
            items = [item.strip() for item in value.split(",") if item.strip()]
        if not isinstance(items, (list, tuple)) or not all(isinstance(i, str) for i in items):
            self.fail(section, key, value, f"expected a Python list of names like {example}")
        for item in items:
            if item not in allowed:
                choices = ", ".join(repr(name) for name in allowed) or "none (use [])"
                self.fail(section, key, value, f"{item!r} is not allowed"
                          f"{_did_you_mean(item, allowed)}; allowed: {choices}")
        if len(set(items)) != len(items):
            self.fail(section, key, value, "each name may appear only once")
        return tuple(items) if items else default

    def products(self, section, allowed) -> tuple[str, ...]:
        self.raw(section, "out_files")  # MANDATORY even when it is []
        return self.names(section, "out_files", allowed, ())

    def bands(self, section, key) -> tuple[tuple[int, int], ...]:
        value = self.raw(section, key)
        example = "[[13,60],[61,140]]"
        if not value:
            return instrument.DEFAULT_BANDS
        bands = self.literal(section, key, example)
        if (isinstance(bands, (list, tuple)) and len(bands) == 2
                and all(isinstance(b, int) for b in bands)):
            bands = [bands]  # a single [lo, hi] pair is one band
        if not isinstance(bands, (list, tuple)) or not all(
                isinstance(b, (list, tuple)) and len(b) == 2
                and all(isinstance(c, int) and not isinstance(c, bool) for c in b)
                for b in bands):
            self.fail(section, key, value, f"expected a Python list like {example} "
                      "of [lo, hi] PI channel pairs")
        last = instrument.N_PI - 1
        for lo, hi in bands:
            if not 0 <= lo <= hi <= last:
                self.fail(section, key, value, f"band [{lo},{hi}] must have 0 <= lo <= hi <= "
                          f"{last} (PI channels of the RMF EBOUNDS)")
        result = tuple((int(lo), int(hi)) for lo, hi in bands)
        if len(set(result)) != len(result):
            self.fail(section, key, value, "each band may appear only once")
        return result or instrument.DEFAULT_BANDS

    def corrections(self, n_occultation_types: int) -> tuple[str, ...]:
        modes = self.names("bube", "bkg_cor_mod", BACKGROUND_CORRECTIONS, ("shape_moretti_earth",),
                           example="['shape_moretti_earth']")
        if len(modes) == 1:
            return modes * n_occultation_types
        # several modes: one per ear_occ_bub entry, in the same order
        if len(modes) != n_occultation_types:
            self.fail("bube", "bkg_cor_mod", self.raw("bube", "bkg_cor_mod"),
                      f"expected one mode, or one per ear_occ_bub entry "
                      f"({n_occultation_types}), got {len(modes)}")
        return modes

    def snr_threshold(self) -> float:
        """[imag] snr_ths: 0 (the default: 7) or a finite number >= 7."""
        value = self.raw("imag", "snr_ths")
        if not value:
            return 0.0
        try:
            number = float(value)
        except ValueError:
            number = None
        if number is None or (number != 0 and number < DETECTION_SNR_DEFAULT):
            self.fail("imag", "snr_ths", value, f"expected 0 (use the default "
                      f"{DETECTION_SNR_DEFAULT:g}) or a number >= {DETECTION_SNR_DEFAULT:g}")
        if not math.isfinite(number):  # inf would silently turn detection off
            self.fail("imag", "snr_ths", value, f"expected 0 (use the default "
                      f"{DETECTION_SNR_DEFAULT:g}) or a finite number >= "
                      f"{DETECTION_SNR_DEFAULT:g}" + ("; inf would turn detection off"
                                                      if number > 0 else ""))
        return number

    def nside(self) -> int:
        """[mosa] nside: 0 (automatic) or a power of two from 16 to 1024."""
        value = int(self.number("mosa", "nside", 0, 0, 1024, integer=True))
        if value and (value < 16 or value & (value - 1)):
            self.fail("mosa", "nside", self.raw("mosa", "nside"),
                      "expected 0 (automatic) or a power of two from 16 to 1024")
        return value

    def source_origin(self) -> str:
        """[spex] sources: 'imag' (the default, also for []), 'mosaic', or a list of positions."""
        value = self.raw("spex", "sources").strip("'\"")
        if value in SPEX_SOURCE_ORIGINS:
            return value
        return "list" if self.positions("spex", "sources") else "imag"

    def positions(self, section, key) -> tuple[tuple[float, float], ...]:
        """A list of [RA, Dec] pairs in degrees; [] or empty means none given."""
        value = self.raw(section, key)
        if value.strip("'\"") in SPEX_SOURCE_ORIGINS:
            return ()
        example = "[[83.63, 22.01], [299.59, 35.20]]"
        if not value:
            return ()
        items = self.literal(section, key, example)
        if (isinstance(items, (list, tuple)) and len(items) == 2
                and all(isinstance(v, (int, float)) for v in items)):
            items = [items]  # a single [RA, Dec] pair is one source
        if not isinstance(items, (list, tuple)) or not all(
                isinstance(p, (list, tuple)) and len(p) == 2
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in p)
                for p in items):
            self.fail(section, key, value, f"expected imag, mosaic or a Python list like "
                      f"{example} of [RA, Dec] pairs in degrees")
        for ra, dec in items:
            if not (0.0 <= ra < 360.0 and -90.0 <= dec <= 90.0):
                self.fail(section, key, value, f"[{ra}, {dec}]: expected 0 <= RA < 360 and "
                          "-90 <= Dec <= 90 (degrees)")
        return tuple((float(ra), float(dec)) for ra, dec in items)

    def seconds_list(self, section, key, default) -> tuple[int, ...]:
        value = self.raw(section, key)
        if not value:
            return default
        items = self.literal(section, key, str(list(default)))
        if not isinstance(items, (list, tuple)) or not items or not all(
                isinstance(i, int) and not isinstance(i, bool) and i > 0 for i in items):
            self.fail(section, key, value, f"expected a Python list of positive integer "
                      f"seconds like {list(default)}")
        return tuple(items)

    def stream(self) -> StreamParams:
        lengths = self.seconds_list("stream", "window_lengths", StreamParams.window_lengths)
        periods = self.seconds_list("stream", "window_periods",
                                    tuple(max(1, n // 2) for n in lengths)
                                    if self.raw("stream", "window_lengths")
                                    else StreamParams.window_periods)
        if len(periods) != len(lengths):
            self.fail("stream", "window_periods", self.raw("stream", "window_periods"),
                      f"expected one period per window length ({len(lengths)})")
        for length, period in zip(lengths, periods):
            if period > length:
                self.fail("stream", "window_periods", self.raw("stream", "window_periods"),
                          f"period {period} s is longer than its window ({length} s): "
                          "time would go unsearched")
        channels = (self.bands("stream", "energy_channels")
                    if self.raw("stream", "energy_channels") else StreamParams.energy_channels)
        return StreamParams(
            window_lengths=lengths, window_periods=periods,
            snr_ths=self.number("stream", "snr_ths", StreamParams.snr_ths, 3.0),
            allowed_lateness=self.number("stream", "allowed_lateness",
                                         StreamParams.allowed_lateness, 0.0),
            energy_channels=channels,
            match_radius=self.number("stream", "match_radius", StreamParams.match_radius, 0.0,
                                     low_open=True),
            poll_interval=self.number("stream", "poll_interval", StreamParams.poll_interval,
                                      0.0, low_open=True),
            idle_after=self.number("stream", "idle_after", StreamParams.idle_after, 0.0,
                                   low_open=True),
            idle_after_event=self.number("stream", "idle_after_event",
                                         StreamParams.idle_after_event, 0.0, low_open=True))

    def locations(self, section, key) -> tuple[str, ...]:
        """working_in: one directory, a glob, or several (comma-separated or a Python list)."""
        value = self.raw(section, key)
        if value.startswith("["):
            items = self.literal(section, key, "['input/obs1', 'input/obs2']")
            if not isinstance(items, (list, tuple)) or not all(
                    isinstance(i, str) for i in items):
                self.fail(section, key, value, "expected a Python list of directories like "
                          "['input/obs1', 'input/obs2']")
        else:
            items = value.replace("\n", ",").split(",")
        items = [_absolute(item.strip()) for item in items if item.strip()]
        if not items:
            self.fail(section, key, value, "expected a directory, a glob or a list of them")
        return tuple(items)

    def location(self, section, key) -> str:
        value = self.raw(section, key)
        if not value:
            self.fail(section, key, value, "expected a directory (local path or URL)")
        return _absolute(value)

    def check_output_location(self, url: str):
        if not fs.output_location_exists(url):
            self.fail("general", "working_out", url, "expected an existing directory "
                      "(create it first)")


def _range_text(minimum, maximum, low_open) -> str:
    """' >= 3.0', ' in (0.0, 1.0]' or '' (no bound)."""
    if minimum is None and maximum is None:
        return ""
    if maximum is None:
        return f" {'>' if low_open else '>='} {minimum}"
    if minimum is None:
        return f" <= {maximum}"
    return f" in {'(' if low_open else '['}{minimum}, {maximum}]"


def _absolute(location: str) -> str:
    """Local paths become absolute (workers may run elsewhere); URLs are kept as written."""
    if "://" in location:
        return location
    return os.path.abspath(os.path.expanduser(location))


# ============================================================================================
# Writing
# ============================================================================================
def params_text(working_in, working_out, caldb_dir=CALDB_LOCAL, *, logger_level="warning",
                cali_out=(), bube_out=(), imag_out=(), energy_channels=(), ear_occ_bub=("PEO",),
                bkg_cor_mod=("shape",), snr_ths=7, win_dim=5.0, irf_corr="cos_theta",
                extra: dict | None = None) -> str:
    """A seed-style parameter file (what a user writes by hand), for the demo, tests and
    benchmarks. `extra` maps a section to more `key: value` lines (e.g. {'cali': {...}})."""
    def listing(values):
        return "[" + ", ".join(repr(v) if isinstance(v, str) else str(list(v)) for v in values) + "]"

    sections = {
        "general": {"logger_level": logger_level, "working_in": working_in,
                    "working_out": working_out, "caldb_dir": caldb_dir},
        "dpco": {"out_files": "[]"},
        "cali": {"out_files": listing(cali_out)},
        "bube": {"energy_channels": listing(energy_channels), "ear_occ_bub": listing(ear_occ_bub),
                 "bkg_cor_mod": listing(bkg_cor_mod), "out_files": listing(bube_out)},
        "imag": {"snr_ths": snr_ths, "win_dim": win_dim, "irf_corr": irf_corr,
                 "out_files": listing(imag_out)},
    }
    for section, values in (extra or {}).items():
        sections.setdefault(section, {}).update(values)
    return "\n".join(f"[{name}]\n" + "".join(f"{key} = {value}\n" for key, value in values.items())
                     for name, values in sections.items())
