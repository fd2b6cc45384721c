# securechat: `make run` starts a daemon on 127.0.0.1, `make test` runs the suite.
# Both create .venv on first use; nothing but python3 is needed.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SOURCES := setup.cfg pyproject.toml $(shell find securechat twisted -name '*.py' 2>/dev/null)

DATA_DIR ?= var
PORT ?= 7470
TESTS ?= tests

.PHONY: run test bench churn venv clean

# The project is installed (not editable): the default editable install hides
# our twistd plugin. Any source change re-installs it. The plugin cache is
# rebuilt by the installing user so a read-only venv never tries to write it.
$(STAMP): $(SOURCES)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet '.[test]'
	$(PY) -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))"
	@touch $@

venv: $(STAMP)

# A local quick start: registration is open (the shipped conf/securechat.toml
# and the systemd unit default to one-time tokens instead).
run: $(STAMP)
	@echo "securechat: serving TLS on 127.0.0.1:$(PORT), data in $(DATA_DIR)/ -- Ctrl+C stops it"
	@echo "securechat: registration is open to anyone who can reach the port (fine on 127.0.0.1;"
	@echo "            a server on a network uses conf/securechat.toml: registration = \"token\")"
	$(VENV)/bin/twistd --nodaemon --pidfile= securechat --data-dir $(DATA_DIR) --port $(PORT) \
		--registration open

test: $(STAMP)
	$(PY) -m twisted.trial $(TESTS)

# The seeded churn simulation (tests/churn.py): a busy team, one seed, judged
# for unreadable-but-entitled, leaked, lost and duplicated messages.
SEED ?= 1
OPS ?= 300
churn: $(STAMP)
	$(PY) -m tests.churn --seed $(SEED) --ops $(OPS)

# Relay and daemon side by side (a few minutes; the first run also makes and
# caches 200 identities and prepared daemon data dirs, about 850 MB, in
# benchmarks/.cache, a couple of minutes more).
BENCH_STAMP := $(VENV)/.bench-installed
$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet '.[bench]'
	@touch $@

bench: $(BENCH_STAMP)
	PYTHONPATH=. $(PY) -m benchmarks.run --size short

clean:
	rm -rf $(VENV) build *.egg-info _trial_temp* twisted/plugins/dropin.cache
