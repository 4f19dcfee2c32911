"""A campaign of two good observations and many bad ones, run once: every bad observation is
one failure record and one `error:` line naming its directory, none of them leaves a product,
nothing outside working_out changes, and the good observations' products, and the campaign's
mosaic, equal those of a clean campaign of the good ones alone (compared HDU by HDU): a bad
observation enters no MOSA product, wherever it failed (DPCO, reading its events, a write)."""
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from fault_support import (assert_same_products, assert_working_out_clean, error_lines,
                           run_in_process, snapshot)
from pipeline_fixtures import ALL_PRODUCTS, simulate_observation, stderr_lines, write_params
from test_dpco import edit_event_rows, set_obs_id
from test_faults_observation import (edit_table, empty_events, gzip_and_cut, in_file,
                                     set_raw_card, set_row)

GOOD_IDS = ("0000000501", "0000000502")
MOSA = {"mosa": {"out_files": "['ECL-MOS-IMA', 'ECL-MOS-SOP', 'ECL-MOS-LCS']"}}
CAMPAIGN_PRODUCTS = ("ECL-MOS-IMA_MOSAIC.fits", "ECL-MOS-SOP_MOSAIC.fits",
                     "ECL-MOS-LCS_MOSAIC.fits")
LINKED_ID = "0000000503"  # good data, but its ECL-SKY-IMA name is a link leading out
DUPLICATE_ID = "0000000777"
# the triplet of pipeline_fixtures.small_scenario
CAMPAIGN_EVT, CAMPAIGN_ATT, CAMPAIGN_ORB = (f"{kind}_small.fits" for kind in (
    "ECL-EVT-SEC", "SVO-ATT-CNV", "SVO-ORB-CNV"))


def names_of(pattern_id):
    return lambda d: set_obs_id(d, pattern_id, (CAMPAIGN_EVT, CAMPAIGN_ATT, CAMPAIGN_ORB))


def set_obs_id_then(obs_id, mutate):
    def apply(directory):
        names_of(obs_id)(directory)
        mutate(directory)
    return apply


# directory name -> (mutation of a copy of the first good observation, words of its error)
BAD_OBSERVATIONS = {
    "traversal": (names_of("x/../../../sibling"), ["OBS_ID = 'x/../../../sibling'"]),
    "slash": (names_of("zz/y"), ["OBS_ID = 'zz/y'"]),
    "escape": (names_of("zz/../../escaped_w"), ["OBS_ID = 'zz/../../escaped_w'"]),
    "victim": (names_of("../../../../../victim"), ["OBS_ID = '../../../../../victim'"]),
    "overlong": (names_of("A" * 300), ["OBS_ID", "300 characters"]),
    "newline_card": (in_file(CAMPAIGN_EVT, lambda p: set_raw_card(p, "OBS_ID", "'0000\n000601'")),
                     ["OBS_ID", "not valid FITS"]),
    "duplicate_a": (names_of(DUPLICATE_ID), [f"OBS_ID '{DUPLICATE_ID}' is also the OBS_ID of"]),
    "duplicate_b": (names_of(DUPLICATE_ID), [f"OBS_ID '{DUPLICATE_ID}' is also the OBS_ID of"]),
    "qparam_nan": (set_obs_id_then("0000000602", in_file(
        CAMPAIGN_ATT, lambda p: edit_table(p, "ATTITUDE",
                                                       set_row("QPARAM", 4, np.nan)))),
        ["QPARAM not finite", "first at row 4"]),
    "event_time_nan": (set_obs_id_then("0000000603", in_file(
        CAMPAIGN_EVT, lambda p: edit_event_rows(
            p, lambda data: data["TIME"].__setitem__(11, np.nan)))),
        ["EVENTS", "TIME not finite", "first at row 11"]),
    "position_zero": (set_obs_id_then("0000000604", in_file(
        CAMPAIGN_ORB, lambda p: edit_table(p, "ORBIT", set_row("POSITION", 0, 0)))),
        ["POSITION below the Earth's surface", "first at row 0"]),
    "empty_events": (set_obs_id_then("0000000605", in_file(CAMPAIGN_EVT,
                                                           empty_events)),
                     ["EVENTS: no rows"]),
    "truncated_gz": (set_obs_id_then("0000000606", lambda d: gzip_and_cut(d, CAMPAIGN_EVT)),
                     ["truncated gzip file"]),
    "linked_product": (names_of(LINKED_ID),
                       [f"observation {LINKED_ID}: write failed", "outside working_out"]),
}


@pytest.fixture(scope="module")
def campaign(tmp_path_factory, pipeline_workspace):
    """Good observations, bad copies, and a clean run of the good ones alone."""
    root = tmp_path_factory.mktemp("faults_campaign") / "a" / "b"
    good = [simulate_observation(root / "good_in" / f"obs_{obs_id}", pipeline_workspace,
                                 obs_id=obs_id, duration=30.0, seed=seed)
            for seed, obs_id in enumerate(GOOD_IDS)]
    inputs = root / "in"
    for observation in good:
        shutil.copytree(observation.directory, inputs / observation.directory.name)
    for name, (mutate, _) in BAD_OBSERVATIONS.items():
        directory = inputs / f"obs_{name}"
        shutil.copytree(good[0].directory, directory)
        for extra in directory.glob("truth_*"):
            extra.unlink()
        mutate(str(directory))
    clean_out = root / "clean_out"
    clean_out.mkdir()
    return root, good, clean_out


