"""Simulator: shadows, spectra, backgrounds, files, orbit, attitude, streaming, scenarios."""
import dataclasses
import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from ecpi_beam import instrument
from ecpi_beam.caldb import Caldb, default_caldb_dir
from ecpi_beam.errors import EcpiError
from ecpi_beam.simu import (Background, Detector, Grb, Orbit, PointSource, Pointing,
                            default_scenario, load_scenario, scenario_with, simulate)
from ecpi_beam.simu import cli
from ecpi_beam.simu.detector import DetectorResponse, open_fraction
from ecpi_beam.simu.orbit import AttitudePlan
from ecpi_beam.simu.scenario import earth_rotation_angle, orbit_state, saa_flags

SCENARIOS = Path(__file__).resolve().parents[1] / "ecpi_beam" / "simu" / "scenarios"
RA0, DEC0 = 120.0, -10.0
NO_BACKGROUND = Background(cxb=False, earth=False, albedo=False, internal_rate=0.0, noisy_rate=0.0)
QUIET_DETECTOR = Detector(multiple_fraction=0.0, forced_trigger_rate=0.0)


@pytest.fixture(scope="module")
def caldb():
    return Caldb.open(default_caldb_dir())


@pytest.fixture(scope="module")
def response(caldb):
    return DetectorResponse.from_caldb(caldb)


def source_at(dy_deg, dz_deg, norm=100.0, index=2.1, name="S"):
    """A power-law source at LOS tangent offsets (deg) from the pointing (RA0, DEC0, roll 0)."""
    los = np.array([1.0, np.tan(np.radians(dy_deg)), np.tan(np.radians(dz_deg))])
    los /= np.linalg.norm(los)
    ra, dec = instrument.los_to_radec(los, instrument.quaternion_from_pointing(RA0, DEC0))
    return PointSource(name=name, ra=float(ra), dec=float(dec), norm=norm, index=index), los


def bright_source_scenario(los_offsets, duration=40.0, name="bright"):
    source, los = source_at(*los_offsets)
    scenario = scenario_with(name=name, duration=duration, pointings=(Pointing(RA0, DEC0),),
                             sources=(source,), background=NO_BACKGROUND, detector=QUIET_DETECTOR,
                             orbit={"phase_deg": 0.0}, seed=3)
    return scenario, los


def read_events(path):
    with fits.open(path) as hdul:
        return hdul["EVENTS"].data.copy(), hdul["GTI"].data.copy()


def detector_image(events):
    image = np.zeros((instrument.N_PIX, instrument.N_PIX))
    np.add.at(image, (events["IDET"], events["JDET"]), 1)
    return image


def centre_shadow(pattern, los):
    """Shadow from instrument.mask_transmits at the pixel centres (independent of the simulator)."""
    centres = instrument.pixel_centre_mm(np.arange(instrument.N_PIX))
    z, y = np.meshgrid(centres, centres, indexing="ij")
    ym, zm = instrument.mask_crossing_mm(y, z, los)
    return instrument.mask_transmits(pattern, ym, zm).astype(float)


def subsampled_open_fraction(pattern, los, n_sub=16):
    """Open fraction of each pixel's 4 mm active area, by n_sub x n_sub sub-points."""
    offsets = (np.arange(n_sub) + 0.5) / n_sub * instrument.PIXEL_SIZE_MM - \
        instrument.PIXEL_SIZE_MM / 2.0
    centres = instrument.pixel_centre_mm(np.arange(instrument.N_PIX))
    z = (centres[:, None] + offsets[None, :]).ravel()
    zz, yy = np.meshgrid(z, z, indexing="ij")
    ym, zm = instrument.mask_crossing_mm(yy, zz, los)
    open_points = instrument.mask_transmits(pattern, ym, zm).astype(float)
    n = instrument.N_PIX
    return open_points.reshape(n, n_sub, n, n_sub).mean(axis=(1, 3))


