"""CalDB credentials under hostile servers: no redirect is followed with them, no message shows
the password or the token (fake Keycloak-style servers on 127.0.0.1)."""
import pytest
from flask import jsonify, redirect, request

from ecpi_beam.caldb import init as caldb_init
from ecpi_beam.errors import EcpiError
from ecpi_beam.workspace import local_caldb_dir
from test_caldb_server import PASSWORD, TOKEN, FakeCaldbServer, home, server  # noqa: F401


class RecordingServer(FakeCaldbServer):
    """Another origin: records every request it gets (it must get none with credentials)."""

    def __init__(self, root):
        self.seen = []
        super().__init__(root)

    def token(self):
        self.seen.append(request.get_data(as_text=True))
        return super().token()

    def file(self, name):
        self.seen.append(request.headers.get("Authorization", ""))
        return super().file(name)


class RedirectingServer(FakeCaldbServer):
    """Answers the token request, or the file requests, with a 307 to `elsewhere`."""

    elsewhere = None
    redirect_files = False

    def token(self):
        if not self.redirect_files:
            return redirect(f"{self.elsewhere}{request.path}", code=307)
        return super().token()

    def file(self, name):
        return redirect(f"{self.elsewhere}{request.path}", code=307)


class EchoingServer(FakeCaldbServer):
    """A broken server whose error answer echoes the form it got (the password with it)."""

    def token(self):
        body = request.get_data(as_text=True)
        return jsonify(error="server_error", error_description=f"cannot parse {body}"), 400


def install_error(server_class, root) -> str:
    """The one-line error of `caldb_init --server` against a server_class on 127.0.0.1."""
    server = server_class(root)
    try:
        with pytest.raises(EcpiError) as caught:
            caldb_init.main(["--server", server.url])
    finally:
        server.stop()
    return str(caught.value)


@pytest.fixture
def other_origin(tmp_path):
    fake = RecordingServer(tmp_path)
    yield fake
    fake.stop()


@pytest.mark.parametrize("redirect_files", [False, True], ids=["token", "file"])
def test_a_307_to_another_origin_is_refused_and_nothing_is_sent_there(
        tmp_path, home, other_origin, capsys, redirect_files):  # noqa: F811
    RedirectingServer.elsewhere, RedirectingServer.redirect_files = other_origin.url, redirect_files
    message = install_error(RedirectingServer, tmp_path)
    assert "HTTP 307" in message and "redirect" in message and "\n" not in message
    assert other_origin.seen == []  # neither the form nor the Bearer token went there
    assert PASSWORD not in message and TOKEN not in message
    assert not (local_caldb_dir(home) / "caldb.json").exists()


def test_an_error_answer_echoing_the_form_is_redacted(tmp_path, home, capsys):  # noqa: F811
    message = install_error(EchoingServer, tmp_path)
    assert "HTTP 400" in message and caldb_init.REDACTED in message, message
    assert PASSWORD not in message and "pw-Zq8%21never-shown" not in message
    output = capsys.readouterr()
    assert PASSWORD not in output.out + output.err


@pytest.mark.parametrize("secret", ["s3cr3t", "a b&c=d/e!", "pw-Zq8!never-shown"])
def test_redact_hides_every_encoding_of_a_secret(secret):
    import urllib.parse

    text = f"raw {secret} url {urllib.parse.quote(secret, safe='')} form " \
           f"{urllib.parse.quote_plus(secret)}"
    redacted = caldb_init.redact(text, [secret, None, ""])
    assert secret not in redacted and urllib.parse.quote_plus(secret) not in redacted
    assert redacted.count(caldb_init.REDACTED) == 3
