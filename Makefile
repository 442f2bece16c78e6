# EvoForge developer entry points. `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check

.PHONY: install demo test test-unit bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -e '.[test]'
	touch $@

# A circle-packing campaign on the embedded default: SQLite, in-process workers, local mutator.
demo: install
	$(VENV)/bin/evoforge run circle_packing --iterations 300 --parallel 2 --seed 0

# The whole suite. Integration tests start their own Redis/PostgreSQL/podman/Chromium when the
# binaries exist (`.ci/run` installs them) and skip with a reason otherwise.
test: install
	$(PY) -m pytest -q -ra

test-unit: install
	$(PY) -m pytest -q -m "not integration"

bench: install
	$(PY) bench/sandbox_overhead.py
	$(PY) bench/embedded_throughput.py
	$(PY) bench/selection_scaling.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
