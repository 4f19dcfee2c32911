"""BUBE and IMAG Beam transforms on synthetic calibrated chunks, and the imaging timeline."""
import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline  # not collected
from apache_beam.testing.util import assert_that, equal_to

from ecpi_beam import instrument
from ecpi_beam.caldb import default_caldb_dir
from ecpi_beam.io.events import CALIBRATED_DTYPE
from ecpi_beam.kernels import binning
from ecpi_beam.kernels.timeline import POINTING_TOLERANCE_DEG, ImagingTimeline, imaging_timeline
from ecpi_beam.params import BubeParams, ImagParams
from ecpi_beam.transforms.bube import Bube, DetectorImageSum
from ecpi_beam.transforms.imag import Imag
from ecpi_beam.transforms.read import ChunkContext, EventChunk

BANDS = ((13, 60), (61, 300), (13, 300))


def random_chunk(rng, n, t0=0.0, t1=100.0):
    chunk = np.zeros(n, dtype=CALIBRATED_DTYPE)
    chunk["TIME"] = np.sort(rng.uniform(t0, t1, n))
    chunk["IDET"] = rng.integers(0, 80, n)
    chunk["JDET"] = rng.integers(0, 80, n)
    chunk["PI"] = rng.integers(0, 400, n)
    chunk["FLAG"] = np.where(rng.random(n) < 0.01, instrument.FLAG_FORCED_TRIGGER, 0)
    return chunk


def with_classes(events, class_gti):
    """A calibrated chunk as the graph carries it: with its occultation classes' good time,
    of its one stable pointing (None: its observation has no imaging timeline)."""
    return EventChunk(events, ChunkContext(np.array([[0.0, 100.0]]),
                                           None if class_gti is None else (class_gti,)))


def test_detector_image_sum_is_associative_and_commutative():
    rng = np.random.default_rng(1)
    images = [rng.poisson(3.0, (80, 80)) for _ in range(12)]
    combine = DetectorImageSum()
    total = np.sum(images, axis=0)
    for _ in range(5):  # random partitions, merged in random orders
        order = rng.permutation(len(images))
        cuts = np.sort(rng.choice(np.arange(1, len(images)), 3, replace=False))
        accumulators = []
        for part in np.split(order, cuts):
            acc = combine.create_accumulator()
            for index in part:
                acc = combine.add_input(acc, images[index].copy())
            accumulators.append(acc)
        rng.shuffle(accumulators)
        np.testing.assert_array_equal(
            combine.extract_output(combine.merge_accumulators(accumulators)), total)


def timeline_with(class_gti):
    return ImagingTimeline(instrument.quaternion_from_pointing(10.0, 20.0), class_gti["TEO"],
                           class_gti)


def test_bube_keys_every_band_and_class_and_images_every_photon_but_no_forced_trigger():
    rng = np.random.default_rng(2)
    gti = {"NEO": np.array([[0.0, 40.0]]), "PEO": np.array([[0.0, 70.0]]),
           "TEO": np.array([[0.0, 100.0]])}
    chunks = [("obs1", with_classes(random_chunk(rng, 5000), gti)),
              ("obs1", with_classes(random_chunk(rng, 7000), gti)),
              ("obs2", with_classes(random_chunk(rng, 3000), gti))]
    params = BubeParams(energy_channels=BANDS, ear_occ_bub=("NEO", "PEO", "TEO"),
                        bkg_cor_mod=("flat", "shape", "no_correction"))

    def expected_counts(obs_id, band, occ):
        events = np.concatenate([c.events for o, c in chunks if o == obs_id])
        lo, hi = band
        t0, t1 = gti[occ][0]
        photons = (events["FLAG"] & instrument.FLAG_FORCED_TRIGGER) == 0
        return int(np.sum(photons & (events["PI"] >= lo) & (events["PI"] <= hi)
                          & (events["TIME"] >= t0) & (events["TIME"] < t1)))

    expected = [((obs, instrument.band_name(band), occ), expected_counts(obs, band, occ))
                for obs in ("obs1", "obs2") for band in BANDS for occ in gti]
    with BeamTestPipeline() as pipeline:
        timelines = pipeline | "Timelines" >> beam.Create(
            [("obs1", timeline_with(gti)), ("obs2", timeline_with(gti))])
        products = (pipeline | "Chunks" >> beam.Create(chunks)
                    | Bube(params, default_caldb_dir(), timelines))
        counts = products | beam.MapTuple(lambda key, p: (key, int(p.counts.sum())))
        assert_that(counts, equal_to(expected), label="counts")
        modes = products | beam.MapTuple(lambda key, p: (key[2], p.mode, p.exposure))
        assert_that(modes | beam.Distinct(), equal_to(
            [("NEO", "flat", 40.0), ("PEO", "shape", 70.0), ("TEO", "no_correction", 100.0)]),
            label="modes")


