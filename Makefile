# The two set-up commands of the README: `make run` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
DB ?= sqlite:///switchdesk.db
LISTEN ?= 127.0.0.1:8080
# `make run` settings (each may also come from the environment): the account's FreeSWITCH domain
# (first run only), FreeSWITCH's event socket HOST:PORT, where FreeSWITCH's check-in calls reach us,
# and NO_ESL=1 to serve the API and webhooks without FreeSWITCH. The ESL and xml_curl passwords are
# read from SWITCHDESK_ESL_PASSWORD and SWITCHDESK_XMLCURL_PASSWORD, never from a command line.
DOMAIN ?=
ESL ?=
OUTBOUND ?=
NO_ESL ?=

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
	$(BIN)/switchdesk init --db $(DB) $(if $(DOMAIN),--domain $(DOMAIN))
	$(BIN)/switchdesk serve --db $(DB) --listen $(LISTEN) $(if $(ESL),--esl $(ESL)) \
	  $(if $(OUTBOUND),--outbound-listen $(OUTBOUND)) $(if $(filter 1 yes true,$(NO_ESL)),--no-esl)

# Tools the tests call (shellcheck for vagrant/); installed when root, else those tests skip outside CI.
test-deps:
	@if ! command -v shellcheck >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q shellcheck; \
	  else echo "shellcheck is missing (apt-get install shellcheck); its tests will skip" >&2; fi; fi
	@# the wallboard test (tests/realswitch/test_stats.py) drives Debian's chromium through chromium-driver
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; \
	  else echo "chromium/chromedriver are missing (apt-get install chromium chromium-driver); the wallboard test will skip (fail in CI)" >&2; fi; fi

# The whole suite twice: on SQLite, then on PostgreSQL (.ci/postgres installs and starts
# Debian's on loopback when root; without it, and outside CI, that run is skipped with a message).
# tests/realswitch (a real FreeSWITCH from ../shared/freeswitch or SWITCHDESK_FREESWITCH, and sipp)
# runs in the SQLite pass only; SWITCHDESK_REQUIRE_FREESWITCH=1 makes a missing FreeSWITCH fail.
# Two workers (pytest-xdist): the suite waits more than it computes (timers, sipp, FreeSWITCH); the
# real-FreeSWITCH tests stay together on one worker, and on PostgreSQL each worker has its own database.
PYTEST_PARALLEL ?= -n 2 --dist loadgroup

test: $(VENV)/.test-extras test-deps
	$(BIN)/ruff check .
	@echo "== test suite on SQLite" >&2
	$(BIN)/python -m pytest -q $(PYTEST_PARALLEL)
	@rc=0; url=$$(bash .ci/postgres) || rc=$$?; \
	if [ $$rc = 3 ]; then exit 0; elif [ $$rc != 0 ]; then exit $$rc; fi; \
	echo "== test suite on PostgreSQL (without the real-FreeSWITCH tests: they ran on SQLite)" >&2; \
	SWITCHDESK_TEST_DB="$$url" SWITCHDESK_TEST_REAL_SWITCH=0 $(BIN)/python -m pytest -q $(PYTEST_PARALLEL)

bench: $(VENV)/.test-extras
	@for b in bench/*.py; do echo "== $$b" >&2; $(BIN)/python $$b || exit 1; done

lint: $(VENV)/.test-extras
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) build *.egg-info
