# Two commands matter: `make demo` and `make test`. Both set up .venv themselves.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SIM_SEEDS ?= 1000

.PHONY: demo sim-demo test tls-short test-tls netns lint typecheck unit sim sim-long failover restart-bench resources-bench membership-bench nemesis-long wal-crash-full trace-audit-long bench bench-curves tools clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	@touch $(STAMP)

demo: $(STAMP)
	$(PY) -m raftd cluster --demo

sim-demo: $(STAMP)
	$(PY) -m tests.sim --demo

test: tools lint typecheck sim unit tls-short

# The tests run Prometheus itself and its validator promtool (Debian's prometheus package).
# As root the package is installed here; otherwise the message says how to get it.
PROMETHEUS_HINT := the tests need prometheus and promtool on PATH: install Debian's prometheus \
package (sudo apt-get install prometheus) or a release from prometheus.io, then run make test again
# As root, iptables too: the tests with members on hosts of their own (network namespaces)
# cut links with it. Without it (or without root) those tests skip, saying why.
tools:
	@command -v promtool >/dev/null && command -v prometheus >/dev/null || { \
	  if [ "$$(id -u)" != 0 ]; then echo "make test: $(PROMETHEUS_HINT)" >&2; exit 1; fi; \
	  echo "installing Debian's prometheus package (prometheus, promtool)"; \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null; } \
	    || { echo "make test: apt-get could not install prometheus; $(PROMETHEUS_HINT)" >&2; exit 1; }; }
	@command -v iptables >/dev/null || [ "$$(id -u)" != 0 ] || { \
	  echo "installing Debian's iptables package (for the network-namespace tests)"; \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iptables >/dev/null; } \
	    || echo "make test: apt-get could not install iptables; the netns tests will skip" >&2; }

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

typecheck: $(STAMP)
	$(PY) -m mypy

unit: $(STAMP)
	$(PY) -m pytest -q

# The integration suite and a nemesis run with mutual TLS on every port of every member
# (make test runs the TLS cases of its own, tests/integration/test_tls.py, tls-short below
# and a short nemesis with TLS; this runs everything else that way too).
test-tls: $(STAMP)
	RAFTD_TEST_TLS=1 $(PY) -m pytest -q tests/integration
	$(PY) -m tests.nemesis --duration 120 --seed $(NEMESIS_SEED) --tls

# make test's share of that: the cluster and lease integration tests with mutual TLS on every
# port (42 to 50 s measured on a 2-core machine; make test-tls runs the rest that way).
tls-short: $(STAMP)
	RAFTD_TEST_TLS=1 $(PY) -m pytest -q tests/integration/test_cluster.py tests/integration/test_leases.py

# Members on hosts of their own (a network namespace each, joined by a bridge; needs root):
# the netns tests, then 120 s of the nemesis with kills, links going down (the leader's,
# a minority's) and one-way firewall cuts (the seed still draws the extras).
NETNS_FAULTS ?= kill,isolate_leader,partition_minority,one_way
netns: tools $(STAMP)
	$(PY) -m pytest -q tests/integration/test_netns.py
	$(PY) -m tests.nemesis --duration 120 --seed $(NEMESIS_SEED) --netns --faults $(NETNS_FAULTS)

sim: $(STAMP)
	$(PY) -m tests.sim --seeds $(SIM_SEEDS)

sim-long: $(STAMP)
	$(PY) -m tests.sim --seeds 2000

# Ten minutes of faults with large values, stale readers, and every extra kind: a follower
# that misses many large writes, a paused follower, a follower on a slow disk, leadership
# transfers asked for and caused by SIGTERM, a member replaced (removed, wiped, added back).
NEMESIS_SEED ?= 10
nemesis-long: $(STAMP)
	$(PY) -m tests.nemesis --duration 600 --seed $(NEMESIS_SEED) --locks --extras lag_large,pause_follower,slow_follower,move_leader,sigterm_leader,replace_member

# Every crash state of the WAL's last batches, not the sample make test runs.
wal-crash-full: $(STAMP)
	RAFTD_WAL_CRASH_FULL=1 $(PY) -m pytest -q tests/storage/test_wal_crash.py

# The trace budget under ten minutes of 64 clients, then ten minutes of 30% message loss with
# the leader killed every 15 s: the audit of what every member exported.
trace-audit-long: $(STAMP)
	$(PY) -m tests.tracecheck.load flood --minutes 10 --clients 64
	$(PY) -m tests.tracecheck.load storm --minutes 10 --clients 16 --drop 30 --kill-every 15

# Restart-to-serving of a member whose log holds 100k and 1M entries.
restart-bench: $(STAMP)
	$(PY) -m tests.restart 100000 1000000

# A rolling restart of every member under 16 clients (failed writes, longest gap), and the
# time to add a member to a cluster holding 100k keys.
membership-bench: $(STAMP)
	$(PY) -m tests.perf.membership

# Memory and disk after a million writes with compaction on; restart and rejoin times.
resources-bench: $(STAMP)
	$(PY) -m tests.perf.resources

failover: $(STAMP)
	$(PY) -m tests.integration.failover --kills 20

# raftd beside etcd and PySyncObj; writes bench-results/report.md. The anchor scripts live
# outside this repository: RAFTD_BENCH_ANCHORS=DIR RAFTD_BENCH_ANCHOR_PYTHON=PATH (docs/testing.md).
BENCH_ARGS ?=
bench: $(STAMP)
	$(PY) -m tests.perf --out bench-results $(BENCH_ARGS)

# How cost grows with the work (clients, value size, key count, cluster size, a long history,
# memory at a million keys), beside etcd when the anchors are given as for make bench:
# bench-results/curves.md and its plots. CPU per write per member: python -m tests.perf.cost.
bench-curves: $(STAMP)
	$(PY) -m tests.perf.curves --out bench-results $(CURVES_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
