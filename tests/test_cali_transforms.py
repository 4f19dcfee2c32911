"""ReadObservation, Cali and WriteCaliProducts on a small simulated triplet (TestPipeline)."""
import os

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to
from astropy.io import fits

from ecpi_beam.caldb import Caldb, default_caldb_dir
from ecpi_beam.io.events import CALIBRATED_DTYPE, EVENT_DTYPE
from ecpi_beam.kernels.calibrate import DROP_REASONS, calibrate_events
from ecpi_beam.kernels.gti import good_time
from ecpi_beam.simu import default_scenario, scenario_with, simulate
from ecpi_beam.transforms.cali import PARTS_FOLDER, Cali, WriteCaliProducts
from ecpi_beam.transforms.read import ReadObservation, inspect_observation
from ecpi_beam.transforms.write import failed_obs_ids

OBS_ID = "0000000400"
CHUNK_SIZE = 10_000


@pytest.fixture(scope="module")
def observation_dir(tmp_path_factory):
    """30 s with a telemetry gap, an initial slew and tolerated TIME back-steps."""
    directory = str(tmp_path_factory.mktemp("input") / "obs")
    scenario = scenario_with(default_scenario(), duration=30.0, obs_id=OBS_ID,
                             detector={"back_step_fraction": 0.001,
                                       "telemetry_gaps": ((12.0, 14.0),)})
    simulate(scenario, directory, Caldb.open(default_caldb_dir()))
    return directory


@pytest.fixture(scope="module")
def input_events(observation_dir):
    observation = inspect_observation(observation_dir)
    data = fits.getdata(observation.evt_url, "EVENTS")
    events = np.empty(len(data), dtype=EVENT_DTYPE)
    for name in EVENT_DTYPE.names:
        events[name] = data[name]
    return observation, events


def counters(result):
    """'namespace.name' -> committed total over the steps that count it."""
    totals = {}
    for counter in result.metrics().query(MetricsFilter())["counters"]:
        name = f"{counter.key.metric.namespace}.{counter.key.metric.name}"
        totals[name] = totals.get(name, 0) + counter.committed
    return totals


def test_read_observation_chunks_cover_every_row_once(observation_dir, input_events):
    observation, events = input_events
    pipeline = test_pipeline.TestPipeline()
    read = pipeline | beam.Create([observation_dir]) | ReadObservation(chunk_size=CHUNK_SIZE)
    assert_that(read.observations | beam.Map(lambda kv: (kv[0], kv[1].n_events)),
                equal_to([(OBS_ID, len(events))]), label="Observations")
    assert_that(read.failures, equal_to([]), label="NoFailures")
    sizes = read.chunks | beam.MapTuple(lambda obs_id, chunk: (obs_id, len(chunk), chunk.dtype))
    expected_sizes = [(OBS_ID, min(CHUNK_SIZE, len(events) - first), EVENT_DTYPE)
                      for first in range(0, len(events), CHUNK_SIZE)]
    assert_that(sizes, equal_to(expected_sizes), label="ChunkSizes")
    first_times = read.chunks | beam.MapTuple(lambda obs_id, chunk: float(chunk["TIME"][0]))
    assert_that(first_times, equal_to([float(t) for t in events["TIME"][::CHUNK_SIZE]]),
                label="ChunkStarts")
    result = pipeline.run()
    result.wait_until_finish()
    metrics = counters(result)
    assert metrics["ecpi.read.events"] == len(events)
    assert metrics["ecpi.read.chunks"] == len(expected_sizes)
    assert metrics["ecpi.read.bytes"] == len(events) * 13  # FITS row: D B B I B
    assert metrics["ecpi.dpco.tolerated_time_backsteps"] > 0  # the scenario injects some


