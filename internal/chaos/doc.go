// Package chaos is pgha's seeded fault-injection harness with a
// linearizability checker: it tries to break the invariants of DESIGN.md
// on a real cluster and reports what it saw.
//
// Quick start (a run is a test; make chaos wraps it):
//
//	make chaos SEED=42 DURATION=10m SYNC=on
//	PGHA_CHAOS_SEED=42 go test -run TestChaos -v ./internal/chaos
//
// # The cluster
//
// Three pgha-agent processes (examples/agent), each supervising its own
// PostgreSQL, and a three-member etcd embedded in the test process. Every
// link a fault can cut goes through a TCP fault proxy: each agent reaches
// every etcd member through a proxy of its own; each node advertises a
// replication proxy (standbys stream through it) and clients reach each
// node through a separate client proxy (the pools' DialFunc maps one to
// the other), so a replication link and a client link can be cut apart.
//
// # The workload
//
// Clients run through two [github.com/pgha/pgha/driver.Pool]s: each
// operation is a read of a register (SELECT) or a write of a unique value
// to it, which also appends the value to a log table in the same
// statement. Every operation is recorded as invoked and then ok, failed
// (the pool said it was never executed) or unknown (it may have been).
// Unknown writes are resolved against the log table once the cluster has
// converged.
//
// # The nemesis
//
// A pseudo-random generator seeded by Options.Seed picks, each round, one
// or two faults: kill -9 of the primary's postmaster, an agent killed
// (kill -9, its PostgreSQL keeps running), an agent paused (SIGSTOP), a
// whole node lost, a node cut off from etcd, the replication link cut, the
// clients cut off from the primary, an etcd member lost, the etcd quorum
// lost, added latency, a PostgreSQL paused (SIGSTOP of the postmaster and
// its children), and a standby's WAL receiver paused (it falls behind). Each round holds its faults for a while, heals them
// and waits for the cluster to converge; the run ends by healing
// everything.
//
// # The checkers
//
//   - synchronous mode: the history is checked with porcupine against a
//     register model, one register per key; an acknowledged write missing
//     after the heal, or a write the pool reported as not executed that
//     is present, is an anomaly too;
//   - asynchronous mode: acknowledged writes lost are counted and compared
//     with what MaxLagOnFailover allows for the failovers that happened;
//   - a sampler checks every 50 ms that at most one node can acknowledge
//     writes (see [Report] for what "can" means in each mode);
//   - after the heal: all nodes on the same timeline, with the same
//     timeline history file and the same rows.
//
// A failing run prints the seed, the fault timeline and the path of the
// checker's HTML visualisation (porcupine), with the agents' logs.
package chaos
