"""The parameter file: the seed's example parses, defaults apply, each mistake is one line."""
import pickle
import re

import pytest

from ecpi_beam import instrument
from ecpi_beam.errors import EcpiError
from ecpi_beam.params import Params, load_params, parse_params

# The seed's example block, as the users write it (empty values mean "default").
SEED_EXAMPLE = """\
[general]
# Information level for the logs during the execution of the pipeline.
logger_level = info
# MANDATORY.
working_in = {working_in}
# MANDATORY.
working_out = {working_out}
caldb_dir = @local

[dpco]
# MANDATORY.
out_files = []

[cali]
# MANDATORY.
out_files = []

[bube]
energy_channels = []
ear_occ_bub = []
bkg_cor_mod = []
# MANDATORY.
out_files = []

[imag]
snr_ths =
win_dim =
irf_corr =
# MANDATORY
out_files = []
"""


@pytest.fixture
def dirs(tmp_path):
    (tmp_path / "input").mkdir()
    (tmp_path / "output").mkdir()
    return {"working_in": str(tmp_path / "input"), "working_out": str(tmp_path / "output")}


def seed_text(dirs, **replace):
    """The seed example with some lines replaced: replace={'[bube] ear_occ_bub': 'new line'}."""
    text = SEED_EXAMPLE.format(**dirs)
    for where, line in replace.items():
        section, key = re.match(r"\[(\w+)\] (\w+)", where).groups()
        head, _, rest = text.partition(f"[{section}]\n")
        body, sep, tail = rest.partition("\n[")
        if re.search(rf"^{key} *=.*$", body, flags=re.M):
            body = re.sub(rf"^{key} *=.*$", line, body, flags=re.M)
        else:
            body = body + line + "\n"
        text = head + f"[{section}]\n" + body + sep + tail
    return text


def test_seed_example_parses_with_defaults(dirs):
    params = parse_params(seed_text(dirs), "seed.ini")
    assert params.general.logger_level == "info"
    assert params.general.working_in == (dirs["working_in"],)
    assert params.general.working_out == dirs["working_out"]
    assert params.general.caldb_dir == "@local"
    assert params.wanted_products == ()
    assert params.bube.energy_channels == instrument.DEFAULT_BANDS
    assert params.bube.ear_occ_bub == ("PEO",)
    assert params.bube.bkg_cor_mod == ("shape_moretti_earth",)
    assert (params.bube.peof_min, params.bube.peof_max) == (0.0, 0.95)
    assert params.imag.snr_ths == 0.0 and params.imag.effective_snr_threshold == 7.0
    assert params.imag.win_dim == 5.0 and params.imag.irf_corr == "cos_theta"
    assert params.imag.pcode_min == 0.1
    assert params.cali.chunk_size == 1_000_000


def test_full_file_is_typed_hashable_and_picklable(dirs, tmp_path):
    text = seed_text(dirs, **{
        "[general] logger_level": "logger_level = DEBUG",
        "[cali] out_files": "out_files = ['ECL-GTI-CAL', 'ECL-EVT-CAL']",
        "[cali] chunk_size": "chunk_size = 250_000",
        "[bube] energy_channels": "energy_channels = [[13, 60], [61,140]]",
        "[bube] ear_occ_bub": "ear_occ_bub = ['NEO', 'TEO']",
        "[bube] bkg_cor_mod": "bkg_cor_mod = ['flat', 'shape']",
        "[bube] out_files": "out_files = ['ECL-DET-IMA','ECL-DET-UBC','ECL-GTI-UBC','ECL-EAR-OFM']",
        "[bube] peof_min": "peof_min = 0.1",
        "[imag] snr_ths": "snr_ths = 8.5",
        "[imag] win_dim": "win_dim = 2",
        "[imag] irf_corr": "irf_corr = irf",
        "[imag] out_files": "out_files = ['ECL-SKY-IMA', 'ECL-SOP-IMA']",
    })
    path = tmp_path / "params.ini"
    path.write_text(text)
    params = load_params(str(path))
    assert params.general.logger_level == "debug"
    assert params.cali.out_files == ("ECL-GTI-CAL", "ECL-EVT-CAL")
    assert params.cali.chunk_size == 250_000
    assert params.bube.energy_channels == ((13, 60), (61, 140))
    assert params.bube.correction_for("TEO") == "shape"
    assert params.bube.peof_min == 0.1
    assert params.imag.effective_snr_threshold == 8.5
    assert params.imag.win_dim == 2.0 and params.imag.irf_corr == "irf"
    assert len(params.wanted_products) == 8
    assert pickle.loads(pickle.dumps(params)) == params
    assert hash(params) == hash(pickle.loads(pickle.dumps(params)))


