"""`caldb_init`: install a CALDB set into the workspace (ICD section 3, docs/caldb.md).

    caldb_init -s                 the default set shipped with the package
    caldb_init [--server URL]     the set of the CalDB server (Keycloak password grant with
                                  KC_USERNAME, KC_PASSWORD, KC_CLIENT_ID)

Every file is checked against the sha256 of the manifest in a staging directory inside `.ect/`,
which then replaces `.ect/caldb/` by a rename: a failed run leaves the previous set untouched.
Running it again with the same set changes nothing. The password is never printed or written.
"""
from __future__ import annotations

import argparse
import html
import ipaddress
import json
import os
import re
import shutil
import tempfile
import time
import urllib.parse
import uuid
from pathlib import Path

import requests

from ecpi_beam.caldb.manifest import MANIFEST_NAME, REQUIRED_PRODUCTS, parse_manifest, \
    sha256_bytes
from ecpi_beam.caldb.reader import default_caldb_dir
from ecpi_beam.errors import EcpiError
from ecpi_beam.workspace import DEFAULT_SERVER, SERVER_ENV, caldb_server, create_workspace, \
    local_caldb_dir, workspace_home

TOKEN_PATH = "realms/svom/protocol/openid-connect/token"
FILES_PATH = "caldb/eclairs"
CREDENTIAL_VARIABLES = ("KC_USERNAME", "KC_PASSWORD", "KC_CLIENT_ID")
SECRET_VARIABLES = ("KC_PASSWORD",)  # never shown; the access token is redacted as well
REDACTED = "[redacted]"
# RFC 6749 section 5.2: the only text of a token error answer ever shown (the rest of an answer,
# after the password was sent, may echo it)
OAUTH_ERROR_CODES = ("invalid_request", "invalid_client", "invalid_grant", "unauthorized_client",
                     "unsupported_grant_type", "invalid_scope")
RETRY_DELAYS_S = (1.0, 2.0, 4.0)  # backoff after each failed attempt (5xx, connection error)
TIMEOUT_S = (10.0, 120.0)  # connect, read


