# walogs: `make demo` and `make test` set everything up from a fresh clone.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
DEPS   := $(VENV)/.stamp-deps
BUILT  := .stamp-build
PYTEST := $(PY) -m pytest -n auto -q -p no:cacheprovider

.PHONY: all demo docs test test-cython test-python build bench stress annotate lint wheel wheels wheel-test sdist sdist-test clean system-deps interop

all: build

# libdeflate gives a ~8x faster CRC-32 than zlib on small frames; the build
# falls back to zlib where it cannot be installed (not root, no apt). Where cargo
# is installed, Debian's crc32fast lets the Rust interop harness build offline.
RUST_REGISTRY := /usr/share/cargo/registry
system-deps:
	@if [ ! -f /usr/include/libdeflate.h ] && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "installing libdeflate-dev"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libdeflate-dev >/dev/null) \
		|| echo "warning: libdeflate-dev not installed; building with zlib's crc32"; \
	fi
	@if command -v cargo >/dev/null 2>&1 && ! ls -d $(RUST_REGISTRY)/crc32fast-* >/dev/null 2>&1; then \
		if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
			echo "installing librust-crc32fast-dev (the Rust interop harness's one dependency)"; \
			(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq librust-crc32fast-dev >/dev/null) \
			|| echo "warning: librust-crc32fast-dev not installed; tests/test_interop.py will skip"; \
		else echo "warning: no crc32fast in $(RUST_REGISTRY): install Debian's librust-crc32fast-dev as root, or tests/test_interop.py will skip"; fi; \
	fi

$(DEPS): requirements-dev.txt
	$(MAKE) system-deps
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	touch $@

# The Rust interop harness run by tests/test_interop.py (interop/README.md): the
# crate walogs 0.1.0's own writer, its wal.rs copied in from WALOGS_RS (not ours
# to commit), built offline against Debian's crc32fast into build/interop-rust.
# Where a piece is missing it prints "interop: not built: WHY" and the tests skip.
interop: system-deps
	interop/build.sh

build: $(BUILT)
$(BUILT): $(DEPS) setup.py walogs/_frame.pyx walogs/_frame.pxd walogs/_writer.pyx walogs/_crc.h \
		walogs/_shared_writer.pyx walogs/_shared_writer.h walogs/_calls.pxi
	WALOGS_REQUIRE_EXTENSIONS=1 $(PY) setup.py -q build_ext --inplace
	touch $@

# The extension is built in place, so the examples import walogs from this tree.
demo: build
	PYTHONPATH=$(CURDIR) $(PY) examples/quickstart.py
	@echo
	PYTHONPATH=$(CURDIR) $(PY) examples/worker_pool.py

# The whole suite twice: the pure-Python fallback from the source tree, then
# the compiled codec from the installed manylinux wheel (P8; the wheel is what
# users get, so that is what the compiled pass tests).
test: build interop
	WALOGS_PURE_PYTHON=1 $(PYTEST) tests
	$(MAKE) docs
	$(MAKE) wheel-test
	$(MAKE) sdist-test

# The reference (docs/*.md and the API from the docstrings), warnings as errors.
docs: build
	$(PY) -m sphinx -W -q -b html docs build/docs
	@echo "docs: build/docs/index.html"

test-cython: build interop
	$(PYTEST) tests

test-python: build interop
	WALOGS_PURE_PYTHON=1 $(PYTEST) tests

# The long crash, fault and fuzz suites (WALOGS_STRESS=N multiplies the counts).
stress: build interop
	WALOGS_STRESS=$${WALOGS_STRESS:-1} $(PYTEST) tests
	WALOGS_STRESS=$${WALOGS_STRESS:-1} WALOGS_PURE_PYTHON=1 $(PYTEST) tests
	@if $(PY) -m pip install -q --disable-pip-version-check atheris; then \
		$(PY) tests/fuzz_atheris.py -atheris_runs=$${FUZZ_RUNS:-200000}; \
	else echo "atheris did not install here: the coverage-guided fuzz run was not done"; fi

# Prints the table; writes benchmarks/results/results.json and, with matplotlib,
# results.png (neither is committed; benchmarks/README.md keeps the dated table).
bench: build
	@$(PY) -m pip install -q --disable-pip-version-check matplotlib || echo "matplotlib did not install: no chart"
	PYTHONPATH=$(CURDIR) $(PY) benchmarks/run.py

