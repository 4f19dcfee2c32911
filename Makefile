# Two commands on a fresh machine (README): `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_DIR ?= demo-output

.PHONY: demo test test-quick setup system-deps engines prism benchmark clean

# Beam's Prism runner (a Go program), the local streaming runner (docs/streaming.md): built
# once from the Go module proxy into the per-user cache, outside the clone (CI keeps it);
# ecpi_run finds it there (or at $$ECPI_PRISM) and never downloads it at run time.
PRISM_VERSION := 2.73.0
PRISM_DIR ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/ecpi-beam/prism-$(PRISM_VERSION)
PRISM := $(PRISM_DIR)/prism

$(BIN)/ecpi_run: setup.py | system-deps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# (setuptools' notice about editable installs is a UserWarning: not shown)
	PYTHONWARNINGS=ignore::UserWarning $(BIN)/pip install --quiet -e ".[test,dask,s3]"
	touch $@

setup: $(BIN)/ecpi_run $(PRISM)

$(PRISM):
	@command -v go >/dev/null 2>&1 || { echo "make prism: Go (1.26 or later) is needed to build \
	Beam's Prism runner, the local streaming runner" >&2; exit 1; }
	@echo "prism: building Beam's Prism runner $(PRISM_VERSION) into $(PRISM_DIR)"
	@mkdir -p $(PRISM_DIR)
	GOBIN=$(PRISM_DIR) GOFLAGS=-mod=mod go install \
	  github.com/apache/beam/sdks/v2/go/cmd/prism@v$(PRISM_VERSION)

prism: $(PRISM)

# sherpa (the tests' spectral fitter) is a source distribution: these let pip compile it
SHERPA_BUILD_DEPS = byacc flex bison libfftw3-dev pkg-config

# fitsverify (HEASoft's FITS checker) comes from the system's packages; the tests need it.
system-deps:
	@command -v fitsverify >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq fitsverify >/dev/null; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq fitsverify >/dev/null; fi; }
	@dpkg -s $(SHERPA_BUILD_DEPS) >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq $(SHERPA_BUILD_DEPS) >/dev/null; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq $(SHERPA_BUILD_DEPS) >/dev/null; fi; }
	@# Java and Maven for the Flink/Spark engines (make engines)
	@{ command -v java >/dev/null 2>&1 && command -v mvn >/dev/null 2>&1; } || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq openjdk-17-jre-headless maven >/dev/null; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq openjdk-17-jre-headless maven >/dev/null; fi; }

# The Flink and Spark engines (docs/runners.md): job-server jars (mvn) and the distributions
# of apache-flink and pyspark, each in its own venv; engines/setup.sh prints its time.
engines: setup system-deps
	bash engines/setup.sh $(BIN)/python

demo: setup
	$(BIN)/ecpi_demo --out $(DEMO_DIR)

test: setup system-deps engines
	$(BIN)/python -m pytest -n 2 -q tests

# For development: everything but the cluster tests (marker `engine`).
test-quick: setup system-deps
	$(BIN)/python -m pytest -n 2 -q -m "not engine" tests

benchmark: setup
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) $(DEMO_DIR) build *.egg-info .venv-flink .venv-spark engines/jars
