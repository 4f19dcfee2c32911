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


def test_an_error_answer_echoing_the_form_is_not_shown(tmp_path, home, capsys):  # noqa: F811
    message = install_error(EchoingServer, tmp_path)
    assert "HTTP 400" in message and "cannot parse" not in message, message  # not the body
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


# ============================================================================================
# Every form of the password a server could echo: never printed (issue: quote's default safe
# characters, lower-case hex, JSON and HTML escapes leaked)
# ============================================================================================
def _lower_hex(text: str) -> str:
    import re

    return re.sub(r"%[0-9A-F]{2}", lambda match: match.group(0).lower(), text)


def password_forms(secret: str) -> dict[str, str]:
    import html
    import json
    import urllib.parse

    return {"raw": secret, "quote": urllib.parse.quote(secret),
            "quote_safe_none": urllib.parse.quote(secret, safe=""),
            "quote_plus": urllib.parse.quote_plus(secret),
            "lower_hex": _lower_hex(urllib.parse.quote(secret, safe="")),
            "lower_hex_plus": _lower_hex(urllib.parse.quote_plus(secret)),
            "json": json.dumps(secret)[1:-1], "json_slash": json.dumps(secret)[1:-1].replace("/", "\\/"),
            "html": html.escape(secret), "html_no_quotes": html.escape(secret, quote=False),
            "html_numeric": "".join(f"&#{ord(c)};" for c in secret)}


def decodings(text: str) -> list[str]:
    """`text` as a reader could decode it: what must never hold the password."""
    import codecs
    import html
    import urllib.parse

    out = [text, urllib.parse.unquote(text), urllib.parse.unquote_plus(text), html.unescape(text)]
    try:
        out.append(codecs.decode(text.replace("\\/", "/"), "unicode_escape"))
    except UnicodeDecodeError:
        pass
    return out


# a password with the characters each encoding treats apart: '/' (quote's safe character),
# space (+ in forms), '&', '<', '"', "'", '\\', a non-ASCII letter
HARD_PASSWORD = "pw/Zq8 !&<é\"'\\x"


class ErrorBodyServer(FakeCaldbServer):
    """Answers the token request with HTTP 400, its `error` carrying the password in one form."""

    form = "raw"

    def token(self):
        echoed = password_forms(request.form.get("password", ""))[self.form]
        return jsonify(error="invalid_client " + echoed, error_description=echoed), 400


class LocationServer(FakeCaldbServer):
    """Answers with a 302 whose Location carries the password (token request) or the token
    (file request), in one form, in the host, the path and the query."""

    form = "raw"
    on_files = False

    def _redirect(self, secret):
        echoed = password_forms(secret)[self.form]
        response = redirect("/", code=302)
        response.headers["Location"] = (f"https://{echoed}.example.org/{echoed}?"
                                        f"password={echoed}")
        return response

    def token(self):
        if self.on_files:
            return jsonify(access_token=TOKEN, token_type="Bearer", expires_in=300)
        return self._redirect(request.form.get("password", ""))

    def file(self, name):
        return self._redirect(request.headers.get("Authorization", "").split(" ")[-1])


def caldb_init_output(server_class, root, capsys, **attributes):
    """(exit code, stdout + stderr) of the `caldb_init` console script against the server."""
    from ecpi_beam.cli import caldb_init as caldb_init_script

    server = server_class(root)
    for name, value in attributes.items():
        setattr(server, name, value)
    try:
        code = caldb_init_script(["--server", server.url])
    finally:
        server.stop()
    output = capsys.readouterr()
    return code, output.out + output.err


def assert_never_shown(output: str, secret: str):
    for name, form in password_forms(secret).items():
        assert form not in output, (name, output)
    for decoded in decodings(output):
        assert secret not in decoded, decoded


@pytest.mark.parametrize("form", sorted(password_forms("x")))
def test_a_400_echoing_the_password_in_any_form_never_shows_it(tmp_path, home, capsys,  # noqa: F811
                                                                monkeypatch, form):
    monkeypatch.setenv("KC_PASSWORD", HARD_PASSWORD)
    code, output = caldb_init_output(ErrorBodyServer, tmp_path, capsys, form=form)
    assert code == 2 and output.count("\n") == 1 and output.startswith("error: "), output
    assert "HTTP 400" in output and "check KC_CLIENT_ID" in output
    assert_never_shown(output, HARD_PASSWORD)


def test_a_400_with_a_registered_oauth_code_names_it(tmp_path, home, capsys):  # noqa: F811
    class InvalidClient(FakeCaldbServer):
        def token(self):
            return jsonify(error="invalid_client", error_description="who are you?"), 400

    code, output = caldb_init_output(InvalidClient, tmp_path, capsys)
    assert code == 2 and "HTTP 400 (invalid_client)" in output and "who are you" not in output


@pytest.mark.parametrize("on_files", [False, True], ids=["token", "file"])
@pytest.mark.parametrize("form", ["raw", "quote", "quote_plus", "lower_hex", "json", "html"])
def test_a_302_carrying_the_secret_in_location_never_shows_it(tmp_path, home, capsys,  # noqa: F811
                                                              monkeypatch, form, on_files):
    monkeypatch.setenv("KC_PASSWORD", HARD_PASSWORD)
    code, output = caldb_init_output(LocationServer, tmp_path, capsys, form=form,
                                     on_files=on_files)
    assert code == 2 and output.count("\n") == 1, output
    assert "HTTP 302, a redirect to another host" in output and "--server" in output
    assert_never_shown(output, HARD_PASSWORD)
    assert_never_shown(output, TOKEN)
    assert "example.org" not in output  # nothing of the Location is shown


@pytest.mark.parametrize("url", ["http://caldb.example.org", "http://10.0.0.7:8080/api",
                                 "ftp://127.0.0.1", "caldb.example.org"])
def test_http_to_a_server_off_this_machine_is_refused_before_any_request(home, url,  # noqa: F811
                                                                          monkeypatch):
    sent = []
    monkeypatch.setattr("requests.Session.request", lambda *args, **kwargs: sent.append(args))
    with pytest.raises(EcpiError, match="expected an https:// URL .*in clear"):
        caldb_init.main(["--server", url])
    assert sent == []


@pytest.mark.parametrize("url", ["http://127.0.0.1:1", "http://localhost:1", "http://[::1]:1",
                                 "https://caldb.example.org"])
def test_https_or_loopback_http_is_accepted(url):
    assert caldb_init.CaldbServer(url, {"KC_PASSWORD": "x"}).base_url == url
