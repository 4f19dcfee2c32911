"""Faults of one observation, its parameters and its CALDB, through `ecpi_run` (in process).

Every case copies the small triplet of tests/test_dpco.py, breaks one thing, and asserts what
docs/reliability.md promises: exit 2, one `error:` line naming the file and the key, column or
row, no traceback, no product, nothing touched outside working_out, nothing left inside it.
The cases the project handled before (tests/test_dpco.py, tests/test_params.py) run here too,
end to end, from their own tables.
"""
import gzip
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from ecpi_beam.params import params_text
from fault_support import (assert_fault_outcome, assert_working_out_clean, run_in_process,
                           snapshot)
from pipeline_fixtures import ALL_PRODUCTS, write_params
from test_dpco import (ATT, BAD_EVENT_ROWS, BAD_TRIPLETS, EVT, ORB, edit_event_rows,
                       expected_message, good_triplet, make_bad, set_obs_id)  # noqa: F401
from test_params import BAD_FILES, seed_text

GOOD_OBS_ID = "0000000100"  # test_dpco's good triplet


# ============================================================================================
# How to break a triplet
# ============================================================================================
def set_raw_card(path, key, raw_value):
    """Put `raw_value` (which may hold a newline, which astropy refuses to write) as the
    value of primary-header card `key`, keeping the card 80 bytes long."""
    data = bytearray(Path(path).read_bytes())
    start = data.index(f"{key:<8}= ".encode())
    card = f"{key:<8}= {raw_value}".encode().ljust(80)[:80]
    data[start:start + 80] = card
    Path(path).write_bytes(bytes(data))


def edit_table(path, extname, edit):
    with fits.open(path, mode="update") as hdul:
        edit(hdul[extname].data, hdul[0].header)


def set_row(column, row, value):
    def edit(data, header):
        data[column][row] = value
    return edit


def remove_attitude_rows(data_path):
    """A 12 s hole in the attitude, inside the observation's good time."""
    with fits.open(data_path) as hdul:
        table = hdul["ATTITUDE"]
        tstart = hdul[0].header["TSTART"]
        time = table.data["TIME"]
        keep = (time <= tstart + 0.5) | (time >= tstart + 11.5)
        new = fits.BinTableHDU(data=table.data[keep], header=table.header, name="ATTITUDE")
        fits.HDUList([hdul[0].copy(), new]).writeto(str(data_path) + ".new")
    os.replace(str(data_path) + ".new", data_path)


def empty_events(path):
    with fits.open(path) as hdul:
        events = hdul["EVENTS"]
        new = fits.BinTableHDU(data=events.data[:0], header=events.header, name="EVENTS")
        hdus = [h.copy() if h.name != "EVENTS" else new for h in hdul]
        fits.HDUList(hdus).writeto(str(path) + ".new")
    os.replace(str(path) + ".new", path)


def repeat_event_rows(path, rows):
    """The EVENTS rows `rows` (an index array) written a second time, in TIME order, as a
    telemetry packet merged twice (or a whole file: every row written twice) would be."""
    with fits.open(path) as hdul:
        events = hdul["EVENTS"]
        data = np.concatenate([events.data, events.data[rows]])
        data = data[np.argsort(data["TIME"], kind="stable")]
        new = fits.BinTableHDU(data=data, header=events.header, name="EVENTS")
        hdus = [h.copy() if h.name != "EVENTS" else new for h in hdul]
        fits.HDUList(hdus).writeto(str(path) + ".new")
    os.replace(str(path) + ".new", path)


def gzip_and_cut(directory, name=EVT):
    """The event file gzipped, then cut at 60 % (an interrupted copy)."""
    plain = Path(directory) / name
    packed = Path(str(plain) + ".gz")
    with open(plain, "rb") as source, gzip.open(packed, "wb") as target:
        shutil.copyfileobj(source, target)
    plain.unlink()
    with open(packed, "r+b") as stream:
        stream.truncate(int(packed.stat().st_size * 0.6))


def in_file(name, mutate):
    return lambda d: mutate(os.path.join(d, name))