# ============================================================================================
# Shadows
# ============================================================================================
@pytest.mark.parametrize("offsets", [(0.0, 0.0), (12.0, -7.0)], ids=["on-axis", "off-axis"])
def test_bright_source_image_is_the_mask_shadow(tmp_path, caldb, offsets):
    scenario, los = bright_source_scenario(offsets)
    truth = simulate(scenario, str(tmp_path), caldb)
    events, _ = read_events(truth.files["events"])
    image = detector_image(events)
    live = caldb.pixel_calibration().status != 2
    shadow = centre_shadow(caldb.mask_pattern(), los)
    r = np.corrcoef(image[live], shadow[live])[0, 1]
    assert r > 0.9, r
    assert image[~live].sum() == 0  # dead pixels give nothing
    assert truth.sources[0]["off_axis_deg"] == pytest.approx(
        float(instrument.off_axis_angle_deg(los)), abs=1e-3)


def test_exact_open_fraction_matches_subsampling(caldb):
    pattern = caldb.mask_pattern()
    for dy, dz in [(0.0, 0.0), (5.3, -21.0), (-30.0, 14.0)]:
        _, los = source_at(dy, dz)
        exact = open_fraction(pattern, los)
        assert np.abs(exact - subsampled_open_fraction(pattern, los)).max() < 0.07
        assert exact.mean() == pytest.approx(subsampled_open_fraction(pattern, los).mean(),
                                             abs=2e-3)


def test_diffuse_map_is_the_sum_of_point_source_shadows(response):
    """The FFT sky-grid correlation equals explicit per-direction shadows."""
    rng = np.random.default_rng(1)
    grid = instrument.sky_grid_los()
    weight = np.zeros((instrument.N_SKY, instrument.N_SKY))
    explicit = np.zeros((instrument.N_PIX, instrument.N_PIX))
    for row, col in rng.integers(20, 180, size=(6, 2)):
        weight[row, col] += 1.0
        explicit += instrument.PIXEL_AREA_CM2 * open_fraction(response.pattern, grid[row, col])
    np.testing.assert_allclose(response.diffuse_map(weight), explicit * response.live, atol=1e-9)


# ============================================================================================
# Spectra and rates
# ============================================================================================
def test_band_counts_follow_the_injected_spectrum(tmp_path, caldb):
    scenario, los = bright_source_scenario((4.0, 3.0), duration=30.0, name="spectrum")
    truth = simulate(scenario, str(tmp_path), caldb)
    events, _ = read_events(truth.files["events"])
    cal = caldb.pixel_calibration()
    energy = cal.gain[events["IDET"], events["JDET"]] * events["PHA"] + \
        cal.offset[events["IDET"], events["JDET"]]
    pi = instrument.energy_to_pi(energy)
    # expected independently: flux x pixel area x cos(theta) x open fraction x efficiency
    arf = caldb.arf()
    e_mid = 0.5 * (arf.energ_lo + arf.energ_hi)
    cdte = arf.specresp / (instrument.DETECTOR_AREA_CM2 * instrument.MASK_OPEN_FRACTION)
    area = (instrument.PIXEL_AREA_CM2 * los[0] * subsampled_open_fraction(caldb.mask_pattern(), los)
            * cal.effic * (cal.status != 2)).sum()
    source = scenario.sources[0]
    for band_index in (2, 3):  # 16-32 and 32-64 keV: away from the threshold
        lo, hi = instrument.band_energy_range(instrument.DEFAULT_BANDS[band_index])
        e = np.linspace(lo, hi, 2001)
        folded = np.trapezoid(source.norm * e ** -source.index * np.interp(e, e_mid, cdte), e)
        expected = folded * area * scenario.duration
        band = instrument.DEFAULT_BANDS[band_index]
        observed = np.count_nonzero((pi >= band[0]) & (pi <= band[1]))
        assert abs(observed - expected) < 4 * np.sqrt(expected) + 0.01 * expected, (
            band, observed, expected)
        assert truth.sources[0]["injected"][band_index] == observed
        assert truth.sources[0]["expected"][band_index] == pytest.approx(expected, rel=0.03)