# The manylinux2014 wheel for .venv's Python, built by tools/build_wheel.sh:
# zig cc against glibc 2.17, libdeflate linked statically, symbols stripped,
# repaired and checked by auditwheel; dist/ changes only when all of it passed.
wheel: $(DEPS)
	tools/build_wheel.sh $(PY) $(VENV)/bin dist

# One wheel per CPython 3.9-3.13 found here (python3.X on PATH, or pyenv's),
# each smoke-tested in its own venv; see README "Wheels" for why not abi3.
wheels: $(DEPS)
	$(PY) tools/wheels_all.py --tools $(VENV)/bin --out dist

# Install the wheel into a fresh venv and run the whole suite against it, from
# a copy of tests/ (and the examples they run) outside the source tree, so
# nothing can import the sources.
WHEEL_VENV := build/wheel-venv
WHEEL_RUN  := build/wheel-run
PYTAG       = $(shell $(PYTHON) -c 'import sys; print("cp%d%d" % sys.version_info[:2])')
wheel-test: wheel
	rm -rf $(WHEEL_VENV) $(WHEEL_RUN)
	$(PYTHON) -m venv $(WHEEL_VENV)
	$(WHEEL_VENV)/bin/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt dist/walogs-*-$(PYTAG)-*.whl
	mkdir -p $(WHEEL_RUN) && cp -r tests examples README.md docs $(WHEEL_RUN)/
	printf '[pytest]\nfilterwarnings = error\naddopts = -ra\n' > $(WHEEL_RUN)/pytest.ini
	cd $(WHEEL_RUN) && ../wheel-venv/bin/python -c "import walogs; \
		assert walogs.IMPLEMENTATION == 'cython', walogs.IMPLEMENTATION; \
		assert walogs._impl.SegmentWriter.__module__ == 'walogs._writer'; \
		assert walogs._impl.SharedWriter.__module__ == 'walogs._shared_writer'; \
		assert 'site-packages' in walogs.__file__, walogs.__file__; print('testing the wheel at', walogs.__file__)"
	cd $(WHEEL_RUN) && WALOGS_SOURCE_TREE=$(CURDIR) ../wheel-venv/bin/python -m pytest -n auto -q -p no:cacheprovider tests

sdist: $(DEPS)
	rm -f dist/walogs-*.tar.gz
	$(PY) -m build --sdist --no-isolation -o dist .

# The sdist holds the .pyx, not generated C: it must build with the Cython from
# pyproject.toml, and without a C compiler install as pure Python with a warning.
sdist-test: sdist
	rm -rf build/sdist-venv && $(PYTHON) -m venv build/sdist-venv
	CC=/bin/false build/sdist-venv/bin/python -m pip install -v --no-cache-dir dist/walogs-*.tar.gz > build/sdist-nocc.log 2>&1
	grep -q "walogs._frame could not be built" build/sdist-nocc.log
	grep -q "walogs._writer could not be built" build/sdist-nocc.log
	grep -q "walogs._shared_writer could not be built" build/sdist-nocc.log
	cd build && sdist-venv/bin/python -c "import walogs; assert walogs.IMPLEMENTATION == 'python', walogs.IMPLEMENTATION" 2> sdist-import.log
	grep -q "RuntimeWarning: walogs is running a pure-Python fallback: walogs._frame was never built" build/sdist-import.log
	build/sdist-venv/bin/python -m pip install -q --no-cache-dir --force-reinstall --no-deps dist/walogs-*.tar.gz
	cd build && sdist-venv/bin/python -c "import walogs; assert walogs.IMPLEMENTATION == 'cython', walogs.IMPLEMENTATION; \
		writer = walogs._impl.SegmentWriter.__module__; assert writer == 'walogs._writer', writer; \
		shared = walogs._impl.SharedWriter.__module__; assert shared == 'walogs._shared_writer', shared; \
		print('sdist: pure-Python fallback without a compiler, compiled codec and writer with one')"

annotate: $(DEPS)
	$(VENV)/bin/cython -3 -a walogs/_frame.pyx -o build/_frame_annotated.c

clean:
	rm -rf build dist *.egg-info walogs/*.so walogs/_frame.c walogs/_writer.c walogs/_shared_writer.c $(BUILT) .pytest_cache