# name -> (mutation of the directory, words the one error line holds)
HOSTILE_OBS_IDS = {
    "traversal": "x/../../../sibling", "victim": "../../../../../victim",
    "absolute": "/tmp/ecpi-absolute-victim", "slash": "zz/y", "escape": "zz/../../escaped_w",
    "empty": "", "quoted": "a'b", "space": "a b", "41 characters": "C" * 41,
    "100 characters": "B" * 100, "300 characters": "A" * 300,
}
PREFLIGHT_CASES = {
    **{f"OBS_ID {name}": (lambda d, v=value: set_obs_id(d, v),
                          [EVT, "OBS_ID", "expected 1 to 40 letters, digits, '-' or '_'"]
                          + ([f"{len(value)} characters"] if len(value) > 45 else []))
       for name, value in HOSTILE_OBS_IDS.items()},
    "OBS_ID card with a newline": (in_file(EVT, lambda p: set_raw_card(p, "OBS_ID",
                                                                       "'00000\n00100'")),
                                   [EVT, "OBS_ID", "not valid FITS"]),
    "TELESCOP card with a newline": (in_file(ATT, lambda p: set_raw_card(p, "TELESCOP",
                                                                         "'SV\nOM'")),
                                     [ATT, "TELESCOP", "not valid FITS"]),
    "orbit POSITION zero": (in_file(ORB, lambda p: edit_table(p, "ORBIT",
                                                              set_row("POSITION", 3, 0.0))),
                            [ORB, "ORBIT", "POSITION below the Earth's surface",
                             "first at row 3: 0 km"]),
    "orbit POSITION below the surface": (
        in_file(ORB, lambda p: edit_table(p, "ORBIT", set_row("POSITION", 4, [1e6, 0, 0]))),
        [ORB, "POSITION below the Earth's surface", "first at row 4: 1000 km"]),
    "orbit POSITION NaN": (in_file(ORB, lambda p: edit_table(p, "ORBIT",
                                                             set_row("POSITION", 2, np.nan))),
                           [ORB, "ORBIT", "POSITION not finite", "first at row 2"]),
    "orbit TIME NaN": (in_file(ORB, lambda p: edit_table(p, "ORBIT", set_row("TIME", 1, np.nan))),
                       [ORB, "ORBIT", "TIME not finite", "first at row 1"]),
    "attitude QPARAM NaN": (in_file(ATT, lambda p: edit_table(p, "ATTITUDE",
                                                              set_row("QPARAM", 5, np.nan))),
                            [ATT, "ATTITUDE", "QPARAM not finite", "first at row 5"]),
    "attitude TIME NaN": (in_file(ATT, lambda p: edit_table(p, "ATTITUDE",
                                                            set_row("TIME", 2, np.nan))),
                          [ATT, "ATTITUDE", "TIME not finite", "first at row 2"]),
    "attitude gap in the good time": (in_file(ATT, remove_attitude_rows),
                                      [ATT, "ATTITUDE", "gaps longer than 10 s inside the good "
                                       "time", "first after row 10: 12 s from TIME 300000000.0"]),
    "GTI START NaN": (in_file(EVT, lambda p: edit_table(p, "GTI", set_row("START", 0, np.nan))),
                      [EVT, "GTI", "START not finite", "first at row 0"]),
    "empty EVENTS": (in_file(EVT, empty_events), [EVT, "EVENTS: no rows"]),
    "truncated gzip": (gzip_and_cut, [EVT + ".gz", "truncated gzip file"]),
}
PIPELINE_CASES = {  # found while the EVENTS rows stream: a failure record, no product
    "EVENTS TIME NaN": (in_file(EVT, lambda p: edit_event_rows(
        p, lambda data: data["TIME"].__setitem__(7, np.nan))),
        [EVT, "EVENTS", "TIME not finite", "first at row 7"]),
    "EVENTS every row twice": (in_file(EVT, lambda p: repeat_event_rows(p, slice(None))),
                               [EVT, "EVENTS", "rows with TIME, IDET, JDET and PHA of an "
                                "earlier row (events written twice?", "first at row 1:"]),
    "EVENTS one packet twice": (in_file(EVT, lambda p: repeat_event_rows(p, slice(500, 600))),
                                [EVT, "EVENTS: 100 rows with TIME, IDET, JDET and PHA of an "
                                 "earlier row", "(first at row 50"]),
}