def test_energy_sampler_draws_the_folded_spectrum():
    """Draws stay where spectrum x efficiency is non-zero and follow its shape."""
    from ecpi_beam.simu.sky import EnergySampler
    window = EnergySampler.fold(lambda e: e ** -2.0, lambda e: ((e > 10) & (e < 50)) * 1.0)
    energies = window.draw(200_000, np.random.default_rng(2))
    assert energies.min() >= 10.0 * 0.999 and energies.max() <= 50.0 * 1.001
    counts, _ = np.histogram(energies, bins=[10, 20, 30, 50])
    expected = np.array([1 / 10 - 1 / 20, 1 / 20 - 1 / 30, 1 / 30 - 1 / 50]) / (1 / 10 - 1 / 50)
    np.testing.assert_allclose(counts / len(energies), expected, atol=4e-3)
    assert window.folded_integral == pytest.approx(1 / 10 - 1 / 50, rel=2e-3)


def test_background_only_rate_is_realistic_and_earth_hides_cxb(tmp_path, caldb):
    base = default_scenario()
    quiet = scenario_with(base, name="bkg", duration=10.0, sources=())
    truth = simulate(quiet, str(tmp_path), caldb)
    rate = truth.n_events / quiet.duration
    assert 2000.0 < rate < 8000.0, rate
    assert truth.backgrounds["cxb"]["injected_total"] > truth.backgrounds["internal"][
        "injected_total"]
    assert truth.backgrounds["albedo"]["injected_total"] == 0  # demo: Earth out of the field
    # with the spacecraft on the far side of the Earth from the pointing, the Earth fills the
    # field: less CXB, some albedo
    pointing = instrument.radec_to_unit(base.pointings[0].ra, base.pointings[0].dec)
    facing_earth = min(np.arange(0.0, 360.0, 2.0), key=lambda phase: float(orbit_state(
        dataclasses.replace(quiet.orbit, phase_deg=phase), quiet.tstart,
        np.array([quiet.tstart]))[0][0] @ pointing))
    earthy = dataclasses.replace(quiet, name="earthy", orbit=dataclasses.replace(
        quiet.orbit, phase_deg=float(facing_earth)))
    hidden = simulate(earthy, str(tmp_path), caldb)
    assert hidden.backgrounds["cxb"]["injected_total"] < 0.5 * truth.backgrounds["cxb"][
        "injected_total"]
    assert hidden.backgrounds["albedo"]["injected_total"] > 0
    # turning the Earth off lets the whole CXB through
    no_earth = dataclasses.replace(earthy, name="noearth", background=dataclasses.replace(
        earthy.background, earth=False))
    open_sky = simulate(no_earth, str(tmp_path), caldb)
    assert open_sky.backgrounds["cxb"]["expected_photons"] == pytest.approx(
        truth.backgrounds["cxb"]["expected_photons"], rel=1e-3)  # the demo phase grazes the field corners


def test_grb_follows_its_fred_light_curve(tmp_path, caldb):
    source, _ = source_at(3.0, -2.0)
    grb = Grb(name="GRB", ra=source.ra, dec=source.dec, t_peak=10.0, peak_flux=50.0, rise=0.5,
              decay=3.0, spectrum="cpl", alpha=-0.8, epeak=150.0)
    scenario = scenario_with(name="grb", duration=30.0, pointings=(Pointing(RA0, DEC0),),
                             grbs=(grb,), background=NO_BACKGROUND, detector=QUIET_DETECTOR)
    truth = simulate(scenario, str(tmp_path), caldb, chunk_seconds=4.0)
    events, _ = read_events(truth.files["events"])
    t = events["TIME"] - scenario.tstart
    before, peak, late = (np.count_nonzero((t >= a) & (t < b)) for a, b in
                          [(0.0, 6.0), (10.0, 11.0), (25.0, 26.0)])
    assert peak > 1000 and before < 0.02 * peak
    assert late == pytest.approx(peak * np.exp(-15.5 / 3.0) / np.exp(-0.5 / 3.0), rel=0.3)
    total = truth.sources[0]
    injected, expected = sum(total["injected"]), sum(total["expected"])
    assert abs(injected - expected) < 4 * np.sqrt(expected) + 0.01 * expected
    assert total["injected_total"] < total["expected_photons"]  # some fall under 4 keV


