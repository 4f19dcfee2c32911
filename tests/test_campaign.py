"""Campaigns (ecpi_beam/campaign.py): resume, --force, the progress line, campaign.json, and
what a killed campaign leaves behind. Three 60 s observations, the middle one broken."""
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from astropy.io import fits

from ecpi_beam import campaign
from ecpi_beam.campaign import (CAMPAIGN_FILE, Entry, WaveSizes, caldb_fingerprint, plan,
                                products_stamp, progress_line)
from ecpi_beam.params import load_params
from pipeline_fixtures import (
    assert_same_hdu_data, describe, ecpi_run_command, leftover_temporaries, pipeline_env,
    run_ecpi, simulate_broken_campaign, write_params)

PRODUCTS = dict(cali_out=[], bube_out=["ECL-DET-IMA"], imag_out=["ECL-SOP-IMA"])


@pytest.fixture(scope="module")
def campaign_input(tmp_path_factory, pipeline_workspace):
    root = tmp_path_factory.mktemp("campaign_input")
    observations, broken = simulate_broken_campaign(root, pipeline_workspace)
    return root / "input" / "obs_*", observations, broken


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, pipeline_workspace, campaign_input):
    """The campaign run once, one observation per wave."""
    root = tmp_path_factory.mktemp("first_run")
    out = root / "out"
    out.mkdir()
    params = write_params(root / "params.ini", campaign_input[0], out, **PRODUCTS)
    result = run_ecpi(params, "--campaign_batch", "1", workspace=pipeline_workspace,
                      working_out=out)
    assert result.returncode == 2, describe(result)
    return result, params


def _summary(out: Path) -> dict:
    return json.loads((out / CAMPAIGN_FILE).read_text())


def _mtimes(out: Path) -> dict:
    return {p.name: p.stat().st_mtime_ns for p in out.glob("*.fits")}


def _copy_run(first_run, tmp_path):
    """A copy of the first run's working_out and a parameter file pointing at it."""
    result, params = first_run
    out = tmp_path / "out"
    shutil.copytree(result.working_out, out)
    text = params.read_text().replace(str(result.working_out), str(out))
    (tmp_path / "params.ini").write_text(text)
    return out, tmp_path / "params.ini"


def test_progress_lines_and_the_summary_file(first_run, campaign_input, pipeline_workspace):
    result, _ = first_run
    _, observations, broken = campaign_input
    progress = [line for line in result.stderr.splitlines() if line.startswith("campaign: ")]
    assert len(progress) == 3, result.stderr  # one per wave of one observation
    assert progress[-1].startswith("campaign: 2/3 done, 1 failed, 0 to do; "), progress
    assert all(" events/s; ETA " in line for line in progress)
    summary = _summary(result.working_out)
    assert (summary["total"], summary["done"], summary["failed"], summary["skipped"]) == \
        (3, 2, 1, 0)
    by_dir = {Path(entry["obs_dir"]): entry for entry in summary["observations"]}
    for observation in observations:
        entry = by_dir[observation.directory]
        if observation is broken:
            assert entry["status"] == "failed" and "truncated" in entry["error"]
            assert entry["products"] == []
        else:
            assert entry["status"] == "done" and entry["error"] is None
            assert entry["obs_id"] == observation.obs_id
            assert entry["products"] == ["ECL-DET-IMA", "ECL-SOP-IMA"]
            assert entry["events"] > 1000 and entry["time_s"] > 0
    assert summary["events"] == sum(entry["events"] for entry in summary["observations"])
    caldb = caldb_fingerprint(str(pipeline_workspace / ".ect" / "caldb"))
    assert summary["caldbhsh"] == caldb
    for product in result.working_out.glob("*.fits"):
        header = fits.getheader(product)
        assert (header["PARHASH"], header["CALDBHSH"]) == (summary["parhash"], caldb)


def test_rerun_skips_what_is_done_and_redoes_the_rest(first_run, tmp_path,
                                                      pipeline_workspace, campaign_input):
    out, params = _copy_run(first_run, tmp_path)
    before = _mtimes(out)
    failures_before = (out / "failures.jsonl").read_text()
    result = run_ecpi(params, workspace=pipeline_workspace, working_out=out)
    assert result.returncode == 2, describe(result)
    assert "2/3 observation(s) processed (2 already done, skipped)" in result.stdout
    assert "2 observation(s) already done" in result.stderr
    assert _mtimes(out) == before  # nothing rewritten
    assert (out / "failures.jsonl").read_text() == failures_before
    statuses = sorted(entry["status"] for entry in _summary(out)["observations"])
    assert statuses == ["failed", "skipped", "skipped"]


