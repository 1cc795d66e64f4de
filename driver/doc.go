// Package driver is a drop-in replacement for pgxpool.Pool that always
// writes to the cluster's current primary and follows promotions.
//
// Quick start:
//
//	pool, err := driver.New(ctx, "postgres://app:secret@/app?pgha_cluster=main&pgha_etcd=http://10.0.0.1:2379")
//	defer pool.Close()
//	_, err = pool.Exec(ctx, "insert into t values ($1)", 42) // goes to the primary
//	err = pool.Reader().QueryRow(ctx, "select count(*) from t").Scan(&n)
//
// [Pool] has every method of [pgxpool.Pool] with the same signature
// ([Pool.Exec], [Pool.Query], [Pool.QueryRow], [Pool.SendBatch],
// [Pool.Begin], [Pool.BeginTx], [Pool.CopyFrom], [Pool.Acquire], ...), so it
// satisfies the interfaces code already uses, sqlc's DBTX included.
//
// # Topology
//
// The pool learns who the primary is from one of two sources:
//
//   - etcd ([Config.Etcd] or [Config.EtcdEndpoints], plus [Config.Cluster]):
//     it watches the leader record and the member records that pgha's HA
//     manager keeps under /pgha/<cluster>/. Changes are pushed, so the pool
//     switches as soon as a new leader is published.
//   - a host list ([Config.Hosts], or a multi-host connection string): the
//     pool probes each host with pg_is_in_recovery() every
//     [Config.ProbeInterval]; the one writable host is the primary. This
//     serves clusters run by Patroni, CloudNativePG or by hand.
//
// With both, etcd decides; the hosts are probed only until etcd first
// answers.
//
// # Probes and fleet cost
//
// A probe is one query (recovery, transaction_read_only, WAL position) on
// a connection the pool keeps for it: at most one probe connection per
// node per pool, whatever the mode (application_name pgha-driver-probe,
// counted by [Pool.ProbeStat], outside MaxConns and [Pool.Stat]).
//
// In host mode every node is probed every [Config.ProbeInterval] (every
// 25 ms, backing off with jitter to 200 ms, while there is no primary or
// an operation waits): a pool holds one probe connection per node and
// runs one query per node per interval. With a single host and no etcd
// the pool presumes the host is the primary, as pgxpool does: it opens no
// probe connection while the host serves, checks each new connection
// (recovery, read-only) instead, and probes the host only after a failure
// or while an operation waits.
//
// In etcd mode the member records that pgha's HA managers publish give
// every node's role, health, timeline and replica lag (role, health and
// timeline the moment they change; a standby's lag within 64 KiB or one
// LeaseTTL heartbeat old), so no node is probed but the leader's, and
// that only to confirm it: when an operation failed on it or waits for a
// primary, when it refused a write, or when its leader record has said
// "not writable yet" for longer than ProbeInterval (normally its manager
// proclaims it writable first, pushed to every pool: a fleet of pools all
// connecting to a node while it promotes slows the promotion). The probe
// connection is closed as soon as it is not needed: a settled pool holds
// none and adds no backend and no query of its own to any node. When the
// member records' watch breaks or stays silent (etcd unreachable), every
// node is probed as in host mode until the watch delivers again, and the
// last leader record still names the primary.
//
// Measured by BenchmarkFleet (N pools, each with its own etcd client, in
// one process beside the embedded etcd, three ha managers and three
// PostgreSQL servers, on a 2-core machine shared with other work):
//
//	go test -run '^$' -bench BenchmarkFleet -benchtime 1x ./driver/
//
//	mode   N    extra backends  probe    background q/s      etcd watchers  first write of every pool after the
//	            per pool        q/s      (primary/standbys)  (per pool)     writable leader record (median/max)
//	none   0    -               -        25 / 15 / 15        5              -
//	etcd   1    0               0        25 / 15 / 15        6 (1)          46 / 46 ms
//	etcd   50   0               0        25 / 15 / 15        55 (1)         201 / 262 ms (other runs 46 / 47, 65 / 96)
//	etcd   200  0               0        25 / 15 / 15        205 (1)        754 / 976 ms (other runs 293 / 610 to 1014 / 1340)
//	hosts  50   3 (1 per node)  58/node  83 / 73 / 73        5 (0)          182 / 377 ms
//
// The background queries are the managers' (pg_stat_statements, while the
// application is idle); the pools add none in etcd mode. The pools' CPU
// and memory, measured as the process's less the N = 0 run's, are 0.06
// to 0.46 ms of CPU per second and 300 to 430 KiB per pool (an etcd
// client each), too noisy on that machine to say more. At N = 200 the
// first writes miss 100 ms: each pool must open and authenticate (SCRAM)
// a connection to the new primary, and 200 plain pgx connections opened
// at once from that process took 0.6 to 1.9 s in the same runs.
//
// An operation waits for a primary only while a failover can be in
// progress: a primary was known and is gone, or the leader record names
// a node that is not writable yet (or the pool has not heard from etcd, or
// from its first probe of every host, yet). Otherwise it fails at once,
// as with pgxpool, with an error matching [ErrNoPrimary] that wraps why:
// the dial, authentication or database error.
//
// # Lifecycle
//
// [New] or [NewWithConfig] validate the configuration ([ParseConfig]
// builds it from a connection string; it embeds the [pgxpool.Config], so
// cfg.MaxConns, cfg.BeforeConnect and the rest are set as with pgxpool)
// and start the topology watch; like pgxpool they do not wait for a connection. The pool
// keeps one pgxpool per node, created on first use, with the
// [Config] template's settings (sizes apply per node). [Pool.Close]
// stops the background goroutines and closes every connection; it waits for
// acquired connections to be released.
//
// # Hooks and tracers
//
// The pgxpool hooks of the [Config] (BeforeConnect, AfterConnect,
// PrepareConn or BeforeAcquire, AfterRelease, BeforeClose, ShouldPing,
// PingTimeout) run as pgxpool runs them, on every node pool, with the same
// contexts: the caller's for connections opened by an Acquire, and the
// values of the ctx given to [NewWithConfig] for the connections opened
// in the background (MinConns, MinIdleConns). On a write pool the pool's
// own checks come first: AfterConnect runs after the new connection was
// found out of recovery and not read-only (for a connection opened ahead
// of a promotion, at its first acquire, just before PrepareConn), and
// PrepareConn after the node was found to be still the primary. The
// acquire that opens a connection ahead does not run PrepareConn;
// AfterRelease and a tracer see it as any other. The probe connections (see
// [Pool.ProbeStat]) go through BeforeConnect and the dial settings of
// ConnConfig too, so that a password or token supplied by BeforeConnect
// and a custom DialFunc serve them as well; they run no other hook. A
// ConnConfig.Tracer sees each node's *pgxpool.Pool as the pool (in
// TraceAcquireStart and TraceRelease), never the *driver.Pool, and sees no
// probe.
//
// # Writes and failover
//
// Every operation of [Pool] goes to the primary. A new connection used for
// writes is checked with one query to be out of recovery and not read-only
// before use. In etcd mode, when the leader record names a new node that
// is not writable yet, the pool opens one connection to it ahead of its
// promotion (so that a fleet of pools does not authenticate all at once
// when it turns writable); that connection is checked the same way on its
// first acquire, before any use, and closed if the node never becomes the
// primary. When the primary changes, new operations go to the new one at
// once, and every connection to the old one, idle, in flight or held by
// the application, is cut (its socket closed): an operation in flight
// there fails at once with the typed errors below (one whose request was
// not written yet is retried on the new primary), and calls waiting in
// Acquire for a connection to the old one go back to choosing the
// primary. The same happens when the primary is found read-only, or dead:
// a probe (run when an operation failed on it or waits) cannot reach it;
// in etcd mode it is then withdrawn although the leader record names it,
// until a probe reaches it again. A connection that breaks is dropped alone,
// as in pgxpool; the node's idle connections are closed only once the node
// is known down (its probe failed), deposed or read-only. Connections to
// the primary use TCP keepalive and TCP_USER_TIMEOUT
// ([Config.WriteKeepAlive], [Config.WriteTCPUserTimeout]) so that a primary
// whose packets vanish is noticed in seconds; the dial of one is bounded
// by WriteTCPUserTimeout too. An operation issued while there is no
// primary waits up to [Config.FailoverTimeout] for one.
//
// How long a call can wait. FailoverTimeout is one budget per call: all
// its waits for a primary together (a retry after a failover included)
// stay within it. On top of it, a call can spend time on a node that
// stops answering (every packet lost, no reset) until the pool gives up
// on that node: until the pool sees the leader record move away (pushed
// by etcd; a watch on a dead etcd member is abandoned after 3 s of
// silence, see "Probes and fleet cost") or the kernel drops the
// connection (WriteTCPUserTimeout, or 4 × WriteKeepAlive while waiting
// for a reply), whichever comes first, plus ProbeTimeout when a probe
// must find the node dead. A call meets such a node at most twice (the
// first try and one retry), so, beyond the time the server itself
// spends running the statement and the caller's own deadline:
//
//	wait ≤ FailoverTimeout + 2 × (max(WriteTCPUserTimeout, 4 × WriteKeepAlive) + ProbeTimeout)
//
// which is 15 s + 2 × (12 s + 2 s) = 43 s with the defaults; in a
// failover the pool sees (the leader record moves while the old primary
// black-holes), a call returns within FailoverTimeout of that moment.
// TestBlackholedPrimaryFailover checks the latter with the TCP settings
// off (longest call 3.5 s with FailoverTimeout 5 s: the pool's etcd
// watch sat on a black-holed member until its 3 s silence bound). A
// connection the application holds (Acquire) is not released by the pool:
// it is cut, and Release destroys it.
//
// # Errors
//
// Outside a transaction, an operation that failed before anything was sent
// (see [SafeToRetry]), or that the node refused because it is read-only, is
// retried once on the primary. One whose connection broke after it was
// sent fails with [ErrOutcomeUnknown], unless its context was marked with
// [WithIdempotent]: then it is retried once. In a transaction, a statement
// broken by a failover fails with [ErrFailover], and so does the COMMIT of
// such a transaction; a COMMIT whose connection broke after it was sent
// fails with [ErrOutcomeUnknown]. No primary within FailoverTimeout is
// [ErrNoPrimary]. Errors that pgx defers to reading results (rows.Err of
// [Pool.Query], the results of [Pool.SendBatch]) are returned as pgx
// reports them. All are returned as an [*Error] that wraps the pgx error:
// errors.Is matches the sentinel, errors.As finds the *pgconn.PgError.
// In synchronous replication, PostgreSQL reports a commit whose wait for
// the standbys was cancelled on the server (pg_cancel_backend) as a
// success with a WARNING, although it may exist on the primary alone: Exec,
// QueryRow and Commit return it as an [*Error] matching [ErrOutcomeUnknown]
// and [ErrNotReplicated] instead (Query, SendBatch, CopyFrom and
// connections from Acquire do not check for it yet).
// A caller's cancelled or expired context is returned as the caller's error;
// it never counts against a node.
//
// # Outcome resolution
//
// With [Config.ResolveOutcome] (pgha_resolve_outcome=on), or per call
// with [WithResolveOutcome] or [WithOutcome], [Pool.Exec] and the COMMIT
// of a transaction from [Pool.Begin] do not stop at [ErrOutcomeUnknown]
// when their connection breaks after the COMMIT was sent. They learn,
// in the round trip of the commit itself, the transaction's id, the
// server's timeline and the start time of its postmaster: an autocommit
// Exec is sent as one pipeline "SELECT pg_current_xact_id(), ...; Flush;
// the statement; Sync" (the id is assigned first, so it leaves the server
// before the statement runs), and a COMMIT as "SELECT
// pg_current_xact_id_if_assigned(), ...; Flush; COMMIT; Sync" (the
// answer leaves the server before the COMMIT runs). When the connection
// breaks, the pool waits (up to [Config.FailoverTimeout]) for a primary
// and asks it:
//
//   - the same server life (same timeline, same postmaster start): its
//     pg_xact_status is the answer (asked again while "in progress");
//   - a later timeline (a failover): the cluster's timeline history in
//     etcd records, for each promotion, the first transaction id of the
//     new timeline. An id at or above the first id of any timeline that
//     forked after the transaction's did not commit in the surviving
//     history, whatever pg_xact_status says of it: the new timeline
//     assigns those ids again, to other transactions (see docs/design.md,
//     "Outcome resolution"). Below it, pg_xact_status is the answer.
//
// When the id never arrived but the server ended the stream in order (end
// of file, or a FATAL message) before it, the server never sent it and so
// never ran what follows it in the pipeline: not committed, without
// asking (TCP delivers every byte the server wrote before its FIN or its
// last message; a reset or a connection this side closed proves nothing).
//
// The call then returns nil (committed: the Exec's command tag is empty,
// its rows-affected count went with the connection; [Outcome.Resolved]
// tells such a success from an ordinary one), an [*Error] of kind
// [ErrNotCommitted] (nothing was kept: run it again), or still
// [ErrOutcomeUnknown] with the reason in the error and in
// [Outcome.Reason]: the id never arrived and the connection was reset
// or cut by the pool (a deposed primary's connections are closed), the
// primary restarted on the same timeline (a
// crash restart in place reuses ids that were never flushed), host mode
// after a failover (no history), a history entry without first_xid
// (written before pgha had it), or no primary within FailoverTimeout.
//
// Costs and limits. Resolution off, nothing changes. On: each Exec and
// COMMIT carries one more small query in the same round trip, answered
// in a packet of its own, and a non-blocking peek at the socket (Linux)
// before it is sent (a connection its server already closed, or one with
// an unsolicited error pending, is then retried on the primary instead of
// ending unknown). BenchmarkResolveOverhead measured, on a loaded 2-core
// test machine, an autocommit insert at 730 µs instead of 465 µs and a
// transaction (insert, COMMIT) at 761 µs instead of 583 µs (medians).
// An Exec always gets a transaction id (even one that
// writes nothing, which then writes a commit record); an Exec's arguments
// are encoded as pgx's QueryExecModeExec does (types from the Go values,
// no prepared statement), and its SQL must be a single statement (one
// that refuses to run in a transaction block, such as VACUUM, is run
// alone, unresolved). Query,
// QueryRow, SendBatch, CopyFrom, nested transactions (savepoints) and
// connections from Acquire are not resolved. [WithIdempotent] retries
// take precedence over resolution for an Exec.
//
// # Reads
//
// Reads are opt-in: [Pool.Reader] routes Query, QueryRow, SendBatch and a
// read-only Begin by [Config.ReadMode] to replicas within
// [Config.MaxReplicaLag], balanced by [Config.ReadBalance], falling back to
// the primary in [ReadPreferReplicas] mode. In etcd mode the replicas and
// their lag are those of the member records (healthy replicas; the lag
// as published, see above); in host mode, those of the probes. For read-your-writes, take
// [Pool.CausalToken] after writing and read with a context from
// [ContextWithCausalToken]: a replica serves the read only once it has
// replayed past the token. When none has, the read asks the eligible
// replicas every 5 ms for up to [Config.CausalWait] (50 ms by default;
// the pgha.driver.causal_wait.duration histogram records the waits) and
// then goes to the primary. Across services, the token travels in the
// context's OpenTelemetry baggage ([BaggageKey]), or as an HTTP header or
// gRPC metadata with package causal's middleware, transport and
// interceptors (TestTwoServices there: a replica whose replay resumed 30
// ms into the wait served the read after 39 ms; with replay paused, the
// primary served it after the 300 ms wait).
//
// # database/sql
//
// Package [github.com/pgha/pgha/driver/stdlib] opens a *sql.DB over a
// Pool, as pgx's stdlib.OpenDBFromPool does over a *pgxpool.Pool, for
// code written against database/sql:
//
//	pool, err := driver.New(ctx, connString)
//	db := stdlib.OpenDBFromPool(pool)              // writes and reads on the primary
//	reads := stdlib.OpenDBFromReader(pool.Reader()) // reads routed by pgha_read_mode
//
// Each connection of the *sql.DB is one acquired from the pool, so it is
// to the primary of the moment; one to a node that stopped being the
// primary is never reused (IsValid reports false, ResetSession returns
// driver.ErrBadConn). A statement that cannot have been applied is retried
// by database/sql on a new connection; the other errors are this
// package's, matched with errors.Is as above ([ErrOutcomeUnknown] for an
// autocommit statement or COMMIT whose outcome is unknown, [ErrFailover]
// in a *sql.Tx or on an *sql.Conn broken by a failover, [ErrNoPrimary]).
// The connections, rows, values and column types are pgx's stdlib's own,
// over the node pools' connections.
//
// Libraries built on database/sql take the *sql.DB (none of them is a
// dependency of this module):
//
//	sqlxDB := sqlx.NewDb(db, "pgx")                                 // jmoiron/sqlx
//	gormDB, err := gorm.Open(postgres.New(postgres.Config{Conn: db})) // gorm.io/driver/postgres
//	entClient := ent.NewClient(ent.Driver(entsql.OpenDB(dialect.Postgres, db)))
//	bunDB := bun.NewDB(db, pgdialect.New())                         // uptrace/bun
//
// A context marked with [WithIdempotent] lets database/sql retry an
// autocommit statement whose connection broke after it was sent; mark only
// statements that are safe to apply twice. An ORM's own retry logic sees
// the same typed errors.
//
// # Concurrency
//
// [Pool] and [Reader] are safe for concurrent use. The pool owns one
// goroutine that probes the nodes when they need it (one more per node
// during a probe round, each on its own connection, application_name
// pgha-driver-probe) and, with etcd, one that watches the leader and member
// records (one etcd watcher per pool, on the cluster's prefix) and one
// that reads the leader key when the probes ask: when the leader's node
// cannot be reached and another node answers writable, the leader key is
// read at once (a linearizable Get, 1 s, tried on up to three members)
// instead of waiting for a watch that may sit on a dead etcd member; Close
// stops and joins them. The query path takes no lock of the pool's and
// adds no allocation to Exec and Query but the acquire's cancellation on a primary change (a child
// context and its registration with the node's, a few small objects per
// operation): the primary is an atomic pointer. QueryRow and Begin
// allocate one more small object each, to retry or classify errors.
//
// # Failover semantics
//
// What a caller sees, by kind of call (every wait within FailoverTimeout):
//
//	call              crash failover                      planned switchover       etcd unreachable
//	Exec, QueryRow    unsent: runs on the new primary;    held up to the drain     last known primary kept;
//	(autocommit)      sent: ErrOutcomeUnknown (resolved   time, then runs on the   failsafe off: it fences,
//	                  with pgha_resolve_outcome: nil or   new primary: no error    calls wait, ErrNoPrimary;
//	                  ErrNotCommitted)                                             failsafe on: calls go on
//	Query             as Exec until the first row;        as Exec                  as Exec
//	                  then rows.Err() (pgx's error)
//	statement in Tx   ErrFailover (run it again           runs if the Tx ends      as Exec; after the
//	                  from Begin)                         within the drain time,   fence, ErrFailover
//	                                                      else ErrFailover
//	Commit            unsent: ErrFailover; sent:          as a statement           as a statement
//	                  ErrOutcomeUnknown (or resolved)
//	SendBatch         not retried: the results' errors    held like Exec           as Exec
//	CopyFrom          retried if nothing was sent, else   held like Exec           as Exec
//	                  ErrOutcomeUnknown
//
// # Failure behaviour
//
//   - Primary dies, a standby is promoted: operations wait (up to
//     FailoverTimeout) and resume on the new primary; at most the operations
//     in flight fail, with the typed errors above.
//   - Planned switchover (pghactl switchover, ha.Switchover): the pool
//     sees the request in etcd and holds new operations (up to
//     [Config.SwitchoverDrain], within FailoverTimeout) instead of starting
//     them on the old primary; the old primary waits for the transactions
//     open on it to end (ha.Config.SwitchoverDrain) before it stops; the
//     held operations then run on the new primary. Transactions shorter
//     than the drain time see a pause, not an error; longer ones are
//     terminated at the bound and fail with the typed errors below.
//     Calls already queued for a connection to the old primary are sent
//     back to wait too. BenchmarkSwitchover (32 clients, 3 switchovers
//     each): 0 errors per switchover with short transactions (longest
//     operation 526 ms) and with 1 s transactions (4.1 s, queueing for
//     the pool's 4 connections included); with pgha_switchover_drain=off,
//     3.7 and 4.3 errors per switchover.
//   - etcd unreachable from the client: the pool keeps the last known
//     primary while it accepts writes. Once that primary fences itself (it
//     stops, or turns read-only), its refusal (SQLSTATE 25006, or recovery
//     on a new connection) withdraws it and writes wait for a primary.
//   - Leader or member record that does not parse: logged and treated as
//     absent; the pool never panics on what it reads from etcd.
//   - The pool never writes to a standby: a connection used for writes is
//     to the current leader and reported pg_is_in_recovery() = false and
//     transaction_read_only = off when it was opened.
//
// The pool protects its own writes. A primary that is frozen or cut off
// cannot fence itself in time for clients that do not follow the leader
// record (anything but this pool); see the pgha package documentation on
// watchdogs and synchronous mode.
//
// # Connection string
//
// Everything [pgxpool.ParseConfig] accepts, plus these keys, removed before
// the parameters are sent to the server:
//
//	pgha_cluster           cluster name (with pgha_etcd)
//	pgha_etcd              comma-separated etcd endpoints, e.g. http://10.0.0.1:2379,http://10.0.0.2:2379
//	pgha_root              etcd key root (default /pgha)
//	pgha_failover_timeout  how long to wait for a primary (default 15s)
//	pgha_probe_interval    how often to probe nodes (default 1s, at least 10ms)
//	pgha_probe_timeout     bound on one probe (default 2s)
//	pgha_read_mode         primary (default), replicas or prefer-replicas
//	pgha_read_balance      round-robin (default) or least-busy
//	pgha_max_replica_lag   bytes, e.g. 16MB (default), 65536, or -1 for no limit
//	pgha_write_keepalive   TCP keepalive of connections to the primary (default 3s, or off)
//	pgha_write_tcp_user_timeout  TCP_USER_TIMEOUT of connections to the primary, Linux (default 10s, or off)
//	pgha_switchover_drain  how long new work waits for a planned switchover (default 2s, or off)
//	pgha_causal_wait       how long a read with a causal token waits for a replica (default 50ms, or off)
//	pgha_resolve_outcome   on or off (default): resolve commits whose connection failed (see Outcome resolution)
//
// Without pgha_etcd, the hosts of a multi-host string are the host list:
//
//	postgres://app:secret@pg1:5432,pg2:5432,pg3:5432/app?pgha_read_mode=prefer-replicas
//
// With pgha_etcd, the leader and member records give each node's address;
// hosts written in the string are only the list used until etcd first
// answers (a pool that starts while etcd is unreachable still finds the
// primary):
//
//	postgres://app:secret@pg1:5432,pg2:5432/app?pgha_cluster=main&pgha_etcd=http://10.0.0.1:2379
//
// An unknown pgha_ key or a bad value is a *pgconn.ParseConfigError naming
// the key.
//
// # Telemetry
//
// With [Config.TracerProvider] set (and no tracer in the template), queries
// are traced by otelpgx: one span per query, batch and copy, as a child of
// the span in the caller's context (none without one). With
// [Config.MeterProvider] set, the pool reports pgha.driver.operations
// (by node and role), pgha.driver.failovers,
// pgha.driver.primary_wait.duration (seconds) and pgha.driver.replica.lag
// (bytes). Logs go to [Config.Logger].
package driver
