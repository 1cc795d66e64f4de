# pgha: the two commands a newcomer needs are `make demo` and `make test`.

GO        ?= go
# Packages whose tests run under the race detector: all of them, the
# election, the HA loop and the pool are concurrent code. Packages run one
# at a time (-p 1): each starts real etcd and PostgreSQL servers, and lease
# timings in the tests (TTL 2 s) must not depend on what other packages'
# servers are doing on a 2-core machine (the whole run took about 6.5
# minutes in CI here).
PKGS      ?= ./...
TESTFLAGS ?= -race -count=1 -p 1 -timeout 25m

.PHONY: demo test test-clock lint vet fmt bench chaos fuzz tools tools-postgres tools-pgbackrest tools-iptables

# demo runs the local-cluster demo: embedded etcd, three PostgreSQL servers
# with an HA manager each, a writer through driver.Pool, then four failures
# narrated with their write pause and rows lost. DEMOFLAGS adds flags, e.g.
# DEMOFLAGS="-sync off -ttl 5s -scripted".
DEMOFLAGS ?=
demo: tools-postgres
	$(GO) run ./examples/localcluster -pgbin "$$(scripts/ensure-postgres.sh)" $(DEMOFLAGS)

# test runs every test against real etcd (embedded) and real PostgreSQL
# servers (and pgBackRest for the backup tests; iptables for the
# network-namespace tests, which drop packets with it). It finds or
# installs the tools first.
test: lint tools
	PGHA_TEST_PGBIN="$$(scripts/ensure-postgres.sh)" $(GO) test $(TESTFLAGS) $(PKGS)

# test-clock runs the test that steps this machine's wall clock (root
# only; every process on the machine sees the step): never on a shared host.
test-clock: tools-postgres
	PGHA_TEST_CLOCK=on PGHA_TEST_PGBIN="$$(scripts/ensure-postgres.sh)" $(GO) test -race -count=1 -run TestWallClockSteps ./ha/

# tools finds or installs every external program the tests run, from the
# OS packages.
tools: tools-postgres tools-pgbackrest tools-iptables

tools-postgres:
	@scripts/ensure-postgres.sh >/dev/null

tools-pgbackrest:
	@scripts/ensure-pgbackrest.sh >/dev/null

tools-iptables:
	@scripts/ensure-iptables.sh >/dev/null

# lint fails on unformatted files and on go vet findings.
lint: vet
	@out="$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))"; \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

fmt:
	gofmt -w $$(git ls-files '*.go')

# bench runs every benchmark once with its reported metrics.
BENCH ?= .
bench: tools-postgres
	PGHA_TEST_PGBIN="$$(scripts/ensure-postgres.sh)" $(GO) test -run '^$$' -bench '$(BENCH)' -benchtime 5x -count 1 -timeout 30m $(PKGS)

# chaos runs the seeded fault-injection harness (internal/chaos): a 3-node
# cluster with a 3-member etcd under clients writing through driver.Pool,
# while a nemesis injects faults picked from SEED; the histories are checked
# for linearizability (sync mode) and the run ends with a report. SEED=0
# picks a random seed (printed); rerun with it to reproduce. make test runs
# a short fixed-seed version of the same harness.
# FAULTS=kind,kind restricts the nemesis (kinds: see internal/chaos).
# FAILSAFE=on runs the agents with --failsafe (default off).
SEED     ?= 0
DURATION ?= 10m
SYNC     ?= on
FAILSAFE ?= off
FAULTS   ?=
chaos: tools-postgres
	PGHA_TEST_PGBIN="$$(scripts/ensure-postgres.sh)" PGHA_CHAOS_SEED=$(SEED) PGHA_CHAOS_DURATION=$(DURATION) PGHA_CHAOS_SYNC=$(SYNC) PGHA_CHAOS_FAILSAFE=$(FAILSAFE) PGHA_CHAOS_FAULTS=$(FAULTS) \
		$(GO) test -run '^TestChaos$$' -count=1 -v -timeout 3h ./internal/chaos

# fuzz runs every Fuzz target of the module for FUZZTIME each (seed
# corpora live in testdata/fuzz and run in make test).
FUZZTIME ?= 1m
fuzz:
	FUZZTIME=$(FUZZTIME) GO=$(GO) scripts/fuzz.sh
