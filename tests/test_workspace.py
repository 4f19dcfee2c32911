"""Workspaces (ECPI_HOME, `ecpi_conf_tool`) and `caldb_init -s`."""
import configparser
import os

import pytest

from ecpi_beam import workspace
from ecpi_beam.caldb import Caldb, default_caldb_dir
from ecpi_beam.caldb import init as caldb_init
from ecpi_beam.caldb.manifest import sha256_file
from ecpi_beam.cli import caldb_init as caldb_init_script
from ecpi_beam.errors import EcpiError


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("ECPI_HOME", str(tmp_path / "ws"))
    monkeypatch.delenv("ECPI_CALDB_SERVER", raising=False)
    return tmp_path / "ws"


def test_home_comes_from_ecpi_home_or_defaults_to_ecpi_home_in_the_user_dir(home, monkeypatch):
    assert workspace.workspace_home() == home
    assert workspace.local_caldb_dir() == home / ".ect" / "caldb"
    monkeypatch.delenv("ECPI_HOME")
    assert workspace.workspace_home() == workspace.Path("~/ecpi_home").expanduser().absolute()


def test_create_writes_config_and_keeps_it(home, capsys):
    assert workspace.main(["create"]) == 0
    config = configparser.ConfigParser()
    config.read(home / ".ect" / "config.ini")
    assert config["caldb"]["caldb_dir"] == "@local"
    (home / ".ect" / "config.ini").write_text("[caldb]\nserver = https://example.org/x\n")
    assert workspace.main(["create"]) == 0
    assert "already exists" in capsys.readouterr().out
    assert workspace.configured_server() == "https://example.org/x"


def test_workspaces_coexist(tmp_path, home, monkeypatch):
    workspace.main(["create", str(tmp_path / "other")])
    assert caldb_init.main(["-s", "--home", str(tmp_path / "other")]) == 0
    workspace.create_workspace()
    assert workspace.caldb_installed(tmp_path / "other")
    assert not workspace.caldb_installed()
    monkeypatch.setenv("ECPI_HOME", str(tmp_path / "other"))
    assert workspace.caldb_installed()


def test_resolve_local_caldb(home):
    assert workspace.resolve_caldb_dir("s3://bucket/caldb") == "s3://bucket/caldb"
    with pytest.raises(EcpiError, match=r"\[general\] caldb_dir = @local: no CALDB is installed in .*"
                                        r"run `caldb_init -s`"):
        workspace.resolve_caldb_dir("@local")
    assert caldb_init.main(["-s"]) == 0
    resolved = workspace.resolve_caldb_dir("@local")
    assert resolved == str(home / ".ect" / "caldb")
    assert Caldb.open(resolved).pixel_calibration().gain.shape == (80, 80)


def test_show_reports_workspace_and_caldb_versions(home, capsys):
    with pytest.raises(EcpiError, match="is not a workspace"):
        workspace.main(["show"])
    workspace.main(["create"])
    capsys.readouterr()
    workspace.main(["show"])
    shown = capsys.readouterr().out
    assert str(home) in shown and "not installed" in shown and caldb_init.DEFAULT_SERVER in shown
    caldb_init.main(["-s"])
    capsys.readouterr()
    workspace.main(["show", str(home)])
    shown = capsys.readouterr().out
    assert "installed in" in shown and "ECL-RSP-IRF" in shown and "version 1.0" in shown


def test_caldb_init_s_installs_the_shipped_set_idempotently(home, capsys):
    assert caldb_init.main(["-s"]) == 0
    target = workspace.local_caldb_dir()
    shipped = {name: sha256_file(os.path.join(default_caldb_dir(), name))
               for name in os.listdir(default_caldb_dir())}
    assert {p.name: sha256_file(p) for p in target.iterdir()} == shipped
    inode = (target / "caldb.json").stat().st_ino
    assert caldb_init.main(["-s"]) == 0
    assert "already up to date" in capsys.readouterr().out
    assert (target / "caldb.json").stat().st_ino == inode  # nothing rewritten
    (target / "ECL-MSK-PAT_v1.0.fits").write_bytes(b"damaged")
    assert caldb_init.main(["-s"]) == 0  # a damaged install is repaired
    assert sha256_file(target / "ECL-MSK-PAT_v1.0.fits") == shipped["ECL-MSK-PAT_v1.0.fits"]


def test_failed_install_keeps_the_previous_set(home):
    assert caldb_init.main(["-s"]) == 0
    before = sha256_file(workspace.local_caldb_dir() / "caldb.json")

    class FailingMidway(caldb_init.ShippedSet):
        def fetch(self, name):
            if name.endswith(".arf"):
                raise EcpiError(f"{name}: cannot read (simulated)")
            return super().fetch(name)

    shipped = FailingMidway(default_caldb_dir())
    with pytest.raises(EcpiError, match="simulated"):
        caldb_init.install(shipped, workspace.local_caldb_dir(), force=True)
    assert sha256_file(workspace.local_caldb_dir() / "caldb.json") == before
    assert sorted(p.name for p in (home / ".ect").iterdir()) == ["caldb", "config.ini"]


def test_console_script_prints_one_line_error_and_exits_2(home, monkeypatch, capsys):
    for name in ("KC_USERNAME", "KC_PASSWORD", "KC_CLIENT_ID"):
        monkeypatch.delenv(name, raising=False)
    assert caldb_init_script([]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: KC_USERNAME, KC_PASSWORD, KC_CLIENT_ID are not set")
    assert err.count("\n") == 1
