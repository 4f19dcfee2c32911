"""Simulate one observation: scenario -> ICD input triplet + truth file (docs/simulator.md).

Time is cut into chunks (default 10 s), each chunk into steps (the whole chunk when the attitude
is stable, 1 s while slewing). In each step every sky component gives an expected count map
over the 80 x 80 pixels (attitude, Earth disc and mask shadow evaluated at mid-step), Poisson
counts per pixel, arrival times (uniform, or the GRB light curve) and energies (spectrum x
efficiency, then resolution and pixel gain/offset to PHA). A chunk's events are sorted and
streamed to the EVENTS table, so memory is bounded by one chunk.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from functools import partial

import numpy as np
from astropy.io import fits

from ecpi_beam import instrument
from ecpi_beam.errors import EcpiError
from ecpi_beam.simu import sky
from ecpi_beam.simu.detector import (STATUS_DEAD, STATUS_NOISY, DetectorResponse,
                                      redistribute)
from ecpi_beam.simu.orbit import AttitudePlan, aux_times
from ecpi_beam.simu.scenario import Scenario, orbit_state, saa_flags
from ecpi_beam.simu.writer import (EventFileWriter, common_keywords, primary_hdu, table_hdu,
                                   write_hdus_atomically)

SLEW_STEP_S = 1.0
FLAG_MULTIPLE = instrument.FLAG_MULTIPLE_PIXEL
FLAG_FORCED = instrument.FLAG_FORCED_TRIGGER
MAX_BACK_STEP_S = 100e-6
N_BANDS = len(instrument.DEFAULT_BANDS)


@dataclass
class Truth:
    """What was injected: written as truth_<name>.json next to the triplet."""
    name: str
    obs_id: str
    seed: int
    tstart: float
    tstop: float
    bands: list
    pointing: dict
    sources: list = field(default_factory=list)      # point sources and GRBs
    backgrounds: dict = field(default_factory=dict)  # component -> counts, as for sources
    # counts: expected_photons (detected photons before the 4 keV threshold), expected[band]
    # (mean counts per DEFAULT_BANDS band of measured energy), injected_total (events written),
    # injected[band] (events whose PI, from PHA through GAIN/OFFSET, falls in the band)
    n_events: int = 0
    gti: list = field(default_factory=list)
    files: dict = field(default_factory=dict)

    def to_json(self) -> str:
        """JSON with file names relative to the truth file's directory (the set can move)."""
        record = asdict(self)
        record["files"] = {k: os.path.basename(v) for k, v in self.files.items()}
        return json.dumps(record, indent=1)


# ============================================================================================
# Sky components
# ============================================================================================
class _Component:
    """One source of events: an expected-count map per step and an energy/time law."""
    kind = "background"

    def __init__(self, name: str):
        self.name = name
        self.expected = 0.0  # expected detected photons (before the 4 keV threshold)

    def counts_map(self, step) -> np.ndarray:
        raise NotImplementedError

    def measured_energies(self, n, rng) -> np.ndarray:
        raise NotImplementedError

    def times(self, step, n, rng) -> np.ndarray:
        return step.t_lo + rng.random(n) * (step.t_hi - step.t_lo)

    def band_fractions(self) -> np.ndarray:
        raise NotImplementedError


class _PhotonComponent(_Component):
    """Photons with a spectrum: true energies drawn from spectrum x efficiency, then measured."""

    def __init__(self, name, spectrum, response, bands=instrument.DEFAULT_BANDS):
        super().__init__(name)
        self.sampler = sky.EnergySampler.fold(spectrum, response.efficiency, bands)

    def measured_energies(self, n, rng):
        return redistribute(self.sampler.draw(n, rng), rng)

    def band_fractions(self):
        return self.sampler.band_fractions


