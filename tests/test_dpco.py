"""DPCO: triplet discovery and consistency checks (kernels/consistency.py, transforms/dpco.py).

The table of bad triplets asserts the exact one-line error of each, and runs them all, with one
good observation, through ReadObservation -> Cali -> WriteCaliProducts: only the good one gets
products, every bad one a failure record.
"""
import os
import shutil

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to
from astropy.io import fits

from ecpi_beam.caldb import Caldb, default_caldb_dir
from ecpi_beam.errors import EcpiError
from ecpi_beam.io.events import EVENT_DTYPE
from ecpi_beam.kernels import consistency
from ecpi_beam.simu import default_scenario, scenario_with, simulate
from ecpi_beam.transforms import dpco
from ecpi_beam.transforms.cali import Cali, WriteCaliProducts
from ecpi_beam.transforms.read import ReadObservation, inspect_observation
from ecpi_beam.transforms.write import failed_obs_ids

EVT, ATT, ORB = "ECL-EVT-SEC_demo.fits", "SVO-ATT-CNV_demo.fits", "SVO-ORB-CNV_demo.fits"


# ----------------------------------------------------------------------------------------------
# kernels
# ----------------------------------------------------------------------------------------------
def events_of(times, pha=100, idet=1, jdet=2):
    events = np.zeros(len(times), dtype=EVENT_DTYPE)
    events["TIME"], events["PHA"], events["IDET"], events["JDET"] = times, pha, idet, jdet
    return events


def test_event_chunk_tolerates_small_backsteps_and_reports_large_ones():
    times = np.array([10.0, 10.00005, 10.00001, 10.1, 10.0, 10.2])  # -40 us ok, -0.1 s not
    check = consistency.check_event_chunk(events_of(times), 100, None, 0.0, 20.0)
    assert check.tolerated_backsteps == 1
    assert check.problems("evt.fits") == [
        "evt.fits EVENTS: 1 rows with TIME steps back by more than 100 us "
        "(first at row 104: -0.1)"]


def test_event_chunk_checks_the_boundary_with_the_previous_chunk():
    check = consistency.check_event_chunk(events_of([9.0, 9.5]), 50, 10.0, 0.0, 20.0)
    assert check.findings["time_backstep"].first_row == 50


def test_event_checks_merge_counts_and_keep_the_first_row():
    first = consistency.check_event_chunk(events_of([1.0, 2.0], pha=5000), 0, None, 0.0, 9.0)
    second = consistency.check_event_chunk(events_of([3.0, 30.0], idet=80), 2, 2.0, 0.0, 9.0)
    merged = consistency.EventCheck().merge(second).merge(first)
    assert (merged.n_rows, merged.n_chunks) == (4, 2)
    assert merged.problems("e.fits", n_expected_rows=5) == [
        "e.fits EVENTS: 1 rows with TIME outside [TSTART, TSTOP] (first at row 3: 30)",
        "e.fits EVENTS: 2 rows with PHA outside 0..4095 (first at row 0: 5000)",
        "e.fits EVENTS: 2 rows with IDET outside 0..79 (first at row 2: 80)",
        "e.fits EVENTS: 4 rows checked; NAXIS2 says 5"]


# duplicated events (docs/cali.md, "Duplicated events")
def realistic_chunk(n=200_000, seconds=80.0, seed=3, pha_scale=300.0):
    """Time-ordered events at 20 us resolution over the detector (2500 counts/s, about the
    ICD's orbit rate), PHA spread as a steep spectrum would spread it."""
    rng = np.random.default_rng(seed)
    events = np.zeros(n, dtype=EVENT_DTYPE)
    ticks = np.sort(rng.integers(0, int(seconds / 20e-6), n))
    events["TIME"] = 3.0e8 + ticks * 20e-6
    events["IDET"], events["JDET"] = rng.integers(0, 80, n), rng.integers(0, 80, n)
    events["PHA"] = np.clip(100 + rng.exponential(pha_scale, n), 0, 4095).astype(np.int16)
    return events


