"""VOEvent 2.0 alerts (io/voevent.py): schema-valid, readable by a VOEvent library, atomic."""
import dataclasses
import os

import pytest
import voeventparse

from ecpi_beam.errors import EcpiError
from ecpi_beam.io.voevent import TransientAlert, alert_file_name, alert_ivorn, voevent_xml, \
    write_voevent

ALERT = TransientAlert(event_id="OBS001-13_60-occ-1", name="ECL J053432.0+220056",
                       ra_deg=83.6333, dec_deg=22.0156, error_radius_deg=0.12,
                       time_utc="2026-12-01T12:34:56.789", window_start=1000.0,
                       window_length=600.0, snr=12.3, band="13-60", e_min_kev=13.0,
                       e_max_kev=60.0, obs_id="OBS001")


def test_first_alert_is_schema_valid_and_carries_the_position():
    event = voeventparse.loads(voevent_xml(ALERT))
    assert voeventparse.valid_as_v2_0(event)
    assert event.attrib["ivorn"] == "ivo://svom.ecpi-beam/alert#OBS001-13_60-occ-1"
    position = voeventparse.get_event_position(event)
    assert position.ra == pytest.approx(83.6333, abs=1e-5)
    assert position.dec == pytest.approx(22.0156, abs=1e-5)
    assert position.err == pytest.approx(0.12, abs=1e-5)
    assert position.system == "UTC-ICRS-GEO"
    assert voeventparse.get_event_time_as_utc(event).isoformat().startswith("2026-12-01T12:34:56")
    params = voeventparse.get_toplevel_params(event)
    assert float(params["SNR"]["value"]) == pytest.approx(12.3)
    assert params["Source_Name"]["value"] == ALERT.name
    assert voeventparse.get_grouped_params(event)["Band"]["E_Max"]["value"] == "60"
    assert not event.find("Citations")


def test_update_cites_the_first_alert():
    event = voeventparse.loads(voevent_xml(ALERT, sequence=2))
    assert voeventparse.valid_as_v2_0(event)
    assert event.attrib["ivorn"] == alert_ivorn(ALERT.event_id, 2) != alert_ivorn(ALERT.event_id)
    cited = event.Citations.EventIVORN
    assert cited.attrib["cite"] == "supersedes"
    assert str(cited) == alert_ivorn(ALERT.event_id)


def test_written_atomically_beside_the_products(tmp_path):
    url = str(tmp_path / alert_file_name(ALERT))
    assert write_voevent(ALERT, url) == url
    assert os.listdir(tmp_path) == ["ECL-ALERT_OBS001-13_60-occ-1_0.xml"]
    with open(url, "rb") as stream:
        assert voeventparse.valid_as_v2_0(voeventparse.load(stream))


@pytest.mark.parametrize("field, value", [("event_id", "../etc"), ("name", "Crab"),
                                          ("ra_deg", 360.0), ("dec_deg", float("nan")),
                                          ("error_radius_deg", 0.0), ("time_utc", "noon"),
                                          ("band", "13 to 60"), ("role", "alert")])
def test_a_field_a_voevent_cannot_carry_is_named(field, value):
    with pytest.raises(EcpiError, match=field):
        voevent_xml(dataclasses.replace(ALERT, **{field: value}))


def test_negative_sequence_is_refused():
    with pytest.raises(EcpiError, match="sequence"):
        voevent_xml(ALERT, sequence=-1)
