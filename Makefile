# walogs: `make demo` and `make test` set everything up from a fresh clone.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
DEPS   := $(VENV)/.stamp-deps
BUILT  := .stamp-build
PYTEST := $(PY) -m pytest -n auto -q -p no:cacheprovider

.PHONY: all demo test test-cython test-python build bench stress annotate lint wheel clean system-deps

all: build

# libdeflate gives a ~8x faster CRC-32 than zlib on small frames; the build
# falls back to zlib where it cannot be installed (not root, no apt).
system-deps:
	@if [ ! -f /usr/include/libdeflate.h ] && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "installing libdeflate-dev"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libdeflate-dev >/dev/null) \
		|| echo "warning: libdeflate-dev not installed; building with zlib's crc32"; \
	fi

$(DEPS): requirements-dev.txt
	$(MAKE) system-deps
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	touch $@

build: $(BUILT)
$(BUILT): $(DEPS) setup.py walogs/_frame.pyx walogs/_crc.h
	WALOGS_REQUIRE_EXTENSIONS=1 $(PY) setup.py -q build_ext --inplace
	touch $@

demo: build
	$(PY) examples/quickstart.py
	@echo
	$(PY) examples/worker_pool.py

# The whole suite twice: compiled codec, then the pure-Python fallback (P8).
test: build
	$(PYTEST) tests
	WALOGS_PURE_PYTHON=1 $(PYTEST) tests

test-cython: build
	$(PYTEST) tests

test-python: build
	WALOGS_PURE_PYTHON=1 $(PYTEST) tests

# The long crash, fault and fuzz suites (WALOGS_STRESS=N multiplies the counts).
stress: build
	WALOGS_STRESS=$${WALOGS_STRESS:-1} $(PYTEST) tests
	WALOGS_STRESS=$${WALOGS_STRESS:-1} WALOGS_PURE_PYTHON=1 $(PYTEST) tests

bench: build
	$(PY) benchmarks/run.py

annotate: $(DEPS)
	$(VENV)/bin/cython -3 -a walogs/_frame.pyx -o build/_frame_annotated.c

clean:
	rm -rf build dist *.egg-info walogs/*.so walogs/_frame.c $(BUILT) .pytest_cache
