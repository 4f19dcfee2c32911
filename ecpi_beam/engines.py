"""`ecpi_engine start|stop flink|spark`, `ecpi_engine status`: local clusters to run campaigns on.

    ecpi_engine start flink    a Flink session cluster on 127.0.0.1 (JobManager, REST on 8081,
                               one TaskManager with 2 slots) and a Beam worker pool for the
                               Python SDK; prints the ecpi_run options that use it
    ecpi_engine start spark    a Spark standalone master (spark://127.0.0.1:7077, web UI on
                               8080), one worker with 2 cores, and a Beam worker pool
    ecpi_engine stop flink|spark   stops, by process id, everything `start` started
    ecpi_engine status         what runs

The Flink and Spark distributions are those that the `apache-flink` and `pyspark` packages
ship, installed in their own environments by `make engines` (engines/setup.sh): `.venv-flink`
and `.venv-spark` in the project folder, or the folders named by ECPI_FLINK_HOME and
ECPI_SPARK_HOME. The Beam job-server jars are looked for in the project's `engines/jars` (or
ECPI_JOB_SERVER_DIR); `--flink_job_server_jar` / `--spark_job_server_jar` name others.

Process ids, logs and configuration live in `<state>/<engine>/` (default
`$ECPI_HOME/.ect/engines`, or ECPI_ENGINE_STATE). Every process is started in a session of
its own, so that `stop` ends it and its children by process group, and nothing else.
"""
from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ecpi_beam.errors import EcpiError
from ecpi_beam.workspace import config_dir

ENGINES = ("flink", "spark")
PROJECT_DIR = Path(__file__).resolve().parent.parent
STARTUP_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 20.0
FLINK_HOME_ENV, SPARK_HOME_ENV = "ECPI_FLINK_HOME", "ECPI_SPARK_HOME"
JOB_SERVER_DIR_ENV, STATE_ENV = "ECPI_JOB_SERVER_DIR", "ECPI_ENGINE_STATE"


@dataclass(frozen=True)
class Ports:
    """The addresses users know (Flink REST 8081, Spark 7077 and 8080) and the others."""
    flink_rest: int = 8081
    flink_rpc: int = 6123
    spark_master: int = 7077
    spark_ui: int = 8080
    spark_worker_ui: int = 8082
    flink_worker_pool: int = 50000
    spark_worker_pool: int = 50001


@dataclass(frozen=True)
class Process:
    """One process of a cluster: what to run, the port that says it is up, and the words of
    its command line that say it is ours (those of the launch script, then of the java it
    becomes: the scripts exec java)."""
    name: str
    command: tuple[str, ...]
    env: dict
    port: int
    markers: tuple[str, ...]


# ============================================================================================
# Where things are
# ============================================================================================
def state_dir(engine: str) -> Path:
    base = os.environ.get(STATE_ENV) or str(config_dir() / "engines")
    return Path(base).expanduser().absolute() / engine


def _distribution(env_name: str, venv: str, package: str, marker: str) -> Path:
    """The folder of a distribution: $env_name, or <project>/<venv>/.../site-packages/package."""
    if os.environ.get(env_name):
        found = [Path(os.environ[env_name]).expanduser()]
    else:
        found = [Path(path) for path in sorted(glob.glob(
            str(PROJECT_DIR / venv / "lib" / "python*" / "site-packages" / package)))]
    for home in found:
        if (home / marker).exists():
            return home
    where = os.environ.get(env_name) or f"{PROJECT_DIR / venv}"
    raise EcpiError(f"no {package} distribution in {where} (expected {marker} there): run "
                    f"`make engines`, or set {env_name} to a distribution folder")


def flink_home() -> Path:
    return _distribution(FLINK_HOME_ENV, ".venv-flink", "pyflink", "bin/jobmanager.sh")


def spark_home() -> Path:
    return _distribution(SPARK_HOME_ENV, ".venv-spark", "pyspark", "bin/spark-class")


