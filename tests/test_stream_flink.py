"""`ecpi_run params.ini --streaming` on a local Flink session cluster (marker `engine`).

The cluster is engine_fixtures' `flink_cluster` (`ecpi_engine start flink` on free ports, the
default ports held by others); ecpi_run gets the options it prints (the FlinkRunner through
Beam's Flink job server, the cluster's worker pool), so the watched folder is read by the
splittable DoFn on the cluster, with its own watermark (no TestStream), while the drip writes
the burst stream of test_stream_live.py (with its stray observation and truncated slice) at
10x real time. The same alert as on the local runner, on time; the bad slice on stderr as it
lands; Flink's REST /jobs/overview lists the job, FINISHED.
"""
from __future__ import annotations

import pytest

from ecpi_beam.io.slices import slice_name
from ecpi_beam.pipelines.stream import STATUS_FILE
from stream_fixtures import (MAX_LATENCY_S, OBS_ID, STRAY_OBS_ID, T_PEAK_S, LiveStream,
                             assert_one_alert_on_the_burst, place_triplet, stream_scenario)
from test_stream_live import STRAY_AT, TRUNCATED


@pytest.mark.engine
def test_the_burst_stream_on_flink_gives_the_same_alert(flink_cluster, tmp_path, stray_slice,
                                                        on_time_alert):
    before = {job["jid"] for job in flink_cluster.rest("/jobs/overview")["jobs"]}
    stray_dir, _ = stray_slice

    def drop_the_stray(seq, kind, path, watched, landed):
        if (seq, kind) == (STRAY_AT, "evt"):
            place_triplet(stray_dir, STRAY_OBS_ID, 0, watched)

    def watching() -> bool:  # the workers' log is the worker pool's: the watch's status
        return (tmp_path / "out" / STATUS_FILE).exists()

    run = LiveStream(tmp_path, runner_args=tuple(flink_cluster.options),
                     idle_timeout=15.0).run(
        stream_scenario(True, "stream_flink"), truncate=(TRUNCATED,), on_slice=drop_the_stray,
        started=watching)
    assert run.returncode == 2, run.stderr_text()[-3000:]
    ours = [alert for alert in run.alerts if alert["obs_id"] == OBS_ID]
    first = assert_one_alert_on_the_burst(ours, run.truth)
    assert first["event_id"] == on_time_alert["event_id"]  # the local runner's alert
    peak_landed = run.landed[(OBS_ID, int(T_PEAK_S // 10), "evt")]
    assert first["written"] - peak_landed <= MAX_LATENCY_S, (first, peak_landed)
    assert [a for a in run.alerts if a["obs_id"] == STRAY_OBS_ID and a["sequence"] == 0]
    assert run.first_error_with(slice_name("evt", OBS_ID, TRUNCATED)) is not None
    (job,) = [job for job in flink_cluster.rest("/jobs/overview")["jobs"]
              if job["jid"] not in before]
    assert job["state"] == "FINISHED" and job["name"].startswith("BeamApp"), job