# ============================================================================================
# Files
# ============================================================================================
def test_triplet_follows_the_icd_and_passes_fitsverify(tmp_path, caldb, fitsverify):
    scenario = scenario_with(default_scenario(), name="icd", duration=30.0, obs_id="0123456789",
                             detector={"telemetry_gaps": ((10.0, 12.0),),
                                       "back_step_fraction": 0.001, "forced_trigger_rate": 5.0})
    truth = simulate(scenario, str(tmp_path), caldb, chunk_seconds=7.0)
    for key in ("events", "attitude", "orbit"):
        fitsverify(truth.files[key])
        header = fits.getheader(truth.files[key], 0)
        assert header["TELESCOP"] == "SVOM" and header["OBS_ID"] == "0123456789"
        assert header["TSTART"] == scenario.tstart and header["TSTOP"] == scenario.tstop
        assert (header["MJDREFI"], header["MJDREFF"]) == (instrument.MJDREFI, instrument.MJDREFF)
        assert header["TIMESYS"] == "TT" and header["TIMEUNIT"] == "s"
    with fits.open(truth.files["events"]) as hdul:
        ev = hdul["EVENTS"]
        assert ev.header["INSTRUME"] == "ECLAIRs"
        assert [(c.name, c.format) for c in ev.columns] == [
            ("TIME", "D"), ("IDET", "B"), ("JDET", "B"), ("PHA", "I"), ("FLAG", "B")]
        data, gti = ev.data, hdul["GTI"].data
        assert len(data) == truth.n_events > 0
        assert gti.columns.names == ["START", "STOP"]
        np.testing.assert_allclose(np.column_stack([gti["START"], gti["STOP"]]), [
            [scenario.tstart, scenario.tstart + 10.0], [scenario.tstart + 12.0, scenario.tstop]])
        t = data["TIME"]
        assert np.all(np.diff(t) > -100e-6) and np.any(np.diff(t) < 0)
        assert not np.any((t >= scenario.tstart + 10.0) & (t < scenario.tstart + 12.0))
        assert t.min() >= scenario.tstart and t.max() < scenario.tstop
        assert data["PHA"].min() >= 0 and data["PHA"].max() <= 4095
        flags = data["FLAG"]
        assert 0.002 < np.mean(flags & 1 > 0) < 0.03
        assert np.count_nonzero(flags & 2) == truth.backgrounds["forced_triggers"][
            "injected_total"] > 0
    with fits.open(truth.files["attitude"]) as hdul:
        att = hdul["ATTITUDE"]
        assert [(c.name, c.format) for c in att.columns] == [
            ("TIME", "D"), ("QPARAM", "4D"), ("FLAG_ATT", "B")]
        assert att.data["TIME"][0] < scenario.tstart and att.data["TIME"][-1] > scenario.tstop
        assert np.all(np.diff(att.data["TIME"]) == 1.0)
    with fits.open(truth.files["orbit"]) as hdul:
        orb = hdul["ORBIT"]
        assert [(c.name, c.format, c.unit) for c in orb.columns] == [
            ("TIME", "D", "s"), ("POSITION", "3D", "m"), ("VELOCITY", "3D", "m/s"),
            ("FLAG_PVT", "B", None)]
        assert orb.data["TIME"][0] < scenario.tstart and orb.data["TIME"][-1] > scenario.tstop
    for name, counts in list(truth.backgrounds.items()) + [(s["name"], s) for s in truth.sources]:
        if "expected" in counts:  # the gap is excluded from both expected and injected counts
            injected, expected = sum(counts["injected"]), sum(counts["expected"])
            assert abs(injected - expected) < 4 * np.sqrt(expected) + 0.01 * expected + 1, name
    saved = json.loads(Path(truth.files["truth"]).read_text())
    assert saved["obs_id"] == "0123456789" and saved["n_events"] == truth.n_events
    assert [s["name"] for s in saved["sources"]] == [s.name for s in scenario.sources]
    assert saved["bands"] == ["13-60", "61-140", "141-300", "301-620", "621-1260"]
    assert not list(tmp_path.glob("*.part"))


