"""`ecpi_run params.ini --streaming` on a local Flink session cluster (marker `engine`).

`ecpi_engine start flink` (free ports) starts the cluster; ecpi_run gets the options it prints
(the FlinkRunner through Beam's Flink job server, the cluster's worker pool), so the watched
folder is read by the splittable DoFn on the cluster, with its own watermark (no TestStream),
while the drip writes the burst stream of test_stream_live.py (with its stray observation and
truncated slice) at 10x real time. The same alert as on the local runner, on time; the bad
slice on stderr as it lands; Flink's REST /jobs/overview lists the job, FINISHED.
"""
from __future__ import annotations

import json
import urllib.request

import pytest

from ecpi_beam.io.slices import slice_name
from ecpi_beam.pipelines.stream import STATUS_FILE
from stream_fixtures import (MAX_LATENCY_S, OBS_ID, STRAY_OBS_ID, T_PEAK_S, LiveStream,
                             assert_one_alert_on_the_burst, place_triplet, stream_scenario)
from test_engines import ecpi_engine
from test_stream_live import STRAY_AT, TRUNCATED

FLINK_START_TIMEOUT_S = 300


def _jobs(rest: str) -> list[dict]:
    with urllib.request.urlopen(f"http://{rest}/jobs/overview", timeout=10) as response:
        return json.loads(response.read().decode())["jobs"]


@pytest.fixture(scope="module")
def flink_options(tmp_path_factory):
    """The ecpi_run options of a Flink session cluster started on free ports; stopped after
    the module by `ecpi_engine stop`, which ends its processes by id."""
    state = tmp_path_factory.mktemp("flink_state")
    result = ecpi_engine("start", "flink", "--rest-port", "0", "--rpc-port", "0",
                         "--worker-pool-port", "0", state=state, timeout=FLINK_START_TIMEOUT_S)
    if result.returncode != 0:
        ecpi_engine("stop", "flink", state=state)
        pytest.fail(f"ecpi_engine start flink failed ({result.returncode}):\n{result.stdout}\n"
                    f"{result.stderr}")
    try:
        yield result.stdout.strip().splitlines()[-1].split()
    finally:
        stopped = ecpi_engine("stop", "flink", state=state)
        assert stopped.returncode == 0, stopped.stderr


@pytest.mark.engine
def test_the_burst_stream_on_flink_gives_the_same_alert(flink_options, tmp_path, stray_slice,
                                                        on_time_alert):
    rest = flink_options[flink_options.index("--flink_master") + 1]
    before = {job["jid"] for job in _jobs(rest)}
    stray_dir, _ = stray_slice

    def drop_the_stray(seq, kind, path, watched, landed):
        if (seq, kind) == (STRAY_AT, "evt"):
            place_triplet(stray_dir, STRAY_OBS_ID, 0, watched)

    def watching() -> bool:  # the workers' log is the worker pool's: the watch's status
        return (tmp_path / "out" / STATUS_FILE).exists()

    run = LiveStream(tmp_path, runner_args=tuple(flink_options), idle_timeout=15.0).run(
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
    (job,) = [job for job in _jobs(rest) if job["jid"] not in before]
    assert job["state"] == "FINISHED" and job["name"].startswith("BeamApp"), job
