"""The streaming graph (docs/streaming.md): windows, watermark, lateness, one alert per burst.

Graph tests replay dripped observations (stream_fixtures.py) as a TestStream on the
DirectRunner, with a chosen watermark (on time, late within the allowed lateness, later than
it); the same slices watched by the production source (WatchSlices) on Prism give the same
alert. Live runs of `ecpi_run --streaming` are in test_stream_live.py.
"""
from __future__ import annotations

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing import test_stream
from apache_beam.transforms.window import TimestampedValue

from ecpi_beam.caldb import default_caldb_dir
from ecpi_beam.io.slices import SliceWatcher
from ecpi_beam.pipelines.stream import build_stream_pipeline, streaming_options, watched_slices
from ecpi_beam.transforms.windows import (SliceTiles, TileSums, TransientAlerts,
                                          WindowDetection, add_sums)
from stream_fixtures import (OBS_ID, SLICE_CODER, assert_one_alert_on_the_burst, drip_at_once,
                             read_alerts, replay, stream_params)

BURST_SEQS = (6, 7, 8, 9)  # the slices holding the burst: 60-100 s


def test_tiles_fall_on_window_boundaries_with_the_good_time_as_exposure(dripped):
    directory, truth = dripped["burst"]
    params = stream_params(directory, directory)
    tiles = SliceTiles(default_caldb_dir(), params.bube, params.stream.energy_channels, 5)
    tiles.setup()
    slice_set = SliceWatcher([str(directory)]).poll()[0][5]  # [50, 60) s: on target
    emitted = list(tiles.process(slice_set))
    starts = sorted(float(tv.timestamp.micros) / 1e6 for tv in emitted)
    assert starts == [slice_set.tstart, slice_set.tstart + 5]
    for tv in emitted:
        (obs_id, band, occ), (image, exposure, weighted_quaternion, hidden_seconds,
                              earth_seconds, clock_offset) = tv.value
        assert clock_offset == 0.0
        assert (obs_id, band, occ) == ("0000000018", "13-1260", "PEO")
        assert exposure == pytest.approx(5.0)
        assert image.shape == (80, 80) and image.sum() > 1000
        assert np.linalg.norm(weighted_quaternion) == pytest.approx(exposure)
        assert earth_seconds == pytest.approx(exposure)  # the Earth averaged over the good time
        assert np.shape(hidden_seconds) == (199, 199)
        assert np.all((0 <= hidden_seconds) & (hidden_seconds <= earth_seconds + 1e-9))


def test_one_alert_within_20_arcmin_in_the_window_of_the_burst(on_time_alert):
    assert on_time_alert["window_length"] in (10.0, 40.0)


def test_the_same_stream_without_the_burst_gives_no_alert(dripped, tmp_path):
    directory, _ = dripped["quiet"]
    assert replay(directory, tmp_path) == []


def test_slices_late_within_the_allowed_lateness_give_the_same_alert(dripped, tmp_path,
                                                                     on_time_alert):
    directory, truth = dripped["burst"]
    alerts = replay(directory, tmp_path, late_seqs=BURST_SEQS, late_by_s=40.0,
                    allowed_lateness=120)
    first = assert_one_alert_on_the_burst(alerts, truth)
    assert (first["window_start"], first["window_length"]) == (
        on_time_alert["window_start"], on_time_alert["window_length"])
    assert first["event_id"] == on_time_alert["event_id"]


def test_slices_later_than_the_allowed_lateness_are_dropped(dripped, tmp_path):
    directory, _ = dripped["burst"]
    alerts = replay(directory, tmp_path, late_seqs=BURST_SEQS, late_by_s=50.0,
                    allowed_lateness=5)
    assert alerts == []


def detection(start, length, ra, dec, snr, obs_id=OBS_ID):
    return WindowDetection(obs_id, "13-1260", "PEO", TSTART_S + start, float(length), ra, dec,
                           10.0, snr)


TSTART_S = 3.0e8


def decide(detections_with_watermarks, working_out, longest=40.0):
    """DecideAlerts alone on a TestStream: [(detection or None, watermark offset or None)]."""
    events = test_stream.TestStream(coder=SLICE_CODER)
    for item, watermark in detections_with_watermarks:
        if item is not None:
            events = events.add_elements([TimestampedValue(item, item.window_end - 1e-6)])
        if watermark is not None:
            events = events.advance_watermark_to(TSTART_S + watermark)
    events = events.advance_watermark_to_infinity()
    options = PipelineOptions(["--runner", "DirectRunner"])
    options.view_as(StandardOptions).streaming = True
    with beam.Pipeline(options=options) as pipeline:
        _ = (pipeline | events
             | TransientAlerts(str(working_out), longest, match_radius_arcmin=60.0))
    return read_alerts(working_out)


