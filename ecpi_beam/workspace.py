"""Workspaces (ECPI_HOME) and `ecpi_conf_tool` (the seed's installation page, docs/caldb.md).

A workspace is a directory holding `.ect/config.ini` and the local CALDB `.ect/caldb/`. The
environment variable ECPI_HOME selects it (default `~/ecpi_home`), so several can coexist.
A parameter file's `caldb_dir = @local` means the CALDB of the current workspace.

    ecpi_conf_tool create [DIR]    make a workspace (default $ECPI_HOME); idempotent
    ecpi_conf_tool show [DIR]      print its configuration and the installed CALDB
"""
from __future__ import annotations

import argparse
import configparser
import datetime
import os
from pathlib import Path

from ecpi_beam import __version__
from ecpi_beam.caldb.manifest import MANIFEST_NAME, parse_manifest
from ecpi_beam.errors import EcpiError

HOME_ENV = "ECPI_HOME"
DEFAULT_HOME = "~/ecpi_home"
CONFIG_DIR_NAME = ".ect"
CONFIG_NAME = "config.ini"
LOCAL_CALDB = "@local"
SERVER_ENV = "ECPI_CALDB_SERVER"
DEFAULT_SERVER = "https://fsc.svom.org/caldb-api"


def workspace_home() -> Path:
    """The current workspace: $ECPI_HOME, or ~/ecpi_home when it is unset or empty."""
    return Path(os.environ.get(HOME_ENV) or DEFAULT_HOME).expanduser().absolute()


def _home(home=None) -> Path:
    return workspace_home() if home is None else Path(home).expanduser().absolute()


def config_dir(home=None) -> Path:
    return _home(home) / CONFIG_DIR_NAME


def config_path(home=None) -> Path:
    return config_dir(home) / CONFIG_NAME


def local_caldb_dir(home=None) -> Path:
    """Where `caldb_init` installs the CALDB of a workspace: `<home>/.ect/caldb`."""
    return config_dir(home) / "caldb"


def caldb_installed(home=None) -> bool:
    return (local_caldb_dir(home) / MANIFEST_NAME).is_file()


def resolve_caldb_dir(value: str, home=None) -> str:
    """'@local' -> the workspace's installed CALDB; any other path or URL unchanged."""
    if str(value).strip() != LOCAL_CALDB:
        return value
    if not caldb_installed(home):
        raise EcpiError(f"[general] caldb_dir = @local: no CALDB is installed in {_home(home)}; "
                        "run `caldb_init -s`")
    return str(local_caldb_dir(home))


def create_workspace(home=None) -> Path:
    """Make `<home>/.ect/config.ini` if absent (an existing configuration is kept)."""
    home = _home(home)
    if home.exists() and not home.is_dir():
        raise EcpiError(f"workspace {home} is a file; expected a directory")
    config_dir(home).mkdir(parents=True, exist_ok=True)
    path = config_path(home)
    if not path.exists():
        config = configparser.ConfigParser()
        config["workspace"] = {"created": datetime.datetime.now(datetime.timezone.utc)
                               .isoformat(timespec="seconds"), "ecpi_beam_version": __version__}
        # the server line is a comment: --server and ECPI_CALDB_SERVER take precedence anyway
        config["caldb"] = {"caldb_dir": LOCAL_CALDB}
        with open(path, "w", encoding="utf-8") as stream:
            config.write(stream)
            stream.write("# server = https://... (CalDB server for `caldb_init`; see docs)\n")
    return home


def read_config(home=None) -> configparser.ConfigParser:
    path = config_path(home)
    if not path.is_file():
        raise EcpiError(f"{_home(home)} is not a workspace (no {CONFIG_DIR_NAME}/{CONFIG_NAME}): "
                        f"run `ecpi_conf_tool create {_home(home)}`")
    config = configparser.ConfigParser()
    try:
        config.read(path, encoding="utf-8")
    except configparser.Error as err:
        raise EcpiError(f"{path}: not a valid ini file ({err.message.splitlines()[0]})") from None
    return config


def configured_server(home=None) -> str | None:
    """The `[caldb] server` of a workspace's config.ini, if any."""
    if not config_path(home).is_file():
        return None
    return read_config(home).get("caldb", "server", fallback=None) or None


def caldb_server(option: str | None = None, home=None) -> str:
    """The CalDB server `caldb_init` asks: --server, else $ECPI_CALDB_SERVER, else config.ini
    `[caldb] server`, else the default."""
    return (option or os.environ.get(SERVER_ENV) or configured_server(home)
            or DEFAULT_SERVER).rstrip("/")


def describe_workspace(home=None) -> str:
    """The text `ecpi_conf_tool show` prints."""
    home = _home(home)
    config = read_config(home)
    lines = [f"workspace:    {home}", f"config:       {config_path(home)}"]
    for section in config.sections():
        lines += [f"  [{section}] {key} = {value}" for key, value in config[section].items()]
    caldb = local_caldb_dir(home)
    if caldb_installed(home):
        manifest = caldb / MANIFEST_NAME
        entries = parse_manifest(manifest.read_text(encoding="utf-8"), str(manifest))
        lines.append(f"caldb:        installed in {caldb}")
        lines += [f"  {e.product:12s} version {e.version:6s} valid from {e.valid_from}  {e.file}"
                  for e in entries.values()]
    else:
        lines.append("caldb:        not installed (run `caldb_init -s`, or `caldb_init`)")
    lines.append(f"caldb server: {caldb_server(None, home)}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="ecpi_conf_tool",
                                     description="Create or show an ECPI workspace (ECPI_HOME).")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (("create", "create a workspace"), ("show", "print a workspace")):
        command = commands.add_parser(name, help=text)
        command.add_argument("directory", nargs="?", default=None,
                             help=f"workspace directory (default: ${HOME_ENV} or {DEFAULT_HOME})")
    args = parser.parse_args(argv)
    if args.command == "create":
        existed = config_path(args.directory).is_file()
        home = create_workspace(args.directory)
        print(f"workspace {home} {'already exists' if existed else 'created'}; "
              f"install the default CALDB with `caldb_init -s`")
    else:
        print(describe_workspace(args.directory))
    return 0