class PointSourceComponent(_PhotonComponent):
    kind = "point"

    def __init__(self, source, spectrum, response, bands=instrument.DEFAULT_BANDS):
        super().__init__(source.name, spectrum, response, bands)
        self.source = source
        self.direction = instrument.radec_to_unit(source.ra, source.dec)

    def visible_map(self, step) -> np.ndarray:
        """Detected photons per pixel per unit folded flux over the step (0 if occulted)."""
        if step.earth_hides(self.direction):
            return np.zeros((instrument.N_PIX, instrument.N_PIX))
        los = step.rotation.T @ self.direction
        return step.response.point_source_map(los)

    def counts_map(self, step):
        return self.visible_map(step) * self.sampler.folded_integral * step.duration


class GrbComponent(PointSourceComponent):
    kind = "grb"

    def counts_map(self, step):
        lo, hi = step.t_lo - step.tstart, step.t_hi - step.tstart
        exposure = sky.fred_integral(self.source, lo, hi)
        if exposure <= 0.0:
            return np.zeros((instrument.N_PIX, instrument.N_PIX))
        return self.visible_map(step) * self.sampler.folded_integral * exposure

    def times(self, step, n, rng):
        lo, hi = step.t_lo - step.tstart, step.t_hi - step.tstart
        return step.tstart + sky.sample_fred_times(self.source, lo, hi, n, rng)


class DiffuseComponent(_PhotonComponent):
    """CXB (sky not hidden by the Earth) or albedo (the Earth disc), seen through the mask."""

    def __init__(self, name, spectrum, response, scale, from_earth: bool,
                 bands=instrument.DEFAULT_BANDS):
        super().__init__(name, lambda e: scale * spectrum(e), response, bands)
        self.from_earth = from_earth

    def counts_map(self, step):
        weight = step.sky_weight(self.from_earth)
        if not weight.any():
            return np.zeros((instrument.N_PIX, instrument.N_PIX))
        return step.diffuse_map(self.from_earth) * self.sampler.folded_integral * step.duration


class FlatComponent(_Component):
    """Counts/s per pixel flat in measured energy over a band (particles, noisy pixels)."""

    def __init__(self, name, rate_map, band, bands=instrument.DEFAULT_BANDS):
        super().__init__(name)
        self.rate_map, self.band, self.bands = rate_map, band, bands

    def counts_map(self, step):
        return self.rate_map * step.duration

    def measured_energies(self, n, rng):
        return self.band[0] + rng.random(n) * (self.band[1] - self.band[0])

    def band_fractions(self):
        return sky.flat_band_fractions(*self.band, bands=self.bands)


# ============================================================================================
# A time step: attitude, Earth, cached diffuse templates
# ============================================================================================
class SkyGrid:
    """Sky-grid directions, solid angles and a cache of diffuse detector maps."""

    def __init__(self, response: DetectorResponse):
        self.los = instrument.sky_grid_los()
        self.weight = instrument.sky_pixel_solid_angle() * self.los[..., 0]  # Omega x u_x
        self.response = response
        self._cache_key, self._cache = None, {}

    def hidden(self, rotation, earth_dir, earth_radius, earth_on: bool):
        if not earth_on:
            return np.zeros(self.weight.shape, dtype=bool)
        icrs = self.los @ rotation.T
        return icrs @ earth_dir > np.cos(earth_radius)

    def diffuse_map(self, hidden, from_earth):
        key = (hidden.tobytes(), from_earth)
        if key not in self._cache:
            if len(self._cache) > 8:
                self._cache.clear()
            weight = self.weight * (hidden if from_earth else ~hidden)
            self._cache[key] = self.response.diffuse_map(weight)
        return self._cache[key]


@dataclass
class _Step:
    t_lo: float
    t_hi: float
    tstart: float
    rotation: np.ndarray
    earth_dir: np.ndarray
    earth_radius: float
    earth_on: bool
    response: DetectorResponse
    grid: SkyGrid
    _hidden: np.ndarray | None = None

    @property
    def duration(self) -> float:
        return self.t_hi - self.t_lo

    def earth_hides(self, direction) -> bool:
        return self.earth_on and float(direction @ self.earth_dir) > np.cos(self.earth_radius)

    def hidden(self):
        if self._hidden is None:
            self._hidden = self.grid.hidden(self.rotation, self.earth_dir, self.earth_radius,
                                            self.earth_on)
        return self._hidden

    def sky_weight(self, from_earth):
        return self.hidden() if from_earth else ~self.hidden()

    def diffuse_map(self, from_earth):
        return self.grid.diffuse_map(self.hidden(), from_earth)


