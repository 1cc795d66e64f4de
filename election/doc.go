// Package election elects one leader per etcd key prefix, with a fencing
// token and a lease deadline a leader can bet data on.
//
// Quick start:
//
//	e, err := election.New(election.Config{Client: cli, Prefix: "/pgha/main/leader"})
//	term, err := e.Campaign(ctx, []byte("node1"))       // blocks until leader
//	defer term.Resign(context.WithoutCancel(ctx))
//	// lead while time.Now().Before(term.ValidUntil()); stop when <-term.Done()
//
// # Lifecycle
//
// An [Elector] holds configuration and owns no goroutines. [Elector.Campaign]
// creates a key on a fresh etcd lease, waits until every key created before
// it is gone, verifies that its own key and lease survived the wait, and
// returns a [Term]. The term renews its lease in the background until it
// ends: on [Term.Resign], when etcd reports the lease gone, when its key is
// deleted, or when no renewal succeeded before [Term.ValidUntil]. Call
// Resign when done with a term, even one that ended on its own.
// [Elector.Observe] and [Elector.Leader] watch and read the leader.
//
// # Who leads
//
// The leader is the candidate key (Prefix + "/" + its own non-zero lease
// ID in hex) with the lowest create revision. [LeaderKV] is that rule, and
// the only place it is written: code that reads the election's keys itself
// (a cache of the whole cluster prefix, a Get) decides with it too.
//
// # Fencing
//
// [Term.ValidUntil] is the send time of the last successful renewal plus the
// TTL, minus [Config.SafetyMargin], on the local monotonic clock. The etcd
// server measures the TTL from when it receives a renewal, which is later,
// so no other candidate can be elected before ValidUntil. [Term.Done]
// closes no later than ValidUntil (20 ms before it, to absorb timer
// latency) when renewals stop succeeding. This differs from etcd's
// concurrency.Session, whose Done fires only after the server has expired
// the lease, too late to fence.
//
// [Term.Token] is the leader key's create revision. It is strictly greater
// for every later term, unlike lease IDs. Every leader-only etcd write must
// be a transaction guarded by [Term.IsOwner], so that a leader that was
// paused and woke up with a stale view cannot write.
//
// # Errors
//
// [Term.Err] says why a term ended: [ErrResigned], [ErrLeaseLost],
// [ErrLeaseExpired] or [ErrKeyDeleted]. [Elector.Leader] returns
// [ErrNoLeader]; [Term.Proclaim] returns an error matching [ErrNotLeader]
// once the term has ended. Invalid configuration is a *[ConfigError] naming
// the field. Campaign errors wrap the etcd error or the context's error.
//
// # Concurrency
//
// Elector and Term are safe for concurrent use. Each Term owns two
// goroutines (renewal and key watch), stopped and joined by Resign; each
// Observe call owns one, stopped by its context.
//
// # Behaviour under failure
//
//   - etcd unreachable from the leader (network cut, quorum lost): renewals
//     fail, the term ends with [ErrLeaseExpired] by ValidUntil, and the
//     lease expires on the server no earlier than that.
//   - etcd leader change: renewals are retried; a lease survives a leader
//     change (etcd extends it), so the term usually survives too.
//   - A candidate whose lease expired while it waited in the queue fails
//     its campaign instead of winning with a dead lease.
//   - A failed or cancelled campaign revokes its lease, which deletes its
//     key; when etcd cannot be reached, the lease expires within LeaseTTL.
//   - Keys under the prefix that are not lease-bound candidate keys are
//     logged once and ignored; they never block or crash the election.
//   - A frozen process (SIGSTOP) cannot act on Done; whatever it protects
//     must also be fenced from outside (a watchdog, or clients that follow
//     [Elector.Observe]).
//
// # Telemetry
//
// With [Config.TracerProvider] set, each campaign is a span from its start
// to the end of its term, with "won", "lost", "resigned" or "failed"
// events. With [Config.MeterProvider] set, the counter
// pgha.election.transitions counts won/lost/resigned events and the
// histogram pgha.election.acquire.duration records time to win (seconds).
package election
