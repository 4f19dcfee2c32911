"""Shared fixtures."""
import os
import shutil
import subprocess

# One BLAS thread per test process (before numpy is first imported): pytest-xdist already runs
# one worker per core, and BLAS threads on top of it only oversubscribe the cores; the kernels'
# many small fits then wait on thread wake-ups (the cleaning and flux tests took 6 times longer
# on a busy 2-core machine). An explicit setting in the environment wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import pytest

# fixtures shared by several test modules: a moto S3 server, a simulated observation and its
# reference pipeline run
pytest_plugins = ["s3_server", "pipeline_fixtures"]


def pytest_configure(config):
    # `make test` runs every test; `-m "not engine"` leaves out the local Flink/Spark clusters
    config.addinivalue_line("markers", "engine: starts a local Flink or Spark cluster "
                            "(ecpi_engine; make engines installs them)")


def run_fitsverify(path):
    """Return fitsverify's report; assert it says 'verification OK' with no warning."""
    exe = shutil.which("fitsverify")
    if exe is None:
        pytest.fail("fitsverify is not installed (make test installs it)")
    out = subprocess.run([exe, "-q", str(path)], capture_output=True, text=True)
    return out.stdout + out.stderr


@pytest.fixture
def fitsverify():
    def check(path):
        report = run_fitsverify(path)
        assert "verification OK" in report and "warning" not in report.lower().replace(
            "0 warnings", ""), report
        return report
    return check
