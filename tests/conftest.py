"""Shared fixtures."""
import shutil
import subprocess

import pytest

# fixtures shared by several test modules: a moto S3 server, a simulated observation and its
# reference pipeline run
pytest_plugins = ["s3_server", "pipeline_fixtures"]


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
