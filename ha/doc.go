// Package ha is the HA manager: one per PostgreSQL node, embedded in a
// service beside its PostgreSQL, deciding with the other nodes through etcd
// who is primary.
//
// Quick start:
//
//	pg, _ := replicate.New(pgConfig)
//	mgr, err := ha.New(ha.Config{Cluster: "main", Node: "node1", Client: etcdClient, Instance: pg})
//	errc := make(chan error, 1)
//	go func() { errc <- mgr.Run(ctx) }() // bootstraps or joins, fails over, rejoins
//	err = <-errc // after ctx is cancelled: nil once it left cleanly, or why it stopped (ErrRefused)
//
// # Lifecycle
//
// [Manager.Run] loops every [Config.LoopInterval]: observe, decide, act.
// It also runs at once for an event that needs a decision: the leader key
// changed or vanished, a switchover, pause, sync or history record
// changed, another member's role, health, streaming, timeline or tags
// changed (and, while there is no leader, its positions), or this node's
// PostgreSQL exited; never for a change it made itself or for a member's
// heartbeat. The decision is a pure function of what was observed; one
// action runs per round.
//
// # An idle cluster stays idle
//
// A member record is written when its content changes in a way another
// node or a pool acts on (role, health, streaming, timeline, tags; the
// primary's write position whenever it moves; a standby's lag when it
// moved by 64 KiB), and otherwise once per LeaseTTL as a heartbeat. When
// the leader is lost every member writes a fresh record at once: only
// records written after the leader key was deleted count for candidate
// choice. Status queries run on one persistent session per node
// (replicate.Instance.Status), so a steady cluster makes no new PostgreSQL
// logins. TestIdleClusterIsIdle counts iterations, writes and logins on an
// idle three-node cluster; BenchmarkIdle in examples/agent measures the
// agents' CPU, RSS and the INSERT latency they cost.
// The first node to find the cluster uninitialized wins the election,
// runs initdb, and records the system identifier in the initialize key;
// the others clone from it and follow. A node whose data directory has
// another system identifier refuses to join: Run returns an error wrapping
// [ErrRefused]. Cancelling Run's context leaves the cluster cleanly: a
// leader stops its PostgreSQL with a fast shutdown (which sends its last
// WAL to the standbys) and resigns, so a standby takes over at once.
//
// # Failover
//
// With no leader, a standby campaigns only after checking that it is
// eligible (healthy, not nofailover, on the cluster's latest timeline,
// within MaxLagOnFailover of the leader's last published position, and in
// the sync set in synchronous mode) and that it is the best candidate:
// highest (timeline, LSN), then priority, then name, judged on member
// records written after the leader was lost. The order of etcd's campaign
// queue never decides. The winner's leader record is visible before it
// promotes, so driver pools stop writing to the old primary first.
//
// # Fencing and its limits
//
// A leader fences its PostgreSQL (fast shutdown, then immediate) FenceBudget
// before its term's ValidUntil whenever renewals have not succeeded, so the
// old primary has stopped accepting writes before any other node can be
// elected. Every leader-only etcd write (leader record, sync, history,
// initialize) is a transaction guarded by the term's create revision.
//
// A manager that is frozen (SIGSTOP, a debugger, a stall on a dead mount)
// or dead cannot fence its own PostgreSQL. [Config.FenceGuard] closes that
// gap: while the node leads, a guard process (this executable re-executed;
// main calls [RunFenceGuardIfRequested] first) holds the fencing deadline
// on the system-wide monotonic clock, extended only after renewals, and
// fences PostgreSQL itself when it passes; if the guard dies the manager
// fences at once. A frozen or paused whole machine or container freezes
// the guard too: [Config.Watchdog] covers that case (the leader arms
// /dev/watchdog before it can become writable, with a timeout that ends no
// later than its lease, and pets it only after renewals). Clients that use
// driver.Pool are protected in every case, because the pool follows the
// leader record. Synchronous mode bounds the damage (commits on the old
// primary wait for a standby that follows the new one and so never
// confirm).
//
// Every deadline is measured on the local monotonic clock, never from
// timestamps in etcd records: a step of the wall clock (NTP, date -s)
// neither ends a term early nor extends it (TestWallClockSteps, run with
// make test-clock, steps it ten minutes each way under a leader).
//
// # Rejoin
//
// A data directory that ran as a primary is rewound (pg_rewind) from the
// new leader before it follows, and so is a standby that replayed WAL of
// its timeline past the point where the leader's timeline forked off it
// (an asynchronous standby that had received more than the standby that
// was promoted): a node never streams on a diverged timeline. A rewind
// interrupted half-way leaves the directory unusable; with
// replicate.Config.ReplaceDataDir the node moves it aside and clones anew.
//
// # Operator requests
//
// [Reinit] (re-clone a standby from the leader; the old data directory
// is moved aside, never deleted), [Remove] (forget a departed member: its
// slot on the leader and a record left without a lease) and
// [ScheduleSwitchover] (a switchover the leader performs within one
// LoopInterval of a wall-clock time, by its own clock only) write an etcd
// record that the managers act on: the caller needs etcd only.
// [CancelSwitchover] and [WithdrawReinit] cancel; [ClusterStatus] shows
// what is pending.
//
// # Synchronous mode
//
// In [SyncOn] and [SyncStrict] the leader keeps the sync key and
// synchronous_standby_names in step: the sync key is widened before
// synchronous_standby_names names a new standby, and narrowed only after a
// standby has left it, so a standby that may lack an acknowledged commit
// is never promoted automatically. A crashed primary fails over at once.
//
// In [SyncQuorum] and [SyncQuorumStrict] each commit waits for any
// SyncStandbys of the streaming standbys (synchronous_standby_names =
// 'ANY k (...)'), and a standby is promoted only with the records of N - k
// + 1 of the N voters written after the leader was lost, and only if none
// of them is ahead of it. The leader changes k and the voters in an order
// that keeps this rule sound at every instant (docs/design.md has the
// table and the argument).
//
// # Asynchronous mode
//
// A crashed primary is restarted in place for up to PrimaryStartTimeout,
// then abandoned. A failover can lose the commits the promoted standby had
// not received: at most MaxLagOnFailover bytes of WAL, as measured against
// the leader's last published position.
//
// # Role-change hooks
//
// [Config.OnRoleChange] tells the embedding service when this node's
// role, as its member record publishes it, changes: a [RoleChange] with
// the old and new role, timeline, fencing token and reason, once for the
// first role after Run starts and then at each change. Its concurrency
// contract follows client-go's LeaderCallbacks:
//
//   - the hook runs on a goroutine of its own, one call at a time, in the
//     order of the changes; the loop only queues the change, so a hook
//     never delays a fence, a resignation or a promotion;
//   - a slow hook delays only later calls: up to 16 changes wait, then
//     the newest waiting change absorbs the next (RoleChange.Coalesced);
//   - its ctx is cancelled when the role it announces ends (the next
//     change) or when Run ends;
//   - a panic is recovered, logged and counted (pgha.ha.hook.panics); a
//     call running longer than LeaseTTL is logged and counted
//     (pgha.ha.hook.slow);
//   - Run leaves the cluster first, then cancels the hook's ctx and waits
//     for the call in progress before it returns.
//
// The change to primary is announced after the promotion, in the next
// round, so clients that follow the leader record may already be writing
// to this node: a hook moves a virtual IP or a DNS name after the fact,
// and must not be what keeps two writers apart.
//
// # Failsafe
//
// [Config.Failsafe] keeps the primary writable while etcd is lost as a
// whole: a leader that cannot renew its lease asks every member named in
// the failsafe record (POST /failsafe on [Manager.Handler], bearer
// [Config.PeerToken]) for a promise not to campaign, and extends its term
// to the earliest promise; a member promises only when it cannot reach
// etcd itself. A primary cut from etcd while the others reach it fences by
// its lease as without Failsafe. Needs APIURL and PeerToken on every
// member. The safety argument is in docs/design.md.
//
// # Cluster-wide configuration
//
// [ProposeConfig] asks the leader to make a [ClusterConfig] the cluster's
// configuration; the leader checks every PostgreSQL parameter against its
// own pg_settings and every HA setting against its rules, and writes the
// config record or rejects the proposal naming each bad setting and why
// ([ErrConfigRejected]); [ShowConfig] reads it. Every node applies it each
// round. Precedence: the HA settings in the record (MaxLagOnFailover,
// SyncMode, SyncStandbys) override every node's Config, since they must
// agree; PostgreSQL parameters go record < the record's node overrides <
// the node's replicate.Config.Parameters. Settings tied to one machine
// (port, listen addresses, paths, TLS files) and those pgha manages
// (synchronous_standby_names, primary_conninfo, primary_slot_name,
// cluster_name) can only be local. Reloadable parameters take effect
// within a loop; the others are published in [Member.PendingRestart]
// until the node restarts. max_connections, max_worker_processes,
// max_wal_senders, max_prepared_transactions and max_locks_per_transaction
// are applied in the order PostgreSQL requires: raised on the standbys
// first, lowered on the primary first. LeaseTTL and LoopInterval stay
// per node: keep them equal on every node.
//
// # Errors and logs
//
// Invalid configuration is a *[ConfigError] naming the field. Every
// decision is logged once with its reason when it changes; an action that
// fails is logged and retried. A role change that keeps failing (clone,
// rewind, follow, start, bootstrap) is retried with capped exponential
// backoff and full jitter, from LoopInterval up to 5 s, so that a node
// whose source is down neither runs pg_basebackup or pg_rewind against it
// nor logs a warning every round; a new leader is tried at once. Safety
// actions (fence, resign, promote) are never delayed.
//
// # Concurrency
//
// A Manager is run by one call of Run. [Manager.Status] is safe from any
// goroutine.
package ha
