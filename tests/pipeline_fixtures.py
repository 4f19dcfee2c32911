"""Shared fixtures and helpers of the end-to-end pipeline tests (test_pipeline_e2e, test_runners).

- `pipeline_workspace` (session): an ECPI_HOME with the default CALDB (`caldb_init -s`).
- `small_observation` (session): one simulated triplet, 120 s, one 0.5 Crab source 3.6 deg
  off axis, plus its truth record (the simulator's truth JSON).
- `reference_run` (session): the whole chain on the DirectRunner, every product, once.
  The three are built once per session even under pytest-xdist (a file lock in the
  shared base temporary directory).
- `write_params(...)`: a seed-style parameter file; `run_ecpi(...)`: the pipeline in a
  subprocess (console script or `python -m ecpi_beam.run`) with a timeout.

Import the fixtures in a test module with
`from pipeline_fixtures import pipeline_workspace, small_observation, reference_run  # noqa`.
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from ecpi_beam.demo import angular_offset_arcmin  # noqa: F401  (shared by the tests)
from ecpi_beam.params import params_text

OBS_DURATION_S = 120.0  # 100 s of pointing after the 20 s slew
SOURCE_CRAB = 0.5
CRAB_NORM = 10.0          # the simulator's Crab normalisation (ph cm-2 s-1 keV-1 at 1 keV)
RUN_TIMEOUT_S = 240
DEFAULT_BANDS = ((13, 60), (61, 140), (141, 300), (301, 620), (621, 1260))
CALI_PRODUCTS = ("ECL-GTI-CAL", "ECL-EVT-CAL")
BUBE_PRODUCTS = ("ECL-DET-IMA", "ECL-DET-UBC", "ECL-GTI-UBC")
IMAG_PRODUCTS = ("ECL-SKY-IMA", "ECL-SOP-IMA")
ALL_PRODUCTS = CALI_PRODUCTS + BUBE_PRODUCTS + IMAG_PRODUCTS



@dataclasses.dataclass(frozen=True)
class SimulatedObservation:
    directory: Path           # holds the triplet and truth_<name>.json
    obs_id: str
    truth: dict               # the simulator's truth record

    @property
    def source(self) -> dict:
        return self.truth["sources"][0]


@dataclasses.dataclass(frozen=True)
class RunResult:
    returncode: int
    stdout: str
    stderr: str
    working_out: Path

    def product(self, name: str, obs_id: str) -> Path:
        return self.working_out / f"{name}_{obs_id}.fits"


# ============================================================================================
# Building blocks
# ============================================================================================
def small_scenario(obs_id: str = "0000000001", duration: float = OBS_DURATION_S,
                   name: str = "small", seed: int = 20260101):
    """The demo's pointing and orbit, one 0.5 Crab source where the demo's Crab is."""
    from ecpi_beam.simu import default_scenario, scenario_with

    base = default_scenario()
    crab = base.sources[0]
    return scenario_with(base, name=name, obs_id=obs_id, seed=seed, duration=duration,
                         sources=[dict(name="HalfCrab", ra=crab.ra, dec=crab.dec,
                                       norm=CRAB_NORM * SOURCE_CRAB, index=2.1)])


def simulate_observation(directory: Path, caldb_home: Path, **scenario_changes
                         ) -> SimulatedObservation:
    """Simulate one triplet into `directory` with the workspace's CALDB."""
    from ecpi_beam.caldb import Caldb
    from ecpi_beam.simu import simulate

    scenario = small_scenario(**scenario_changes)
    directory.mkdir(parents=True, exist_ok=True)
    truth = simulate(scenario, str(directory),
                     Caldb.open(str(caldb_home / ".ect" / "caldb")))
    record = json.loads((directory / f"truth_{scenario.name}.json").read_text())
    assert record["obs_id"] == truth.obs_id
    return SimulatedObservation(directory=directory, obs_id=truth.obs_id, truth=record)