def test_a_burst_in_overlapping_windows_gives_one_alert_then_updates(tmp_path):
    alerts = decide([(detection(100, 10, 288.40, -25.75, 12.0), None),
                     (detection(90, 40, 288.45, -25.70, 9.0), None),   # weaker: no update
                     (detection(105, 10, 288.41, -25.74, 40.0), 120),  # stronger: update 1
                     (detection(110, 10, 200.0, 10.0, 8.0), 125)], tmp_path)  # another one
    first = sorted((a["ra"], a["sequence"]) for a in alerts)
    assert [seq for _, seq in first] == [0, 0, 1]
    burst = [a for a in alerts if abs(a["ra"] - 288.4) < 0.1]
    assert {a["event_id"] for a in burst} == {burst[0]["event_id"]}
    assert max(a["sequence"] for a in burst) == 1


def test_a_source_in_an_earlier_longest_window_is_steady_not_new(tmp_path):
    # the longest window [0, 40) holds it before the short window [50, 60) begins; a window
    # pane arriving after the short one (same watermark step) is still seen first
    alerts = decide([(detection(50, 10, 288.40, -25.75, 9.0), None),
                     (detection(0, 40, 288.42, -25.76, 15.0), 70)], tmp_path)
    assert [a["window_length"] for a in alerts] == [40.0]  # only the long one, first seen


def test_the_watched_folder_on_prism_gives_the_same_alert(dripped, tmp_path, on_time_alert):
    """The production path: WatchSlices (the splittable DoFn whose watermark is the watch's)
    on the default local runner, Prism, over the same slices: the same alert."""
    directory, truth = dripped["burst"]
    params = stream_params(directory, tmp_path)
    with beam.Pipeline(options=streaming_options(["--runner", "DirectRunner"])) as pipeline:
        build_stream_pipeline(watched_slices(pipeline, params, idle_timeout=3.0), params,
                              default_caldb_dir())
    first = assert_one_alert_on_the_burst(read_alerts(tmp_path), truth)
    assert first["event_id"] == on_time_alert["event_id"]


def test_panes_add_up_to_the_window(dripped):
    """A window's late pane holds its new tiles only; AccumulatePanes adds it to the earlier
    ones: the sum of two panes is the sum of their tiles, field by field."""
    directory, _ = dripped["burst"]
    params = stream_params(directory, directory)
    tiles = SliceTiles(default_caldb_dir(), params.bube, params.stream.energy_channels, 5)
    tiles.setup()
    emitted = [tv.value[1] for s in SliceWatcher([str(directory)]).poll()[0][5:7]
               for tv in tiles.process(s)]
    total = emitted[0]
    for tile in emitted[1:]:
        total = add_sums(total, tile)
    assert isinstance(total, TileSums)
    np.testing.assert_array_equal(total.image, sum(t.image for t in emitted))
    assert total.exposure == pytest.approx(sum(t.exposure for t in emitted))


@pytest.fixture(scope="module")
def earth_rise_dripped(tmp_path_factory):
    """120 s of a source-free field the Earth rises through (simu/earth_crossing.py), as
    10 s slices."""
    from ecpi_beam.simu.earth_crossing import earth_rise_scenario
    from stream_fixtures import DURATION_S

    directory = tmp_path_factory.mktemp("slices_earth_rise")
    scenario = earth_rise_scenario(name="stream_earth_rise", obs_id="0000000203", seed=203,
                                   duration=DURATION_S, end_angle_deg=55.0)
    drip_at_once(scenario, directory)
    return directory


def test_the_earth_rising_through_the_field_raises_no_alert(earth_rise_dripped, tmp_path):
    """The seed's default mode (shape_moretti_earth) fits each window's Earth and CXB
    templates, made from the window's own mean hidden sky: the rising limb is background, not
    a burst (windows without the Earth's track gave 9 false alerts on this field)."""
    assert replay(earth_rise_dripped, tmp_path, bkg_cor_mod=("shape_moretti_earth",)) == []


def test_the_stream_gets_its_own_prism_after_a_batch_pipeline_in_the_same_process(tmp_path):
    """Beam's DirectRunner asks Prism's per-process job server for batch pipelines, made
    without our binary (it would download one, which fails here); the stream's Prism is its
    own, made from the binary of the set-up."""
    with beam.Pipeline(options=PipelineOptions(["--runner", "DirectRunner"])) as pipeline:
        _ = pipeline | "Batch" >> beam.Create([1, 2]) | beam.Map(lambda value: value)
    marker = tmp_path / "ran"
    with beam.Pipeline(options=streaming_options(["--runner", "DirectRunner"])) as pipeline:
        _ = (pipeline | "Stream" >> beam.Create([str(marker)])
             | beam.Map(lambda path: open(path, "w").close()))
    assert marker.exists()