def test_a_mistyped_runner_is_one_line_even_when_everything_would_be_skipped(
        first_run, tmp_path, pipeline_workspace):
    out, params = _copy_run(first_run, tmp_path)
    before = _mtimes(out)
    result = run_ecpi(params, "--runner", "DirectRuner", workspace=pipeline_workspace,
                      working_out=out)
    assert result.returncode == 2, describe(result)
    assert result.stderr.strip().splitlines() == [line for line in result.stderr.splitlines()
                                                  if line.startswith("error: ")]
    assert len(result.stderr.strip().splitlines()) == 1, describe(result)
    assert "unknown runner (did you mean DirectRunner?)" in result.stderr
    assert _mtimes(out) == before


def test_force_redoes_everything(first_run, tmp_path, pipeline_workspace):
    out, params = _copy_run(first_run, tmp_path)
    before = _mtimes(out)
    result = run_ecpi(params, "--force", workspace=pipeline_workspace, working_out=out)
    assert result.returncode == 2, describe(result)
    assert "skipped" not in result.stdout
    after = _mtimes(out)
    assert sorted(after) == sorted(before)
    assert all(after[name] != before[name] for name in before)


def test_another_caldb_or_parameter_redoes_the_observation(first_run, tmp_path,
                                                           pipeline_workspace, campaign_input):
    """One product stamped with another CALDB: its observation is redone, the other skipped;
    other parameters: everything is redone."""
    out, params = _copy_run(first_run, tmp_path)
    _, observations, _ = campaign_input
    redone = observations[0].obs_id
    fits.setval(out / f"ECL-SOP-IMA_{redone}.fits", "CALDBHSH", value="0123456789abcdef")
    before = _mtimes(out)
    result = run_ecpi(params, workspace=pipeline_workspace, working_out=out)
    assert "(1 already done, skipped)" in result.stdout, describe(result)
    after = _mtimes(out)
    assert {name for name in before if after[name] != before[name]} == {
        f"ECL-DET-IMA_{redone}.fits", f"ECL-SOP-IMA_{redone}.fits"}

    caldb = str(pipeline_workspace / ".ect" / "caldb")
    dirs = [str(observation.directory) for observation in observations]
    same = load_params(str(params))
    assert [e.status for e in plan(same, dirs, products_stamp(same, caldb), False)] == [
        "skipped", "pending", "skipped"]
    params.write_text(params.read_text().replace("snr_ths = 7", "snr_ths = 8"))
    changed = load_params(str(params))
    assert [e.status for e in plan(changed, dirs, products_stamp(changed, caldb), False)] == [
        "pending"] * 3


