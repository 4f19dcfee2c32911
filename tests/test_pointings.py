"""An observation holding two pointings: only the longest-held one is imaged (multi-pointing
imaging is not implemented), and the good time of the other is reported, not silently lost:
a warning naming the observation, the `ecpi.bube.good_seconds_off_pointing` counter and the
run's summary line."""
from __future__ import annotations

import re

from pipeline_fixtures import write_params

FIRST_S, SLEW_S, SECOND_S = 100.0, 20.0, 60.0  # after the scenario's opening slew


def test_good_time_on_a_second_pointing_is_reported(tmp_path, pipeline_workspace, capfd,
                                                    monkeypatch):
    from ecpi_beam.caldb import Caldb
    from ecpi_beam.cli import ecpi_run
    from ecpi_beam.simu import default_scenario, scenario_with, simulate
    from ecpi_beam.simu.scenario import Pointing

    base = default_scenario()
    first = base.resolved_pointings()[0]
    pointings = (Pointing(first.ra, first.dec, first.roll, start=first.start,
                          duration=FIRST_S),
                 Pointing(first.ra + 5.0, first.dec, first.roll,
                          start=first.start + FIRST_S + SLEW_S))
    scenario = scenario_with(base, name="two_pointings", obs_id="0000000302",
                             duration=first.start + FIRST_S + SLEW_S + SECOND_S,
                             pointings=pointings, sources=[])
    directory, out = tmp_path / "obs", tmp_path / "out"
    directory.mkdir()
    out.mkdir()
    simulate(scenario, str(directory), Caldb.open(str(pipeline_workspace / ".ect" / "caldb")))
    params = write_params(tmp_path / "params.ini", directory, out, cali_out=(),
                          bube_out=("ECL-DET-IMA",), imag_out=())
    monkeypatch.setenv("ECPI_HOME", str(pipeline_workspace))
    capfd.readouterr()
    assert ecpi_run([str(params)]) == 0
    captured = capfd.readouterr()
    assert re.search(r"0000000302: \d+ s of good time away from its longest-held pointing are "
                     r"not imaged", captured.err), captured.err
    summary = re.search(r"good time not imaged \(other pointings\) (\d+) s", captured.out)
    assert summary, captured.out
    reported = int(summary.group(1))
    # the shorter pointing's good time (SAA and telemetry gaps may take a little of it)
    assert 0.5 * SECOND_S <= reported <= SECOND_S + 1.0
    assert (out / "ECL-DET-IMA_0000000302.fits").is_file()  # the longer one is imaged