def test_single_correction_applies_to_every_occultation_type(dirs):
    params = parse_params(seed_text(dirs, **{
        "[bube] ear_occ_bub": "ear_occ_bub = ['NEO', 'PEO', 'TEO']",
        "[bube] bkg_cor_mod": "bkg_cor_mod = ['flat']"}), "p.ini")
    assert params.bube.bkg_cor_mod == ("flat", "flat", "flat")


def test_lenient_forms_of_lists(dirs, tmp_path):
    params = parse_params(seed_text(dirs, **{
        "[general] working_in": f"working_in = {dirs['working_in']}, {tmp_path}/other*",
        "[bube] ear_occ_bub": "ear_occ_bub = TEO, NEO",
        "[bube] energy_channels": "energy_channels = [13, 60]",
        "[imag] irf_corr": "irf_corr = 'irf'"}), "p.ini")
    assert params.general.working_in == (dirs["working_in"], f"{tmp_path}/other*")
    assert params.bube.ear_occ_bub == ("TEO", "NEO")
    assert params.bube.energy_channels == ((13, 60),)
    assert params.imag.irf_corr == "irf"


def test_relative_and_remote_locations(dirs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = parse_params(seed_text(dirs, **{
        "[general] working_in": "working_in = ['input', 's3://bucket/obs*']",
        "[general] working_out": "working_out = output"}), "p.ini")
    assert params.general.working_in == (str(tmp_path / "input"), "s3://bucket/obs*")
    assert params.general.working_out == str(tmp_path / "output")


def test_fingerprint_follows_science_parameters_only(dirs, tmp_path):
    base = parse_params(seed_text(dirs), "p.ini")
    assert re.fullmatch(r"[0-9a-f]{16}", base.fingerprint())
    other_out = tmp_path / "elsewhere"
    other_out.mkdir()
    moved = parse_params(seed_text(dirs, **{
        "[general] working_out": f"working_out = {other_out}",
        "[general] logger_level": "logger_level = error",
        "[cali] chunk_size": "chunk_size = 5000"}), "p.ini")
    assert moved.fingerprint() == base.fingerprint()
    changed = parse_params(seed_text(dirs, **{"[imag] snr_ths": "snr_ths = 9"}), "p.ini")
    assert changed.fingerprint() != base.fingerprint()


def test_working_out_may_be_a_bucket_prefix_in_memory(dirs):
    from ecpi_beam.io import fs

    fs.put_atomic(b"x", "memory://params-test-bucket/marker")
    params = parse_params(seed_text(dirs, **{
        "[general] working_out": "working_out = memory://params-test-bucket/new-prefix"}),
        "p.ini")
    assert params.general.working_out == "memory://params-test-bucket/new-prefix"


def test_missing_parameter_file_is_one_line(tmp_path):
    with pytest.raises(EcpiError, match=r"nope\.ini: parameter file not found"):
        load_params(str(tmp_path / "nope.ini"))


# (replacement lines, words the one-line message must contain)
BAD_FILES = [
    ({"[general] logger_level": "logger_level = verbose"},
     ["[general] logger_level = verbose", "debug, info, warning, error, critical"]),
    ({"[general] working_in": ""}, ["[general] working_in", "MANDATORY"]),
    ({"[general] working_out": ""}, ["[general] working_out", "MANDATORY"]),
    ({"[general] working_out": "working_out = /no/such/dir/anywhere"},
     ["[general] working_out = /no/such/dir/anywhere", "existing directory"]),
    ({"[general] working_in": "working_in ="}, ["[general] working_in", "expected a directory"]),
    ({"[general] workin_out": "workin_out = x"},
     ["[general] workin_out = x", "unknown key", "did you mean 'working_out'"]),
    ({"[cali] out_files": ""}, ["[cali] out_files", "MANDATORY"]),
    ({"[imag] out_files": ""}, ["[imag] out_files", "MANDATORY"]),
    ({"[cali] out_files": "out_files = ['ECL-EVT-CAK']"},
     ["[cali] out_files = ['ECL-EVT-CAK']", "did you mean 'ECL-EVT-CAL'"]),
    ({"[cali] out_files": "out_files = ['ECL-SKY-IMA']"},
     ["[cali] out_files", "'ECL-SKY-IMA' is not allowed", "'ECL-GTI-CAL', 'ECL-EVT-CAL'"]),
    ({"[dpco] out_files": "out_files = ['ECL-GTI-CAL']"},
     ["[dpco] out_files = ['ECL-GTI-CAL']", "none"]),
    ({"[cali] out_files": "out_files = ['ECL-GTI-CAL'"},
     ["[cali] out_files = ['ECL-GTI-CAL'", "expected a Python list like"]),
    ({"[cali] out_files": "out_files = ['ECL-GTI-CAL', 'ECL-GTI-CAL']"},
     ["[cali] out_files", "only once"]),
    ({"[cali] chunk_size": "chunk_size = 10"}, ["[cali] chunk_size = 10", "an integer >= 1000"]),
    ({"[cali] chunk_size": "chunk_size = lots"}, ["[cali] chunk_size = lots", "an integer"]),
    ({"[bube] energy_channels": "energy_channels = [[13,60],[61,140]"},
     ["[bube] energy_channels = [[13,60],[61,140]",
      "expected a Python list like [[13,60],[61,140]]"]),
    ({"[bube] energy_channels": "energy_channels = [[60,13]]"},
     ["[bube] energy_channels = [[60,13]]", "band [60,13]", "lo <= hi <= 1499"]),
    ({"[bube] energy_channels": "energy_channels = [[13,1500]]"},
     ["[bube] energy_channels = [[13,1500]]", "1499"]),
    ({"[bube] energy_channels": "energy_channels = [[13,60,61]]"},
     ["[bube] energy_channels", "[lo, hi] PI channel pairs"]),
    ({"[bube] energy_channels": "energy_channels = [[13.5,60]]"},
     ["[bube] energy_channels = [[13.5,60]]", "[lo, hi] PI channel pairs"]),
    ({"[bube] ear_occ_bub": "ear_occ_bub = ['PE0']"},
     ["[bube] ear_occ_bub = ['PE0']", "did you mean 'PEO'", "'NEO', 'PEO', 'TEO'"]),
    ({"[bube] bkg_cor_mod": "bkg_cor_mod = ['moretti']"},
     ["[bube] bkg_cor_mod = ['moretti']", "'moretti' is not allowed"]),
    ({"[bube] bkg_cor_mod": "bkg_cor_mod = ['flat', 'shape']"},
     ["[bube] bkg_cor_mod = ['flat', 'shape']", "one per ear_occ_bub entry (1), got 2"]),
    ({"[bube] peof_min": "peof_min = 0.96"},
     ["[bube] peof_max = 0.95", "greater than peof_min = 0.96"]),
    ({"[bube] peof_max": "peof_max = 1.5"}, ["[bube] peof_max = 1.5", "[0.0, 1.0]"]),
    ({"[imag] snr_ths": "snr_ths = 5"}, ["[imag] snr_ths = 5", ">= 7"]),
    ({"[imag] snr_ths": "snr_ths = -1"}, ["[imag] snr_ths = -1", ">= 7"]),
    ({"[imag] snr_ths": "snr_ths = high"}, ["[imag] snr_ths = high", "a number"]),
    ({"[imag] win_dim": "win_dim = 0.5"}, ["[imag] win_dim = 0.5", "a number in [1.0, 99.0]"]),
    ({"[imag] irf_corr": "irf_corr = cos"},
     ["[imag] irf_corr = cos", "no_correction, cos_theta, irf"]),
    ({"[imag] pcode_min": "pcode_min = 0"}, ["[imag] pcode_min = 0", "(0.0, 1.0]"]),
    ({"[imag] snr_threshold": "snr_threshold = 8"},
     ["[imag] snr_threshold = 8", "unknown key", "did you mean 'snr_ths'"]),
]


@pytest.mark.parametrize("replace, expected", BAD_FILES,
                         ids=[next(iter(r)) + " " + next(iter(r.values())) for r, _ in BAD_FILES])
def test_bad_parameter_file_names_key_and_value(dirs, replace, expected):
    with pytest.raises(EcpiError) as raised:
        parse_params(seed_text(dirs, **replace), "bad.ini")
    message = str(raised.value)
    assert message.startswith("bad.ini: ") and "\n" not in message
    for words in expected:
        assert words in message, message


STRUCTURE_ERRORS = [  # (text appended to the seed example, or (old, new) replaced in it)
    ("[imagg]\nsnr_ths = 8\n", ["[imagg]", "unknown section", "did you mean 'imag'"]),
    ("[DEFAULT]\nwin_dim = 3\n", ["[DEFAULT]", "unknown section"]),
    ("[bube]\nout_files = []\n", ["[bube]", "section given twice"]),
    (("win_dim =\n", "win_dim = 2\nwin_dim = 3\n"), ["[imag] win_dim", "key given twice"]),
]


@pytest.mark.parametrize("change, expected", STRUCTURE_ERRORS,
                         ids=["unknown", "default", "duplicate-section", "duplicate-key"])
def test_bad_file_structure(dirs, change, expected):
    text = seed_text(dirs)
    text = text.replace(*change) if isinstance(change, tuple) else text + change
    with pytest.raises(EcpiError) as raised:
        parse_params(text, "bad.ini")
    message = str(raised.value)
    assert message.startswith("bad.ini") and "\n" not in message
    for words in expected:
        assert words in message, message


def test_key_before_any_section(dirs):
    with pytest.raises(EcpiError, match=r"bad\.ini: line 1: 'logger_level = info' comes before"):
        parse_params("logger_level = info\n" + seed_text(dirs), "bad.ini")


def test_missing_section_reports_its_mandatory_key(dirs):
    text = seed_text(dirs).replace("[dpco]\n# MANDATORY.\nout_files = []\n", "")
    with pytest.raises(EcpiError, match=r"\[dpco\] out_files: MANDATORY key is missing"):
        parse_params(text, "bad.ini")


def test_params_is_frozen(dirs):
    params = parse_params(seed_text(dirs), "p.ini")
    assert isinstance(params, Params)
    with pytest.raises(AttributeError):
        params.imag.win_dim = 3.0


# ============================================================================================
# Every float key refuses inf and nan (snr_ths = inf turned detection off silently; nan said
# "expected a number >= None")
# ============================================================================================
def float_keys():
    """(section, key) of every float field of Params, found from the dataclasses: a float key
    added later is checked too."""
    import dataclasses
    import typing

    from ecpi_beam import params as params_module

    keys = []
    for section, section_class in typing.get_type_hints(Params).items():
        if section in params_module.SECTIONS:
            hints = typing.get_type_hints(section_class)
            keys += [(section, field.name) for field in dataclasses.fields(section_class)
                     if hints[field.name] is float
                     and field.name in params_module.SECTIONS[section]]
    return keys


def test_the_float_keys_are_all_found():
    assert {("imag", "snr_ths"), ("bube", "peof_min"), ("spex", "time_bin"),
            ("stream", "poll_interval"), ("mosa", "snr_ths")} <= set(float_keys())
    assert len(float_keys()) == 16


@pytest.mark.parametrize("section, key", float_keys(), ids="[{0[0]}] {0[1]}".format)
@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "1e400"])
def test_every_float_key_refuses_inf_and_nan_in_one_line(dirs, section, key, value):
    with pytest.raises(EcpiError) as raised:
        parse_params(seed_text(dirs, **{f"[{section}] {key}": f"{key} = {value}"}), "p.ini")
    message = str(raised.value)
    assert message.startswith(f"p.ini: [{section}] {key} = {value}: expected ")
    assert "finite number" in message or (value == "-inf" and "number" in message), message
    assert "None" not in message and "\n" not in message


def test_snr_ths_inf_says_it_would_turn_detection_off(dirs):
    with pytest.raises(EcpiError, match=r"\[imag\] snr_ths = inf: expected 0 \(use the default "
                       r"7\) or a finite number >= 7; inf would turn detection off$"):
        parse_params(seed_text(dirs, **{"[imag] snr_ths": "snr_ths = inf"}), "p.ini")
