"""A full disk while writing, on a real small file system: every writer of every component,
MOSA and SPEX included, fails the same contained way (docs/reliability.md).

working_out is a tmpfs sized at 40, 70, 85 and 95 % of what a good run of a two-observation
campaign (every product, the mosaic, spectra and light curves) writes; the disk fills at a
different writer each time. Each run must give exit 2, only one-line errors naming the file
and errno 28 (no traceback: astropy's `'list' object has no attribute '_file'` hid the
OSError), failures.jsonl, no product of a failed observation (the mosaic counts as the
observation 'MOSAIC'), no temporary, and the good observations' products equal to a run on a
disk with room.

Mounting a tmpfs needs root, as CI runs the suite; elsewhere the tests fail and say so.
"""
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from ecpi_beam.params import params_text
from fault_support import assert_working_out_clean, run_in_process
from pipeline_fixtures import (assert_same_hdu_data, describe, run_ecpi, simulate_observation,
                               stderr_lines)

FILL_LEVELS = (40, 70, 85, 95)
OBS_IDS = ("0000000701", "0000000702")
EXTRA = {"mosa": {"out_files": "['ECL-MOS-IMA', 'ECL-MOS-SOP']"},
         "spex": {"out_files": "['ECL-SPS-S1', 'ECL-LCS-S1']"}}


def campaign_params(path: Path, working_in, working_out) -> Path:
    path.write_text(params_text(
        working_in, working_out, cali_out=["ECL-GTI-CAL", "ECL-EVT-CAL"],
        bube_out=["ECL-DET-IMA", "ECL-DET-UBC", "ECL-GTI-UBC", "ECL-EAR-OFM"],
        imag_out=["ECL-SKY-IMA", "ECL-SOP-IMA"], bkg_cor_mod=("shape",), extra=EXTRA))
    return path


@pytest.fixture(scope="module")
def campaign(tmp_path_factory, pipeline_workspace):
    """Two 40 s observations and a run of them with room: (input glob, its working_out, the
    bytes it wrote, the run's result)."""
    root = tmp_path_factory.mktemp("disk_campaign")
    for seed, obs_id in enumerate(OBS_IDS, start=11):
        simulate_observation(root / "in" / f"obs_{obs_id}", pipeline_workspace, obs_id=obs_id,
                             duration=40.0, name=f"disk{obs_id}", seed=seed)
    out = root / "reference"
    out.mkdir()
    params = campaign_params(root / "reference.ini", root / "in" / "obs_*", out)
    result = run_ecpi(params, workspace=pipeline_workspace, working_out=out)
    assert result.returncode == 0, describe(result)
    made = {p.name.split("_", 1)[0] for p in out.iterdir()}
    assert {"ECL-MOS-IMA", "ECL-MOS-SOP", "ECL-SPS-S1", "ECL-LCS-S1", "ECL-EVT-CAL"} <= made
    size = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    return root / "in" / "obs_*", out, size, result


@pytest.fixture
def small_disk(tmp_path):
    """mount(size) -> a directory on a tmpfs of `size` bytes, unmounted afterwards."""
    mounted = []

    def mount(size: int) -> Path:
        if os.geteuid() != 0:
            pytest.fail("a full disk is tested on a tmpfs, which needs root to mount (CI runs "
                        "the suite as root)")
        where = tmp_path / "small_disk"
        where.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                       check=True)
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", str(where)], check=True)


def failed_ids(records) -> set:
    return {record["obs_id"] for record in records}


