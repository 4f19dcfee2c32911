#!/usr/bin/env bash
# `make engines`: the Flink and Spark engines of ecpi-beam (docs/runners.md), obtained now,
# never when a pipeline runs.
#
#   engines/setup.sh [PYTHON] [--maven-repository URL ...] [--cache DIR]
#
# PYTHON is the interpreter of the project's environment (default .venv/bin/python). The Beam
# job servers (Flink 1.19, Spark 3) are resolved with mvn, with their runtime dependencies,
# from Maven's repositories plus those named by ECPI_MAVEN_REPOSITORY (space-separated URLs or
# folders) or --maven-repository; the Flink and Spark distributions come from PyPI
# (apache-flink, pyspark), each in a venv of its own. All of it goes into a cache outside the
# project folder (ECPI_ENGINES_CACHE, default ~/.cache/ecpi-beam/engines), kept between runs
# and clones. What cannot be obtained is a one-line error and a non-zero exit.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=.venv/bin/python
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then PYTHON=$1; shift; fi
exec "$PYTHON" -m ecpi_beam.engine_setup "$@"