def flink_version(home: Path) -> str:
    """'1.19.3', from the name of the flink-dist jar the distribution ships."""
    for jar in sorted((home / "lib").glob("flink-dist*-*.jar")):
        return jar.stem.rsplit("-", 1)[-1]
    raise EcpiError(f"{home / 'lib'}: no flink-dist jar; expected a Flink distribution")


def job_server_jar(engine: str, flink_minor: str = "") -> Path | None:
    """The Beam job-server jar of `engine` at the version of the installed apache-beam."""
    import apache_beam

    folder = Path(os.environ.get(JOB_SERVER_DIR_ENV) or PROJECT_DIR / "engines" / "jars")
    artifact = (f"beam-runners-flink-{flink_minor}-job-server" if engine == "flink"
                else "beam-runners-spark-3-job-server")
    jar = folder / f"{artifact}-{apache_beam.__version__}.jar"
    return jar if jar.is_file() else None


# ============================================================================================
# The clusters
# ============================================================================================
def _java_env(extra: dict) -> dict:
    env = dict(os.environ)
    java = shutil.which("java")
    if "JAVA_HOME" not in env and java:
        env["JAVA_HOME"] = str(Path(java).resolve().parent.parent)
    env.update(extra)
    return env


def worker_pool(port: int) -> Process:
    """Beam's worker pool (EXTERNAL environment) from this interpreter's environment.

    The pool starts each SDK worker as `python -c ...`: this interpreter's folder goes first
    on PATH so that the workers are the same Python, Beam and ecpi_beam as the pool.
    """
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    return Process("worker_pool", (sys.executable, "-m",
                                   "apache_beam.runners.worker.worker_pool_main",
                                   f"--service_port={port}"), env, port, ("worker_pool_main",))


def _flink_config(ports: Ports, slots: int) -> str:
    # 127.0.0.1 everywhere: nothing of the cluster listens beyond this machine.
    values = {
        "jobmanager.rpc.address": "127.0.0.1", "jobmanager.bind-host": "127.0.0.1",
        "jobmanager.rpc.port": ports.flink_rpc, "jobmanager.memory.process.size": "1024m",
        "taskmanager.host": "127.0.0.1", "taskmanager.bind-host": "127.0.0.1",
        "taskmanager.memory.process.size": "1728m", "taskmanager.numberOfTaskSlots": slots,
        "parallelism.default": slots, "rest.address": "127.0.0.1",
        "rest.bind-address": "127.0.0.1", "rest.port": ports.flink_rest,
    }
    return "".join(f"{key}: {value}\n" for key, value in values.items())


def flink_processes(ports: Ports, slots: int, state: Path) -> list[Process]:
    home = flink_home()
    conf = state / "conf"
    conf.mkdir(parents=True, exist_ok=True)
    for shipped in list((home / "conf").glob("log4j*.properties")) + list(
            (home / "conf").glob("logback*.xml")):
        shutil.copy(shipped, conf / shipped.name)
    (conf / "config.yaml").write_text(_flink_config(ports, slots))
    env = _java_env({"FLINK_CONF_DIR": str(conf), "FLINK_LOG_DIR": str(state / "logs")})
    return [Process("jobmanager", ("bash", str(home / "bin" / "jobmanager.sh"),
                                   "start-foreground"), env, ports.flink_rest,
                    ("jobmanager.sh", "flink-console.sh", "StandaloneSessionClusterEntrypoint")),
            Process("taskmanager", ("bash", str(home / "bin" / "taskmanager.sh"),
                                    "start-foreground"), env, 0,
                    ("taskmanager.sh", "flink-console.sh", "TaskManagerRunner")),
            worker_pool(ports.flink_worker_pool)]


