"""Faults of MOSA (docs/reliability.md): a full disk while writing each MOSA product (the
campaign's ECL-MOS-IMA, ECL-MOS-SOP, ECL-MOS-LCS and an observation's ECL-MOS-ACC), a refused
path at the mosaic's name, and observations failing in BUBE or IMAG.

Each gets: exit code 2, one `error:` line naming the file and the errno (or the stage), the
failure in failures.jsonl, no traceback, nothing partial (no campaign product at all after a
campaign product failed, no product of a failed observation, no temporary), nothing outside
working_out changed; and the mosaic is made of the observations that succeeded only. Disk
faults are injected at the system-call boundary as in test_faults_machine.
"""
import errno
import json
import os

import pytest
from astropy.io import fits

from ecpi_beam.transforms.failures import isolating
from fault_support import assert_working_out_clean, error_lines, run_in_process, snapshot
from pipeline_fixtures import simulate_observation, stderr_lines, write_params
from test_faults_machine import inject_os_error

OBS_IDS = ("0000000901", "0000000902")
MOSA_PRODUCTS = ("ECL-MOS-IMA", "ECL-MOS-SOP", "ECL-MOS-LCS")


@pytest.fixture(scope="module")
def observations(tmp_path_factory, pipeline_workspace):
    root = tmp_path_factory.mktemp("mosaic_faults_in")
    for seed, obs_id in enumerate(OBS_IDS):
        simulate_observation(root / f"obs_{obs_id}", pipeline_workspace, obs_id=obs_id,
                             duration=40.0, seed=90 + seed)
    return root


@pytest.fixture
def case(tmp_path, observations):
    """(root, working_out, parameter file): one band, the MOSA products only."""
    root = tmp_path / "a" / "b"
    out = root / "out"
    out.mkdir(parents=True)
    params = write_params(root / "params.ini", observations / "obs_*", out, cali_out=(),
                          bube_out=(), imag_out=(), energy_channels=((13, 60),),
                          extra={"mosa": {"out_files": repr(list(MOSA_PRODUCTS))}})
    return root, out, params


def assert_one_fault(code, stdout, stderr, words):
    """Exit 2, one error line naming every word, no traceback, nothing else but progress."""
    report = f"exit code {code}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    assert code == 2, report
    assert "Traceback" not in stdout + stderr, report
    errors = error_lines(stderr)
    assert len(errors) == 1, report
    assert [line for line in stderr_lines(stderr) if not line.startswith(
        ("error: ", "warning: ", "campaign: "))] == [], report
    for word in words:
        assert word in errors[0], f"{word!r} not in {errors[0]!r}"


def failure_records(out):
    return [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]


def campaign_products(out):
    return sorted(name for name in os.listdir(out) if name.endswith("_MOSAIC.fits"))


@pytest.mark.parametrize("product", MOSA_PRODUCTS)
def test_a_full_disk_while_writing_a_campaign_product_leaves_no_campaign_product(
        product, case, tmp_path, pipeline_workspace, capfd, monkeypatch):
    root, out, params = case
    inject_os_error(monkeypatch, out, errno.ENOSPC, fsync_prefix=f".{product}_MOSAIC")
    before = snapshot(tmp_path, skip=out)
    code, stdout, stderr = run_in_process(params, pipeline_workspace, capfd, monkeypatch)
    target = out / f"{product}_MOSAIC.fits"
    assert_one_fault(code, stdout, stderr, ["observation MOSAIC: write failed", str(target),
                                            "No space left on device (errno 28)"])
    records = failure_records(out)
    assert [(r["obs_id"], r["stage"]) for r in records] == [("MOSAIC", "write")], records
    assert campaign_products(out) == []  # nothing partial: not even the products written
    assert snapshot(tmp_path, skip=out) == before
    assert_working_out_clean(out)
    # the observations succeeded: they keep their accumulators, and once the disk has room
    # the rerun makes the mosaic from them without running them again (tried once)
    assert sorted(os.listdir(out)) == sorted(
        [f"ECL-MOS-ACC_{obs_id}.fits" for obs_id in OBS_IDS] + ["campaign.json",
                                                                "failures.jsonl"])
    if product != MOSA_PRODUCTS[0]:
        return
    monkeypatch.undo()
    code, stdout, stderr = run_in_process(params, pipeline_workspace, capfd, monkeypatch)
    assert code == 0, stderr
    assert "(2 already done, skipped)" in stdout
    assert campaign_products(out) == sorted(f"{p}_MOSAIC.fits" for p in MOSA_PRODUCTS)
    assert not (out / "failures.jsonl").exists()


