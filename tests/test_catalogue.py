"""IAU names and known-source matching (kernels/catalogue.py), the ECL-SRC-CAT CALDB product."""
import numpy as np
import pytest

from ecpi_beam.caldb import Caldb, default_caldb_dir
from ecpi_beam.caldb.generate import known_sources_model
from ecpi_beam.kernels.catalogue import KnownSources, angular_separation_deg, iau_name, \
    match_known


@pytest.mark.parametrize("ra, dec, name", [
    (83.6332, 22.0145, "ECL J053431.9+220052"),   # Crab: 5h34m31.97s truncated to 31.9
    (299.5903, 35.2016, "ECL J195821.6+351205"),  # Cyg X-1
    (244.9795, -15.6402, "ECL J161955.0-153824"),  # Sco X-1
    (0.0, -0.00001, "ECL J000000.0-000000"),      # the sign of a negative zero-degree Dec stays
    (359.99999, 89.99999, "ECL J235959.9+895959"),
])
def test_iau_name_truncates(ra, dec, name):
    assert iau_name(ra, dec) == name


def test_iau_name_prefix():
    assert iau_name(10.0, 10.0, prefix="SVOM").startswith("SVOM J004000.0+100000")


KNOWN = KnownSources(name=np.array(["A", "B", "C"]), ra_deg=np.array([10.0, 10.5, 200.0]),
                     dec_deg=np.array([0.0, 0.0, -30.0]))


def test_match_known_nearest_within_radius():
    index = match_known([10.1, 10.4, 50.0, 200.0], [0.0, 0.0, 0.0, -30.25], [0.2, 0.2, 5.0, 0.2],
                        KNOWN)
    assert index.tolist() == [0, 1, -1, -1]
    assert match_known([], [], 1.0, KNOWN).shape == (0,)


def test_angular_separation_across_ra_zero():
    assert angular_separation_deg(359.9, 0.0, 0.1, 0.0) == pytest.approx(0.2, rel=1e-9)
    assert angular_separation_deg(0.0, 90.0, 123.0, 89.0) == pytest.approx(1.0, rel=1e-9)


def test_caldb_ships_the_known_sources(fitsverify):
    caldb = Caldb.open(default_caldb_dir())
    known = caldb.known_sources()
    assert len(known) == len(known_sources_model()) > 300
    crab = np.flatnonzero(known.name == "Crab")
    assert crab.size == 1
    assert known.ra_deg[crab[0]] == pytest.approx(83.633, abs=1e-3)
    assert known.survey_name[crab[0]] == "SWIFT J0534.6+2204"
    assert np.all(known.flux >= 30.0) and np.all(np.abs(known.dec_deg) <= 90)
    assert len(set(known.name)) == len(known)
    fitsverify(caldb.url("ECL-SRC-CAT"))