def write_params(path: Path, working_in, working_out, *, cali_out=CALI_PRODUCTS,
                 bube_out=BUBE_PRODUCTS, imag_out=IMAG_PRODUCTS, bkg_cor_mod=("shape",),
                 ear_occ_bub=("PEO",), irf_corr="cos_theta", snr_ths=7,
                 energy_channels=(), logger_level="warning", caldb_dir="@local",
                 extra=None) -> Path:
    """A seed-style parameter file (the five sections, the seed's keys; `extra` adds sections
    such as [mosa])."""
    path = Path(path)
    path.write_text(params_text(
        working_in, working_out, caldb_dir, logger_level=logger_level, cali_out=cali_out,
        bube_out=bube_out, imag_out=imag_out, energy_channels=energy_channels,
        ear_occ_bub=ear_occ_bub, bkg_cor_mod=bkg_cor_mod, snr_ths=snr_ths, irf_corr=irf_corr,
        extra=extra))
    return path


def pipeline_env(workspace: Path, **extra) -> dict:
    """The environment of a pipeline subprocess: ours, plus the workspace."""
    env = dict(os.environ)
    env["ECPI_HOME"] = str(workspace)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.update({key: str(value) for key, value in extra.items()})
    return env


def ecpi_run_command(entry: str = "script") -> list[str]:
    """`ecpi_run` (the console script next to this Python) or `python -m ecpi_beam.run`."""
    if entry == "script":
        script = Path(sys.executable).parent / "ecpi_run"
        if not script.exists():
            pytest.fail(f"the ecpi_run console script is not installed next to {sys.executable}")
        return [str(script)]
    return [sys.executable, "-m", "ecpi_beam.run"]


def run_ecpi(params: Path, *beam_args, workspace: Path, working_out, entry: str = "script",
             env: dict | None = None, timeout: float = RUN_TIMEOUT_S, cwd=None) -> RunResult:
    """Run the pipeline in a subprocess; `--params` form for the module entry point."""
    if entry == "script":
        command = [*ecpi_run_command("script"), str(params), *beam_args]
    else:
        command = [*ecpi_run_command("module"), "--params", str(params), *beam_args]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                               env=env if env is not None else pipeline_env(workspace),
                               cwd=cwd)
    return RunResult(completed.returncode, completed.stdout, completed.stderr,
                     Path(working_out) if "://" not in str(working_out) else working_out)


def stderr_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


def describe(result: RunResult) -> str:
    return (f"exit code {result.returncode}\n--- stdout\n{result.stdout[-3000:]}\n"
            f"--- stderr\n{result.stderr[-6000:]}")