@pytest.fixture
def case_root(tmp_path):
    """tmp_path/a/b/{in, out, sibling}: traversals from out land inside tmp_path, where the
    snapshot sees them."""
    root = tmp_path / "a" / "b"
    (root / "in").mkdir(parents=True)
    (root / "out").mkdir()
    (root / "sibling").mkdir()
    (root / "sibling" / "victim.txt").write_text("must survive\n")
    return root


def broken_observation(good, root, name, mutate, obs_id=GOOD_OBS_ID):
    return Path(make_bad(good, str(root / "in"), name.replace(" ", "_"), obs_id, mutate))


def run_case(root, working_in, pipeline_workspace, capfd, monkeypatch, tmp_path, **params):
    params_file = write_params(root / "params.ini", working_in, root / "out", **params)
    before = snapshot(tmp_path, skip=root / "out")
    outcome = run_in_process(params_file, pipeline_workspace, capfd, monkeypatch)
    assert snapshot(tmp_path, skip=root / "out") == before, "something outside working_out changed"
    assert_working_out_clean(root / "out")
    return outcome


@pytest.mark.parametrize("name", sorted(PREFLIGHT_CASES))
def test_a_broken_observation_is_one_line_and_writes_nothing(
        name, good_triplet, case_root, pipeline_workspace, capfd, monkeypatch, tmp_path):  # noqa: F811
    mutate, words = PREFLIGHT_CASES[name]
    directory = broken_observation(good_triplet, case_root, name, mutate)
    code, out, err = run_case(case_root, directory, pipeline_workspace, capfd, monkeypatch,
                              tmp_path)
    errors = assert_fault_outcome(code, out, err, [str(directory)] + words)
    assert len(errors[0]) < 600, errors[0]  # a 300-character OBS_ID is not echoed whole
    assert sorted(os.listdir(case_root / "out")) == []


@pytest.mark.parametrize("name", sorted(BAD_TRIPLETS))
def test_the_dpco_cases_handled_before_are_one_line_end_to_end(
        name, good_triplet, case_root, pipeline_workspace, capfd, monkeypatch, tmp_path):  # noqa: F811
    obs_id, mutate, template = BAD_TRIPLETS[name]
    directory = make_bad(good_triplet, str(case_root / "in"), name, obs_id, mutate)
    message = expected_message(template, directory, good_triplet)
    code, out, err = run_case(case_root, directory, pipeline_workspace, capfd, monkeypatch,
                              tmp_path)
    assert_fault_outcome(code, out, err, [message])
    assert os.listdir(case_root / "out") == []


EVENT_ROW_CASES = {**PIPELINE_CASES, **{
    name: (lambda d, edit=edit: edit_event_rows(os.path.join(d, EVT), edit), [template])
    for name, (_, edit, template) in BAD_EVENT_ROWS.items()}}


@pytest.mark.parametrize("name", sorted(EVENT_ROW_CASES))
def test_bad_event_rows_fail_the_observation_and_leave_no_product(
        name, good_triplet, case_root, pipeline_workspace, capfd, monkeypatch, tmp_path):  # noqa: F811
    mutate, words = EVENT_ROW_CASES[name]
    directory = broken_observation(good_triplet, case_root, name, mutate)
    words = [word.format(d=directory) for word in words]
    code, out, err = run_case(case_root, directory, pipeline_workspace, capfd, monkeypatch,
                              tmp_path, cali_out=("ECL-GTI-CAL", "ECL-EVT-CAL"), bube_out=(),
                              imag_out=())
    assert_fault_outcome(code, out, err, [str(directory)] + words)
    assert "0/1 observation(s) processed" in out
    assert sorted(os.listdir(case_root / "out")) == ["failures.jsonl"]


# ============================================================================================
# The parameter file and the CALDB
# ============================================================================================
@pytest.mark.parametrize("win_dim", ["inf", "1e6", "nan", "100"])
def test_win_dim_is_bounded(win_dim, good_triplet, case_root, pipeline_workspace, capfd,  # noqa: F811
                            monkeypatch):
    params = case_root / "params.ini"
    params.write_text(params_text(good_triplet, case_root / "out", imag_out=["ECL-SKY-IMA"],
                                  win_dim=win_dim))
    code, out, err = run_in_process(params, pipeline_workspace, capfd, monkeypatch)
    assert_fault_outcome(code, out, err, [str(params), f"[imag] win_dim = {win_dim}",
                                          "number in [1.0, 99.0]"])


