"""`ecpi_engine start|stop|options flink|spark`, `ecpi_engine status`: local clusters that run
campaigns through Beam's Flink and Spark job servers.

    ecpi_engine start flink    a Flink session cluster on 127.0.0.1 (JobManager, REST on 8081,
                               one TaskManager with 2 slots) and a Beam worker pool for the
                               Python SDK; prints the ecpi_run options that run on it
    ecpi_engine start spark    a Spark standalone master (spark://127.0.0.1:7077, web UI on
                               8080), one worker with 2 cores, and a Beam worker pool
    ecpi_engine options flink|spark   the ecpi_run options of the running cluster
    ecpi_engine stop flink|spark      stops, by process id, everything `start` started
    ecpi_engine status         what runs

Every port is an option of `start` (`--rest-port`, `--master-port`...; 0 picks a free one) and
an environment variable (ECPI_FLINK_REST_PORT, ECPI_SPARK_MASTER_PORT...); the printed options
follow them. The Flink and Spark distributions and the job-server launchers are those that
`make engines` (ecpi_beam/engine_setup.py) put in the engines' cache, or the distribution
folders named by ECPI_FLINK_HOME and ECPI_SPARK_HOME.

Process ids, ports, logs and configuration live in `<state>/<engine>/` (default
`$ECPI_HOME/.ect/engines`, or ECPI_ENGINE_STATE). Every process is started in a session of
its own, so that `stop` ends it and its children by process group, and nothing else.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ecpi_beam import engine_setup
from ecpi_beam.errors import EcpiError
from ecpi_beam.workspace import config_dir

ENGINES = ("flink", "spark")
STARTUP_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 20.0
FLINK_HOME_ENV, SPARK_HOME_ENV, STATE_ENV = "ECPI_FLINK_HOME", "ECPI_SPARK_HOME", "ECPI_ENGINE_STATE"
LOCALHOST = "127.0.0.1"  # nothing of a local cluster listens beyond this machine
# Flink's TaskManager, sized for Beam's portable batch graph (about 40 vertices):
# - network 512 MiB-1 GiB: Flink's default is short of buffers for that many exchanges;
# - task off-heap 1 GiB: the gRPC channels to the SDK workers buffer in direct memory, which
#   Flink otherwise caps at its network memory plus 128 MiB ("Cannot reserve ... direct
#   buffer memory", then the SDK worker's channel closes);
# - heap ~2.9 GiB: Beam holds up to 100 data messages (each up to an event chunk, ~20 MB) per
#   running stage in the heap, and several stages run at once in one slot;
# - managed memory (Flink's own sorts) only a tenth.
FLINK_MEMORY = {"jobmanager.memory.process.size": "1024m",
                "taskmanager.memory.process.size": "6144m",
                "taskmanager.memory.managed.fraction": "0.1",
                "taskmanager.memory.task.off-heap.size": "1g",
                "taskmanager.memory.network.min": "512mb",
                "taskmanager.memory.network.max": "1gb"}
SPARK_WORKER_MEMORY = "4g"
# SDK workers are kept this long after a stage, for the next stage of the job (flink_lib)
ENVIRONMENT_CACHE_MS = 30000


@dataclass(frozen=True)
class Port:
    """A port of a local cluster: its option of `ecpi_engine start`, environment variable and
    default."""
    engine: str
    name: str
    default: int
    what: str

    @property
    def option(self) -> str:
        return f"--{self.name}-port"

    @property
    def env(self) -> str:
        return f"ECPI_{self.engine.upper()}_{self.name.upper().replace('-', '_')}_PORT"


PORTS = {
    "flink": (Port("flink", "rest", 8081, "Flink's REST API and web UI (--flink_master)"),
              Port("flink", "rpc", 6123, "the JobManager's RPC"),
              Port("flink", "worker-pool", 50000, "the Beam worker pool (--environment_config)")),
    "spark": (Port("spark", "master", 7077, "the master (--spark_master_url)"),
              Port("spark", "ui", 8080, "the master's web UI and /json/"),
              Port("spark", "worker-ui", 8082, "the worker's web UI"),
              Port("spark", "worker-pool", 50001, "the Beam worker pool (--environment_config)")),
}
# Every other port of the clusters (TaskManager RPC and data, blob server, Spark worker,
# the job server's) is chosen free at start-up by the programs themselves.


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


def _distribution(engine: str, env_name: str, package: str, marker: str) -> Path:
    """The folder of a distribution: $env_name, or the package in the engines' cache venv."""
    if os.environ.get(env_name):
        found = [Path(os.environ[env_name]).expanduser()]
    else:
        venv = engine_setup.distribution_venv(engine)
        found = sorted(venv.glob(f"lib/python*/site-packages/{package}"))
    for home in found:
        if (home / marker).exists():
            return home
    where = os.environ.get(env_name) or str(engine_setup.distribution_venv(engine))
    raise EcpiError(f"no {package} distribution in {where} (expected {marker} there): run "
                    f"`make engines`, or set {env_name} to a distribution folder")