# ============================================================================================
# Orbit and attitude
# ============================================================================================
def test_orbit_has_625_km_altitude_and_30_deg_inclination():
    orbit = Orbit(raan_deg=40.0, phase_deg=10.0)
    times = 3.0e8 + np.arange(0.0, 6000.0, 10.0)
    position, velocity = orbit_state(orbit, 3.0e8, times)
    altitude_km = np.linalg.norm(position, axis=1) / 1e3 - instrument.EARTH_RADIUS_KM
    np.testing.assert_allclose(altitude_km, 625.0, atol=1e-6)
    h = np.cross(position, velocity)
    inclination = np.degrees(np.arccos(h[:, 2] / np.linalg.norm(h, axis=1)))
    np.testing.assert_allclose(inclination, 30.0, atol=1e-9)
    np.testing.assert_allclose(np.gradient(position, times, axis=0)[1:-1], velocity[1:-1],
                               rtol=2e-3, atol=10.0)
    period = 2 * np.pi * np.sqrt(np.linalg.norm(position[0]) ** 3 / 3.986004418e14)
    assert 96.0 * 60 < period < 98.0 * 60


def test_saa_flags_follow_the_documented_boxes():
    t = np.full(3, 3.0e8)
    lon = np.radians([-40.0, -80.0, 100.0])  # deep SAA, outer only, outside
    lat = np.radians([-25.0, -45.0, -25.0])
    angle = lon + earth_rotation_angle(t)
    r = 6996e3
    position = r * np.column_stack([np.cos(lat) * np.cos(angle), np.cos(lat) * np.sin(angle),
                                    np.sin(lat)])
    assert saa_flags(position, t).tolist() == [0xC0, 0x80, 0x00]
    # along a day of orbits the spacecraft crosses the SAA a few percent of the time
    times = 3.0e8 + np.arange(0.0, 86400.0, 30.0)
    position, _ = orbit_state(Orbit(), 3.0e8, times)
    flags = saa_flags(position, times)
    assert 0.03 < np.mean(flags & 0x80 > 0) < 0.3
    assert np.all((flags & 0x40 == 0) | (flags & 0x80 > 0))


def test_attitude_is_unit_quaternions_pointing_where_asked():
    plan_scenario = scenario_with(duration=400.0, pointings=(
        Pointing(ra=10.0, dec=20.0, roll=15.0, start=30.0, duration=150.0),
        Pointing(ra=40.0, dec=-5.0, start=240.0)))
    plan = AttitudePlan(plan_scenario)
    times = plan_scenario.tstart + np.arange(-5.0, 405.0, 0.5)
    q = plan.quaternions(times)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-12)
    ra, dec = instrument.pointing_radec(q)
    rel = times - plan_scenario.tstart
    first, slew, second = (rel >= 30) & (rel <= 180), (rel > 181) & (rel < 239), rel >= 240
    np.testing.assert_allclose(ra[first], 10.0, atol=1e-6)
    np.testing.assert_allclose(dec[first], 20.0, atol=1e-6)
    np.testing.assert_allclose(ra[second], 40.0, atol=1e-6)
    np.testing.assert_allclose(dec[second], -5.0, atol=1e-6)
    flags = plan.flags(times)
    assert np.all(flags[first | second] == 0xAA) and np.all(flags[slew] == 0x55)
    assert np.all(flags[rel < 30] == 0x55)  # the opening slew
    roll_q = instrument.quaternion_from_pointing(10.0, 20.0, 15.0)
    assert abs(abs(q[first][0] @ roll_q) - 1.0) < 1e-9
    # the slew moves monotonically from one pointing to the other
    target = instrument.radec_to_unit(40.0, -5.0)
    boresight = instrument.attitude_matrix(q[slew])[:, :, 0]
    assert np.all(np.diff(boresight @ target) > 0)


def test_default_pointing_is_antisolar():
    scenario = scenario_with(duration=100.0)
    (pointing,) = scenario.resolved_pointings()
    from astropy.coordinates import get_sun
    from astropy.time import Time
    sun = get_sun(Time(instrument.MJDREFI + instrument.MJDREFF + scenario.tstart / 86400.0,
                       format="mjd", scale="tt"))
    anti = instrument.radec_to_unit(pointing.ra, pointing.dec)
    sun_dir = instrument.radec_to_unit(sun.ra.deg, sun.dec.deg)
    assert np.degrees(np.arccos(-anti @ sun_dir)) < 0.1
    assert pointing.start > 0  # a short slew first


