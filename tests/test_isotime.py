"""kernels/isotime.py gives the dates astropy.time gives (the products' DATE-OBS/DATE-END in
their TIMESYS, the alerts' UTC), leap seconds included."""
import numpy as np
import pytest
from astropy.time import Time

from ecpi_beam import instrument
from ecpi_beam.kernels import isotime

# astropy warns of a "dubious year" past the leap seconds it knows; the comparison holds there
pytestmark = pytest.mark.filterwarnings("ignore::erfa.ErfaWarning")


@pytest.mark.parametrize("timesys", ["TT", "TAI", "UTC"])
def test_mjd_isot_is_astropy_s(timesys):
    rng = np.random.default_rng(6)
    for mjd in np.concatenate([rng.uniform(50000, 70000, 300), [57754.0, 57753.99999999]]):
        assert isotime.mjd_isot(mjd, timesys) == Time(mjd, format="mjd",
                                                       scale=timesys.lower()).isot


def test_tt_to_utc_is_astropy_s_across_a_leap_second():
    mjdref = instrument.MJDREFI + instrument.MJDREFF
    rng = np.random.default_rng(7)
    # 2016-12-31T23:59:60 UTC: the last leap second so far
    leap = Time("2017-01-01T00:00:00", scale="utc").tt.mjd
    for mjd in np.concatenate([leap + np.linspace(-3, 3, 61) / 86400.0,
                               mjdref + rng.uniform(0, 4e8, 200) / 86400.0]):
        assert isotime.tt_mjd_utc_isot(mjd) == Time(mjd, format="mjd", scale="tt").utc.isot


def test_unknown_time_scale_is_named():
    with pytest.raises(ValueError, match="GPS"):
        isotime.mjd_isot(60000.0, "GPS")
