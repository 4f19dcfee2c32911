"""Shared fixtures."""
import os
import shutil
import subprocess

# the numerical environment of ecpi_run (ecpi_beam/__init__.py): one BLAS thread, set before
# anything loads numpy, so that runs in this process give the products a command gives
for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import pytest

# fixtures shared by several test modules: a moto S3 server, a simulated observation and its
# reference pipeline run
pytest_plugins = ["s3_server", "pipeline_fixtures", "engine_fixtures", "stream_fixtures"]


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