def duplicate_problems(check):
    return [problem for problem in check.problems("e.fits") if "earlier row" in problem]


def test_every_row_written_twice_is_refused_naming_the_first_copy():
    events = realistic_chunk(20_000, 8.0)
    doubled = np.repeat(events, 2)
    check = consistency.check_event_chunk(doubled, 0, None, 0.0, 4e8)
    assert check.findings["duplicate"].count == 20_000
    assert check.findings["duplicate"].first_row == 1
    assert duplicate_problems(check) == [
        f"e.fits EVENTS: 20000 rows with TIME, IDET, JDET and PHA of an earlier row (events "
        f"written twice? chance gives {check.chance_duplicates:.2g} such rows in one pixel's "
        f"20 us time stamps) (first at row 1: {doubled['TIME'][1]:.12g})"]
    assert check.chance_duplicates < 1.0


def test_what_legitimately_repeats_is_no_duplicate():
    events = events_of([5.0, 5.0, 5.0, 6.0, 6.0, 7.0], pha=[100, 100, 100, 100, 101, 100],
                       idet=[1, 2, 1, 1, 1, 1], jdet=[2, 2, 3, 2, 2, 2])
    # one TIME in three pixels (a multiple-pixel event), one pixel and PHA at other TIMEs,
    # one pixel and TIME with another PHA: none is a copy
    assert not consistency.duplicated_rows(events).any()
    assert "duplicate" not in consistency.check_event_chunk(events, 0, None, 0.0, 9.0).findings


def test_a_copy_behind_a_tolerated_backstep_is_found():
    events = events_of([5.0, 5.00004, 5.00002, 5.00004, 5.00001], pha=[1, 2, 3, 2, 4])
    assert consistency.duplicated_rows(events).tolist() == [False, False, False, True, False]


def test_copies_across_chunk_boundaries_are_found_whatever_the_chunking():
    events = realistic_chunk(30_000, 12.0)
    packet = slice(9_990, 10_090)  # a telemetry packet merged twice, across chunk boundaries
    corrupted = np.concatenate([events[:packet.stop], events[packet], events[packet.stop:]])
    corrupted = corrupted[np.argsort(corrupted["TIME"], kind="stable")]
    for size in (7, 64, 1000, 10_000, len(corrupted)):
        total = consistency.EventCheck()
        for first in range(0, len(corrupted), size):
            before = corrupted[max(first - consistency.DUPLICATE_LOOKBACK_ROWS, 0):first]
            total = total.merge(consistency.check_event_chunk(
                corrupted[first:first + size], first, before["TIME"][-1] if first else None,
                0.0, 4e8, previous_rows=before))
        assert total.findings["duplicate"].count == 100, size
        assert total.refused("duplicate")


def test_chance_repeats_are_tolerated_and_counted():
    """At 20 us resolution two events of one pixel can share a time stamp and a PHA by
    chance: a few such rows are not refused (the chance estimate is an upper bound)."""
    # a very bright burst (100000 counts/s) of soft photons (PHA within a few tens of ADU)
    events = realistic_chunk(1_000_000, 10.0, seed=8, pha_scale=30.0)
    check = consistency.check_event_chunk(events, 0, None, 0.0, 4e8)
    found = check.findings["duplicate"].count
    assert 0.5 < check.chance_duplicates < 10 and 1 <= found <= 3 * check.chance_duplicates
    assert not check.refused("duplicate") and duplicate_problems(check) == []


