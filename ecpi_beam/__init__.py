"""ecpi-beam: the ECLAIRs ground pipeline (DPCO, CALI, BUBE, IMAG) as Apache Beam transforms."""
__version__ = "0.1.0"
CREATOR = f"ecpi_beam {__version__}"
