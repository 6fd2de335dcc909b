# The two set-up commands of the README: `make run` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
DB ?= sqlite:///switchdesk.db
LISTEN ?= 127.0.0.1:8080

.PHONY: run test test-deps lint bench clean deps

# Debian packages the service and its tests need (no-op when present or when not root).
deps:
	@if ! $(PY) -c 'import venv, ensurepip' >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv python3-pip; \
	  else echo "python3-venv is missing: apt-get install python3-venv" >&2; exit 1; fi; fi

$(BIN)/switchdesk: setup.cfg pyproject.toml | deps
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e .
	@touch $@

$(VENV)/.test-extras: $(BIN)/switchdesk
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

run: $(BIN)/switchdesk
	$(BIN)/switchdesk init --db $(DB)
	$(BIN)/switchdesk serve --db $(DB) --listen $(LISTEN)

# Tools the tests call (shellcheck for vagrant/); installed when root, else those tests skip outside CI.
test-deps:
	@if ! command -v shellcheck >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q shellcheck; \
	  else echo "shellcheck is missing (apt-get install shellcheck); its tests will skip" >&2; fi; fi

# The whole suite twice: on SQLite, then on PostgreSQL (.ci/postgres installs and starts
# Debian's on loopback when root; without it, and outside CI, that run is skipped with a message).
test: $(VENV)/.test-extras test-deps
	$(BIN)/ruff check .
	@echo "== test suite on SQLite" >&2
	$(BIN)/python -m pytest -q
	@rc=0; url=$$(bash .ci/postgres) || rc=$$?; \
	if [ $$rc = 3 ]; then exit 0; elif [ $$rc != 0 ]; then exit $$rc; fi; \
	echo "== test suite on PostgreSQL" >&2; \
	SWITCHDESK_TEST_DB="$$url" $(BIN)/python -m pytest -q

bench: $(VENV)/.test-extras
	@for b in bench/*.py; do echo "== $$b" >&2; $(BIN)/python $$b || exit 1; done

lint: $(VENV)/.test-extras
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) build *.egg-info
