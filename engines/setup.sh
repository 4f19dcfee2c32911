#!/usr/bin/env bash
# Set up the local Flink and Spark engines of ecpi-beam (docs/runners.md).
#
#   engines/setup.sh [PYTHON]
#
# PYTHON is the interpreter of the project's environment (default .venv/bin/python): the
# Beam job-server jars are fetched at the version of the apache-beam it has, since the SDK and
# the job server must be the same release. Into the project folder, all git-ignored:
#   engines/jars/                 beam-runners-flink-<FLINK_MINOR>-job-server-<beam>.jar and
#                                 beam-runners-spark-3-job-server-<beam>.jar (Maven, via mvn)
#   .venv-flink/                  apache-flink (its Flink distribution: bin/, lib/, conf/)
#   .venv-spark/                  pyspark (its Spark distribution: bin/, sbin/, jars/)
# Idempotent: what is there is kept. A jar the Maven repository does not serve is reported
# and skipped (set ECPI_REQUIRE_JOB_SERVERS=1 to make that an error); ecpi_engine then says
# that --flink_job_server_jar / --spark_job_server_jar must be given.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${1:-.venv/bin/python}
FLINK_VERSION=1.19.3          # the Flink of beam-runners-flink-1.19-job-server
SPARK_VERSION=3.5.0           # the Spark that beam-runners-spark-3-job-server is built with
DEPENDENCY_PLUGIN=org.apache.maven.plugins:maven-dependency-plugin:3.11.0
JAR_DIR=engines/jars

started=$(date +%s)
beam_version=$("$PYTHON" -c "import apache_beam; print(apache_beam.__version__)" 2>/dev/null)
flink_minor=${FLINK_VERSION%.*}

fetch_jar() {  # artifactId: copy org.apache.beam:<artifactId>:<beam> into engines/jars
    local jar="$JAR_DIR/$1-$beam_version.jar"
    [ -s "$jar" ] && return 0
    echo "engines: fetching $1 $beam_version with mvn"
    if mvn -q -B "$DEPENDENCY_PLUGIN:copy" -Dartifact="org.apache.beam:$1:$beam_version" \
           -DoutputDirectory="$JAR_DIR" -Dtransitive=false >"$JAR_DIR/$1.log" 2>&1; then
        rm -f "$JAR_DIR/$1.log"
    else
        echo "engines: org.apache.beam:$1:$beam_version is not served by the Maven" \
             "repository (see $JAR_DIR/$1.log)" >&2
        [ "${ECPI_REQUIRE_JOB_SERVERS:-0}" = 1 ] && return 1
    fi
    return 0
}

make_venv() {  # folder, pip arguments...: a venv of its own, left alone once complete
    local venv=$1; shift
    [ -f "$venv/.complete" ] && return 0
    echo "engines: creating $venv ($*)"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "$@"
    touch "$venv/.complete"
}

mkdir -p "$JAR_DIR"
if command -v mvn >/dev/null 2>&1; then
    fetch_jar "beam-runners-flink-$flink_minor-job-server"
    fetch_jar "beam-runners-spark-3-job-server"
else
    echo "engines: mvn not found: no job-server jar fetched" >&2
fi
# Only the distributions are needed (Java runs them), not PyFlink's Python dependencies.
make_venv .venv-flink --no-deps "apache-flink==$FLINK_VERSION" \
    "apache-flink-libraries==$FLINK_VERSION"
make_venv .venv-spark "pyspark==$SPARK_VERSION"
echo "engines: ready in $(( $(date +%s) - started )) s (Beam $beam_version, Flink" \
     "$FLINK_VERSION, Spark $SPARK_VERSION)"