@pytest.fixture(scope="module")
def clean_run(campaign, pipeline_workspace):
    """The good observations alone, run as the faulty campaign is (the `ecpi_run` command in
    its own process: the same numerical environment, one BLAS thread, so the products can be
    compared bit for bit)."""
    import subprocess

    from pipeline_fixtures import ecpi_run_command, pipeline_env

    root, good, clean_out = campaign
    params = write_params(root / "clean.ini", root / "good_in" / "obs_*", clean_out, extra=MOSA)
    completed = subprocess.run([*ecpi_run_command("script"), str(params)], capture_output=True,
                               text=True, timeout=600, env=pipeline_env(pipeline_workspace))
    assert completed.returncode == 0, completed.stderr
    return clean_out


@pytest.fixture(scope="module")
def faulty_run(campaign, clean_run, pipeline_workspace, tmp_path_factory):
    """(exit code, stdout, stderr, working_out, snapshot before, snapshot after)."""
    root, good, _ = campaign
    out = root / "out"
    out.mkdir()
    (root / "sibling").mkdir()
    (root / "sibling" / "target.fits").write_bytes(b"not ours")
    (out / f"ECL-SKY-IMA_{LINKED_ID}.fits").symlink_to(root / "sibling" / "target.fits")
    params = write_params(root / "faulty.ini", root / "in" / "obs_*", out, extra=MOSA)
    top = root.parent.parent
    before = snapshot(top, skip=out)
    import subprocess

    from pipeline_fixtures import ecpi_run_command, pipeline_env

    completed = subprocess.run([*ecpi_run_command("script"), str(params)],
                               capture_output=True, text=True, timeout=600,
                               env=pipeline_env(pipeline_workspace))
    return (completed.returncode, completed.stdout, completed.stderr, out, before,
            snapshot(top, skip=out))


def test_the_campaign_exits_2_with_one_line_per_bad_observation(faulty_run):
    code, stdout, stderr, out, _, _ = faulty_run
    report = f"{code}\n{stdout}\n{stderr}"
    assert code == 2, report
    assert "Traceback" not in stdout + stderr, report
    assert len(error_lines(stderr)) == len(BAD_OBSERVATIONS), report
    progress = [line for line in stderr_lines(stderr) if line.startswith("campaign")]
    assert len(stderr_lines(stderr)) - len(progress) == len(BAD_OBSERVATIONS), report  # once
    n_good = len(GOOD_IDS)
    assert f"{n_good}/{n_good + len(BAD_OBSERVATIONS)} observation(s) processed" in stdout, report


@pytest.mark.parametrize("name", sorted(BAD_OBSERVATIONS))
def test_each_bad_observation_is_a_failure_record_naming_it(faulty_run, campaign, name):
    code, stdout, stderr, out, _, _ = faulty_run
    root, _, _ = campaign
    directory = str(root / "in" / f"obs_{name}")
    _, words = BAD_OBSERVATIONS[name]
    records = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    mine = [r for r in records if r.get("obs_dir") == directory
            or (name == "linked_product" and r.get("obs_id") == LINKED_ID)]
    assert len(mine) == 1, records
    lines = [line for line in error_lines(stderr) if all(word in line for word in words)]
    assert lines, f"no error line with {words}:\n{stderr}"
    if name != "linked_product":  # a write failure names the product, not the directory
        assert any(directory in line for line in lines), lines
    if name.startswith("duplicate"):
        other = "duplicate_b" if name == "duplicate_a" else "duplicate_a"
        assert str(root / "in" / f"obs_{other}") in mine[0]["error"]


def test_bad_observations_leave_no_product_and_nothing_outside_changes(faulty_run, campaign):
    code, stdout, stderr, out, before, after = faulty_run
    assert after == before, "something outside working_out changed"
    assert_working_out_clean(out)
    expected = {f"{product}_{obs_id}.fits" for product in ALL_PRODUCTS for obs_id in GOOD_IDS}
    expected |= {f"ECL-SOP-IMA_{obs_id}.reg" for obs_id in GOOD_IDS}  # DS9 regions beside it
    # what each good observation adds to the mosaic, and the mosaic
    expected |= {f"ECL-MOS-ACC_{obs_id}.fits" for obs_id in GOOD_IDS} | set(CAMPAIGN_PRODUCTS)
    # the planted link stays; campaign.json is the campaign's summary (docs/runners.md)
    expected |= {"failures.jsonl", "campaign.json", f"ECL-SKY-IMA_{LINKED_ID}.fits"}
    # a VOEvent per NEW (uncatalogued) source of the good observations, none of the failed ones
    alerts = {name for name in os.listdir(out) if name.startswith("ECL-ALERT_")}
    assert {name.split("_")[1] for name in alerts} == set(GOOD_IDS), alerts
    assert set(os.listdir(out)) == expected | alerts
    assert (out / f"ECL-SKY-IMA_{LINKED_ID}.fits").is_symlink()


@pytest.mark.parametrize("product", ALL_PRODUCTS)
def test_good_observations_get_the_products_of_a_clean_run(faulty_run, clean_run, product):
    out = faulty_run[3]
    for obs_id in GOOD_IDS:
        assert_same_products(out / f"{product}_{obs_id}.fits",
                             Path(clean_run) / f"{product}_{obs_id}.fits")


@pytest.mark.parametrize("product", ["ECL-MOS-ACC"])
def test_good_observations_get_the_mosaic_accumulators_of_a_clean_run(faulty_run, clean_run,
                                                                     product):
    test_good_observations_get_the_products_of_a_clean_run(faulty_run, clean_run, product)


@pytest.mark.parametrize("name", CAMPAIGN_PRODUCTS)
def test_the_mosaic_is_that_of_the_good_observations_alone(faulty_run, clean_run, name):
    assert_same_products(faulty_run[3] / name, Path(clean_run) / name)