def test_the_chance_of_repeats_is_that_of_the_whole_file():
    """Chunks without repeats count in the chance too: two chance repeats in one chunk of a
    long observation are weighed against the chance of all its chunks."""
    events = realistic_chunk(200_000, 200.0, seed=3, pha_scale=30.0)
    quiet = consistency.check_event_chunk(events, 0, None, 0.0, 4e8)
    assert "duplicate" not in quiet.findings and quiet.chance_duplicates > 0.0
    total = consistency.EventCheck()
    for first in range(0, len(events), 20_000):
        total = total.merge(consistency.check_event_chunk(
            events[first:first + 20_000], first, None, 0.0, 4e8))
    assert total.chance_duplicates == pytest.approx(quiet.chance_duplicates, rel=0.3)


@pytest.mark.parametrize("count, chance, refused", [
    (2, 0.3, False),  # the long observation's two chance repeats
    (3, 2.6, False), (15, 2.0, True),  # a bright burst: chance, then far beyond it
    (1, 1e-6, False),  # one row is never enough
    (2, 1e-4, True), (100, 1.0, True), (20_000, 0.5, True),  # copied packets and files
])
def test_repeats_are_refused_only_beyond_the_poisson_chance(count, chance, refused):
    finding = consistency.Finding(count, 7, 1.0)
    check = consistency.EventCheck(1000, 1, 0, {"duplicate": finding}, chance)
    assert check.refused("duplicate") is refused


def test_the_poisson_tail_is_exact():
    from scipy.stats import poisson

    for count, mean in [(2, 0.3), (5, 0.01), (30, 10.0), (3, 2.6), (12, 2.0), (1, 0.5)]:
        assert consistency.poisson_tail(count, mean) == pytest.approx(
            poisson.sf(count - 1, mean), rel=1e-9)
    assert consistency.poisson_tail(100, 1.0) < 1e-100 and consistency.poisson_tail(0, 1.0) == 1


def test_the_duplicate_check_keeps_no_state_that_grows_with_the_file():
    """The accumulator of a whole file is a few numbers, whatever its size; memory per chunk
    is that chunk's and the fixed look-back."""
    import pickle
    import tracemalloc

    events = realistic_chunk(100_000, 40.0)
    total, sizes, peaks = consistency.EventCheck(), [], []
    tracemalloc.start()
    for first in range(0, len(events), 10_000):
        tracemalloc.reset_peak()
        before = events[max(first - consistency.DUPLICATE_LOOKBACK_ROWS, 0):first]
        total = total.merge(consistency.check_event_chunk(
            events[first:first + 10_000], first, None, 0.0, 4e8, previous_rows=before))
        peaks.append(tracemalloc.get_traced_memory()[1])
        sizes.append(len(pickle.dumps(total)))
    tracemalloc.stop()
    assert max(sizes) < sizes[0] + 16 and max(peaks[1:]) < 2 * peaks[1]


def test_columns_are_checked_by_name_and_fits_type():
    summary = consistency.FileSummary("att.fits", {}, {"ATTITUDE": {
        "TIME": "1D", "QPARAM": "4E"}})
    assert consistency.check_columns("att", summary) == [
        "att.fits ATTITUDE: column QPARAM has TFORM 4E; expected 4D",
        "att.fits ATTITUDE: column FLAG_ATT is missing (expected TFORM B)"]


def test_primary_keywords_report_every_difference():
    good = {"TELESCOP": "SVOM", "OBS_ID": "1", "TSTART": 0.0, "TSTOP": 1.0, "MJDREFI": 57754,
            "MJDREFF": 0.0008, "TIMESYS": "TT", "TIMEUNIT": "s"}
    summaries = {"evt": consistency.FileSummary("e", good, {}),
                 "att": consistency.FileSummary("a", {**good, "TIMESYS": "UTC"}, {}),
                 "orb": consistency.FileSummary("o", {**good, "TELESCOP": "HST"}, {})}
    assert consistency.check_primary_keywords(summaries) == [
        "o: TELESCOP = 'HST'; expected 'SVOM'",
        "TELESCOP differs across the triplet: e 'SVOM', a 'SVOM', o 'HST'",
        "TIMESYS differs across the triplet: e 'TT', a 'UTC', o 'TT'"]