def spark_processes(ports: Ports, cores: int, state: Path) -> list[Process]:
    home = spark_home()
    env = _java_env({"SPARK_HOME": str(home), "SPARK_LOCAL_IP": "127.0.0.1",
                     "SPARK_LOG_DIR": str(state / "logs"),
                     "SPARK_WORKER_DIR": str(state / "work")})
    spark_class = str(home / "bin" / "spark-class")
    master = f"spark://127.0.0.1:{ports.spark_master}"
    return [Process("master", (spark_class, "org.apache.spark.deploy.master.Master",
                               "--host", "127.0.0.1", "--port", str(ports.spark_master),
                               "--webui-port", str(ports.spark_ui)), env, ports.spark_master,
                    ("deploy.master.Master",)),
            Process("worker", (spark_class, "org.apache.spark.deploy.worker.Worker",
                               "--host", "127.0.0.1", "--cores", str(cores), "--memory", "2g",
                               "--webui-port", str(ports.spark_worker_ui), master), env, 0,
                    ("deploy.worker.Worker",)),
            worker_pool(ports.spark_worker_pool)]


def get_json(url: str, timeout: float = 5.0):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read().decode())


def flink_ready(ports: Ports, slots: int) -> bool:
    with contextlib.suppress(OSError, ValueError):
        overview = get_json(f"http://127.0.0.1:{ports.flink_rest}/overview")
        return overview.get("taskmanagers", 0) >= 1 and overview.get("slots-total", 0) >= slots
    return False


def spark_ready(ports: Ports, cores: int) -> bool:
    with contextlib.suppress(OSError, ValueError):
        master = get_json(f"http://127.0.0.1:{ports.spark_ui}/json/")
        return master.get("status") == "ALIVE" and master.get("aliveworkers", 0) >= 1 \
            and master.get("cores", 0) >= cores
    return False


def run_options(engine: str, ports: Ports, parallelism: int) -> list[str]:
    """The ecpi_run (Beam) options that run a campaign on the local cluster of `engine`."""
    if engine == "flink":
        minor = ".".join(flink_version(flink_home()).split(".")[:2])
        options = ["--runner", "FlinkRunner", "--flink_master", f"127.0.0.1:{ports.flink_rest}",
                   "--flink_version", minor, "--parallelism", str(parallelism)]
        jar, jar_option, pool = job_server_jar("flink", minor), "--flink_job_server_jar", \
            ports.flink_worker_pool
    else:
        options = ["--runner", "SparkRunner",
                   "--spark_master_url", f"spark://127.0.0.1:{ports.spark_master}"]
        jar, jar_option, pool = job_server_jar("spark"), "--spark_job_server_jar", \
            ports.spark_worker_pool
    if jar is not None:
        options += [jar_option, str(jar)]
    return options + ["--environment_type", "EXTERNAL",
                      "--environment_config", f"127.0.0.1:{pool}"]


# ============================================================================================
# Processes: started in their own session, recorded by id, stopped by id
# ============================================================================================
def _pid_file(state: Path) -> Path:
    return state / "pids.json"


def recorded(state: Path) -> dict:
    """{name: {"pid", "command"}} of what `start` recorded (empty when nothing is)."""
    try:
        return json.loads(_pid_file(state).read_text())
    except (OSError, ValueError):
        return {}


def alive(entry: dict) -> bool:
    """Whether the recorded process still runs, and is still ours (not a reused id)."""
    try:
        command = Path(f"/proc/{int(entry['pid'])}/cmdline").read_bytes()
    except (OSError, KeyError, ValueError):
        return False
    return any(marker.encode() in command for marker in entry.get("markers", ()))