def test_imag_finds_a_source_in_a_synthetic_detector_image():
    """The IMAG transform on a source shadow: right pixel, right (RA, Dec)."""
    from ecpi_beam.caldb import Caldb
    from ecpi_beam.kernels import background, cleaning
    from ecpi_beam.transforms.bube import DetectorProducts

    caldb = Caldb.open(default_caldb_dir())
    pixcal = caldb.pixel_calibration()
    good = pixcal.status == 0
    row, col = 120.4, 88.7
    expected = 50.0 + 40.0 * cleaning.source_shadowgram(caldb.mask_pattern(), row, col)
    counts = np.random.default_rng(5).poisson(expected * pixcal.effic) * good
    products = DetectorProducts(
        counts=counts, exposure=100.0, good_pixels=good, efficiency=np.where(good, pixcal.effic, 0),
        mode="flat", correction=background.correct_background(
            "flat", counts, good, context={"efficiency": pixcal.effic}))
    quaternion = instrument.quaternion_from_pointing(83.6, 22.0, 30.0)
    ra, dec = instrument.los_to_radec(instrument.sky_pixel_to_los(row, col), quaternion)
    gti = {"PEO": np.array([[0.0, 100.0]])}
    timeline = ImagingTimeline(quaternion, gti["PEO"], gti)

    with BeamTestPipeline() as pipeline:
        timelines = pipeline | "Timelines" >> beam.Create([("obs", timeline)])
        sky = (pipeline | beam.Create([(("obs", "13-60", "PEO"), products)])
               | Imag(ImagParams(), default_caldb_dir(), timelines))

        def check(element):
            key, result = element
            assert len(result.sources) == 1, result.sources
            source = result.sources[0]
            assert abs(source.row - row) < 0.15 and abs(source.col - col) < 0.15
            separation = np.degrees(np.linalg.norm(instrument.radec_to_unit(source.ra, source.dec)
                                                   - instrument.radec_to_unit(ra, dec))) * 60
            assert separation < 5.0
            assert result.wcs_keywords["CTYPE1"] == "RA---TAN"
            return key

        assert_that(sky | beam.Map(check), equal_to([("obs", "13-60", "PEO")]))


def test_imaging_timeline_classes_are_cumulative_and_slews_are_excluded():
    times = np.arange(0.0, 601.0)
    on_target = instrument.quaternion_from_pointing(120.0, -30.0, 10.0)
    slewing = instrument.quaternion_from_pointing(115.0, -30.0, 10.0)
    qparam = np.tile(on_target, (len(times), 1))
    qparam[:50] = slewing  # first 50 s elsewhere: not imaged (held < min_pointing_s)
    qparam[580:] = instrument.quaternion_from_pointing(120.0, -30.0, 12.0)  # rolled: not imaged
    # the spacecraft moves so that the Earth sweeps through the field
    toward_target = instrument.radec_to_unit(120.0, -30.0)
    side = np.cross(toward_target, [0.0, 0.0, 1.0])
    side /= np.linalg.norm(side)
    angle = np.radians(np.linspace(0.0, 180.0, len(times)))
    position = 7.0e6 * (np.cos(angle)[:, None] * toward_target + np.sin(angle)[:, None] * side)
    good = np.array([[0.0, 600.0]])
    timeline = imaging_timeline(times, qparam, times, position, good, ("NEO", "PEO", "TEO"),
                                min_pointing_s=60.0)
    assert timeline.n_pointings == 1  # (with the default 20 s, three: tests/test_pointings.py)
    assert abs(np.dot(timeline.reference_quaternion, on_target)) == pytest.approx(1.0, abs=1e-9)
    assert timeline.good_time[0, 0] >= 49.5 and timeline.good_time[-1, 1] <= 580.0
    neo, peo, teo = (timeline.exposure(occ) for occ in ("NEO", "PEO", "TEO"))
    assert 0 < neo < peo < teo <= 530.5
    # the 50 s elsewhere and the 20 s rolled are good time not imaged: counted, not lost
    assert timeline.off_pointing_seconds == pytest.approx(600.0 - 530.0, abs=1.5)
    # the Earth starts behind the instrument and ends filling the field
    assert timeline.occultation_fraction[60] == 0.0 and timeline.occultation_fraction[570] > 0.9
    assert POINTING_TOLERANCE_DEG < 1.0
    assert binning.empty_image().shape == (80, 80)


def test_bube_physics_modes_carry_the_earth_geometry_of_the_key():
    """The Earth centre 60 deg off axis (PEO): the default mode and the smart one through Beam."""
    rng = np.random.default_rng(8)
    times = np.arange(0.0, 101.0)
    quaternion = np.tile(instrument.quaternion_from_pointing(0.0, 0.0), (len(times), 1))
    to_earth = np.array([np.cos(np.radians(60.0)), np.sin(np.radians(60.0)), 0.0])
    position = np.tile(-7000e3 * to_earth, (len(times), 1))
    timeline = imaging_timeline(times, quaternion, times, position, np.array([[0.0, 100.0]]),
                                ("PEO", "TEO"))
    params = BubeParams(energy_channels=((13, 60),), ear_occ_bub=("PEO", "TEO"),
                        bkg_cor_mod=("shape_moretti_earth", "shape_moretti_smart"))
    with BeamTestPipeline() as pipeline:
        timelines = pipeline | "Timelines" >> beam.Create([("obs1", timeline)])
        products = (pipeline | "Chunks" >> beam.Create(
                        [("obs1", with_classes(random_chunk(rng, 20000), timeline.class_gti))])
                    | Bube(params, default_caldb_dir(), timelines, imag_params=ImagParams()))
        summary = products | beam.MapTuple(lambda key, p: (
            key[2], p.mode, sorted(p.correction.coefficients),
            bool(0.2 < p.earth.occultation_map.mean() < 0.9), p.earth.averaging_time))
        assert_that(summary, equal_to([
            ("PEO", "shape_moretti_earth", ["constant", "cxb", "earth"], True, 100.0),
            ("TEO", "shape_moretti_smart", ["constant", "cxb", "earth"], True, 100.0)]))