# ================================================================================================
# Sources: the shipped set or the server; both give the bytes of a file named in the manifest
# ================================================================================================
class ShippedSet:
    def __init__(self, directory: str):
        self.directory = directory

    def describe(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def fetch(self, name: str) -> bytes:
        try:
            return Path(self.directory, name).read_bytes()
        except OSError as err:
            raise EcpiError(f"{self.describe(name)}: cannot read ({err.strerror})") from None


def redact(text: str, secrets) -> str:
    """`text` with every secret replaced by [redacted], in whatever form a server echoing a
    request could show it: raw; URL-encoded (quote with or without safe characters,
    quote_plus, upper- or lower-case hex); JSON-, HTML- or Python-escaped; or any mixture,
    character by character."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = _secret_pattern(secret).sub(REDACTED, text)
    return text


def _secret_pattern(secret: str) -> re.Pattern:
    """A regular expression matching `secret` with each character in any of its encodings."""
    return re.compile("".join(_character_forms(char) for char in secret))


def _character_forms(char: str) -> str:
    code = ord(char)
    backslash = re.escape("\\")
    forms = [re.escape(char),
             "".join("%" + _hex(byte, 2) for byte in char.encode()),  # URL, either case
             f"&#0*{code};", f"&#[xX]0*{_hex(code, 1)};",  # HTML numeric references
             re.escape(html.escape(char)), re.escape(json.dumps(char)[1:-1]),
             re.escape(repr(char)[1:-1]), backslash + re.escape(char)]  # '\/', "\'"
    if code <= 0xFFFF:  # JSON's and Python's escapes
        forms.append(backslash + "u" + _hex(code, 4))
    else:
        high, low = divmod(code - 0x10000, 0x400)  # JSON: a surrogate pair
        forms.append(backslash + "u" + _hex(0xD800 + high, 4) + backslash + "u"
                     + _hex(0xDC00 + low, 4))
    forms.append(backslash + "U" + _hex(code, 8))
    if code < 256:
        forms.append(backslash + "x" + _hex(code, 2))
    if char == " ":
        forms.append(re.escape("+"))
    if char == "'":
        forms += ["&apos;", "&#39;"]
    return "(?:" + "|".join(sorted(set(forms), key=len, reverse=True)) + ")"


def _hex(number: int, width: int) -> str:
    """A pattern of `number` in hexadecimal digits of either case."""
    return "".join(f"[{d}{d.upper()}]" if d.isalpha() else d for d in f"{number:0{width}x}")


def check_transport(base_url: str) -> None:
    """https://, or http:// to this machine only (a test server): the password must not cross
    a network in clear."""
    parsed = urllib.parse.urlsplit(base_url)
    if parsed.scheme == "https" and parsed.hostname:
        return
    if parsed.scheme == "http" and parsed.hostname and _is_loopback(parsed.hostname):
        return
    shown = f"{parsed.scheme}://{parsed.hostname}" if parsed.hostname else repr(base_url[:60])
    raise EcpiError(f"CalDB server {shown}: expected an https:// URL (http:// only for a "
                    "server on this machine, 127.0.0.1 or localhost: the password would cross "
                    "the network in clear)")


def _is_loopback(hostname: str) -> bool:
    if hostname.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


def read_credentials(environ=os.environ) -> dict[str, str]:
    missing = [name for name in CREDENTIAL_VARIABLES if not environ.get(name)]
    if missing:
        raise EcpiError(f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set: "
                        "export KC_USERNAME, KC_PASSWORD (your fsc.svom.org account) and "
                        "KC_CLIENT_ID (e.g. FSC_PUBLIC), or run `caldb_init -s` for the "
                        "default set")
    return {name: environ[name] for name in CREDENTIAL_VARIABLES}


class CaldbServer:
    """The CalDB server: OAuth2 password grant (Keycloak), then files with a Bearer token."""

    def __init__(self, base_url: str, credentials: dict[str, str], session=None):
        check_transport(base_url)
        self.base_url = base_url.rstrip("/")
        self._credentials = credentials
        self._session = session or requests.Session()
        self._token: str | None = None

    def describe(self, name: str) -> str:
        return f"{self.base_url}/{FILES_PATH}/{name}"

    def _secrets(self):
        return [self._credentials.get(name, "") for name in SECRET_VARIABLES] + [self._token]

    def _request(self, method: str, url: str, **kwargs) -> requests.Response:
        """One request, retried with backoff on connection errors and 5xx answers.

        Redirects are never followed: every request carries the password or the token, and a
        307/308 would re-send them to wherever the server points (another origin included).
        Nothing the server says is shown (it may echo the credentials): its status, and whether
        a redirect leads to this server's host, are.
        """
        reason = ""
        for delay in (*RETRY_DELAYS_S, None):
            try:
                response = self._session.request(method, url, timeout=TIMEOUT_S,
                                                 allow_redirects=False, **kwargs)
            except requests.RequestException as err:
                reason = type(err).__name__
            else:
                if response.is_redirect or 300 <= response.status_code < 400:
                    raise EcpiError(
                        f"{url} answered HTTP {response.status_code}, a redirect "
                        f"{self._redirect_target(response)}: credentials are never sent after "
                        f"a redirect; give the final address with --server or {SERVER_ENV}")
                if response.status_code < 500:
                    return response
                reason = f"HTTP {response.status_code}"
            if delay is not None:
                time.sleep(delay)
        raise EcpiError(f"CalDB server unreachable: {method} {url} failed "
                        f"{len(RETRY_DELAYS_S) + 1} times ({reason}); check --server or "
                        f"{SERVER_ENV}")

    def _redirect_target(self, response) -> str:
        """'to https on this host' or 'to another host': never the Location itself."""
        try:
            target = urllib.parse.urlsplit(
                urllib.parse.urljoin(response.url or self.base_url,
                                     response.headers.get("Location", "")))
            ours = urllib.parse.urlsplit(self.base_url)
            same_host = (target.hostname or "").lower() == (ours.hostname or "").lower()
        except ValueError:
            return "to an unreadable address"
        if same_host and target.scheme in ("http", "https"):
            return f"to {target.scheme} on this server's host"
        return "to another host"

    def token(self) -> str:
        try:
            return self._request_token()
        except EcpiError as err:  # a server may echo the form (the password) in its answer
            raise EcpiError(redact(str(err), self._secrets())) from None

    def _request_token(self) -> str:
        if self._token is None:
            url = f"{self.base_url}/{TOKEN_PATH}"
            form = {"grant_type": "password", "client_id": self._credentials["KC_CLIENT_ID"],
                    "username": self._credentials["KC_USERNAME"],
                    "password": self._credentials["KC_PASSWORD"]}
            response = self._request("POST", url, data=form)
            if response.status_code == 401:
                raise EcpiError(f"{url} refused the credentials of KC_USERNAME="
                                f"{self._credentials['KC_USERNAME']} (HTTP 401): check "
                                "KC_USERNAME and KC_PASSWORD")
            if response.status_code != 200:
                raise EcpiError(f"{url} answered HTTP {response.status_code}"
                                f"{_oauth_error(response)}: check KC_CLIENT_ID")
            try:
                self._token = str(response.json()["access_token"])
            except (ValueError, KeyError, TypeError):
                raise EcpiError(f"{url}: the answer holds no access_token") from None
        return self._token

    def fetch(self, name: str) -> bytes:
        try:
            return self._fetch(name)
        except EcpiError as err:
            raise EcpiError(redact(str(err), self._secrets())) from None

    def _fetch(self, name: str) -> bytes:
        url = self.describe(name)
        response = self._request("GET", url, headers={"Authorization": f"Bearer {self.token()}"})
        if response.status_code in (401, 403):
            raise EcpiError(f"{url}: access refused (HTTP {response.status_code}) for "
                            f"KC_USERNAME={self._credentials['KC_USERNAME']}")
        if response.status_code != 200:
            raise EcpiError(f"{url}: HTTP {response.status_code}; expected the file")
        return response.content


def _oauth_error(response) -> str:
    """' (invalid_client)' when the answer's `error` is one of RFC 6749's codes, else ''."""
    try:
        code = response.json().get("error")
    except (ValueError, AttributeError):
        return ""
    return f" ({code})" if code in OAUTH_ERROR_CODES else ""


# ================================================================================================
# Installation
# ================================================================================================
def _already_installed(target: Path, manifest_bytes: bytes) -> bool:
    """Same manifest and every file still has its sha256: nothing to do."""
    manifest = target / MANIFEST_NAME
    if not manifest.is_file() or manifest.read_bytes() != manifest_bytes:
        return False
    entries = parse_manifest(manifest_bytes, str(manifest))
    return all((target / e.file).is_file() and sha256_bytes((target / e.file).read_bytes())
               == e.sha256.lower() for e in entries.values())


def install(source, target: Path, force: bool = False) -> tuple[bool, dict]:
    """Install the set of `source` into `target` atomically; (changed, manifest entries)."""
    manifest_bytes = source.fetch(MANIFEST_NAME)
    entries = parse_manifest(manifest_bytes, source.describe(MANIFEST_NAME))
    missing = [product for product in REQUIRED_PRODUCTS if product not in entries]
    if missing:
        raise EcpiError(f"{source.describe(MANIFEST_NAME)}: lacks {', '.join(missing)}")
    if not force and _already_installed(target, manifest_bytes):
        return False, entries
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="caldb-staging-", dir=target.parent))
    try:
        for entry in entries.values():
            data = source.fetch(entry.file)
            if sha256_bytes(data) != entry.sha256.lower():
                raise EcpiError(f"{source.describe(entry.file)}: sha256 {sha256_bytes(data)} "
                                f"differs from {entry.sha256} in {MANIFEST_NAME}; nothing "
                                "installed")
            (staging / entry.file).parent.mkdir(parents=True, exist_ok=True)
            (staging / entry.file).write_bytes(data)
        (staging / MANIFEST_NAME).write_bytes(manifest_bytes)  # last: marks a complete set
        _swap_in(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return True, entries


def _swap_in(staging: Path, target: Path) -> None:
    """Replace `target` by `staging` with renames; the old set comes back if the second fails."""
    retired = None
    if target.exists():
        retired = target.parent / f"caldb-retired-{uuid.uuid4().hex}"
        target.rename(retired)
    try:
        staging.rename(target)
    except OSError:
        if retired is not None:
            retired.rename(target)
        raise
    if retired is not None:
        shutil.rmtree(retired, ignore_errors=True)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="caldb_init", description="Install the ECLAIRs CALDB into the workspace "
        "(ECPI_HOME): the shipped default set (-s) or the CalDB server's set.")
    parser.add_argument("-s", "--standard", action="store_true",
                        help="install the default set shipped with ecpi_beam (no network)")
    parser.add_argument("--server", help=f"CalDB server base URL (default: ${SERVER_ENV}, "
                        f"the workspace config.ini, or {DEFAULT_SERVER})")
    parser.add_argument("--home", help="workspace directory (default: $ECPI_HOME or ~/ecpi_home)")
    parser.add_argument("--force", action="store_true", help="reinstall even if up to date")
    args = parser.parse_args(argv)
    home = create_workspace(args.home or workspace_home())
    if args.standard:
        source = ShippedSet(default_caldb_dir())
    else:
        source = CaldbServer(caldb_server(args.server, home), read_credentials())
    target = local_caldb_dir(home)
    try:
        changed, entries = install(source, target, force=args.force)
    except EcpiError as err:  # the last guard: no message of ours shows the password
        raise EcpiError(redact(str(err), [os.environ.get(v, "") for v in SECRET_VARIABLES])) \
            from None
    state = "installed in" if changed else "already up to date in"
    print(f"CALDB ({len(entries)} files from {source.describe(MANIFEST_NAME)}) {state} {target}")
    for entry in entries.values():
        print(f"  {entry.product:12s} version {entry.version:6s} {entry.file}")
    return 0