def test_sampled_tables_must_cover_the_events_and_quaternions_be_unit():
    assert consistency.check_sampled_table("a", "ATTITUDE", [1.0, 2.0, 3.0], 1.5, 2.5) == []
    assert consistency.check_sampled_table("a", "ATTITUDE", [1.0, 2.0, 3.0], 0.5, 2.5) == [
        "a ATTITUDE: TIME covers [1.0, 3.0], not the events' [TSTART, TSTOP] = [0.5, 2.5]"]
    q = np.tile([0.0, 0.0, 0.0, 1.0], (3, 1))
    q[2] *= 1.1
    assert consistency.check_quaternions("a", q) == [
        "a ATTITUDE: 1 QPARAM rows with norm != 1 (first at row 2: norm 1.1)"]


def test_dpco_message_counts_problems():
    assert consistency.dpco_error_message("d", ["x"]) == "d: DPCO found 1 problem: x"
    assert consistency.dpco_error_message("d", ["x", "y"]) == "d: DPCO found 2 problems: x; y"


# ----------------------------------------------------------------------------------------------
# bad triplets
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def good_triplet(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("good") / "obs")
    scenario = scenario_with(default_scenario(), duration=12.0, obs_id="0000000100")
    simulate(scenario, directory, Caldb.open(default_caldb_dir()))
    for name in os.listdir(directory):
        if not name.endswith(".fits"):
            os.remove(os.path.join(directory, name))
    return directory


def set_obs_id(directory, obs_id, names=(EVT, ATT, ORB)):
    for name in names:
        fits.setval(os.path.join(directory, name), "OBS_ID", value=obs_id)


def drop_column(path, extname, column):
    with fits.open(path) as hdul:
        table = hdul[extname]
        kept = [c for c in table.columns if c.name != column]
        new = fits.BinTableHDU.from_columns(kept, header=table.header, name=extname)
        for index in range(len(kept) + 1, len(table.columns) + 1):
            for key in ("TTYPE", "TFORM", "TUNIT"):
                new.header.remove(f"{key}{index}", ignore_missing=True)
        hdus = [h if h.name != extname else new for h in hdul]
        fits.HDUList([h.copy() for h in hdus]).writeto(path + ".new")
    os.replace(path + ".new", path)


def truncate_events(path):
    with fits.open(path) as hdul:
        offset = hdul.fileinfo(1)["datLoc"]
    with open(path, "r+b") as stream:
        stream.truncate(offset + 1000 * 13 + 7)


def edit_event_rows(path, edit):
    with fits.open(path, mode="update") as hdul:
        edit(hdul["EVENTS"].data)


def scale_quaternion(path):
    with fits.open(path, mode="update") as hdul:
        hdul["ATTITUDE"].data["QPARAM"][3] *= 2.0


def shorten_attitude(path):
    with fits.open(path) as hdul:
        table = hdul["ATTITUDE"]
        keep = table.data["TIME"] < hdul[0].header["TSTOP"] - 2.0
        new = fits.BinTableHDU(data=table.data[keep], header=table.header, name="ATTITUDE")
        fits.HDUList([hdul[0].copy(), new]).writeto(path + ".new")
    os.replace(path + ".new", path)


def set_pha(data):
    data["PHA"][5] = 5000


def big_backstep(data):
    # the first row of the second 4000-row chunk: the check must cross chunk boundaries
    data["TIME"][4000] = data["TIME"][3999] - 2.0**-7


