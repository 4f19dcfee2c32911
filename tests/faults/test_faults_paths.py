"""fs.inside, the one way we build a path to write or delete: traversal, absolute paths and
symbolic links leading out are refused, locally and on object stores (memory://)."""
import os

import pytest

from ecpi_beam.errors import EcpiError
from ecpi_beam.io import fs, workdir


@pytest.mark.parametrize("segments", [
    ("..",), ("../escaped",), ("a/../../b",), ("/etc/passwd",), ("ok", ".."), ("",), (".",),
    ("a\\..\\b",), ("line\nbreak",), ("tab\there",), ("caf\u00e9",)])
@pytest.mark.parametrize("root_kind", ["local", "memory"])
def test_segments_that_could_leave_working_out_are_refused(tmp_path, root_kind, segments):
    root = str(tmp_path) if root_kind == "local" else "memory://ecpi-confine/out"
    with pytest.raises(EcpiError, match="refusing the path segment") as caught:
        fs.inside(root, *segments)
    assert "\n" not in str(caught.value)


def test_plain_names_stay_inside(tmp_path):
    assert fs.inside(str(tmp_path), ".ecpi-parts", "ECL-EVT-CAL_0000000100") == os.path.join(
        str(tmp_path), ".ecpi-parts", "ECL-EVT-CAL_0000000100")
    assert fs.inside("memory://bucket/out", "ECL-SKY-IMA_1.fits") == \
        "memory://bucket/out/ECL-SKY-IMA_1.fits"


def test_a_symbolic_link_leading_out_is_refused(tmp_path):
    out, outside = tmp_path / "out", tmp_path / "outside"
    out.mkdir()
    outside.mkdir()
    (out / ".ecpi-parts").symlink_to(outside)
    (out / "ECL-SKY-IMA_1.fits").symlink_to(outside / "target.fits")
    for segments in ((".ecpi-parts", "x.rows"), ("ECL-SKY-IMA_1.fits",)):
        with pytest.raises(EcpiError, match="outside working_out"):
            fs.inside(str(out), *segments)
    # a link that stays inside is fine
    (out / "inner").mkdir()
    (out / "alias").symlink_to(out / "inner")
    assert fs.inside(str(out), "alias", "f") == str(out / "alias" / "f")


