"""ecpi-beam: the ECLAIRs ground pipeline (DPCO, CALI, BUBE, IMAG, MOSA, SPEX) as Apache Beam
transforms."""
import logging as _logging

__version__ = "0.1.0"
CREATOR = f"ecpi_beam {__version__}"


def _drop_beam_import_noise(record) -> bool:
    """Beam logs 'apitools not found ...' on the root logger when it is imported without its
    GCP extras; a user mistake must stay one line on stderr."""
    return not str(record.msg).startswith("apitools not found")


_logging.getLogger().addFilter(_drop_beam_import_noise)