# ============================================================================================
# Driver
# ============================================================================================
def build_components(scenario: Scenario, response: DetectorResponse,
                     bands=instrument.DEFAULT_BANDS) -> list[_Component]:
    """The scenario's sources of events; `band_fractions()` of each refers to `bands` (PI
    ranges; the event files use DEFAULT_BANDS for the truth counts)."""
    bkg = scenario.background
    components: list[_Component] = [
        PointSourceComponent(s, partial(sky.power_law, norm=s.norm, index=s.index), response,
                             bands)
        for s in scenario.sources]
    components += [GrbComponent(g, sky.grb_spectrum(g), response, bands) for g in scenario.grbs]
    if bkg.cxb and bkg.cxb_scale > 0:
        components.append(DiffuseComponent(
            "cxb", lambda e: sky.cxb_spectrum(e, bkg.cxb_model), response, bkg.cxb_scale, False,
            bands))
    if bkg.albedo and bkg.earth and bkg.albedo_scale > 0:
        components.append(DiffuseComponent("albedo", sky.albedo_spectrum, response,
                                           bkg.albedo_scale, True, bands))
    alive = (response.status != STATUS_DEAD).astype(float)
    if bkg.internal_rate > 0:
        # detected particle/internal counts scale with the pixel efficiency like photons do
        components.append(FlatComponent("internal", bkg.internal_rate * alive * response.effic,
                                        bkg.internal_band, bands))
    noisy = (response.status == STATUS_NOISY).astype(float)
    if bkg.noisy_rate > 0 and noisy.any():
        components.append(FlatComponent("noisy", bkg.noisy_rate * noisy, bkg.noisy_band, bands))
    return components


def _steps(scenario, plan, response, grid, t_lo, t_hi):
    """Steps of one chunk: one if the attitude is stable throughout, else SLEW_STEP_S long."""
    probe = np.linspace(t_lo, t_hi, max(2, int(np.ceil(t_hi - t_lo)) + 1))
    if plan.is_stable(probe).all():
        edges = np.array([t_lo, t_hi])
    else:
        edges = np.unique(np.append(np.arange(t_lo, t_hi, SLEW_STEP_S), t_hi))
    mids = 0.5 * (edges[1:] + edges[:-1])
    rotations = instrument.attitude_matrix(plan.quaternions(mids))
    position, _ = orbit_state(scenario.orbit, scenario.tstart, mids)
    earth_dir, earth_radius = instrument.earth_direction_and_radius(position)
    for k in range(len(mids)):
        yield _Step(edges[k], edges[k + 1], scenario.tstart, rotations[k], earth_dir[k],
                    float(earth_radius[k]), scenario.background.earth, response, grid)


def expected_counts(scenario: Scenario, response: DetectorResponse, bands,
                    *, chunk_seconds: float = 10.0, grid=None) -> tuple[list, np.ndarray]:
    """The mean of what simulate() draws, without events: (components, maps), maps[k, b] the
    (80, 80) mean counts of component k whose measured energy falls in band b (PI ranges),
    summed over the observation's stable attitude (slews are left out, as the pipeline's good
    time leaves them out) and its telemetry-complete time. `grid` (a SkyGrid of `response`)
    may be shared between calls: it caches the diffuse maps."""
    plan = AttitudePlan(scenario)
    grid = grid or SkyGrid(response)
    components = build_components(scenario, response, tuple(bands))
    gaps = [(scenario.tstart + lo, scenario.tstart + hi)
            for lo, hi in scenario.detector.telemetry_gaps]
    maps = np.zeros((len(components), len(bands), instrument.N_PIX, instrument.N_PIX))
    edges = np.append(np.arange(scenario.tstart, scenario.tstop, chunk_seconds), scenario.tstop)
    for t_lo, t_hi in zip(edges[:-1], edges[1:]):
        for step in _steps(scenario, plan, response, grid, t_lo, t_hi):
            if not plan.is_stable(np.array([0.5 * (step.t_lo + step.t_hi)]))[0]:
                continue
            recorded = 1.0 - _overlap(step.t_lo, step.t_hi, gaps) / step.duration
            for index, component in enumerate(components):
                maps[index] += (recorded * component.counts_map(step))[None] \
                    * component.band_fractions()[:, None, None]
    return components, maps