def flink_home() -> Path:
    return _distribution("flink", FLINK_HOME_ENV, "pyflink", "bin/jobmanager.sh")


def spark_home() -> Path:
    return _distribution("spark", SPARK_HOME_ENV, "pyspark", "bin/spark-class")


def flink_version(home: Path) -> str:
    """'1.19.3', from the name of the flink-dist jar the distribution ships."""
    for jar in sorted((home / "lib").glob("flink-dist*-*.jar")):
        return jar.stem.rsplit("-", 1)[-1]
    raise EcpiError(f"{home / 'lib'}: no flink-dist jar; expected a Flink distribution")


def job_server_jar(engine: str) -> Path:
    """The job-server launcher of `engine` that `make engines` assembled."""
    jar = engine_setup.installed_job_server(engine)
    if jar is None:
        raise EcpiError(f"no Beam {engine} job server in {engine_setup.job_server_dir(engine)}:"
                        " run `make engines` (it resolves the job servers with mvn)")
    return jar


# ============================================================================================
# Ports
# ============================================================================================
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOCALHOST, 0))
        return probe.getsockname()[1]


def port_taken(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((LOCALHOST, port)) == 0


def resolve_ports(engine: str, given: dict | None = None) -> dict:
    """{port name: number}: given (option), else the environment variable, else the default;
    0 picks a free port. A variable that is not a port number is a one-line error."""
    given = given or {}
    ports = {}
    for port in PORTS[engine]:
        value = given.get(port.name)
        source = port.option
        if value is None and os.environ.get(port.env):
            value, source = os.environ[port.env], port.env
        try:
            number = int(value) if value is not None else port.default
        except ValueError:
            number = -1
        if not 0 <= number <= 65535:
            raise EcpiError(f"{source}: {value!r} is not a port number (1-65535, or 0 for a "
                            "free one)")
        ports[port.name] = number or free_port()
    return ports


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


def _shipped_java_options(home: Path) -> str:
    """The JVM options of the distribution's own config.yaml (`env.java.opts.all`: Java 17's
    --add-opens/--add-exports, without which Flink's own reflection fails and a task's error
    becomes a fatal TaskManager error)."""
    try:
        text = (home / "conf" / "config.yaml").read_text()
    except OSError:
        return ""
    found = re.search(r"^env\.java\.opts\.all:\s*(.+)$", text, re.M) or re.search(
        r"^env:\s*\n\s+java:\s*\n\s+opts:\s*\n\s+all:\s*(.+)$", text, re.M)
    return found.group(1).strip() if found else ""


def _flink_config(ports: dict, slots: int, java_options: str = "") -> str:
    values = {
        "jobmanager.rpc.address": LOCALHOST, "jobmanager.bind-host": LOCALHOST,
        "jobmanager.rpc.port": ports["rpc"], "taskmanager.host": LOCALHOST,
        "taskmanager.bind-host": LOCALHOST, "taskmanager.numberOfTaskSlots": slots,
        "parallelism.default": slots, "rest.address": LOCALHOST,
        "rest.bind-address": LOCALHOST, "rest.port": ports["rest"], **FLINK_MEMORY,
        "classloader.resolve-order": "parent-first",  # Beam's classes from lib (flink_lib)
    }
    if java_options:
        values["env.java.opts.all"] = java_options
    return "".join(f"{key}: {value}\n" for key, value in values.items())


def flink_lib(home: Path, state: Path) -> Path:
    """Flink's lib folder for the cluster: links to Flink's jars and to those of Beam's Flink
    job server (engine_setup.cluster_jars).

    With Beam's runner classes on the TaskManager's own class path (and parent-first class
    loading), Beam keeps a job's SDK workers between its stages (`--environment_cache_millis`);
    loaded with each job instead, it must stop them after every stage, and a new Python worker
    then starts for each of the graph's ~40 stages."""
    lib = state / "lib"
    shutil.rmtree(lib, ignore_errors=True)
    lib.mkdir(parents=True)
    job_server_jar("flink")  # made by the set-up, or a one-line error
    for jar in sorted((home / "lib").glob("*.jar")) + engine_setup.cluster_jars("flink"):
        (lib / jar.name).symlink_to(jar)
    return lib


def flink_processes(ports: dict, slots: int, state: Path) -> list[Process]:
    home = flink_home()
    conf = state / "conf"
    conf.mkdir(parents=True, exist_ok=True)
    for shipped in list((home / "conf").glob("log4j*.properties")) + list(
            (home / "conf").glob("logback*.xml")):
        shutil.copy(shipped, conf / shipped.name)
    (conf / "config.yaml").write_text(_flink_config(ports, slots, _shipped_java_options(home)))
    env = _java_env({"FLINK_CONF_DIR": str(conf), "FLINK_LOG_DIR": str(state / "logs"),
                     "FLINK_LIB_DIR": str(flink_lib(home, state))})
    return [Process("jobmanager", ("bash", str(home / "bin" / "jobmanager.sh"),
                                   "start-foreground"), env, ports["rest"],
                    ("jobmanager.sh", "flink-console.sh", "StandaloneSessionClusterEntrypoint")),
            Process("taskmanager", ("bash", str(home / "bin" / "taskmanager.sh"),
                                    "start-foreground"), env, 0,
                    ("taskmanager.sh", "flink-console.sh", "TaskManagerRunner")),
            worker_pool(ports["worker-pool"])]


def spark_processes(ports: dict, cores: int, state: Path) -> list[Process]:
    """Master and worker in the foreground through `spark-class` (the pyspark wheel has no
    sbin/start-master.sh; spark-daemon.sh would detach them from the recorded process)."""
    home = spark_home()
    env = _java_env({"SPARK_HOME": str(home), "SPARK_LOCAL_IP": LOCALHOST,
                     "SPARK_LOG_DIR": str(state / "logs"),
                     "SPARK_WORKER_DIR": str(state / "work")})
    spark_class = str(home / "bin" / "spark-class")
    master = f"spark://{LOCALHOST}:{ports['master']}"
    return [Process("master", (spark_class, "org.apache.spark.deploy.master.Master",
                               "--host", LOCALHOST, "--port", str(ports["master"]),
                               "--webui-port", str(ports["ui"])), env, ports["master"],
                    ("deploy.master.Master",)),
            Process("worker", (spark_class, "org.apache.spark.deploy.worker.Worker",
                               "--host", LOCALHOST, "--cores", str(cores),
                               "--memory", SPARK_WORKER_MEMORY,
                               "--webui-port", str(ports["worker-ui"]), master), env, 0,
                    ("deploy.worker.Worker",)),
            worker_pool(ports["worker-pool"])]


def get_json(url: str, timeout: float = 5.0):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read().decode())


