# The two commands of a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Two test processes (pytest-xdist), each test file kept in one of them so that
# a module's shared fixture (a trained run) is built once: the suite takes
# about half the time on two cores. `make test PYTEST_WORKERS=` runs it in one.
PYTEST_WORKERS ?= -n 2 --dist loadfile

.PHONY: demo test test-fast lint format docs install clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e '.[test,mlflow,onnx,docs,text]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/kerastrain demo

# The report test renders the HTML in headless Chromium (Debian's package),
# installed here when missing and allowed; without it that one test is skipped.
test: $(STAMP) lint docs
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
		|| echo "Chromium could not be installed; the report rendering test will be skipped."; \
	fi
	$(BIN)/python -m pytest -q $(PYTEST_WORKERS)

# The unit tests: everything but the tests marked slow (trains for more than a
# few seconds) or subprocess (starts its own Python processes).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_WORKERS) -m "not slow and not subprocess"

# The documentation site (mkdocs.yml), built with --strict into a temporary
# folder that is removed after: a broken reference, a bad link or a config
# option without its docstring entry fails it.
docs: $(STAMP)
	@site=$$(mktemp -d) && trap 'rm -rf "$$site"' EXIT && \
		NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir "$$site" && \
		echo "Documentation built with --strict."

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) build *.egg-info
