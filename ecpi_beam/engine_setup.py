"""`make engines` (engines/setup.sh): the Flink and Spark engines, obtained at set-up time.

    python -m ecpi_beam.engine_setup [--maven-repository URL ...] [--cache DIR]

1. The Beam job servers `org.apache.beam:beam-runners-flink-1.19-job-server` and
   `beam-runners-spark-3-job-server` (version JOB_SERVER_VERSION), resolved by `mvn` WITH
   their runtime dependencies (a generated pom, the pinned maven-dependency-plugin's
   `copy-dependencies`): from Maven Central (or the mirror of the user's Maven settings),
   plus the extra repositories named by `--maven-repository` or ECPI_MAVEN_REPOSITORY
   (space-separated URLs; a site's internal repository). Each becomes a launcher jar, a
   manifest only: the job server's Main-Class, `Class-Path: lib/...` and, for Spark on
   Java 17, its `Add-Opens`; Python runs it with `java -jar` (`--flink_job_server_jar`).
   Where the published job-server jar is itself shaded, the launcher runs it the same way.
2. The Flink and Spark distributions: PyPI `apache-flink` + `apache-flink-libraries` and
   `pyspark` ship them; each in a venv of its own (only the distribution is used, run by Java).

Everything goes into a cache outside the project folder (ENGINES_CACHE_ENV, default
`$XDG_CACHE_HOME/ecpi-beam/engines`, else `~/.cache/ecpi-beam/engines`), one folder per
artifact and version, built under a temporary name and moved into place, under a file lock
(several checkouts share it); Maven keeps its downloads in its own local repository. A
second run finds everything and takes a second. Nothing is downloaded when a pipeline runs.
An artifact that cannot be obtained is one line on stderr and exit code 2, never "ready".
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from ecpi_beam.errors import EcpiError

JOB_SERVER_VERSION = "2.73.0"   # the Beam release of the job servers (docs/runners.md, versions)
FLINK_VERSION = "1.19.3"        # the Flink of beam-runners-flink-1.19-job-server
SPARK_VERSION = "3.5.0"         # the Spark that beam-runners-spark-3-job-server is built with
FLINK_MINOR = FLINK_VERSION.rsplit(".", 1)[0]
JOB_SERVER_ARTIFACTS = {"flink": f"beam-runners-flink-{FLINK_MINOR}-job-server",
                        "spark": "beam-runners-spark-3-job-server"}
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
ENGINES_CACHE_ENV = "ECPI_ENGINES_CACHE"
MAVEN_REPOSITORY_ENV = "ECPI_MAVEN_REPOSITORY"
LAUNCHER = "job-server.jar"
CLUSTER_LIB = "cluster-lib"     # the job server's jars for the cluster's own class path
# Not for a cluster's class path: the engine's own jars (in its distribution) and a second
# SLF4J API and binding (Flink logs through Log4j's binding for SLF4J 1.7)
NOT_FOR_CLUSTER = ("flink-", "slf4j-api-", "slf4j-simple-")
COMPLETE = ".complete"          # written last: a folder without it is not used
# the manifest entries a launcher carries over from the job server's own manifest
CARRIED_ENTRIES = ("Main-Class", "Add-Opens", "Add-Exports")


# ============================================================================================
# Where things are
# ============================================================================================
def cache_dir() -> Path:
    """The engines' cache: ENGINES_CACHE_ENV, else the user's cache folder."""
    if os.environ.get(ENGINES_CACHE_ENV):
        return Path(os.environ[ENGINES_CACHE_ENV]).expanduser().absolute()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser().absolute() / "ecpi-beam" / "engines"


def job_server_dir(engine: str) -> Path:
    return cache_dir() / f"{JOB_SERVER_ARTIFACTS[engine]}-{JOB_SERVER_VERSION}"


def distribution_venv(engine: str) -> Path:
    return cache_dir() / (f"apache-flink-{FLINK_VERSION}" if engine == "flink"
                          else f"pyspark-{SPARK_VERSION}")


def installed_job_server(engine: str) -> Path | None:
    """The launcher jar of `engine`'s job server, if the set-up made it."""
    folder = job_server_dir(engine)
    return folder / LAUNCHER if (folder / COMPLETE).is_file() else None


def cluster_jars(engine: str) -> list[Path]:
    """The jars of `engine`'s job server that its cluster puts on its own class path
    (engines.flink_lib), from the job server's folder (made by the set-up)."""
    folder = job_server_dir(engine) / CLUSTER_LIB
    return sorted(folder.glob("*.jar"))


