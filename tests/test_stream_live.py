"""`ecpi_run params.ini --streaming` live, on the default local runner (Beam's Prism), while
`drip` writes 10 s slices at 10x real time into the watched folder (docs/streaming.md).

- A burst stream into which a slice triplet of another observation (3000 s earlier, then
  nothing) and a truncated event slice of the same observation are dropped: the burst's alert
  within 20' and at most 30 s after its peak's slice lands; the truncated file named on stderr
  as it lands and in failures.jsonl; the stray observation processed on its own (its burst's
  alert under its own OBS_ID, once); exit code 2 (a slice was skipped).
- A steady catalogued source (the Crab) in the field: no alert.
"""
from __future__ import annotations

import re

from ecpi_beam.io.slices import slice_name
from ecpi_beam.kernels.catalogue import angular_separation_deg
from stream_fixtures import (MAX_LATENCY_S, MAX_OFFSET_ARCMIN, OBS_ID, STRAY_OBS_ID, T_PEAK_S,
                             LiveStream, assert_one_alert_on_the_burst, burst_of, crab_scenario,
                             place_triplet, stream_scenario)

STRAY_AT = 3  # the stray triplet lands with this slice of the burst stream
TRUNCATED = 4  # this event slice of the burst stream lands cut in half
LANDS_WITHIN_S = 10.0  # a bad slice is on stderr this soon after it lands


def test_a_stray_observation_and_a_truncated_slice_delay_no_alert(tmp_path, stray_slice):
    stray_dir, stray_truth = stray_slice

    def drop_the_stray(seq, kind, path, watched, landed):
        if (seq, kind) == (STRAY_AT, "evt"):
            place_triplet(stray_dir, STRAY_OBS_ID, 0, watched)

    run = LiveStream(tmp_path, idle_timeout=10.0).run(
        stream_scenario(True, "stream_live"), truncate=(TRUNCATED,), on_slice=drop_the_stray)
    summary = run.stdout.strip().splitlines()[-1]
    assert run.returncode == 2, run.stderr_text()[-3000:]  # something was skipped
    assert "1 slice(s) skipped" in summary, summary

    # the burst: one alert (then updates) within 20', at most 30 s after its peak's slice
    ours = [alert for alert in run.alerts if alert["obs_id"] == OBS_ID]
    first = assert_one_alert_on_the_burst(ours, run.truth)
    peak_landed = run.landed[(OBS_ID, int(T_PEAK_S // 10), "evt")]
    assert first["written"] - peak_landed <= MAX_LATENCY_S, (first, peak_landed)

    # the truncated slice: named on stderr as it landed, recorded, skipped
    bad = slice_name("evt", OBS_ID, TRUNCATED)
    seen = run.first_error_with(bad)
    assert seen is not None, run.stderr_text()[-3000:]
    when, line = seen
    assert "truncated" in line
    assert when - run.landed[(OBS_ID, TRUNCATED, "evt")] < LANDS_WITHIN_S
    (record,) = [r for r in run.failures() if r.get("slice") == TRUNCATED]
    assert record["obs_id"] == OBS_ID and record["file"].endswith(bad)
    assert "truncated" in record["reason"]

    # the stray observation: processed on its own, its burst alerted once under its OBS_ID
    theirs = [alert for alert in run.alerts if alert["obs_id"] == STRAY_OBS_ID]
    assert [alert["sequence"] for alert in theirs if alert["sequence"] == 0] == [0], theirs
    grb = burst_of(stray_truth)
    for alert in theirs:
        assert 60 * float(angular_separation_deg(alert["ra"], alert["dec"], grb["ra"],
                                                 grb["dec"])) < MAX_OFFSET_ARCMIN
        assert stray_truth.tstart - 10 <= alert["window_start"] < stray_truth.tstop  # its times


def test_a_steady_catalogued_source_in_the_field_gives_no_alert(tmp_path):
    """The Crab (ECL-SRC-CAT) 5 deg off axis: found in every window, its position scattering
    from window to window, and always associated with its catalogue entry by the batch rule
    (kernels.catalogue.match_known_sources)."""
    run = LiveStream(tmp_path, idle_timeout=10.0).run(crab_scenario())
    assert run.returncode == 0, run.stderr_text()[-3000:]
    assert run.alerts == []
    assert "0 alert(s), 0 update(s), 0 slice(s) skipped" in run.stdout
    windows = int(re.search(r"windows imaged (\d+)", run.stdout).group(1))
    known = int(re.search(r"known sources seen (\d+)", run.stdout).group(1))
    assert windows >= 15 and known >= windows // 2, run.stdout  # the Crab, window after window