def flink_ready(ports: dict, slots: int) -> bool:
    with contextlib.suppress(OSError, ValueError):
        overview = get_json(f"http://{LOCALHOST}:{ports['rest']}/overview")
        return overview.get("taskmanagers", 0) >= 1 and overview.get("slots-total", 0) >= slots
    return False


def spark_ready(ports: dict, cores: int) -> bool:
    with contextlib.suppress(OSError, ValueError):
        master = get_json(f"http://{LOCALHOST}:{ports['ui']}/json/")
        return master.get("status") == "ALIVE" and master.get("aliveworkers", 0) >= 1 \
            and master.get("cores", 0) >= cores
    return False


def run_options(engine: str, ports: dict, parallelism: int) -> list[str]:
    """The ecpi_run (Beam) options that run a pipeline THROUGH the local cluster of `engine`:
    Beam's job server for it (started by Beam from the launcher jar, on free ports), the
    cluster's address, and its worker pool as the SDK environment, with one SDK worker
    process per slot / core (one Python process would hold every slot's work under one GIL).
    """
    if engine == "flink":
        minor = ".".join(flink_version(flink_home()).split(".")[:2])
        options = ["--runner", "FlinkRunner", "--flink_master", f"{LOCALHOST}:{ports['rest']}",
                   "--flink_version", minor, "--flink_job_server_jar",
                   str(job_server_jar("flink")), "--parallelism", str(parallelism)]
    else:
        options = ["--runner", "SparkRunner",
                   "--spark_master_url", f"spark://{LOCALHOST}:{ports['master']}",
                   "--spark_job_server_jar", str(job_server_jar("spark"))]
    return options + ["--environment_type", "EXTERNAL",
                      "--environment_config", f"{LOCALHOST}:{ports['worker-pool']}",
                      "--sdk_worker_parallelism", str(parallelism),
                      "--environment_cache_millis", str(ENVIRONMENT_CACHE_MS)]