def write_cluster_lib(folder: Path) -> None:
    """`folder/cluster-lib`: links to the jars of `folder/lib` but those NOT_FOR_CLUSTER.

    A folder of their own, because Java resolves the `Class-Path` of a jar's manifest (Beam's
    jars name their dependencies there, slf4j-api 2 among them) next to the real file, even
    through a symbolic link: here, the jars left out are not found."""
    lib = folder / CLUSTER_LIB
    shutil.rmtree(lib, ignore_errors=True)
    lib.mkdir()
    for jar in sorted((folder / "lib").glob("*.jar")):
        if not jar.name.startswith(NOT_FOR_CLUSTER):
            os.link(jar, lib / jar.name)


# ============================================================================================
# Job servers: mvn, then a launcher jar
# ============================================================================================
def _pom(artifact: str, repositories) -> str:
    declared = "".join(
        f"<repository><id>extra-{index}</id><url>{url}</url></repository>"
        for index, url in enumerate(repositories))
    return f"""<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>ecpi-beam.engines</groupId><artifactId>{artifact}-classpath</artifactId>
  <version>1</version><packaging>pom</packaging>
  <repositories>{declared}</repositories>
  <dependencies><dependency><groupId>org.apache.beam</groupId><artifactId>{artifact}</artifactId>
    <version>{JOB_SERVER_VERSION}</version></dependency></dependencies>
</project>
"""


def repository_url(location: str) -> str:
    """A Maven repository URL from a URL or a folder (made absolute, as file://)."""
    if re.match(r"^[a-z][a-z0-9+.-]*://", location):
        return location
    path = Path(location).expanduser().absolute()
    if not path.is_dir():
        raise EcpiError(f"Maven repository {location}: no such folder (expected a URL or "
                        "the folder of a Maven file repository)")
    return path.as_uri()


def _maven_error(log_text: str) -> str:
    """The line of mvn's output that says why, shortened."""
    missing = re.search(r"(Could not (?:find|transfer) artifact \S+)", log_text)
    if missing:
        return missing.group(1)[0].lower() + missing.group(1)[1:]
    errors = [line.removeprefix("[ERROR]").strip() for line in log_text.splitlines()
              if line.startswith("[ERROR]") and line.removeprefix("[ERROR]").strip()]
    reason = errors[0] if errors else "see the log"
    return reason if len(reason) <= 200 else reason[:197] + "..."


def _manifest(jar: Path) -> dict:
    """The main attributes of a jar's manifest (continuation lines joined)."""
    with zipfile.ZipFile(jar) as archive:
        text = archive.read("META-INF/MANIFEST.MF").decode("utf-8")
    entries = {}
    for line in re.sub(r"\r?\n ", "", text).splitlines():
        if not line.strip():
            break  # the main section ends at the first blank line
        key, _, value = line.partition(":")
        entries[key.strip()] = value.strip()
    return entries


def _manifest_line(key: str, value: str) -> str:
    """`key: value` wrapped at 72 bytes, continuation lines starting with a space."""
    line = f"{key}: {value}".encode("utf-8")
    pieces = [line[:72]]
    line = line[72:]
    while line:
        pieces.append(b" " + line[:71])
        line = line[71:]
    return "\r\n".join(piece.decode("utf-8") for piece in pieces)


def write_launcher(folder: Path, artifact: str) -> Path:
    """`folder/job-server.jar`: a manifest that runs `artifact`'s Main-Class with every jar of
    `folder/lib` on its class path (the job server's own first)."""
    own = f"{artifact}-{JOB_SERVER_VERSION}.jar"
    libraries = sorted(jar.name for jar in (folder / "lib").glob("*.jar"))
    if own not in libraries:
        raise EcpiError(f"{artifact} {JOB_SERVER_VERSION}: mvn resolved no {own}")
    entries = _manifest(folder / "lib" / own)
    if "Main-Class" not in entries:
        raise EcpiError(f"{own}: its manifest names no Main-Class (not a job server?)")
    class_path = " ".join(f"lib/{name}" for name in [own] + [n for n in libraries if n != own])
    lines = ["Manifest-Version: 1.0", "Created-By: ecpi-beam engine set-up"]
    lines += [_manifest_line(key, entries[key]) for key in CARRIED_ENTRIES if key in entries]
    lines.append(_manifest_line("Class-Path", class_path))
    launcher = folder / LAUNCHER
    with zipfile.ZipFile(launcher, "w") as archive:
        archive.writestr("META-INF/MANIFEST.MF", "\r\n".join(lines) + "\r\n\r\n")
    return launcher


