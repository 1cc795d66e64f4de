// Package chaos is pgha's seeded fault-injection harness with a
// linearizability checker: it tries to break the invariants of DESIGN.md
// on a real cluster and reports what it saw.
//
// Quick start (a run is a test; make chaos wraps it):
//
//	make chaos SEED=42 DURATION=10m SYNC=on FAILSAFE=on
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
// Agents run their fence guard (the default). With failsafe on
// (Options.Failsafe, PGHA_CHAOS_FAILSAFE=on, make chaos FAILSAFE=on) they
// also run with --failsafe, each on a fixed HTTP port that its member
// record publishes, and share one http token for their failsafe calls.
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
// Beside them a plain client writes new ids, about 50 a second, through
// one pgx connection opened from a multi-host connection string (every
// node's client proxy) with target_session_attrs=read-write, the way most
// applications connect: it never reads etcd, so only fencing protects
// it from a primary that is no longer the leader. Its acknowledged ids
// must all be on the final primary.
//
// # The nemesis
//
// A pseudo-random generator seeded by Options.Seed picks, each round, one
// or two faults: kill -9 of the primary's postmaster, an agent killed
// (kill -9, its PostgreSQL keeps running), an agent paused (SIGSTOP), a
// whole node lost, a node cut off from etcd, the replication link cut, the
// clients cut off from the primary, an etcd member lost, the etcd quorum
// lost, added latency, a PostgreSQL paused (SIGSTOP of the postmaster and
// its children), a standby's WAL receiver paused (it falls behind), and
// an etcd outage (every etcd member stopped for 3-20 s; the agents' etcd
// links are reset at once, since etcd's graceful stop serves open streams
// for seconds). Two faults of one round never both touch etcd. An agent
// paused may hit the leader in asynchronous mode too: its fence guard
// must fence the primary at the lease deadline. Each round holds its
// faults for a while (an outage for its whole length), heals them and
// waits for the cluster to converge; the run ends by healing everything.
//
// # The checkers
//
//   - synchronous mode: the history is checked with porcupine against a
//     register model, one register per key; an acknowledged write missing
//     after the heal, or a write the pool reported as not executed that
//     is present, is an anomaly too;
//   - asynchronous mode: acknowledged writes lost are counted and compared
//     with what MaxLagOnFailover allows for the failovers that happened;
//   - the plain client: an acknowledged id missing after the heal is
//     lost; in synchronous mode any loss is an anomaly, in asynchronous
//     mode the same MaxLagOnFailover bound applies (with its own WAL
//     size a write); the report counts losses per fault kind, by the
//     fault windows they were acknowledged in;
//   - an etcd outage alone in its round is held to what the mode
//     promises: with failsafe on, the leader's PostgreSQL keeps running,
//     the plain client never waits more than a TTL, and afterwards the
//     same term leads (node, fencing token, timeline); with failsafe off,
//     the leader fences within TTL + 1 s of etcd going down and the
//     cluster converges after etcd returns. A miss is listed apart from
//     the anomalies and fails the run too. An outage that begins less
//     than a TTL after an earlier etcd fault healed (an etcd flap: the
//     members reach etcd again before the leader has renewed, and
//     refuse to promise) is reported but not held to this;
//   - a sampler checks every 50 ms that at most one node can acknowledge
//     writes (see [Report] for what "can" means in each mode);
//   - after the heal: all nodes on the same timeline, with the same
//     timeline history file and the same rows.
//
// A failing run prints the seed, the fault timeline and the path of the
// checker's HTML visualisation (porcupine), with the agents' logs.
package chaos