def _clock_ticks(times, t_lo) -> np.ndarray:
    """Event times as ticks of the 20 us clock after the chunk start (itself on the clock)."""
    return np.floor((times - t_lo) / instrument.TIME_RESOLUTION_S).astype(np.int64)


_FORCED_INDEX = -1
_INDEX_BITS = 24  # sort key = tick << 24 | row: one fast integer sort instead of an argsort


class _Chunk:
    """Collects a chunk's events per component, then makes the file rows (dict of columns)."""

    def __init__(self, t_lo: float):
        self.t_lo = t_lo
        self.parts = []  # (component index, flat pixel index, clock ticks, measured energy)

    def add(self, index, pixels, ticks, energy):
        self.parts.append((index, pixels, ticks, energy))

    def rows(self, response, rng, multiple_fraction, gaps) -> dict[str, np.ndarray]:
        component = np.concatenate([np.full(len(p[1]), p[0], np.int16) for p in self.parts])
        pixels, ticks, energy = (np.concatenate([p[k] for p in self.parts]) for k in (1, 2, 3))
        time = self.t_lo + ticks * instrument.TIME_RESOLUTION_S
        keep = (energy >= instrument.LOW_THRESHOLD_KEV) | (component == _FORCED_INDEX)
        for gap_lo, gap_hi in gaps:  # forced triggers carry no threshold; gaps lose all
            keep &= ~((time >= gap_lo) & (time < gap_hi))
        kept = np.flatnonzero(keep)
        if len(kept) < 2**_INDEX_BITS:
            key = (ticks[kept] << _INDEX_BITS) | np.arange(len(kept))
            key.sort()
            order = kept[key & (2**_INDEX_BITS - 1)]
        else:
            order = kept[np.argsort(ticks[kept])]
        component, pixels, time, energy = component[order], pixels[order], time[order], energy[order]
        idet, jdet = np.divmod(pixels, instrument.N_PIX)
        flag = np.where(component == _FORCED_INDEX, FLAG_FORCED, 0).astype(np.uint8)
        flag |= (rng.random(len(order)) < multiple_fraction).astype(np.uint8) * FLAG_MULTIPLE
        return {"TIME": time, "IDET": idet, "JDET": jdet, "FLAG": flag,
                "PHA": response.to_pha(idet, jdet, energy), "COMPONENT": component}


def _band_lookup() -> np.ndarray:
    """PI channel -> index of its DEFAULT_BANDS band, N_BANDS when in none."""
    table = np.full(instrument.N_PI, N_BANDS, dtype=np.int64)
    for k, (lo, hi) in enumerate(instrument.DEFAULT_BANDS):
        table[lo:hi + 1] = k
    return table


def _gti(scenario) -> np.ndarray:
    """Telemetry-complete intervals: [TSTART, TSTOP] minus the scenario's telemetry gaps."""
    intervals = [[scenario.tstart, scenario.tstop]]
    for lo, hi in sorted(scenario.detector.telemetry_gaps):
        lo, hi = scenario.tstart + lo, scenario.tstart + hi
        last = intervals[-1]
        if lo < last[1] and hi > last[0]:
            intervals[-1:] = [i for i in ([last[0], lo], [hi, last[1]]) if i[1] > i[0]]
    return np.array(intervals, float)