# name -> (obs_id, mutation(directory), expected message with {d} for the directory)
BAD_TRIPLETS = {
    "missing_orbit": ("0000000201", lambda d: os.remove(os.path.join(d, ORB)),
                      "{d}: expected exactly one SVO-ORB-CNV*.fits[.gz] file, found none"),
    "two_event_files": ("0000000202",
                        lambda d: shutil.copy(os.path.join(d, EVT),
                                              os.path.join(d, "ECL-EVT-SEC_b.fits.gz")),
                        "{d}: expected exactly one ECL-EVT-SEC*.fits[.gz] file, found "
                        "ECL-EVT-SEC_b.fits.gz, ECL-EVT-SEC_demo.fits"),
    "obs_id_mismatch": ("0000000203", lambda d: set_obs_id(d, "0000009999", (ATT,)),
                        "{d}: DPCO found 1 problem: OBS_ID differs across the triplet: "
                        f"{EVT} '0000000203', {ATT} '0000009999', {ORB} '0000000203'"),
    "truncated_events": ("0000000204", lambda d: truncate_events(os.path.join(d, EVT)),
                         "{d}: DPCO found 2 problems: {d}/" + EVT + ": truncated file: extension "
                         "EVENTS needs {needed} bytes, the file has {size}; " + EVT +
                         ": extension GTI is missing"),
    "missing_column_and_bad_telescop": (
        "0000000205",
        lambda d: (drop_column(os.path.join(d, ORB), "ORBIT", "VELOCITY"),
                   fits.setval(os.path.join(d, ATT), "TELESCOP", value="HST")),
        "{d}: DPCO found 3 problems: " + ORB + " ORBIT: column VELOCITY is missing (expected "
        "TFORM 3D); " + ATT + ": TELESCOP = 'HST'; expected 'SVOM'; TELESCOP differs across the "
        f"triplet: {EVT} 'SVOM', {ATT} 'HST', {ORB} 'SVOM'"),
    "quaternion_norm": ("0000000206", lambda d: scale_quaternion(os.path.join(d, ATT)),
                        "{d}: DPCO found 1 problem: " + ATT + " ATTITUDE: 1 QPARAM rows with "
                        "norm != 1 (first at row 3: norm 2)"),
    "attitude_too_short": ("0000000207", lambda d: shorten_attitude(os.path.join(d, ATT)),
                           "{d}: DPCO found 1 problem: " + ATT + " ATTITUDE: TIME covers "
                           "[{att_lo}, {att_hi}], not the events' [TSTART, TSTOP] = "
                           "[300000000.0, 300000012.0]"),
}
# found while streaming the EVENTS rows (pipeline only)
BAD_EVENT_ROWS = {
    "pha_out_of_range": ("0000000301", set_pha,
                         "{d}: DPCO found 1 problem: " + EVT + " EVENTS: 1 rows with PHA outside "
                         "0..4095 (first at row 5: 5000)"),
    "time_backstep": ("0000000302", big_backstep,
                      "{d}: DPCO found 1 problem: " + EVT + " EVENTS: 1 rows with TIME steps back "
                      "by more than 100 us (first at row 4000: -0.0078125)"),
}


def make_bad(good, root, name, obs_id, mutate):
    directory = os.path.join(root, name)
    shutil.copytree(good, directory)
    set_obs_id(directory, obs_id)
    mutate(directory)
    return directory


def expected_message(template, directory, good):
    details = {"d": directory}
    if "{needed}" in template:
        with fits.open(os.path.join(good, EVT)) as hdul:
            header = hdul["EVENTS"].header
            details["needed"] = hdul.fileinfo(1)["datLoc"] + header["NAXIS1"] * header["NAXIS2"]
        details["size"] = os.path.getsize(os.path.join(directory, EVT))
    if "{att_lo}" in template:
        time = fits.getdata(os.path.join(directory, ATT), "ATTITUDE")["TIME"]
        details["att_lo"], details["att_hi"] = float(time.min()), float(time.max())
    return template.format(**details)


