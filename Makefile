# Two commands matter: `make demo` and `make test`. Both set up .venv themselves.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SIM_SEEDS ?= 1000

.PHONY: demo sim-demo test lint typecheck unit sim sim-long failover restart-bench nemesis-long wal-crash-full bench tools clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	@touch $(STAMP)

demo: $(STAMP)
	$(PY) -m raftd cluster --demo

sim-demo: $(STAMP)
	$(PY) -m tests.sim --demo

test: lint typecheck sim tools unit

# The tests run Prometheus's own validator (promtool, from Debian's prometheus package).
tools:
	@command -v promtool >/dev/null || { \
	  echo "installing Debian's prometheus package for promtool"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null; }

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

typecheck: $(STAMP)
	$(PY) -m mypy

unit: $(STAMP)
	$(PY) -m pytest -q

sim: $(STAMP)
	$(PY) -m tests.sim --seeds $(SIM_SEEDS)

sim-long: $(STAMP)
	$(PY) -m tests.sim --seeds 2000

# Ten minutes of faults with large values, stale readers, and every extra kind: a follower
# that misses many large writes, a paused follower, a follower on a slow disk.
NEMESIS_SEED ?= 10
nemesis-long: $(STAMP)
	$(PY) -m tests.nemesis --duration 600 --seed $(NEMESIS_SEED) --extras lag_large,pause_follower,slow_follower

# Every crash state of the WAL's last batches, not the sample make test runs.
wal-crash-full: $(STAMP)
	RAFTD_WAL_CRASH_FULL=1 $(PY) -m pytest -q tests/storage/test_wal_crash.py

# Restart-to-serving of a member whose log holds 100k and 1M entries (issue 11's figures).
restart-bench: $(STAMP)
	$(PY) -m tests.restart 100000 1000000

failover: $(STAMP)
	$(PY) -m tests.integration.failover --kills 20

# raftd beside etcd and PySyncObj (../shared/anchors); writes bench-results/report.md.
BENCH_ARGS ?=
bench: $(STAMP)
	$(PY) -m tests.perf --out bench-results $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