def triplet_paths(out_dir: str, name: str) -> dict[str, str]:
    return {"events": os.path.join(out_dir, f"ECL-EVT-SEC_{name}.fits"),
            "attitude": os.path.join(out_dir, f"SVO-ATT-CNV_{name}.fits"),
            "orbit": os.path.join(out_dir, f"SVO-ORB-CNV_{name}.fits"),
            "truth": os.path.join(out_dir, f"truth_{name}.json")}


def write_attitude_and_orbit(scenario: Scenario, paths: dict, plan: AttitudePlan) -> None:
    times = aux_times(scenario)
    keywords = common_keywords(scenario.obs_id, scenario.tstart, scenario.tstop)
    quats = plan.quaternions(times)
    attitude = table_hdu("ATTITUDE", [
        fits.Column("TIME", "D", "s", array=times),
        fits.Column("QPARAM", "4D", array=quats),
        fits.Column("FLAG_ATT", "B", array=plan.flags(times))], keywords)
    position, velocity = orbit_state(scenario.orbit, scenario.tstart, times)
    orbit = table_hdu("ORBIT", [
        fits.Column("TIME", "D", "s", array=times),
        fits.Column("POSITION", "3D", "m", array=position),
        fits.Column("VELOCITY", "3D", "m/s", array=velocity),
        fits.Column("FLAG_PVT", "B", array=saa_flags(position, times))], keywords)
    write_hdus_atomically(paths["attitude"], [primary_hdu(keywords), attitude])
    write_hdus_atomically(paths["orbit"], [primary_hdu(keywords), orbit])


def simulate(scenario: Scenario, out_dir: str, caldb, *, chunk_seconds: float = 10.0) -> Truth:
    """Write ECL-EVT-SEC_/SVO-ATT-CNV_/SVO-ORB-CNV_<name>.fits and truth_<name>.json."""
    if chunk_seconds <= 0:
        raise EcpiError(f"chunk_seconds: got {chunk_seconds}, expected a positive number of s")
    os.makedirs(out_dir, exist_ok=True)
    paths = triplet_paths(out_dir, scenario.name)
    response = DetectorResponse.from_caldb(caldb)
    plan = AttitudePlan(scenario)
    rng = np.random.default_rng(scenario.seed)
    components = build_components(scenario, response)
    grid = SkyGrid(response)
    band_of_pi = _band_lookup()
    injected = np.zeros((len(components) + 1, N_BANDS + 1), dtype=np.int64)  # last row: forced
    gti = _gti(scenario)
    gaps = [(scenario.tstart + lo, scenario.tstart + hi) for lo, hi in
            scenario.detector.telemetry_gaps]
    det = scenario.detector
    alive = np.flatnonzero(response.status.ravel() != STATUS_DEAD)

    write_attitude_and_orbit(scenario, paths, plan)
    writer = EventFileWriter(paths["events"], common_keywords(
        scenario.obs_id, scenario.tstart, scenario.tstop, instrume="ECLAIRs"))
    try:
        edges = np.append(np.arange(scenario.tstart, scenario.tstop, chunk_seconds),
                          scenario.tstop)
        for t_lo, t_hi in zip(edges[:-1], edges[1:]):
            chunk = _Chunk(t_lo)
            for step in _steps(scenario, plan, response, grid, t_lo, t_hi):
                recorded = 1.0 - _overlap(step.t_lo, step.t_hi, gaps) / step.duration
                for index, component in enumerate(components):
                    expected = component.counts_map(step)
                    component.expected += float(expected.sum()) * recorded
                    counts = rng.poisson(expected).ravel()
                    pixels = np.repeat(np.arange(counts.size), counts)
                    chunk.add(index, pixels,
                              _clock_ticks(component.times(step, len(pixels), rng), t_lo),
                              component.measured_energies(len(pixels), rng))
            n_forced = rng.poisson(det.forced_trigger_rate * (t_hi - t_lo))
            pixels = rng.choice(alive, n_forced)
            chunk.add(_FORCED_INDEX, pixels,
                      _clock_ticks(t_lo + rng.random(n_forced) * (t_hi - t_lo), t_lo),
                      rng.random(n_forced) * instrument.LOW_THRESHOLD_KEV)  # pedestal readouts
            rows = chunk.rows(response, rng, det.multiple_fraction, gaps)
            if det.back_step_fraction > 0:
                _add_back_steps(rows["TIME"], det.back_step_fraction, rng, t_lo)
            writer.append(rows)
            # truth: injected counts per component and band, from the PHA the pipeline sees
            energy = response.gain[rows["IDET"], rows["JDET"]] * rows["PHA"] \
                + response.offset[rows["IDET"], rows["JDET"]]
            band = band_of_pi[instrument.energy_to_pi(energy)]
            component_row = np.where(rows["COMPONENT"] < 0, len(components), rows["COMPONENT"])
            injected += np.bincount(component_row * (N_BANDS + 1) + band,
                                    minlength=injected.size).reshape(injected.shape)
        writer.close(gti)
    except BaseException:
        writer.abort()
        raise

    truth = _make_truth(scenario, plan, components, injected, writer.n_rows, gti, paths)
    tmp = paths["truth"] + ".part"
    with open(tmp, "w") as stream:
        stream.write(truth.to_json())
    os.replace(tmp, paths["truth"])
    return truth


