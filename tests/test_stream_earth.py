"""Streaming windows carry the Earth: each tile's mean hidden sky, weighted by its seconds,
sums over a window to the window's own mean, which gives BUBE's Earth-aware modes the same
Earth templates (ECL-EAR-OFM) as the batch chain for the same good time."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from ecpi_beam.caldb import Caldb, default_caldb_dir
from ecpi_beam.io.slices import SliceWatcher
from ecpi_beam.io import slices
from ecpi_beam.kernels import bube, earth
from ecpi_beam.kernels.gti import good_time, telemetry_gti
from ecpi_beam.kernels.timeline import imaging_timeline
from ecpi_beam.params import params_text, parse_params
from ecpi_beam.simu.drip import drip
from ecpi_beam.simu.earth_crossing import earth_rise_scenario
from ecpi_beam.transforms.windows import SliceTiles, StreamTimeline

TILE_S = 10
SLICE_S = 20.0


@pytest.fixture(scope="module")
def earth_rise_slices(tmp_path_factory):
    """A 120 s observation whose Earth rises through the field, cut into 20 s slices."""
    directory = tmp_path_factory.mktemp("earth_rise_slices")
    scenario = earth_rise_scenario(name="stream_earth_rise", obs_id="0000000202", seed=202,
                                   duration=120.0, end_angle_deg=55.0)
    drip(scenario, str(directory), Caldb.open(default_caldb_dir()), speed=1e9,
         slice_seconds=SLICE_S, sleep=lambda seconds: None)
    return directory


def _tiles(directory):
    params = parse_params(params_text(str(directory), str(directory), default_caldb_dir(),
                                      extra={"stream": {"window_lengths": "[20]",
                                                        "window_periods": "[10]"}}))
    tiles = SliceTiles(default_caldb_dir(), params.bube, params.stream.energy_channels, TILE_S)
    tiles.setup()
    return params, tiles


def _batch_timeline(slice_set, params):
    """The batch chain's imaging timeline of the slice's whole good time."""
    data = slices.read_slice(slice_set)
    data = dataclasses.replace(data, telemetry_gti=telemetry_gti(data.telemetry_gti[:, 0],
                                                                 data.telemetry_gti[:, 1]))
    return imaging_timeline(data.attitude.time, data.attitude.qparam, data.orbit.time,
                            data.orbit.position, good_time(data)["ALL"], params.bube.ear_occ_bub,
                            params.bube.peof_min, params.bube.peof_max)


def test_a_windows_summed_hidden_sky_is_the_batch_mean_over_its_good_time(earth_rise_slices):
    params, tiles = _tiles(earth_rise_slices)
    slice_sets, _ = SliceWatcher([str(earth_rise_slices)]).poll()
    late = slice_sets[-1]  # the Earth well into the field
    sums = [tv.value[1] for tv in tiles.process(late)]
    assert len(sums) == SLICE_S / TILE_S
    hidden = sum(s.hidden_seconds for s in sums) / sum(s.earth_seconds for s in sums)
    assert sum(s.earth_seconds for s in sums) == pytest.approx(sum(s.exposure for s in sums))

    timeline = _batch_timeline(late, params)
    occ = params.bube.ear_occ_bub[0]
    expected, seconds = earth.mean_hidden_sky(
        timeline.reference_quaternion, timeline.class_gti[occ], timeline.sample_time,
        timeline.earth_icrs, timeline.earth_radius)
    assert seconds == pytest.approx(sum(s.earth_seconds for s in sums))
    assert expected.max() > 0.5  # the Earth is in the field
    # the same averaging, sampled per tile rather than over the slice: within a few per cent
    assert np.abs(hidden - expected).max() < 0.05
    assert abs(hidden.mean() - expected.mean()) < 0.005


def test_the_window_gives_bube_the_earth_templates_of_its_good_time(earth_rise_slices):
    params, tiles = _tiles(earth_rise_slices)
    late = SliceWatcher([str(earth_rise_slices)]).poll()[0][-1]
    sums = [tv.value[1] for tv in tiles.process(late)]
    seconds = sum(s.earth_seconds for s in sums)
    window = StreamTimeline(sums[0].weighted_quaternion / sums[0].exposure,
                            sum(s.exposure for s in sums),
                            sum(s.hidden_seconds for s in sums) / seconds, seconds)
    corrector = bube.BackgroundCorrector.from_caldb(Caldb.open(default_caldb_dir()))
    occ = params.bube.ear_occ_bub[0]
    from_window = corrector.earth_templates("0000000202", occ, window)

    timeline = _batch_timeline(late, params)
    batch = earth.earth_templates(corrector.pattern, timeline, occ)
    assert from_window.averaging_time == pytest.approx(batch.averaging_time)
    assert batch.occultation_map.max() > 0.3  # the Earth hides a good part of the sky seen
    assert np.abs(from_window.occultation_map - batch.occultation_map).max() < 0.03


def test_a_window_without_orbit_samples_has_no_earth():
    corrector = bube.BackgroundCorrector.from_caldb(Caldb.open(default_caldb_dir()))
    window = StreamTimeline(np.array([0.0, 0.0, 0.0, 1.0]), 10.0)
    templates = corrector.earth_templates("0000000202", "PEO", window)
    assert templates.averaging_time == 0.0 and not templates.occultation_map.any()
