"""Local Flink and Spark clusters for the tests (marker `engine`), on free ports.

- `held_default_ports` (session): listening sockets on 127.0.0.1 at every default port of
  `ecpi_engine` (Flink 8081, 6123, 50000; Spark 7077, 8080, 8082, 50001) while the clusters
  start and run, as another program on a user's machine would: the clusters must not need
  them. A port already taken by another program is held all the same.
- `flink_cluster`, `spark_cluster` (session, one per pytest worker): `ecpi_engine start
  flink|spark` with every port 0 (= a free one), in a subprocess, with the state in a
  temporary folder; the value is a `Cluster` (its `options`, the `ecpi_run` options that
  `start` printed, `ports`, `state`, `rest(path)` for the engine's JSON). Stopped by
  `ecpi_engine stop` at the end of the session, which must leave no process and no port
  open. A cluster that does not start fails the test that asked for it: never a skip.

Use them in a module with `from engine_fixtures import ...` (as pytest_plugins in conftest);
a streaming run adds `--streaming` to `flink_cluster.options`.
"""
from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from ecpi_beam import engines

ENGINE_COMMAND_TIMEOUT_S = 300


def ecpi_engine(*args, state: Path, env=None, timeout=ENGINE_COMMAND_TIMEOUT_S):
    """`ecpi_engine ARGS` in a subprocess, its state in `state`."""
    env = dict(env or os.environ)
    env[engines.STATE_ENV] = str(state)
    return subprocess.run([sys.executable, "-m", "ecpi_beam.engines", *args],
                          capture_output=True, text=True, env=env, timeout=timeout)


def listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read().decode())


@dataclasses.dataclass
class Cluster:
    engine: str
    options: list        # the ecpi_run options `ecpi_engine start` printed
    ports: dict          # {port name: number}, as engines.PORTS names them
    state: Path          # ECPI_ENGINE_STATE of the cluster
    started: str         # what `start` printed

    def rest(self, path: str):
        """JSON of the engine's REST API (Flink's REST port, Spark master's web UI)."""
        port = self.ports["rest" if self.engine == "flink" else "ui"]
        return get_json(f"http://127.0.0.1:{port}{path}")


DEFAULT_PORTS = tuple(port.default for ports in engines.PORTS.values() for port in ports)


@pytest.fixture(scope="session")
def held_default_ports():
    """Every default port of ecpi_engine held on 127.0.0.1 (or already held by another)."""
    held = []
    for port in DEFAULT_PORTS:
        sock = socket.socket()
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen()
            held.append(sock)
        except OSError:  # another program (or another test process) has it: held too
            sock.close()
    try:
        assert all(listening(port) for port in DEFAULT_PORTS)
        yield DEFAULT_PORTS
    finally:
        for sock in held:
            sock.close()


def start_cluster(engine: str, state: Path) -> Cluster:
    free = [arg for port in engines.PORTS[engine] for arg in (port.option, "0")]
    result = ecpi_engine("start", engine, *free, state=state)
    if result.returncode != 0:
        ecpi_engine("stop", engine, state=state)
        pytest.fail(f"ecpi_engine start {engine} failed ({result.returncode}):\n"
                    f"{result.stdout}\n{result.stderr}")
    record = json.loads((state / engine / "cluster.json").read_text())
    options = result.stdout.strip().splitlines()[-1].split()
    assert options == record["options"], (options, record)
    return Cluster(engine, options, record["ports"], state, result.stdout)


def stop_cluster(cluster: Cluster) -> None:
    """`ecpi_engine stop`: every recorded process ended, every port closed."""
    pids = engines.recorded(cluster.state / cluster.engine)
    result = ecpi_engine("stop", cluster.engine, state=cluster.state)
    assert result.returncode == 0, result.stderr
    assert all(name in result.stdout for name in pids), result.stdout
    assert not any(engines.alive(entry) for entry in pids.values())
    assert not any(listening(port) for port in cluster.ports.values())
    assert f"{cluster.engine}: not running" in ecpi_engine("status", state=cluster.state).stdout


def _cluster(engine, tmp_path_factory, held_default_ports):
    cluster = start_cluster(engine, tmp_path_factory.mktemp(f"{engine}_state"))
    try:
        yield cluster
    finally:
        stop_cluster(cluster)


@pytest.fixture(scope="session")
def flink_cluster(tmp_path_factory, held_default_ports):
    """A Flink session cluster (1 TaskManager, 2 slots) and its worker pool, on free ports."""
    yield from _cluster("flink", tmp_path_factory, held_default_ports)


@pytest.fixture(scope="session")
def spark_cluster(tmp_path_factory, held_default_ports):
    """A Spark master, one worker of 2 cores and a worker pool, on free ports."""
    yield from _cluster("spark", tmp_path_factory, held_default_ports)