def assemble_job_server(engine: str, repositories, mvn: str = "mvn") -> Path:
    """Resolve `engine`'s job server with its runtime dependencies into the cache (unless
    there); returns the launcher jar."""
    done = installed_job_server(engine)
    if done is not None:
        if not (done.parent / CLUSTER_LIB).is_dir():  # a cache made before it was needed
            write_cluster_lib(done.parent)
        return done
    artifact = JOB_SERVER_ARTIFACTS[engine]
    target = job_server_dir(engine)
    if shutil.which(mvn) is None:
        raise EcpiError(f"cannot obtain {artifact}: `{mvn}` (Maven) is not installed")
    print(f"engines: resolving org.apache.beam:{artifact}:{JOB_SERVER_VERSION} and its "
          "dependencies with mvn", flush=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        (work / "pom.xml").write_text(_pom(artifact, repositories))
        log = target.parent / f"{target.name}.mvn.log"
        with open(log, "w") as stream:
            resolved = subprocess.run(
                [mvn, "-B", "-f", str(work / "pom.xml"), f"{DEPENDENCY_PLUGIN}:copy-dependencies",
                 "-DincludeScope=runtime", f"-DoutputDirectory={work / 'lib'}"],
                stdout=stream, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        if resolved.returncode != 0:
            where = " or ".join(["Maven's configured repositories", *repositories])
            raise EcpiError(
                f"cannot obtain org.apache.beam:{artifact}:{JOB_SERVER_VERSION} from {where}: "
                f"{_maven_error(log.read_text(errors='replace'))} (log: {log}; name a "
                f"repository that serves it with {MAVEN_REPOSITORY_ENV} or --maven-repository)")
        write_launcher(work, artifact)
        write_cluster_lib(work)
        (work / "pom.xml").unlink()
        (work / COMPLETE).write_text(time.strftime("%Y-%m-%dT%H:%M:%SZ\n", time.gmtime()))
        shutil.rmtree(target, ignore_errors=True)
        work.rename(target)
        log.unlink()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target / LAUNCHER


# ============================================================================================
# Distributions: a venv each
# ============================================================================================
DISTRIBUTIONS = {
    # Only the distribution is used (Java runs it), not PyFlink's Python dependencies.
    "flink": ["--no-deps", f"apache-flink=={FLINK_VERSION}",
              f"apache-flink-libraries=={FLINK_VERSION}"],
    "spark": [f"pyspark=={SPARK_VERSION}"],
}


def install_distribution(engine: str) -> Path:
    """The venv holding `engine`'s distribution (made unless there)."""
    target = distribution_venv(engine)
    if (target / COMPLETE).is_file():
        return target
    print(f"engines: installing {' '.join(DISTRIBUTIONS[engine])} into {target}", flush=True)
    shutil.rmtree(target, ignore_errors=True)
    python = shutil.which("python3") or sys.executable
    steps = ([python, "-m", "venv", str(target)],
             [str(target / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check",
              *DISTRIBUTIONS[engine]])
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            lines = (done.stderr or done.stdout).strip().splitlines() or ["(no output)"]
            raise EcpiError(f"cannot install the {engine} distribution into {target}: "
                            f"{lines[-1]}")
    (target / COMPLETE).write_text(time.strftime("%Y-%m-%dT%H:%M:%SZ\n", time.gmtime()))
    return target


# ============================================================================================
# Command line
# ============================================================================================
@contextlib.contextmanager
def _locked(folder: Path):
    """One set-up at a time on the cache (checkouts share it)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="engines/setup.sh", description=__doc__.split("\n")[0])
    parser.add_argument("--maven-repository", action="append", default=[], metavar="URL",
                        help="an extra Maven repository (URL or folder) to resolve the job "
                             f"servers from, besides Maven's own; also {MAVEN_REPOSITORY_ENV} "
                             "(space-separated)")
    parser.add_argument("--cache", help=f"the engines' cache folder (also {ENGINES_CACHE_ENV})")
    return parser.parse_args(argv)


def main(argv) -> int:
    args = parse_args(argv)
    if args.cache:
        os.environ[ENGINES_CACHE_ENV] = args.cache
    started = time.time()
    locations = os.environ.get(MAVEN_REPOSITORY_ENV, "").split() + args.maven_repository
    repositories = [repository_url(location) for location in locations]
    with _locked(cache_dir()):
        jars = {engine: assemble_job_server(engine, repositories) for engine in ("flink", "spark")}
        for engine in ("flink", "spark"):
            install_distribution(engine)
    print(f"engines: ready in {time.time() - started:.0f} s (job servers Beam "
          f"{JOB_SERVER_VERSION}: {jars['flink']}, {jars['spark']}; Flink {FLINK_VERSION}, "
          f"Spark {SPARK_VERSION}; cache {cache_dir()})")
    return 0


if __name__ == "__main__":
    from ecpi_beam.errors import exit_code_of

    sys.exit(exit_code_of(main))