def _port_taken(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _launch(process: Process, logs: Path) -> subprocess.Popen:
    with open(logs / f"{process.name}.out", "ab") as log:
        return subprocess.Popen(process.command, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=process.env, cwd=logs,
                                start_new_session=True)


def start(engine: str, ports: Ports = Ports(), parallelism: int = 2,
          timeout: float = STARTUP_TIMEOUT_S) -> list[str]:
    """Start the cluster of `engine`, wait until it is ready; returns the ecpi_run options."""
    state = state_dir(engine)
    running = {name: entry for name, entry in recorded(state).items() if alive(entry)}
    if running:
        raise EcpiError(f"{engine} already runs ({', '.join(sorted(running))}, state in "
                        f"{state}): `ecpi_engine stop {engine}` first")
    (state / "logs").mkdir(parents=True, exist_ok=True)
    build = flink_processes if engine == "flink" else spark_processes
    processes = build(ports, parallelism, state)
    taken = [p.port for p in processes if p.port and _port_taken(p.port)]
    if taken:
        raise EcpiError(f"cannot start {engine}: port(s) {', '.join(map(str, taken))} on "
                        "127.0.0.1 already in use (another cluster?)")
    pids = {}
    try:
        for process in processes:
            launched = _launch(process, state / "logs")
            pids[process.name] = {"pid": launched.pid, "markers": list(process.markers),
                                  "command": list(process.command)}
            _pid_file(state).write_text(json.dumps(pids, indent=1))
        ready = (lambda: flink_ready(ports, parallelism)) if engine == "flink" else (
            lambda: spark_ready(ports, parallelism))
        _wait(engine, ready, [p.port for p in processes if p.port], pids, state, timeout)
    except BaseException:
        stop(engine)
        raise
    return run_options(engine, ports, parallelism)


def _wait(engine, ready, ports, pids, state, timeout) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dead = [name for name, entry in pids.items() if not alive(entry)]
        if dead:
            raise EcpiError(f"{engine}: {', '.join(dead)} exited while starting; see "
                            f"{state / 'logs'}")
        if all(_port_taken(port) for port in ports) and ready():
            return
        time.sleep(0.5)
    raise EcpiError(f"{engine} not ready after {timeout:.0f} s; see {state / 'logs'}")


def stop(engine: str) -> list[str]:
    """SIGTERM to each recorded process group, SIGKILL if it lingers; returns what stopped."""
    state = state_dir(engine)
    stopped = []
    for name, entry in reversed(list(recorded(state).items())):
        if not alive(entry):
            continue
        pid = int(entry["pid"])
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while alive(entry) and time.monotonic() < deadline:
            time.sleep(0.2)
        if alive(entry):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        stopped.append(name)
    with contextlib.suppress(FileNotFoundError):
        _pid_file(state).unlink()
    return stopped


def status() -> dict:
    """{engine: {name: pid}} of the processes that run (an engine with none is left out)."""
    report = {}
    for engine in ENGINES:
        running = {name: int(entry["pid"]) for name, entry in
                   recorded(state_dir(engine)).items() if alive(entry)}
        if running:
            report[engine] = running
    return report


# ============================================================================================
# Command line
# ============================================================================================
def parse_args(argv):
    parser = argparse.ArgumentParser(prog="ecpi_engine", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    starting = commands.add_parser("start", help="start a local cluster and print its options")
    starting.add_argument("engine", choices=ENGINES)
    starting.add_argument("--parallelism", type=int, default=2,
                          help="Flink task slots / Spark worker cores (default 2)")
    starting.add_argument("--timeout", type=float, default=STARTUP_TIMEOUT_S)
    stopping = commands.add_parser("stop", help="stop what `start` started")
    stopping.add_argument("engine", choices=ENGINES)
    commands.add_parser("status", help="say what runs")
    return parser.parse_args(argv)


def main(argv) -> int:
    args = parse_args(argv)
    if args.command == "start":
        options = start(args.engine, parallelism=args.parallelism, timeout=args.timeout)
        if "--flink_job_server_jar" not in options and "--spark_job_server_jar" not in options:
            print(f"ecpi_engine: no Beam job-server jar for {args.engine} in the project's "
                  "engines/jars (`make engines` fetches it): add --flink_job_server_jar / "
                  "--spark_job_server_jar JAR to these options", file=sys.stderr)
        print(f"ecpi_engine: {args.engine} is ready (state in {state_dir(args.engine)}); "
              "run a campaign with:")
        print(" ".join(options))
    elif args.command == "stop":
        stopped = stop(args.engine)
        print(f"ecpi_engine: {args.engine}: " + (f"stopped {', '.join(stopped)}" if stopped
                                                 else "nothing was running"))
    else:
        report = status()
        for engine in ENGINES:
            running = report.get(engine)
            print(f"{engine}: " + (", ".join(f"{name} (pid {pid})" for name, pid in
                                             running.items()) if running else "not running"))
    return 0


if __name__ == "__main__":
    from ecpi_beam.errors import exit_code_of

    sys.exit(exit_code_of(main))
