"""`caldb_init` against a real HTTP CalDB server on 127.0.0.1 (token and file endpoints)."""
import shutil
import socket
import threading

import pytest
from flask import Flask, abort, jsonify, request, send_from_directory
from werkzeug.serving import make_server

from ecpi_beam.caldb import Caldb, default_caldb_dir
from ecpi_beam.caldb import init as caldb_init
from ecpi_beam.caldb.manifest import sha256_file
from ecpi_beam.errors import EcpiError
from ecpi_beam.workspace import local_caldb_dir

USER, PASSWORD, CLIENT, TOKEN = "alice", "pw-Zq8!never-shown", "FSC_PUBLIC", "token-1234"


class FakeCaldbServer:
    """Keycloak-style token endpoint and Bearer-protected files, served from `root`."""

    def __init__(self, root):
        self.root = root
        self.failures_to_serve = 0  # answer 503 this many times first (tests the retries)
        self.token_requests = 0
        app = Flask("fake_caldb_server")
        app.add_url_rule("/realms/svom/protocol/openid-connect/token", "token", self.token,
                         methods=["POST"])
        app.add_url_rule("/caldb/eclairs/<path:name>", "file", self.file)
        self._server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def token(self):
        self.token_requests += 1
        form = request.form
        if form.get("grant_type") != "password" or form.get("client_id") != CLIENT:
            return jsonify(error="unauthorized_client", error_description="bad client"), 400
        if form.get("username") != USER or form.get("password") != PASSWORD:
            return jsonify(error="invalid_grant", error_description="Invalid user credentials"), 401
        return jsonify(access_token=TOKEN, token_type="Bearer", expires_in=300)

    def file(self, name):
        if self.failures_to_serve > 0:
            self.failures_to_serve -= 1
            abort(503)
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            abort(401)
        return send_from_directory(self.root, name)

    def stop(self):
        self._server.shutdown()
        self._thread.join(timeout=5)


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "served"
    shutil.copytree(default_caldb_dir(), root)
    fake = FakeCaldbServer(root)
    yield fake
    fake.stop()


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("ECPI_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KC_USERNAME", USER)
    monkeypatch.setenv("KC_PASSWORD", PASSWORD)
    monkeypatch.setenv("KC_CLIENT_ID", CLIENT)
    monkeypatch.delenv("ECPI_CALDB_SERVER", raising=False)
    monkeypatch.setattr(caldb_init, "RETRY_DELAYS_S", (0.01, 0.02))
    return tmp_path / "home"


def installed_shas(home):
    return {p.name: sha256_file(p) for p in sorted(local_caldb_dir(home).iterdir())}


def test_download_installs_a_verified_set_and_never_shows_the_password(server, home, capsys):
    assert caldb_init.main(["--server", server.url]) == 0
    output = capsys.readouterr()
    caldb = Caldb.open(local_caldb_dir(home))
    assert caldb.mask_pattern().sum() == 846
    assert installed_shas(home) == {p.name: sha256_file(p) for p in sorted(server.root.iterdir())}
    assert PASSWORD not in output.out + output.err
    for path in home.rglob("*"):
        if path.is_file():
            assert PASSWORD.encode() not in path.read_bytes(), path
    assert not list((home / ".ect").glob("caldb-*"))  # no staging left behind


def test_server_from_environment_and_idempotent_rerun(server, home, monkeypatch, capsys):
    monkeypatch.setenv("ECPI_CALDB_SERVER", server.url)
    assert caldb_init.main([]) == 0
    before = installed_shas(home)
    assert caldb_init.main([]) == 0
    assert "already up to date" in capsys.readouterr().out
    assert installed_shas(home) == before


def test_missing_credentials_are_named(server, home, monkeypatch):
    monkeypatch.delenv("KC_PASSWORD")
    monkeypatch.delenv("KC_CLIENT_ID")
    with pytest.raises(EcpiError, match="KC_PASSWORD, KC_CLIENT_ID are not set"):
        caldb_init.main(["--server", server.url])
    assert server.token_requests == 0


def test_wrong_password_is_a_401_error_without_the_password(server, home, monkeypatch):
    monkeypatch.setenv("KC_PASSWORD", "wrong-guess-42")
    with pytest.raises(EcpiError, match="HTTP 401") as caught:
        caldb_init.main(["--server", server.url])
    assert "wrong-guess-42" not in str(caught.value) and "KC_USERNAME=alice" in str(caught.value)
    assert not (local_caldb_dir(home) / "caldb.json").exists()


def test_wrong_client_id_is_reported(server, home, monkeypatch):
    monkeypatch.setenv("KC_CLIENT_ID", "NOPE")
    with pytest.raises(EcpiError, match="KC_CLIENT_ID"):
        caldb_init.main(["--server", server.url])


def test_server_down_names_the_url(home):
    with socket.socket() as probe:  # a port nobody listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    with pytest.raises(EcpiError, match=f"unreachable.*{url}/realms/svom"):
        caldb_init.main(["--server", url])


def test_transient_5xx_answers_are_retried(server, home):
    server.failures_to_serve = 2
    assert caldb_init.main(["--server", server.url]) == 0
    assert (local_caldb_dir(home) / "caldb.json").is_file()


def test_corrupt_file_leaves_the_previous_install_untouched(server, home):
    assert caldb_init.main(["--server", server.url]) == 0
    before = installed_shas(home)
    manifest = Caldb.open(default_caldb_dir())
    corrupted = server.root / manifest.entry("ECL-RSP-ARF").file
    corrupted.write_bytes(corrupted.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(EcpiError, match=r"ECL-RSP-ARF_v1\.0\.arf: sha256 .* differs"):
        caldb_init.main(["--server", server.url, "--force"])
    assert installed_shas(home) == before
    assert not list((home / ".ect").glob("caldb-*"))
