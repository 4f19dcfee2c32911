"""ecpi-beam: the ECLAIRs (SVOM) ground pipeline as an Apache Beam pipeline."""
from setuptools import find_packages, setup

setup(
    name="ecpi-beam",
    version="0.1.0",
    description="ECLAIRs coded-mask telescope pipeline (DPCO, CALI, BUBE, IMAG, MOSA, SPEX) on "
                "Apache Beam",
    python_requires=">=3.10",
    packages=find_packages(include=["ecpi_beam", "ecpi_beam.*"]),
    package_data={"ecpi_beam": ["caldb/data/*/*", "simu/scenarios/*.toml"]},
    install_requires=[
        "apache-beam==2.77.0",  # the Flink/Spark job-server jars are fetched at this version
        "numpy>=1.24",
        "scipy>=1.10",
        "astropy>=6.0",
        "pyerfa>=2.0",  # astropy's; called directly for the alerts' UTC times
        "fsspec>=2024.2",
        "matplotlib>=3.7",
        "requests>=2.28",
        "astropy-healpix>=1.0",
        "regions>=0.8",
    ],
    extras_require={
        "test": ["pytest>=7", "pytest-xdist", "stingray", "moto[server]>=5", "s3fs>=2024.2", "flask",
                 "sherpa>=4.16", "healpy>=1.16", "voevent-parse>=1.0"],
        "dask": ["apache-beam[dask]", "dask", "distributed"],
        "s3": ["s3fs>=2024.2"],
    },
    entry_points={
        "console_scripts": [
            "ecpi_run=ecpi_beam.cli:ecpi_run_command",
            "caldb_init=ecpi_beam.cli:caldb_init",
            "ecpi_conf_tool=ecpi_beam.cli:ecpi_conf_tool",
            "ecpi_simulate=ecpi_beam.cli:ecpi_simulate",
            "ecpi_demo=ecpi_beam.cli:ecpi_demo",
            "ecpi_quicklook=ecpi_beam.cli:ecpi_quicklook",
            "ecpi_engine=ecpi_beam.cli:ecpi_engine",
        ]
    },
)