def _overlap(t_lo, t_hi, intervals) -> float:
    """Seconds of [t_lo, t_hi] inside the (disjoint) intervals."""
    return float(sum(max(0.0, min(t_hi, hi) - max(t_lo, lo)) for lo, hi in intervals))


def _add_back_steps(time, fraction, rng, t_lo):
    """Move a few events (never two in a row) up to 100 us before their predecessor."""
    picked = np.zeros(len(time), dtype=bool)
    picked[1:] = rng.random(max(len(time) - 1, 0)) < fraction
    picked[1:] &= ~picked[:-1]
    picks = np.flatnonzero(picked)
    time[picks] = np.maximum(time[picks - 1] - rng.random(len(picks)) * 0.999 * MAX_BACK_STEP_S,
                             t_lo)


def _make_truth(scenario, plan, components, injected, n_events, gti, paths) -> Truth:
    pointings = scenario.resolved_pointings()
    main = max(pointings, key=lambda p: (p.duration or scenario.duration - p.start))
    bands = [instrument.band_name(b) for b in instrument.DEFAULT_BANDS]

    def counts(index, component):
        return {"expected_photons": component.expected,
                "expected": list(component.expected * component.band_fractions()),
                "injected_total": int(injected[index].sum()),
                "injected": [int(v) for v in injected[index, :N_BANDS]]}

    sources, backgrounds = [], {}
    quat = instrument.quaternion_from_pointing(main.ra, main.dec, main.roll)
    for index, component in enumerate(components):
        if component.kind in ("point", "grb"):
            src = component.source
            los = instrument.radec_to_los(src.ra, src.dec, quat)
            row, col = instrument.los_to_sky_pixel(los)
            sources.append({"name": src.name, "kind": component.kind, "ra": src.ra,
                            "dec": src.dec, "spectrum": asdict(src),
                            "off_axis_deg": float(instrument.off_axis_angle_deg(los)),
                            "sky_pixel": [float(row), float(col)], **counts(index, component)})
        else:
            backgrounds[component.name] = counts(index, component)
    backgrounds["forced_triggers"] = {"injected_total": int(injected[-1].sum())}
    return Truth(name=scenario.name, obs_id=scenario.obs_id, seed=scenario.seed,
                 tstart=scenario.tstart, tstop=scenario.tstop, bands=bands,
                 pointing={"ra": main.ra, "dec": main.dec, "roll": main.roll,
                           "plan": [asdict(p) for p in pointings]},
                 sources=sources, backgrounds=backgrounds, n_events=int(n_events),
                 gti=gti.tolist(), files=paths)