@pytest.mark.parametrize("percent", FILL_LEVELS)
def test_a_full_disk_is_contained_in_every_writer(percent, campaign, small_disk, tmp_path,
                                                  pipeline_workspace, capfd, monkeypatch):
    working_in, reference, size, _ = campaign
    out = small_disk(size * percent // 100)
    params = campaign_params(tmp_path / "params.ini", working_in, out)
    code, stdout, stderr = run_in_process(params, pipeline_workspace, capfd, monkeypatch)
    report = f"exit {code}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    assert code == 2 and "Traceback" not in stdout + stderr, report
    lines = stderr_lines(stderr)
    errors = [line for line in lines if line.startswith("error: ")]
    assert errors and all(line.startswith(("error: ", "warning: ", "campaign: "))
                          for line in lines), report
    for line in errors:
        assert f"{out}/" in line and "No space left on device (errno 28)" in line, line
        assert "_file" not in line, line
    records = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    assert len(records) == len(errors) and failed_ids(records) <= {*OBS_IDS, "MOSAIC"}
    assert_working_out_clean(out)
    names = sorted(p.name for p in out.iterdir())
    for obs_id in failed_ids(records):  # nothing of a failed observation is left
        assert [name for name in names if obs_id in name] == [], (obs_id, names)
    for name in names:  # what is left is whole, and what a run with room makes
        if name.endswith((".fits", ".rmf", ".arf")) and "MOSAIC" not in name:
            assert_same_hdu_data(out / name, reference / name)
    summary = json.loads((out / "campaign.json").read_text())
    statuses = {entry["obs_id"]: entry["status"] for entry in summary["observations"]}
    assert {obs_id for obs_id, status in statuses.items() if status == "failed"} == \
        failed_ids(records) - {"MOSAIC"}, summary


def test_the_summary_and_campaign_json_count_what_was_made_mosa_and_spex_included(campaign):
    _, out, _, result = campaign
    files = [p.name for p in out.iterdir() if p.suffix in (".fits", ".rmf", ".arf")]
    assert "2/2 observation(s) processed" in result.stdout
    assert f"; products {len(files)}; " in result.stdout, result.stdout
    summary = json.loads((out / "campaign.json").read_text())
    assert summary["mosaic"] == {"products": ["ECL-MOS-IMA", "ECL-MOS-SOP"], "error": None}
    for entry in summary["observations"]:
        assert entry["status"] == "done"
        assert {"ECL-SPS-S1", "ECL-LCS-S1", "ECL-EVT-CAL", "ECL-SOP-IMA"} <= set(entry["products"])


def test_spectra_and_light_curves_name_the_source_as_the_catalogue_does(campaign):
    """OBJECT was 'SRC01': it is the catalogue's name (known source, else ECL Jhhmmss.s+dd...)."""
    from astropy.io import fits

    _, out, _, _ = campaign
    for obs_id in OBS_IDS:
        catalogue = fits.getdata(out / f"ECL-SOP-IMA_{obs_id}.fits", "CATALOG")
        brightest = catalogue[np.argmax(catalogue["SNR"])]
        name = brightest["KNOWN_NAME"].strip() or brightest["NAME"].strip()
        assert name.startswith("ECL J")  # the simulated source is in no catalogue
        made = sorted(out.glob(f"ECL-[SL]?S-S1_{obs_id}_S01_*.fits"))
        assert len(made) == 6  # one spectrum, five light curves
        for path in made:
            assert fits.getval(path, "OBJECT", 1) == name, path.name


def fill(directory: Path) -> None:
    """Write a file in `directory` until the disk is full."""
    with open(directory / "filler", "wb") as stream:
        try:
            while True:
                stream.write(b"\0" * 65536)
                stream.flush()
        except OSError:
            pass


def test_write_product_on_a_full_disk_raises_the_os_error_not_astropys(small_disk):
    import numpy as np
    from astropy.io import fits

    from ecpi_beam.io.fs import WriteError
    from ecpi_beam.io.products import write_product

    out = small_disk(256 * 1024)
    url = str(out / "ECL-SKY-IMA_1.fits")
    image = np.ones((199, 199), dtype="f4")[::-1]  # a view, as the sky images are
    with pytest.raises(WriteError) as caught:
        write_product(url, [fits.ImageHDU(image, name=f"SNR{k}") for k in range(3)],
                      {"OBS_ID": ("1", "")})
    assert str(caught.value) == f"{url}: cannot write it (No space left on device (errno 28))"
    assert caught.value.errno == 28 and caught.value.obs_id == "1"
    assert os.listdir(out) == []  # no temporary left


def test_the_failure_log_has_room_on_a_full_disk(small_disk):
    from ecpi_beam.io import failures

    out = small_disk(4 * failures.RESERVE_BYTES)
    failures.reserve_space(str(out))
    fill(out)
    log = failures.FailureLog(str(out))
    log.record("0000000701", "write", OSError(28, "No space left on device"))
    log.record("0000000702", "imag", ValueError("no good pixel"))
    records = failures.gather(str(out))
    assert [(r["obs_id"], r["stage"]) for r in records] == [("0000000701", "write"),
                                                            ("0000000702", "imag")]
    assert sorted(os.listdir(out)) == ["failures.jsonl", "filler"]
