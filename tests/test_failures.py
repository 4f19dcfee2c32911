"""Failure isolation after DPCO: one observation failing in a stage does not stop the others."""
import json

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline  # not collected
from apache_beam.testing.util import assert_that, equal_to

from ecpi_beam.caldb import default_caldb_dir
from ecpi_beam.params import BubeParams
from ecpi_beam.transforms.bube import Bube
from ecpi_beam.io.failures import FAILURES_FILE, FAILURES_FOLDER, FailureLog, gather
from test_bube_imag_transforms import random_chunk, timeline_with

GTI = {"PEO": np.array([[0.0, 100.0]]), "TEO": np.array([[0.0, 100.0]])}
PARAMS = BubeParams(energy_channels=((13, 60),), ear_occ_bub=("PEO",), bkg_cor_mod=("flat",))


def run_bube(failure_log):
    rng = np.random.default_rng(4)
    with BeamTestPipeline() as pipeline:
        # obs2 has no timeline: every one of its chunks fails in BUBE
        timelines = pipeline | "Timelines" >> beam.Create([("obs1", timeline_with(GTI))])
        chunks = pipeline | "Chunks" >> beam.Create(
            [("obs1", random_chunk(rng, 2000)), ("obs2", random_chunk(rng, 2000)),
             ("obs2", random_chunk(rng, 1000))])
        products = chunks | Bube(PARAMS, default_caldb_dir(), timelines, failure_log)
        assert_that(products | beam.Keys(), equal_to([("obs1", "13-60", "PEO")]))


def test_a_failing_observation_is_recorded_and_the_others_go_on(tmp_path):
    run_bube(FailureLog(str(tmp_path)))
    # one record per observation and stage, though both of its chunks failed
    assert len(list((tmp_path / FAILURES_FOLDER).iterdir())) == 1
    records = gather(str(tmp_path))
    assert [(r["obs_id"], r["stage"]) for r in records] == [("obs2", "bube")]
    assert "obs2" in records[0]["error"] and "\n" not in records[0]["error"]
    assert not (tmp_path / FAILURES_FOLDER).exists()
    lines = (tmp_path / FAILURES_FILE).read_text().splitlines()
    assert [json.loads(line)["obs_id"] for line in lines] == ["obs2"]


def test_without_a_failure_log_the_error_stops_the_run():
    with pytest.raises(Exception, match="obs2"):
        run_bube(None)


def test_collect_merges_dpco_failures_with_later_ones(tmp_path):
    (tmp_path / FAILURES_FILE).write_text(json.dumps(
        {"obs_dir": "/data/obs9", "obs_id": None, "error": "DPCO found 1 problem"}) + "\n")
    log = FailureLog(str(tmp_path))
    log.record("obs3", "imag", ValueError("no good pixel"))
    log.record("obs3", "imag", ValueError("no good pixel"))
    records = gather(str(tmp_path))
    assert [r.get("obs_dir") or r["obs_id"] for r in records] == ["/data/obs9", "obs3"]
    assert gather(str(tmp_path)) == records  # idempotent