def test_a_killed_campaign_leaves_only_whole_products_and_resumes(first_run, tmp_path,
                                                                  pipeline_workspace):
    """SIGKILL once the first wave is written: every product in working_out is whole (FITS
    checksums verify), and the next run skips what was finished."""
    out, params = _copy_run(first_run, tmp_path)
    for product in out.iterdir():
        product.unlink()
    process = subprocess.Popen([*ecpi_run_command("script"), str(params), "--campaign_batch",
                                "1"], env=pipeline_env(pipeline_workspace),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and process.poll() is None:
            if (out / CAMPAIGN_FILE).exists() and _summary(out)["done"] >= 1:
                break
            time.sleep(0.2)
        assert process.poll() is None, "the campaign ended before it could be killed"
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    for product in out.glob("*.fits"):
        with fits.open(product, checksum=True) as hdul:  # a partial file would not open
            hdul.verify("exception")
            assert all(hdu.verify_checksum() == 1 for hdu in hdul), product
    result = run_ecpi(params, workspace=pipeline_workspace, working_out=out)
    assert result.returncode == 2, describe(result)
    assert "already done, skipped" in result.stdout, describe(result)
    assert len(list(out.glob("*.fits"))) == 4
    assert leftover_temporaries(out) == []  # the killed run's temporaries and lock are gone


def test_progress_line_counts_and_eta():
    entries = [Entry("a", status="done"), Entry("b", status="failed"), Entry("c"),
               Entry("d", status="skipped"), Entry("e")]
    assert progress_line(entries, 1234.4, elapsed=60.0) == \
        "campaign: 2/5 done, 1 failed, 2 to do; 1234 events/s; ETA 00:01:00"


def test_direct_runner_waves_follow_the_pace():
    """A first wave of 4, then waves of about WAVE_SECONDS at the pace so far, 4 to 32."""
    sizes = WaveSizes(None, [])
    assert sizes.next(100) == campaign.DIRECT_RUNNER_BATCH
    sizes.done(4, 4 * 0.5)  # half a second per observation: 120 would make a minute
    assert sizes.next(100) == campaign.MAX_WAVE and sizes.next(7) == 7
    sizes.done(32, 32 * 30.0)  # slow observations: never below the first wave's size
    assert sizes.next(100) == campaign.DIRECT_RUNNER_BATCH
    slow = WaveSizes(None, ["--runner", "DirectRunner"])
    slow.done(4, 4 * 6.0)  # 6 s per observation: 10 make a minute
    assert slow.next(100) == 10
    fixed = WaveSizes(3, [])
    fixed.done(3, 0.1)
    assert fixed.next(100) == 3 and WaveSizes(0, []).next(100) == 100
    assert WaveSizes(None, ["--runner", "PortableRunner"]).next(100) == 100


def test_the_waves_change_nothing_in_the_products(first_run, tmp_path, pipeline_workspace):
    """One pipeline for the whole campaign gives the products of one pipeline per
    observation (first_run), to the bit, and the same failures and campaign.json."""
    result, params = first_run
    out = tmp_path / "out"
    out.mkdir()
    text = params.read_text().replace(str(result.working_out), str(out))
    (tmp_path / "params.ini").write_text(text)
    one = run_ecpi(tmp_path / "params.ini", "--campaign_batch", "0",
                   workspace=pipeline_workspace, working_out=out)
    assert one.returncode == 2, describe(one)
    names = sorted(p.name for p in result.working_out.iterdir() if not p.name.startswith("."))
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == names
    for name in names:
        if name.endswith(".fits"):
            assert_same_hdu_data(out / name, result.working_out / name)
            with fits.open(out / name) as ours, fits.open(result.working_out / name) as theirs:
                for mine, reference in zip(ours, theirs):
                    cards = [[(card.keyword, card.value) for card in hdu.header.cards
                              if card.keyword not in ("DATE", "CHECKSUM", "DATASUM")]
                             for hdu in (mine, reference)]
                    assert cards[0] == cards[1], (name, mine.name)
    assert _summary_without_times(out) == _summary_without_times(result.working_out)
    assert (out / "failures.jsonl").read_text() == \
        (result.working_out / "failures.jsonl").read_text().replace(
            str(result.working_out), str(out))


def _summary_without_times(out: Path) -> dict:
    summary = _summary(out)
    summary.pop("elapsed_s")
    for entry in summary["observations"]:
        entry.pop("time_s")
    return summary


def test_an_observation_where_spex_finds_no_source_is_skipped_on_rerun(
        tmp_path, pipeline_workspace, small_observation):
    """SPEX on IMAG's sources, a campaign of an observation with a source and an empty one
    (no SPEX product can exist for it): the rerun skips both, as campaign.json says they are
    done; another stamp in campaign.json, or --force, redoes the empty one."""
    from ecpi_beam.caldb import Caldb
    from ecpi_beam.simu import scenario_with, simulate
    from pipeline_fixtures import small_scenario

    inputs = tmp_path / "input"
    inputs.mkdir()
    (inputs / "obs_a").symlink_to(small_observation.directory, target_is_directory=True)
    empty = simulate(scenario_with(small_scenario(obs_id="0000000777", seed=77), sources=()),
                     str(inputs / "obs_b"),
                     Caldb.open(str(pipeline_workspace / ".ect" / "caldb")))
    out = tmp_path / "out"
    out.mkdir()
    params = write_params(tmp_path / "params.ini", inputs / "obs_*", out, **PRODUCTS,
                          extra={"spex": {"out_files": "['ECL-SPS-S1']"}})
    first = run_ecpi(params, workspace=pipeline_workspace, working_out=out)
    assert first.returncode == 0, describe(first)
    assert not list(out.glob(f"ECL-SPS-S1_{empty.obs_id}_*"))  # nothing to extract there
    assert list(out.glob(f"ECL-SPS-S1_{small_observation.obs_id}_*"))
    before = _mtimes(out)
    again = run_ecpi(params, workspace=pipeline_workspace, working_out=out)
    assert again.returncode == 0, describe(again)
    assert "2/2 observation(s) processed (2 already done, skipped)" in again.stdout, \
        describe(again)
    assert _mtimes(out) == before
    # a campaign.json of other parameters vouches for nothing: the empty one is redone
    summary = _summary(out)
    (out / CAMPAIGN_FILE).write_text(json.dumps({**summary, "parhash": "0" * 16}))
    redone = run_ecpi(params, workspace=pipeline_workspace, working_out=out)
    assert redone.returncode == 0, describe(redone)
    assert "(1 already done, skipped)" in redone.stdout, describe(redone)