def test_working_out_reached_through_a_link_is_itself_the_root(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    assert fs.inside(str(tmp_path / "link"), "a.fits") == str(tmp_path / "link" / "a.fits")


def test_products_of_one_observation_only_and_never_through_a_link(tmp_path):
    outside = tmp_path / "outside.fits"
    outside.write_text("keep")
    out = tmp_path / "out"
    out.mkdir()
    for name in ("ECL-SKY-IMA_A.fits", "ECL-SOP-IMA_A.reg", "ECL-SKY-IMA_A_B.fits",
                 "ECL-SKY-IMA_AB.fits", "notes_A.fits", "ECL-EVT-CAL_B.fits"):
        (out / name).write_text("x")
    (out / "ECL-DET-IMA_A.fits").symlink_to(outside)
    removed = workdir.remove_products_of(str(out), ["A"])
    assert sorted(os.path.basename(url) for url in removed) == ["ECL-SKY-IMA_A.fits",
                                                              "ECL-SOP-IMA_A.reg"]
    assert outside.read_text() == "keep" and (out / "ECL-DET-IMA_A.fits").is_symlink()
    assert sorted(p.name for p in out.iterdir()) == [
        "ECL-DET-IMA_A.fits", "ECL-EVT-CAL_B.fits", "ECL-SKY-IMA_AB.fits",
        "ECL-SKY-IMA_A_B.fits", "notes_A.fits"]


def test_products_not_made_are_named_and_failed_observations_keep_none(tmp_path):
    from types import SimpleNamespace

    from ecpi_beam.pipelines.safeguards import finish_run
    from ecpi_beam.io.failures import FailureLog

    out = tmp_path / "out"
    out.mkdir()
    for name in ("ECL-GTI-CAL_ok.fits", "ECL-GTI-CAL_bad.fits", "ECL-SKY-IMA_bad.fits"):
        (out / name).write_text("x")
    FailureLog(str(out)).record("bad", "imag", ValueError("no good pixel"))
    params = SimpleNamespace(general=SimpleNamespace(working_out=str(out)),
                             cali=SimpleNamespace(out_files=("ECL-GTI-CAL",)),
                             bube=SimpleNamespace(out_files=()),
                             imag=SimpleNamespace(out_files=("ECL-SKY-IMA",)))
    ids = {"/in/ok": "ok", "/in/bad": "bad", "/in/broken": None}
    early = [{"obs_dir": "/in/broken", "obs_id": None, "stage": "preflight", "error": "e"}]
    failures, not_made = finish_run(params, ids, early)
    assert [(r.get("obs_dir") or r["obs_id"], r["stage"]) for r in failures] == [
        ("/in/broken", "preflight"), ("bad", "imag")]
    assert not_made == ["observation ok (/in/ok): ECL-SKY-IMA requested but not made "
                        "(no events for them in the good time?)"]
    assert sorted(p.name for p in out.iterdir()) == ["ECL-GTI-CAL_ok.fits", "failures.jsonl"]


def test_only_faults_of_the_machine_or_the_input_become_one_line():
    from ecpi_beam.pipelines.safeguards import one_line_fault

    try:
        try:
            raise OSError(28, "No space left on device")
        except OSError as inner:
            raise RuntimeError("a Beam stage failed\nwith details") from inner
    except RuntimeError as wrapped:
        assert str(one_line_fault(wrapped)) == ("the run stopped on an I/O error: No space left "
                                                "on device (errno 28)")
    assert str(one_line_fault(EcpiError("f.fits: bad\nthing"))) == "f.fits: bad thing"
    assert one_line_fault(ZeroDivisionError("a bug")) is None  # its traceback is the report


@pytest.mark.parametrize("root_kind", ["local", "memory"])
def test_leftovers_removed_are_ours_only(tmp_path, root_kind):
    root = str(tmp_path) if root_kind == "local" else f"memory://ecpi-leftovers-{tmp_path.name}"
    ours = [f".ECL-SKY-IMA_1.fits.{'a' * 32}.part", ".ECL-SKY-IMA_1.fits.k9x_2abc.part",
            ".failures.jsonl.abcdefgh.part", ".ecpi-write-probe.123", "failures.jsonl"]
    theirs = [".notes.part", "keep.part", ".hidden", "ECL-SKY-IMA_1.fits", ".ECL-SKY.part"]
    for name in ours + theirs + [".ecpi-parts/ECL-EVT-CAL_1/x.rows"]:
        fs.put_atomic(b"x", fs.join(root, name))
    removed = workdir.remove_leftovers(root, folders=(".ecpi-parts", ".ecpi-failures"),
                                       files=("failures.jsonl",))
    assert sorted(removed) == sorted(ours + [".ecpi-parts"])
    assert fs.listdir(root) == sorted(theirs)


@pytest.mark.parametrize("obs_id", ["../../../../../victim", "zz/../../escaped_w", "/abs",
                                    "x/../../../victim"])
def test_names_made_from_an_obs_id_cannot_leave_working_out(tmp_path, obs_id):
    """Even an OBS_ID that slipped past DPCO cannot name a path outside (defence in depth)."""
    from ecpi_beam.io.products import product_url
    from ecpi_beam.transforms.cali import parts_folder, remove_parts

    out = tmp_path / "a" / "b" / "out"
    out.mkdir(parents=True)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("keep")
    for build in (lambda: product_url(str(out), "ECL-SKY-IMA", obs_id),
                  lambda: parts_folder(str(out), obs_id),
                  lambda: remove_parts(str(out), obs_id)):
        with pytest.raises(EcpiError, match="refusing the path segment"):
            build()
    assert (victim / "precious.txt").read_text() == "keep"