# ============================================================================================
# Streaming
# ============================================================================================
def test_memory_does_not_grow_with_the_number_of_events(tmp_path, caldb):
    scenario, _ = bright_source_scenario((0.0, 0.0), name="memory")
    peaks = []
    for duration in (10.0, 100.0):
        tracemalloc.start()
        truth = simulate(dataclasses.replace(scenario, duration=duration), str(tmp_path), caldb,
                         chunk_seconds=5.0)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert truth.n_events > 4e3 * duration
    assert peaks[1] < 1.3 * peaks[0], peaks


# ============================================================================================
# Scenarios and the command line
# ============================================================================================
def test_shipped_scenarios_load():
    names = sorted(p.name for p in SCENARIOS.glob("*.toml"))
    assert names
    for path in SCENARIOS.glob("*.toml"):
        scenario = load_scenario(path)
        assert len(scenario.obs_id) == 10 and scenario.duration > 0


def test_ini_and_toml_give_the_same_scenario(tmp_path):
    toml = tmp_path / "s.toml"
    toml.write_text('name = "x"\nobs_id = "0000000007"\nduration = 50\n[orbit]\nphase_deg = 12\n'
                    '[[sources]]\nname = "A"\nra = 1.5\ndec = 2.5\nnorm = 3\n'
                    '[detector]\ntelemetry_gaps = [[1, 2]]\n')
    ini = tmp_path / "s.ini"
    ini.write_text("[scenario]\nname = x\nobs_id = '0000000007'\nduration = 50\n"
                   "[orbit]\nphase_deg = 12\n[source A]\nra = 1.5\ndec = 2.5\nnorm = 3\n"
                   "[detector]\ntelemetry_gaps = [[1, 2]]\n")
    assert load_scenario(toml) == load_scenario(ini)
    assert load_scenario(toml).sources[0].norm == 3.0


@pytest.mark.parametrize("text, key", [
    ('obs_id = "123"', "obs_id"),
    ('obs_id = 123', "obs_id"),
    ('duration = -5', "duration"),
    ('colour = "red"', "colour"),
    ('[[sources]]\nname = "A"\nra = 1\ndec = 2\nnorm = "bright"', "sources[0].norm"),
    ('[[sources]]\nname = "A"\nra = 1', "sources[0].dec"),
    ('[[grbs]]\nname = "G"\nra = 1\ndec = 2\nspectrum = "plaw"', "grbs[0].spectrum"),
    ('[background]\ncxb = "yes"', "background.cxb"),
    ('[orbit]\naltitude_km = 5', "orbit.altitude_km"),
])
def test_scenario_errors_name_the_key(tmp_path, text, key):
    path = tmp_path / "bad.toml"
    path.write_text(text + "\n")
    with pytest.raises(EcpiError, match=key.replace("[", r"\[").replace("]", r"\]")):
        load_scenario(path)


def test_missing_or_broken_scenario_file(tmp_path):
    with pytest.raises(EcpiError, match="nothere.toml"):
        load_scenario(tmp_path / "nothere.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("name = \n")
    with pytest.raises(EcpiError, match="broken.toml"):
        load_scenario(broken)


@pytest.mark.parametrize("argv, message", [
    ([], "output directory"),
    (["scenario.toml"], "output directory"),
    (["a.toml", "b", "c"], "too many"),
    (["a.toml", "b", "--out", "c"], "too many"),
])
def test_cli_path_errors(argv, message):
    with pytest.raises(EcpiError, match=message):
        cli.main(argv)


def test_cli_writes_the_triplet(tmp_path, capsys):
    assert cli.main([str(SCENARIOS / "crab_onaxis.toml"), str(tmp_path),
                     "--duration", "3", "--seed", "5"]) == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["ECL-EVT-SEC_crab_onaxis.fits", "SVO-ATT-CNV_crab_onaxis.fits",
                     "SVO-ORB-CNV_crab_onaxis.fits", "truth_crab_onaxis.json"]
    assert json.loads((tmp_path / "truth_crab_onaxis.json").read_text())["seed"] == 5
    assert "events" in capsys.readouterr().out