@pytest.mark.parametrize("replace, words", BAD_FILES,
                         ids=[next(iter(r)) for r, _ in BAD_FILES])
def test_the_parameter_mistakes_handled_before_are_one_line_end_to_end(
        replace, words, case_root, pipeline_workspace, capfd, monkeypatch):
    dirs = {"working_in": str(case_root / "in"), "working_out": str(case_root / "out")}
    params = case_root / "params.ini"
    params.write_text(seed_text(dirs, **replace))
    code, out, err = run_in_process(params, pipeline_workspace, capfd, monkeypatch)
    assert_fault_outcome(code, out, err, [str(params)] + list(words))


def broken_caldb(pipeline_workspace, root, name):
    caldb = root / "caldb"
    shutil.copytree(pipeline_workspace / ".ect" / "caldb", caldb)
    if name == "missing RMF":
        (caldb / "ECL-RSP-RMF_v1.0.rmf").unlink()
    elif name == "edited IRF":
        data = bytearray((caldb / "ECL-RSP-IRF_v1.0.fits").read_bytes())
        data[-100] ^= 0xFF
        (caldb / "ECL-RSP-IRF_v1.0.fits").write_bytes(bytes(data))
    elif name == "missing ARF and PIX-CAL":
        (caldb / "ECL-RSP-ARF_v1.0.arf").unlink()
        (caldb / "ECL-PIX-CAL_v1.0.fits").unlink()
    return caldb


CALDB_CASES = {
    "missing RMF": ["ECL-RSP-RMF_v1.0.rmf (ECL-RSP-RMF) is missing"],
    "edited IRF": ["ECL-RSP-IRF_v1.0.fits (ECL-RSP-IRF) has sha256"],
    "missing ARF and PIX-CAL": ["ECL-RSP-ARF_v1.0.arf (ECL-RSP-ARF) is missing",
                                "ECL-PIX-CAL_v1.0.fits (ECL-PIX-CAL) is missing"],
}


@pytest.mark.parametrize("name", sorted(CALDB_CASES))
def test_the_whole_caldb_is_checked_before_the_run(name, good_triplet, case_root,  # noqa: F811
                                                   pipeline_workspace, capfd, monkeypatch,
                                                   tmp_path):
    caldb = broken_caldb(pipeline_workspace, case_root, name)
    code, out, err = run_case(case_root, good_triplet, pipeline_workspace, capfd, monkeypatch,
                              tmp_path, caldb_dir=str(caldb), cali_out=("ECL-GTI-CAL",),
                              bube_out=(), imag_out=())
    assert_fault_outcome(code, out, err, [f"CALDB {caldb}", "caldb_init -s"] + CALDB_CASES[name])
    assert os.listdir(case_root / "out") == []


def test_the_longest_valid_obs_id_gives_products_fitsverify_accepts(
        good_triplet, case_root, pipeline_workspace, capfd, monkeypatch, tmp_path,  # noqa: F811
        fitsverify, recwarn):
    """40 characters is the bound because FILENAME must hold in one card: check it does."""
    longest = "M" * 20 + "-" * 10 + "_" * 10
    directory = broken_observation(good_triplet, case_root, "longest", lambda d: None,
                                   obs_id=longest)
    code, out, err = run_case(case_root, directory, pipeline_workspace, capfd, monkeypatch,
                              tmp_path)
    assert code == 0 and err.strip() == "", err
    assert [str(w.message) for w in recwarn if "Card is too long" in str(w.message)] == []
    names = sorted(os.listdir(case_root / "out"))
    assert names == sorted([f"{product}_{longest}.fits" for product in ALL_PRODUCTS]
                           + [f"ECL-SOP-IMA_{longest}.reg"])  # DS9 regions beside it
    for name in (name for name in names if name.endswith(".fits")):
        fitsverify(case_root / "out" / name)
        assert fits.getval(case_root / "out" / name, "FILENAME") == name