@pytest.fixture(scope="module")
def bad_triplets(good_triplet, tmp_path_factory):
    root = str(tmp_path_factory.mktemp("bad"))
    cases = {}
    for name, (obs_id, mutate, template) in BAD_TRIPLETS.items():
        directory = make_bad(good_triplet, root, name, obs_id, mutate)
        cases[name] = (directory, expected_message(template, directory, good_triplet))
    for name, (obs_id, edit, template) in BAD_EVENT_ROWS.items():
        directory = make_bad(good_triplet, root, name, obs_id,
                             lambda d, edit=edit: edit_event_rows(os.path.join(d, EVT), edit))
        cases[name] = (directory, expected_message(template, directory, good_triplet))
    return cases


def test_good_triplet_is_consistent(good_triplet):
    triplet = dpco.discover_triplet(good_triplet)
    assert [os.path.basename(url) for url in triplet] == [EVT, ATT, ORB]
    assert dpco.check_triplet(dpco.read_triplet(triplet)) == []
    assert inspect_observation(good_triplet).obs_id == "0000000100"


@pytest.mark.parametrize("name", sorted(BAD_TRIPLETS))
def test_bad_triplet_error_names_every_problem(bad_triplets, name):
    directory, message = bad_triplets[name]
    with pytest.raises(EcpiError) as raised:
        inspect_observation(directory)
    assert str(raised.value) == message


def test_missing_directory_is_named():
    with pytest.raises(EcpiError, match=r"^/no/such/obs: no such observation directory$"):
        dpco.discover_triplet("/no/such/obs")


def test_bad_triplets_fail_alone_and_write_no_product(good_triplet, bad_triplets, tmp_path):
    out = str(tmp_path)
    directories = [good_triplet] + [directory for directory, _ in bad_triplets.values()]
    pipeline = test_pipeline.TestPipeline()
    read = (pipeline | beam.Create(directories) | ReadObservation(chunk_size=4000))
    calibrated = read.chunks | Cali(default_caldb_dir())
    _ = calibrated | WriteCaliProducts(out, ("ECL-GTI-CAL", "ECL-EVT-CAL"), "test",
                                       read.observations, failed_obs_ids(read.failures))
    failures = read.failures | beam.Map(lambda f: (f["obs_dir"], f["error"]))
    assert_that(failures, equal_to(list(bad_triplets.values())))
    result = pipeline.run()
    result.wait_until_finish()
    assert sorted(os.listdir(out)) == ["ECL-EVT-CAL_0000000100.fits",
                                       "ECL-GTI-CAL_0000000100.fits"]
    bad_rows = {c.key.metric.name: c.committed for c in result.metrics().query(
        MetricsFilter().with_namespace("ecpi.dpco"))["counters"]}
    assert bad_rows["rows_pha_range"] == 1 and bad_rows["rows_time_backstep"] == 1
    assert bad_rows["observations_failed_events"] == 2


def test_gzipped_triplet_is_inspected_and_read(good_triplet, tmp_path):
    import gzip

    from ecpi_beam.transforms.read import chunk_descriptors, read_event_chunk

    for name in (EVT, ATT, ORB):
        with open(os.path.join(good_triplet, name), "rb") as source, \
                gzip.open(os.path.join(tmp_path, name + ".gz"), "wb") as target:
            shutil.copyfileobj(source, target)
    observation = inspect_observation(str(tmp_path))
    plain = inspect_observation(good_triplet)
    assert observation.evt_url.endswith(".fits.gz") and observation.n_events == plain.n_events
    np.testing.assert_array_equal(observation.attitude.qparam, plain.attitude.qparam)
    last = chunk_descriptors(observation, 5000)[-1]
    events, rows_before = read_event_chunk(last)
    expected = fits.getdata(os.path.join(good_triplet, EVT), "EVENTS")
    np.testing.assert_array_equal(events["TIME"], expected["TIME"][last.first_row:])
    assert rows_before["TIME"][-1] == expected["TIME"][last.first_row - 1]
    np.testing.assert_array_equal(rows_before["TIME"], expected["TIME"][last.first_row - 64:
                                                                        last.first_row])