def test_a_full_disk_while_writing_an_accumulator_takes_its_observation_out(
        case, tmp_path, pipeline_workspace, capfd, monkeypatch):
    root, out, params = case
    failing, kept = OBS_IDS
    inject_os_error(monkeypatch, out, errno.ENOSPC, fsync_prefix=f".ECL-MOS-ACC_{failing}")
    code, stdout, stderr = run_in_process(params, pipeline_workspace, capfd, monkeypatch)
    assert_one_fault(code, stdout, stderr, [f"observation {failing}: write failed",
                                            str(out / f"ECL-MOS-ACC_{failing}.fits"),
                                            "No space left on device (errno 28)"])
    assert [r["obs_id"] for r in failure_records(out)] == [failing]
    assert not [name for name in os.listdir(out) if failing in name]
    assert_working_out_clean(out)
    for product in MOSA_PRODUCTS:
        with fits.open(out / f"{product}_MOSAIC.fits") as hdul:
            assert hdul[0].header["NOBS"] == 1
            assert list(hdul["OBSERVATIONS"].data["OBS_ID"]) == [kept]


def test_a_refused_link_at_the_mosaics_name_is_one_line_and_touches_nothing_outside(
        case, tmp_path, pipeline_workspace, capfd, monkeypatch):
    root, out, params = case
    outside = root / "sibling"
    outside.mkdir()
    (outside / "target.fits").write_bytes(b"not ours")
    (out / "ECL-MOS-SOP_MOSAIC.fits").symlink_to(outside / "target.fits")
    before = snapshot(tmp_path, skip=out)
    code, stdout, stderr = run_in_process(params, pipeline_workspace, capfd, monkeypatch)
    assert_one_fault(code, stdout, stderr, ["observation MOSAIC: write failed",
                                            "ECL-MOS-SOP_MOSAIC.fits", "outside working_out"])
    assert snapshot(tmp_path, skip=out) == before
    assert (outside / "target.fits").read_bytes() == b"not ours"
    assert (out / "ECL-MOS-SOP_MOSAIC.fits").is_symlink()  # the planted link is left alone
    assert campaign_products(out) == ["ECL-MOS-SOP_MOSAIC.fits"]  # only the link
    assert_working_out_clean(out)


def failing_for(cls, stage, obs_id):
    """`cls.process`, isolated as before, raising for the elements of `obs_id`."""
    inner = cls.process.__wrapped__

    def process(self, element, *args, **kwargs):
        key = element[0]
        if (key[0] if isinstance(key, tuple) else key) == obs_id:
            raise RuntimeError(f"injected {stage} fault")
        yield from inner(self, element, *args, **kwargs)
    return isolating(stage)(process)


@pytest.mark.parametrize("stage", ["bube", "imag"])
def test_an_observation_failing_in_a_later_stage_is_out_of_the_mosaic(
        stage, case, pipeline_workspace, capfd, monkeypatch):
    from ecpi_beam.transforms.bube import CorrectBackground
    from ecpi_beam.transforms.imag import ImageObservation

    root, out, params = case
    failing, kept = OBS_IDS
    cls = {"bube": CorrectBackground, "imag": ImageObservation}[stage]
    monkeypatch.setattr(cls, "process", failing_for(cls, stage, failing))
    code, stdout, stderr = run_in_process(params, pipeline_workspace, capfd, monkeypatch)
    assert_one_fault(code, stdout, stderr, [f"observation {failing}: {stage} failed",
                                            f"injected {stage} fault"])
    assert [r["obs_id"] for r in failure_records(out)] == [failing]
    assert not [name for name in os.listdir(out) if failing in name]
    for product in MOSA_PRODUCTS:
        with fits.open(out / f"{product}_MOSAIC.fits") as hdul:
            assert hdul[0].header["NOBS"] == 1
            assert list(hdul["OBSERVATIONS"].data["OBS_ID"]) == [kept]


def test_a_damaged_accumulator_fails_the_mosaic_and_its_observation_is_redone(
        case, pipeline_workspace, capfd, monkeypatch):
    root, out, params = case
    code, _, stderr = run_in_process(params, pipeline_workspace, capfd, monkeypatch)
    assert code == 0, stderr
    damaged, kept = OBS_IDS
    accumulator = out / f"ECL-MOS-ACC_{damaged}.fits"
    data = bytearray(accumulator.read_bytes())
    middle = len(data) // 2  # in an image: its primary header still reads, it looks done
    data[middle:middle + 1000] = b"\xff" * 1000
    accumulator.write_bytes(bytes(data))
    # an up-to-date mosaic is not remade (it did not need the damaged file): make it needed
    (out / "ECL-MOS-LCS_MOSAIC.fits").unlink()
    code, stdout, stderr = run_in_process(params, pipeline_workspace, capfd, monkeypatch)
    assert_one_fault(code, stdout, stderr, [f"observation {damaged}: mosa failed",
                                            str(accumulator), "not a readable ECL-MOS-ACC"])
    assert campaign_products(out) == []
    assert not [name for name in os.listdir(out) if damaged in name]
    assert_working_out_clean(out)
    code, stdout, stderr = run_in_process(params, pipeline_workspace, capfd, monkeypatch)
    assert code == 0, stderr
    assert "(1 already done, skipped)" in stdout  # the damaged one was redone
    with fits.open(out / "ECL-MOS-IMA_MOSAIC.fits") as hdul:
        assert hdul[0].header["NOBS"] == 2