@pytest.fixture(scope="module")
def cali_run(observation_dir, tmp_path_factory):
    """One pipeline writing both CALI products; returns (working_out, counters)."""
    out = str(tmp_path_factory.mktemp("output"))
    pipeline = test_pipeline.TestPipeline()
    read = pipeline | beam.Create([observation_dir]) | ReadObservation(chunk_size=CHUNK_SIZE)
    calibrated = read.chunks | Cali(default_caldb_dir(), read.observations)
    urls = calibrated | WriteCaliProducts(out, ("ECL-GTI-CAL", "ECL-EVT-CAL"), "f00d",
                                          read.observations, failed_obs_ids(read.failures))
    assert_that(urls | beam.Map(os.path.basename),
                equal_to([f"ECL-GTI-CAL_{OBS_ID}.fits", f"ECL-EVT-CAL_{OBS_ID}.fits"]))
    dtypes = (calibrated | beam.MapTuple(lambda obs_id, chunk: (obs_id, str(chunk.dtype)))
              | beam.Distinct())
    assert_that(dtypes, equal_to([(OBS_ID, str(CALIBRATED_DTYPE))]), label="CalibratedDtype")
    result = pipeline.run()
    result.wait_until_finish()
    return out, counters(result)


def test_event_count_is_conserved(cali_run, input_events):
    _, metrics = cali_run
    _, events = input_events
    drops = {reason: metrics[f"ecpi.cali.dropped_{reason}"] for reason in DROP_REASONS}
    assert metrics["ecpi.cali.events_in"] == len(events)
    assert metrics["ecpi.cali.events_in"] == metrics["ecpi.cali.events_out"] + sum(drops.values())
    assert drops["outside_gti"] > 0 and drops["noisy_pixel"] > 0
    assert metrics["ecpi.cali.evt_rows_written"] == metrics["ecpi.cali.events_out"]
    assert metrics["ecpi.write.products_written"] == 2


def test_evt_cal_equals_the_numpy_calibration(cali_run, input_events):
    out, _ = cali_run
    observation, events = input_events
    expected, _ = calibrate_events(events, Caldb.open(default_caldb_dir()).pixel_calibration(),
                                   good_time(observation)["ALL"])
    data = fits.getdata(os.path.join(out, f"ECL-EVT-CAL_{OBS_ID}.fits"), "EVENTS")
    assert len(data) == len(expected)
    for name in CALIBRATED_DTYPE.names:  # parts are streamed in row order: same order
        np.testing.assert_array_equal(data[name], expected[name], err_msg=name)


def test_evt_cal_is_a_valid_ogip_event_file(cali_run, input_events, fitsverify):
    from stingray import EventList

    out, _ = cali_run
    observation, _ = input_events
    path = os.path.join(out, f"ECL-EVT-CAL_{OBS_ID}.fits")
    fitsverify(path)
    events = EventList.read(path, fmt="hea", additional_columns=["PI"])
    data = fits.getdata(path, "EVENTS")
    np.testing.assert_array_equal(events.time, data["TIME"])
    np.testing.assert_array_equal(events.pi, data["PI"])
    np.testing.assert_allclose(events.energy, data["ENERGY"])
    np.testing.assert_allclose(events.gti, good_time(observation)["ALL"])
    with fits.open(path) as hdul:
        header = hdul["EVENTS"].header
        assert [h.name for h in hdul] == ["PRIMARY", "EVENTS", "GTI"]
        for key in ("TELESCOP", "INSTRUME", "OBS_ID", "TSTART", "TSTOP", "MJDREFI", "MJDREFF",
                    "TIMESYS", "CREATOR", "DATE"):
            assert key in hdul[0].header and key in header, key
        assert header["OBS_ID"] == OBS_ID and header["HDUCLAS1"] == "EVENTS"
        assert header["TLMAX6"] == 1499 and header["TTYPE6"] == "PI"
        assert header["ONTIME"] == pytest.approx(float(np.diff(events.gti).sum()))
        assert header["TELAPSE"] == pytest.approx(30.0)


