"""ecpi-beam: the ECLAIRs ground pipeline (DPCO, CALI, BUBE, IMAG, MOSA, SPEX) as Apache Beam
transforms."""
import logging as _logging
import os as _os

# The linear algebra runs on one thread per process unless the environment says otherwise
# (read when numpy loads OpenBLAS, so set here, before `ecpi_run` or `python -m ecpi_beam.run`
# imports it): the fits solve small systems (121 x 121), where BLAS threads only wait for each
# other (40 times slower on a loaded machine), and Beam's workers are the parallelism.
BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
for _variable in BLAS_THREAD_VARIABLES:
    _os.environ.setdefault(_variable, "1")

__version__ = "0.1.0"
CREATOR = f"ecpi_beam {__version__}"


def _drop_beam_import_noise(record) -> bool:
    """Beam logs 'apitools not found ...' on the root logger when it is imported without its
    GCP extras; a user mistake must stay one line on stderr."""
    return not str(record.msg).startswith("apitools not found")


_logging.getLogger().addFilter(_drop_beam_import_noise)
