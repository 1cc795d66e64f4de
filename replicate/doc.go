// Package replicate drives one local PostgreSQL server through every
// replication role change: init, clone, start and stop, follow, promote,
// fence and rewind, with status, replication slots and synchronous standbys.
//
//	inst, err := replicate.New(cfg) // cfg: Name, DataDir, passwords; see Config
//	err = inst.Clone(ctx, replicate.Source{Host: "10.0.0.1", Port: 5432, Slot: replicate.SlotName(cfg.Name)})
//	tli, err := inst.Promote(ctx)   // the standby is now a writable primary
//	err = inst.Fence(ctx)           // stop writes now (lost lease)
//	err = inst.Rewind(ctx, newPrimary) // rejoin as a standby of the new primary
//
// It is the only pgha package that runs PostgreSQL programs (postgres,
// initdb, pg_basebackup, pg_rewind, pg_controldata, and pgbackrest or a
// user's command to create a replica) and touches data
// directories. The HA manager (package ha) decides; an [Instance] acts.
// PostgreSQL 13 or newer is required.
//
// # Lifecycle
//
// [New] validates a [Config] and finds the binaries; it starts nothing.
// A node's data directory then comes from [Instance.Init] (a new cluster,
// left stopped) or [Instance.Clone] (a standby of a running server, left
// running). Clone tries Config.ReplicaMethods in order, each with its
// timeout: pg_basebackup from the source (the default), a pgBackRest
// restore from the backup repository then streaming, or a user's command
// (see [ReplicaMethod]); a failed method's directory is moved aside
// (DataDir.failed-<method>-<time>, never deleted) and the next one runs. [Instance.Start] runs `postgres -D DataDir` as a child process of
// this process, whose output is appended to Config.LogFile, and supervises
// it: the channel from [Instance.Exited] is closed the moment the
// postmaster exits and [Instance.ExitErr] says whether it crashed, so a crash is seen at once and the dead
// postmaster is always reaped (on machines whose PID 1 does not reap
// orphans, a detached postmaster that dies stays a zombie and blocks its own
// restart). A new Instance, e.g. after this process restarted, adopts a
// postmaster that still runs for its data directory instead of starting a
// second one; a stale postmaster.pid left by a dead process is removed.
// Stopping this process does not stop PostgreSQL.
//
// Role changes:
//
//   - [Instance.Promote]: standby to primary; returns the new timeline once
//     the server accepts writes.
//   - [Instance.Fence]: a primary stops accepting writes now: fast shutdown,
//     then immediate, then SIGKILL of all its processes, each bounded by
//     Config.FenceTimeout. Never a smart shutdown.
//   - [Instance.Follow]: a running standby streams from another [Source]
//     after a reload (no restart); a stopped server is configured as a
//     standby and started. [Instance.WaitStreaming] waits for streaming.
//   - [Instance.Rewind]: a stopped ex-primary is pg_rewound from the new
//     primary, configured as its standby and started. Safe when nothing
//     diverged, so it is the one way back for an ex-primary.
//
// On the primary, [Instance.EnsureSlot] and [Instance.DropSlot] keep one
// physical slot per member, and [Instance.SetSynchronousStandbys] sets
// synchronous_standby_names by reload. [Instance.Status] reports role,
// timeline, system identifier, LSNs and lag, standbys and the WAL receiver.
//
// # Files
//
// In DataDir, the Instance owns pgha.conf (node settings and
// Config.Parameters, included from postgresql.conf), pg_hba.conf (SCRAM
// only: the superuser locally, the replication role from
// Config.ReplicationNetworks, clients from Config.ClientNetworks) and
// pgha.pgpass (the replication password, mode 0600, read by the WAL
// receiver: primary_conninfo holds no password). They are rewritten at every
// start. No data is ever deleted (the one file removed is a stale
// postmaster.pid): Clone refuses a non-empty directory unless
// Config.ReplaceDataDir is set, and then renames it aside.
// When this process runs as root, PostgreSQL runs as Config.OSUser, which
// owns the directories it needs.
//
// # Errors
//
// Errors wrap sentinels to test with errors.Is ([ErrNotInitialized],
// [ErrDataDirNotEmpty], [ErrRunning], [ErrNotStandby], [ErrPortInUse],
// [ErrSystemIDMismatch], [ErrWrongOwner], [ErrAuthentication],
// [ErrRewindImpossible], [ErrNoBinaries], ...) or are typed: a
// [*ConfigError] names a bad field, a [*CommandError] a failed program with
// its output's tail, a [*ServerError] an operation on the server with the
// server log's tail, an [*ExitError] a postmaster that died, a
// [*RewindError] a rewind that failed (Impossible: clone afresh), a
// [*MethodError] a replica method that failed (and where its directory
// went). No error
// or log line contains a password.
//
// # Concurrency
//
// An Instance is safe for concurrent use. Init, Clone, Start, Stop, Restart,
// Follow, Promote and Rewind run one at a time. [Instance.Fence] never waits
// for them: it stops the postmaster whatever else is going on, and a Start
// that raced with it fails with [ErrFenced]. Status, slots and synchronous
// standby calls open their own connection and run alongside. Every
// operation honours its context: when it ends, the operation returns, and
// a started postmaster stays supervised. The postmaster's environment
// holds PGDATA (the data directory), so that archive_command and
// restore_command can name the node's own directory. The Instance runs one goroutine per
// postmaster it started or adopted; it ends when that postmaster exits.
//
// # Failure behaviour
//
//   - A postmaster that dies (crash, kill -9, PANIC) closes Exited at once;
//     ExitErr is an [*ExitError] with the log's tail. Start recovers it in
//     place (PostgreSQL runs crash recovery).
//   - A standby whose source diverged does not stream (PostgreSQL refuses a
//     timeline that forked before its position); WaitStreaming times out
//     with the log line that says so. Rewind fixes it.
//   - A rewind that cannot work (another cluster, WAL gone) is a
//     [*RewindError] with Impossible set; the data directory is unchanged
//     when the check fails before pg_rewind runs, and pg_rewind leaves it
//     usable for a new Clone (with Config.ReplaceDataDir).
//   - Fence is bounded: at most about 2×FenceTimeout plus the time to reap
//     the processes after SIGKILL. A fenced primary's open transactions
//     never commit; a commit in flight at the instant of the fence may.
package replicate