def simulate_broken_campaign(root: Path, caldb_home: Path) -> tuple[list, SimulatedObservation]:
    """Three 60 s observations in root/input/obs_<OBS_ID>; the middle one's event file is cut
    in half. Returns (observations, the broken one)."""
    observations = [simulate_observation(root / "input" / f"obs_{obs_id}", caldb_home,
                                         obs_id=obs_id, duration=60.0, seed=seed)
                    for seed, obs_id in enumerate(("0000000101", "0000000102", "0000000103"))]
    broken = observations[1]
    event_file = next(broken.directory.glob("ECL-EVT-SEC*.fits"))
    with open(event_file, "r+b") as stream:
        stream.truncate(event_file.stat().st_size // 2)
    return observations, broken


# ============================================================================================
# Reading products
# ============================================================================================
def simulate_campaign(root: Path, scenarios, caldb) -> tuple[dict, Path]:
    """Each scenario simulated into root/obs_NN; ({obs_id: truth}, the empty root/out)."""
    from ecpi_beam.simu import simulate

    truths = {}
    for index, scenario in enumerate(scenarios):
        truth = simulate(scenario, str(root / f"obs_{index:02d}"), caldb)
        truths[truth.obs_id] = truth
    out = root / "out"
    out.mkdir()
    return truths, out


def sources_table(sop_path) -> list[dict]:
    """Rows of ECL-SOP-IMA SOURCES as dicts (strings stripped)."""
    with fits.open(sop_path) as hdul:
        data = hdul["SOURCES"].data
        names = data.columns.names
        return [{name: (row[name].strip() if isinstance(row[name], str) else row[name])
                 for name in names} for row in data]


def nearest_source(rows, ra, dec, band=None):
    """(offset arcmin, row) of the found source nearest to (ra, dec), optionally in one band."""
    best = None
    for row in rows:
        if band is not None and row["BAND"] != band:
            continue
        offset = float(angular_offset_arcmin(ra, dec, row["RA"], row["DEC"]))
        if best is None or offset < best[0]:
            best = (offset, row)
    return best


def detector_counts(det_ima_path) -> dict[str, np.ndarray]:
    """EXTNAME -> counts image of every COUNTS_* HDU of ECL-DET-IMA."""
    with fits.open(det_ima_path) as hdul:
        return {hdu.name: np.array(hdu.data) for hdu in hdul if hdu.name.startswith("COUNTS_")}


def assert_same_hdu_data(path, reference):
    """The two FITS files hold the same HDUs (by name) with equal data, column by column."""
    def hdu_data(where):
        with fits.open(where) as hdul:
            return [(hdu.name, None if hdu.data is None else np.array(hdu.data)) for hdu in hdul]

    ours, theirs = hdu_data(path), hdu_data(reference)
    name = Path(path).name
    assert [n for n, _ in ours] == [n for n, _ in theirs], name
    for (hdu_name, a), (_, b) in zip(ours, theirs):
        if a is None:
            assert b is None, f"{name} {hdu_name}"
        elif a.dtype.names:
            for column in a.dtype.names:
                np.testing.assert_array_equal(a[column], b[column],
                                              err_msg=f"{name} {hdu_name} {column}")
        else:
            np.testing.assert_array_equal(a, b, err_msg=f"{name} {hdu_name}")


def leftover_temporaries(directory: Path) -> list[str]:
    """Files the atomic writer may leave behind: '.<name>.<random>.part'."""
    return sorted(p.name for p in Path(directory).rglob("*") if p.name.endswith(".part")
                  or (p.name.startswith(".") and p.is_file()))


# ============================================================================================
# Session fixtures, built once even when pytest-xdist runs several workers
# ============================================================================================
def _shared(tmp_path_factory, name: str, build) -> dict:
    """JSON record of `build(directory)`, run by the first worker that needs it; the others
    wait on a file lock and reuse the directory (the xdist workers share the base temp dir)."""
    import fcntl

    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    directory, record_file = base / name, base / f"{name}.json"
    with open(base / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not record_file.exists():
                directory.mkdir(parents=True, exist_ok=True)
                record_file.write_text(json.dumps(build(directory)))
            return json.loads(record_file.read_text())
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _install_caldb(home: Path) -> dict:
    from ecpi_beam.caldb.init import main as caldb_init

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ECPI_HOME", str(home))
        code = caldb_init(["-s"])
    return {"home": str(home), "code": code}


@pytest.fixture(scope="session")
def pipeline_workspace(tmp_path_factory) -> Path:
    """ECPI_HOME with the default CALDB installed by `caldb_init -s`."""
    record = _shared(tmp_path_factory, "ecpi_home", _install_caldb)
    home = Path(record["home"])
    assert (home / ".ect" / "caldb" / "caldb.json").is_file(), record
    return home


@pytest.fixture(scope="session")
def small_observation(tmp_path_factory, pipeline_workspace) -> SimulatedObservation:
    """One simulated triplet, made once per test session."""
    def build(directory):
        observation = simulate_observation(directory / "obs_0000000001", pipeline_workspace)
        return {"directory": str(observation.directory), "obs_id": observation.obs_id}

    record = _shared(tmp_path_factory, "observation", build)
    directory = Path(record["directory"])
    truth = json.loads(next(directory.glob("truth_*.json")).read_text())
    return SimulatedObservation(directory=directory, obs_id=record["obs_id"], truth=truth)


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory, pipeline_workspace, small_observation) -> RunResult:
    """`ecpi_run params.ini` (DirectRunner, one process), every product; made once."""
    def build(root):
        working_out = root / "out"
        working_out.mkdir()
        params = write_params(root / "params.ini", small_observation.directory, working_out)
        result = run_ecpi(params, workspace=pipeline_workspace, working_out=working_out)
        return dataclasses.asdict(result) | {"working_out": str(working_out)}

    record = _shared(tmp_path_factory, "reference", build)
    result = RunResult(**(record | {"working_out": Path(record["working_out"])}))
    assert result.returncode == 0, describe(result)
    return result