# ============================================================================================
# Processes: started in their own session, recorded by id, stopped by id
# ============================================================================================
def _pid_file(state: Path) -> Path:
    return state / "pids.json"


def _cluster_file(state: Path) -> Path:
    return state / "cluster.json"


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


def _launch(process: Process, logs: Path) -> subprocess.Popen:
    with open(logs / f"{process.name}.out", "ab") as log:
        return subprocess.Popen(process.command, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=process.env, cwd=logs,
                                start_new_session=True)


def start(engine: str, ports: dict | None = None, parallelism: int = 2,
          timeout: float = STARTUP_TIMEOUT_S) -> list[str]:
    """Start the cluster of `engine` on `ports` ({name: number}, missing ones from the
    environment or the defaults, 0 = free), wait until it is ready; returns the ecpi_run
    options."""
    state = state_dir(engine)
    running = {name: entry for name, entry in recorded(state).items() if alive(entry)}
    if running:
        raise EcpiError(f"{engine} already runs ({', '.join(sorted(running))}, state in "
                        f"{state}): `ecpi_engine stop {engine}` first")
    ports = resolve_ports(engine, ports)
    taken = [f"{number} ({port.option})" for port in PORTS[engine]
             for name, number in ports.items() if name == port.name and port_taken(number)]
    if taken:
        raise EcpiError(f"cannot start {engine}: port(s) {', '.join(taken)} on {LOCALHOST} "
                        "already in use: choose others (0 = a free one)")
    options = run_options(engine, ports, parallelism)  # the jar must be there: say so first
    (state / "logs").mkdir(parents=True, exist_ok=True)
    build = flink_processes if engine == "flink" else spark_processes
    processes = build(ports, parallelism, state)
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
    _cluster_file(state).write_text(json.dumps(
        {"ports": ports, "parallelism": parallelism, "options": options}, indent=1))
    return options


def _wait(engine, ready, ports, pids, state, timeout) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dead = [name for name, entry in pids.items() if not alive(entry)]
        if dead:
            raise EcpiError(f"{engine}: {', '.join(dead)} exited while starting; see "
                            f"{state / 'logs'}")
        if all(port_taken(port) for port in ports) and ready():
            return
        time.sleep(0.5)
    raise EcpiError(f"{engine} not ready after {timeout:.0f} s; see {state / 'logs'}")


def running_cluster(engine: str) -> dict:
    """{"ports", "parallelism", "options"} of the running cluster of `engine`."""
    state = state_dir(engine)
    if not any(alive(entry) for entry in recorded(state).values()):
        raise EcpiError(f"{engine} is not running (state in {state}): `ecpi_engine start "
                        f"{engine}` first")
    try:
        return json.loads(_cluster_file(state).read_text())
    except (OSError, ValueError):
        raise EcpiError(f"{engine} is still starting (no {_cluster_file(state)} yet)") from None


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
    for done in (_pid_file(state), _cluster_file(state)):
        with contextlib.suppress(FileNotFoundError):
            done.unlink()
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
    engines = starting.add_subparsers(dest="engine", required=True)
    for engine in ENGINES:
        one = engines.add_parser(engine, help=f"a local {engine} cluster")
        one.add_argument("--parallelism", type=int, default=2,
                         help="Flink task slots / Spark worker cores, and SDK workers "
                              "(default 2)")
        one.add_argument("--timeout", type=float, default=STARTUP_TIMEOUT_S)
        for port in PORTS[engine]:
            one.add_argument(port.option, type=int, default=None, metavar="PORT",
                             help=f"{port.what}: default {port.default}, or ${port.env}; "
                                  "0 = a free port")
    for command, what in (("options", "print the ecpi_run options of the running cluster"),
                          ("stop", "stop what `start` started")):
        commands.add_parser(command, help=what).add_argument("engine", choices=ENGINES)
    commands.add_parser("status", help="say what runs")
    return parser.parse_args(argv)


def main(argv) -> int:
    args = parse_args(argv)
    if args.command == "start":
        given = {port.name: getattr(args, port.option[2:].replace("-", "_"))
                 for port in PORTS[args.engine]}
        options = start(args.engine, ports=given, parallelism=args.parallelism,
                        timeout=args.timeout)
        print(f"ecpi_engine: {args.engine} is ready (state in {state_dir(args.engine)}); "
              "run a campaign with:")
        print(" ".join(options))
    elif args.command == "options":
        print(" ".join(running_cluster(args.engine)["options"]))
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
