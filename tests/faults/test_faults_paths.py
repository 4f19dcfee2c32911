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