def test_gti_cal_holds_the_four_good_times(cali_run, input_events, fitsverify):
    out, _ = cali_run
    observation, _ = input_events
    path = os.path.join(out, f"ECL-GTI-CAL_{OBS_ID}.fits")
    fitsverify(path)
    good = good_time(observation)
    with fits.open(path) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "GTI_TLM", "GTI_SAA", "GTI_ATT", "GTI"]
        for extname, name in (("GTI_TLM", "TLM"), ("GTI_SAA", "SAA"), ("GTI_ATT", "ATT"),
                              ("GTI", "ALL")):
            table = hdul[extname].data
            np.testing.assert_array_equal(np.column_stack([table["START"], table["STOP"]]),
                                          good[name])
            assert hdul[extname].header["HDUCLAS1"] == "GTI"
    # the telemetry gap and the initial slew are not good time
    assert len(good["TLM"]) == 2 and good["ATT"][0, 0] > observation.keywords["TSTART"]


def test_parts_are_removed(cali_run):
    out, _ = cali_run
    assert not os.path.exists(os.path.join(out, PARTS_FOLDER))
    assert sorted(os.listdir(out)) == [f"ECL-EVT-CAL_{OBS_ID}.fits", f"ECL-GTI-CAL_{OBS_ID}.fits"]


def test_products_go_to_an_fsspec_location_without_local_parts(observation_dir, cali_run,
                                                                tmp_path):
    """memory:// stands for a bucket: parts and product go through io.fs only."""
    import uuid

    from ecpi_beam.io import fs

    out = f"memory://cali-{uuid.uuid4().hex}/out"
    pipeline = test_pipeline.TestPipeline()
    read = pipeline | beam.Create([observation_dir]) | ReadObservation(chunk_size=CHUNK_SIZE)
    _ = (read.chunks | Cali(default_caldb_dir(), read.observations)
         | WriteCaliProducts(out, ("ECL-EVT-CAL",), "f00d", read.observations))
    pipeline.run().wait_until_finish()
    assert fs.listdir(out) == [f"ECL-EVT-CAL_{OBS_ID}.fits"]  # parts folder gone, no GTI-CAL
    local_copy = tmp_path / "copy.fits"
    local_copy.write_bytes(fs.read_bytes(fs.join(out, f"ECL-EVT-CAL_{OBS_ID}.fits")))
    local_out, _ = cali_run
    expected = fits.getdata(os.path.join(local_out, f"ECL-EVT-CAL_{OBS_ID}.fits"), "EVENTS")
    np.testing.assert_array_equal(fits.getdata(local_copy, "EVENTS"), expected)


def test_events_below_the_4_kev_threshold_are_kept_as_the_icd_flags_them(reference_run,
                                                                           small_observation):
    """ECL-EVT-CAL keeps every event (docs/cali.md, "Events below the 4 keV threshold"): those
    below 4 keV are forced triggers, flagged by FLAG bit 1 as the ICD says (pedestal readouts,
    down to 0 keV), or photons within half a PHA step of it (the threshold cuts the analog
    signal; ENERGY = GAIN x PHA + OFFSET is quantised by GAIN, at most 0.0424 keV)."""
    from ecpi_beam import instrument

    events = fits.getdata(reference_run.product("ECL-EVT-CAL", small_observation.obs_id),
                          "EVENTS")
    gain = Caldb.open(default_caldb_dir()).pixel_calibration().gain
    below = events["ENERGY"] < instrument.LOW_THRESHOLD_KEV
    forced = (events["FLAG"] & instrument.FLAG_FORCED_TRIGGER) != 0
    assert below.any() and forced.any() and events["ENERGY"][forced].min() < 2.0
    photons_below = below & ~forced
    half_step = 0.5 * gain[events["IDET"][photons_below], events["JDET"][photons_below]]
    assert np.all(events["ENERGY"][photons_below]
                  >= instrument.LOW_THRESHOLD_KEV - half_step - 1e-4)
    with fits.open(reference_run.product("ECL-DET-IMA", small_observation.obs_id)) as hdul:
        imaged = sum(int(hdu.data.sum()) for hdu in hdul if hdu.name.startswith("COUNTS_"))
    assert imaged <= int((~forced).sum())  # no forced trigger reaches an image
