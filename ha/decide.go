package ha

import (
	"fmt"
	"time"

	"github.com/pgha/pgha/internal/keyspace"
)

// This file is the pure half of the HA loop: observe → decide → act.
// decide takes plain values and returns one action; the executor in
// loop.go carries it out. Nothing here does I/O or reads a clock.

// local is what this node knows of its own PostgreSQL.
type local struct {
	Initialized bool // the data directory holds a cluster
	Running     bool // the postmaster runs and answers
	InRecovery  bool // standby (or starting up)
	Timeline    uint32
	SystemID    uint64
	// WriteLSN on a primary; ReceiveLSN/ReplayLSN on a standby.
	WriteLSN, ReceiveLSN, ReplayLSN uint64
	// Streaming: the WAL receiver streams from Upstream.
	Streaming bool
	// NotStreamingSince is when this running standby was first seen not
	// streaming (zero while it streams).
	NotStreamingSince time.Time
	// RestartDue: a restart request for this node waits to be carried
	// out; RestartDone: it has been (PostgreSQL restarted since).
	// ReloadDue: a reload request waits.
	RestartDue, RestartDone, ReloadDue bool
	// FailsafeHoldUntil: this writable former leader lost its lease under
	// failsafe and may campaign again until then (zero otherwise).
	FailsafeHoldUntil time.Time
	// PromisedUntil: this node promised a failsafe leader not to campaign
	// or promote before then (zero if never).
	PromisedUntil time.Time
	// Following is the leader node this standby was last pointed at.
	Following string
	// WasPrimary: this data directory ran as a primary since it was last
	// cloned or rewound, so it may hold WAL no other node has.
	WasPrimary bool
	// CrashedAt is when the postmaster exited unexpectedly while this node
	// led; zero otherwise.
	CrashedAt time.Time
	// RewindIncomplete: an interrupted pg_rewind left the data directory
	// unusable; only a new clone helps.
	RewindIncomplete bool
	// StreamingStandbys are the standbys streaming from this server
	// (pg_stat_replication state "streaming"), and SyncStandbyNames its
	// synchronous_standby_names in effect.
	StreamingStandbys []string
	SyncStandbyNames  string
	// StandbyFlush is each streaming standby's flush position.
	StandbyFlush map[string]uint64
	// RewindFailures counts the rewinds that failed in a row, the first
	// of them at RewindFailingSince; RewindImpossible: the last one said
	// only a new clone helps.
	RewindFailures     int
	RewindFailingSince time.Time
	RewindImpossible   bool
	// ReinitCloned is the etcd revision of the reinit request this node
	// has re-cloned for (0 if none): it is complete once the node
	// streams.
	ReinitCloned int64
	// Diverged: this standby replayed WAL of its timeline past the point
	// where a newer timeline forked off it; it can follow that timeline
	// only after a rewind (replicate.Status.Diverged).
	Diverged bool
}

// position returns the WAL position used to rank candidates.
func (l local) position() uint64 { return max(l.ReceiveLSN, l.ReplayLSN, l.WriteLSN) }

// member is a member record with the etcd revision it was written at.
type member struct {
	Rec    keyspace.MemberRecord
	ModRev int64
	// Lease is the etcd lease the record is attached to; 0 for none (not
	// written by a manager, which always uses its own lease).
	Lease int64
}

// removal is an operator's remove request, with the etcd revision it was
// written at.
type removal struct {
	Rec    keyspace.RemoveRecord
	ModRev int64
}

// policy is the part of Config that decisions read: decide and the other
// pure functions see these settings only, never the etcd client, the
// instance or the logger.
type policy struct {
	SyncMode            SyncMode
	SyncStandbys        int
	MaxLagOnFailover    int64
	FenceBudget         time.Duration
	PrimaryStartTimeout time.Duration
	LoopInterval        time.Duration
	DepartedSlotTTL     time.Duration
	NoFailover          bool
	Priority            int
	// ReplaceDataDir mirrors the Instance's ReplaceDataDir: a data
	// directory may be moved aside and cloned anew.
	ReplaceDataDir bool
	// RecloneOnRewindFailure: see Config.
	RecloneOnRewindFailure bool
	// Cluster and KeyRoot name the cluster in the pghactl commands that
	// hints give (reinitCommand).
	Cluster, KeyRoot string
}

// policy returns the settings decisions read, from a Config with its
// defaults set.
func (c Config) policy() policy {
	return policy{SyncMode: c.SyncMode, SyncStandbys: c.SyncStandbys, MaxLagOnFailover: c.MaxLagOnFailover,
		FenceBudget: c.FenceBudget, PrimaryStartTimeout: c.PrimaryStartTimeout, LoopInterval: c.LoopInterval,
		DepartedSlotTTL: c.DepartedSlotTTL, NoFailover: c.NoFailover, Priority: c.Priority, ReplaceDataDir: c.replaceDataDir,
		RecloneOnRewindFailure: c.RecloneOnRewindFailure, Cluster: c.Cluster, KeyRoot: c.KeyRoot}
}

// observation is everything decide looks at.
type observation struct {
	Now    time.Time
	Node   string
	Policy policy

	Local local

	// Leader is the leader record, nil when there is no leader.
	Leader *keyspace.LeaderRecord
	// Leading: this node holds a live term; ValidUntil is its deadline.
	Leading    bool
	ValidUntil time.Time

	Members map[string]member
	// ViewRev is the etcd revision the cluster view reflects.
	ViewRev int64
	// LeaderGoneRev is the etcd revision at which the leader key was
	// deleted (0 while there is a leader). Only member records written
	// after it are fresh enough to choose a candidate.
	LeaderGoneRev int64
	// LeaderGoneAt is when this node saw the leader go (local clock).
	LeaderGoneAt time.Time
	// LastLeaderLSN is the last write position the leader published, 0 if
	// never seen.
	LastLeaderLSN uint64

	Initialized bool   // the initialize key exists
	SystemID    uint64 // from the initialize key; 0 if absent
	History     []keyspace.HistoryEntry
	SyncSet     []string // from the sync key
	SyncPresent bool
	// SyncQuorum is the sync record's k in quorum mode (0 otherwise).
	SyncQuorum int
	Paused     bool
	// Switchover is a pending planned switchover, nil if none;
	// SwitchoverRev is the etcd revision it was written at.
	Switchover    *keyspace.SwitchoverRecord
	SwitchoverRev int64
	// Failsafe is the failsafe record, nil if none: while it exists only
	// the nodes it names may campaign.
	Failsafe *keyspace.FailsafeRecord
	// Config is the config record, nil if none; ConfigProposal a proposed
	// one (with the revision it was written at), nil if none.
	Config            *keyspace.ConfigRecord
	ConfigProposal    *keyspace.ConfigProposal
	ConfigProposalRev int64
	// Restart is a restart request for this node, nil if none, with the
	// revision it was written at.
	Restart    *keyspace.RestartRequest
	RestartRev int64
	// ScheduledRestarts are the scheduled restart requests (At set) of
	// every node: node → At.
	ScheduledRestarts map[string]time.Time
	// Reinits are the pending reinit requests: node → the etcd revision
	// the request was written at.
	Reinits map[string]int64
	// Removals are the remove requests by node (the leader carries them
	// out).
	Removals map[string]removal

	ignored []string // records that did not decode (ClusterStatus)
}

type actionKind int

const (
	actWait actionKind = iota
	actBootstrap
	actClone
	actStart
	actFollow
	actRewind
	actCampaign
	actPromote
	actLead // leader heartbeat: publish writable, keep slots and sync set
	actRestartPrimary
	actFence
	actResign
	actRefuse
	actReclone // move the data directory aside and clone afresh
	actReinit  // the same, asked by an operator (a reinit request)
	// actSwitchoverDue: a scheduled switchover is due; the leader rewrites
	// it as an immediate one (without At), which it then performs.
	actSwitchoverDue
	actRestart     // restart PostgreSQL on request, in the same role
	actRestartDone // remove a restart request already satisfied
	actReload      // reload PostgreSQL's configuration on request
)

var actionNames = [...]string{"wait", "bootstrap", "clone", "start", "follow", "rewind", "campaign", "promote", "lead", "restart-primary", "fence", "resign", "refuse", "reclone", "reinit", "switchover-due", "restart", "restart-done", "reload"}

func (k actionKind) String() string { return actionNames[k] }

// action is decide's output: what to do and why.
type action struct {
	Kind   actionKind
	Reason string
	// Leader is the node to clone, follow or rewind from.
	Leader *keyspace.LeaderRecord
}

func (a action) String() string { return a.Kind.String() + ": " + a.Reason }

func act(k actionKind, format string, args ...any) action {
	return action{Kind: k, Reason: fmt.Sprintf(format, args...)}
}

// decide returns the one action this node should take now.
func decide(o observation) action {
	return restartAction(o, decideRole(o))
}

// decideRole is decide without restart requests.
func decideRole(o observation) action {
	l := o.Local

	// Safety first: a node that is not leading must never accept writes,
	// except a failsafe leader whose lease etcd lost while every member's
	// promise still runs: it campaigns again before they run out (its
	// fencer fences then otherwise).
	if !o.Leading && l.Running && !l.InRecovery && l.Initialized {
		if o.Now.Before(l.FailsafeHoldUntil) {
			return act(actCampaign, "the lease was lost while every member's failsafe promise runs: campaigning again, still writable")
		}
		return act(actFence, "PostgreSQL is a writable primary but this node holds no leadership")
	}

	if o.Leading {
		return decideLeader(o)
	}

	if !l.Initialized {
		switch {
		case !o.Initialized:
			return act(actBootstrap, "the cluster is not initialized")
		case o.Leader != nil && o.Leader.Writable && o.Leader.Node != o.Node:
			a := act(actClone, "empty data directory; cloning from leader %s", o.Leader.Node)
			a.Leader = o.Leader
			return a
		default:
			return act(actWait, "empty data directory; waiting for a writable leader to clone from")
		}
	}
	if o.SystemID != 0 && l.SystemID != 0 && l.SystemID != o.SystemID {
		return act(actRefuse, "data directory has system identifier %d but the cluster's is %d: it belongs to another cluster", l.SystemID, o.SystemID)
	}

	if o.Leader != nil && o.Leader.Node != o.Node {
		return decideFollower(o)
	}
	if o.Leader != nil && o.Leader.Node == o.Node {
		// Our own key without a live term: a previous run of this node
		// led; its lease has not expired yet. Wait for it.
		return act(actWait, "a leader key of this node from an earlier term is still held; waiting for it to expire")
	}
	return decideCandidate(o)
}

func decideLeader(o observation) action {
	l := o.Local
	if !o.Now.Before(o.ValidUntil.Add(-o.Policy.FenceBudget)) {
		return act(actFence, "lease not renewed in time: %v left before ValidUntil", o.ValidUntil.Sub(o.Now))
	}
	if sw := o.Switchover; sw != nil && sw.From == o.Node {
		// A scheduled one is due by this leader's clock only: candidates
		// never read At. It becomes an immediate request first, so that
		// every candidate defers to its target as for any switchover.
		c := switchoverTarget(o)
		switch {
		case c == "":
		case sw.At.IsZero():
			return act(actResign, "planned switchover to %s", c)
		case !o.Now.Before(sw.At):
			return act(actSwitchoverDue, "scheduled switchover to %s due (at %s)", c, sw.At.Format(time.RFC3339))
		}
	}
	if !l.Running {
		if o.Policy.SyncMode != SyncOff && !l.CrashedAt.IsZero() {
			return act(actResign, "PostgreSQL crashed on the leader in synchronous mode: failing over at once")
		}
		if !l.CrashedAt.IsZero() && o.Now.Sub(l.CrashedAt) >= o.Policy.PrimaryStartTimeout {
			return act(actResign, "PostgreSQL did not restart within PrimaryStartTimeout (%v)", o.Policy.PrimaryStartTimeout)
		}
		return act(actRestartPrimary, "PostgreSQL is down on the leader: restarting it in place")
	}
	if l.InRecovery {
		return act(actPromote, "this node leads and its PostgreSQL is a standby")
	}
	return act(actLead, "leading")
}

func decideFollower(o observation) action {
	l := o.Local
	ld := o.Leader
	follow := func(k actionKind, format string, args ...any) action {
		a := act(k, format, args...)
		a.Leader = ld
		if k == actRewind {
			a = rewindOrReclone(o, a)
		}
		return a
	}
	if rev := o.Reinits[o.Node]; rev != 0 && rev != l.ReinitCloned {
		// An operator asked: whatever state the directory is in, it is
		// moved aside and cloned afresh. Only from a writable leader, as
		// for a rewind.
		if !ld.Writable {
			return act(actWait, "reinit requested; waiting for leader %s to be writable to clone from it", ld.Node)
		}
		return follow(actReinit, "reinit requested by an operator: moving the data directory aside and cloning from leader %s", ld.Node)
	}
	if l.RewindIncomplete {
		if !o.Policy.ReplaceDataDir {
			return act(actWait, "an interrupted rewind left the data directory unusable: re-clone it: run '%s' (or set replicate.Config.ReplaceDataDir, agent --pg-replace-data-dir, to let pgha move it aside and clone)", reinitCommand(o))
		}
		if !ld.Writable {
			return act(actWait, "an interrupted rewind left the data directory unusable; waiting for leader %s to be writable to re-clone from it", ld.Node)
		}
		return follow(actClone, "an interrupted rewind left the data directory unusable: moving it aside and cloning from leader %s", ld.Node)
	}
	if l.WasPrimary {
		if !ld.Writable {
			// Its record says it is still being promoted: rewound from a
			// standby, this directory would not start on the leader's
			// new timeline ("requested timeline does not contain
			// minimum recovery point").
			return act(actWait, "this data directory ran as a primary; waiting for leader %s to be writable before rewinding from it", ld.Node)
		}
		return follow(actRewind, "this data directory ran as a primary; rewinding from leader %s before following", ld.Node)
	}
	if !ld.Writable {
		// The leader is being promoted. A running standby repoints to it
		// already (cascading from a standby is allowed, and the switch to
		// its new timeline is followed), so that in synchronous mode the
		// new primary's first commits find a standby connected.
		if l.Running && l.InRecovery && l.Following != ld.Node {
			return follow(actFollow, "repointing early to leader %s, which is being promoted", ld.Node)
		}
		return act(actWait, "leader %s is not writable yet", ld.Node)
	}
	if l.Running && l.InRecovery && l.Diverged && ld.Timeline > l.Timeline && l.Following == ld.Node {
		// It will never switch to the leader's timeline by itself: no
		// point waiting for the grace below.
		return follow(actRewind, "diverged: replayed WAL of timeline %d past the point where leader %s's timeline %d forked off it: rewinding", l.Timeline, ld.Node, ld.Timeline)
	}
	if l.Running && l.InRecovery && ld.Timeline > l.Timeline && !l.Streaming && l.Following == ld.Node &&
		!l.NotStreamingSince.IsZero() && o.Now.Sub(l.NotStreamingSince) >= rewindGrace(o.Policy) {
		// A standby needs a moment to reconnect and switch timelines after
		// a promotion; only one that stays stuck has diverged.
		return follow(actRewind, "stuck on timeline %d while leader %s is on %d for %v: rewinding", l.Timeline, ld.Node, ld.Timeline, o.Now.Sub(l.NotStreamingSince))
	}
	if l.Following != ld.Node || !l.Running {
		return follow(actFollow, "following leader %s", ld.Node)
	}
	return act(actWait, "streaming from leader %s", ld.Node)
}

// decideCandidate: there is no leader. Campaign only if this node is
// eligible and the best candidate among fresh member records.
func decideCandidate(o observation) action {
	if o.Now.Before(o.Local.PromisedUntil) {
		return act(actWait, "no leader; promised the failsafe leader not to campaign for another %v", o.Local.PromisedUntil.Sub(o.Now).Round(time.Millisecond))
	}
	if o.Failsafe != nil && !o.Failsafe.Has(o.Node) {
		// Also a forced failover: a failsafe leader did not ask this node.
		return act(actWait, "no leader; not named in the failsafe record of %s: only its members may lead while it exists (a leader with Failsafe off removes it)", o.Failsafe.Leader)
	}
	if sw := o.Switchover; sw != nil && sw.At.IsZero() && (o.LeaderGoneRev == 0 || o.Now.Sub(o.LeaderGoneAt) < switchoverTimeout) {
		// (A scheduled switchover not yet made immediate by its leader
		// names no one: the leader went before it was due.)
		// A planned switchover (the leader resigned for it) or a manual
		// failover names the node to promote.
		if sw.To != "" && sw.To != o.Node {
			return act(actWait, "no leader; %s to %s pending", switchoverKind(sw), sw.To)
		}
		if sw.To == o.Node {
			if sw.Force {
				return act(actCampaign, "no leader; forced manual failover to this node")
			}
			if ok, why := eligible(o, o.Node, o.Local); !ok {
				return act(actWait, "no leader; %s to this node, but not eligible: %s", switchoverKind(sw), why)
			}
			return act(actCampaign, "no leader; %s to this node", switchoverKind(sw))
		}
	}
	if o.Paused {
		return act(actWait, "no leader, but the cluster is paused: no automatic failover")
	}
	if ok, why := eligible(o, o.Node, o.Local); !ok {
		return act(actWait, "no leader; not eligible: %s", why)
	}
	if best, why := bestCandidate(o); best != o.Node {
		return act(actWait, "no leader; %s", why)
	}
	if ok, why := quorumRule(o); !ok {
		return act(actWait, "no leader; %s", why)
	}
	// Give every replica that was healthy when the leader went a short
	// grace to publish a fresh record, so that the best candidate is
	// chosen on fresh data rather than by the order of etcd's campaign
	// queue. After the grace, silent members are taken for dead.
	if o.LeaderGoneRev > 0 && o.Now.Sub(o.LeaderGoneAt) < 2*o.Policy.LoopInterval {
		for name, m := range o.Members {
			if name != o.Node && m.ModRev <= o.LeaderGoneRev && m.Rec.Healthy && m.Rec.Role == keyspace.RoleReplica && !m.Rec.NoFailover {
				return act(actWait, "no leader; waiting for a fresh record from %s", name)
			}
		}
	}
	return act(actCampaign, "no leader; this node is the best eligible candidate")
}

// maxRewindFailures is how many rewinds in a row may fail, over at least
// rewindGiveUpAfter, before the node is taken for one a rewind cannot
// bring back. Failures in quick succession are what a moving leader
// causes (a leader that fenced or was replaced while the rewind read from
// it): they are retried, spaced by the retry gate, until the row has
// lasted rewindGiveUpAfter.
const (
	maxRewindFailures = 3
	rewindGiveUpAfter = 30 * time.Second
)

// rewindGivenUp reports whether rewinds have failed long enough, or said
// only a clone helps, that an operator (or RecloneOnRewindFailure) must
// bring the node back.
func rewindGivenUp(l local, now time.Time) bool {
	return l.RewindImpossible || l.RewindFailures >= maxRewindFailures && now.Sub(l.RewindFailingSince) >= rewindGiveUpAfter
}

// rewindOrReclone returns the rewind a unless rewinds keep failing (or the
// last said only a new clone helps): then a reclone from the (writable)
// leader with RecloneOnRewindFailure, else a wait that says what to do.
func rewindOrReclone(o observation, a action) action {
	l := o.Local
	if !rewindGivenUp(l, o.Now) {
		return a
	}
	why := fmt.Sprintf("%d rewinds in a row failed over %v", l.RewindFailures, o.Now.Sub(l.RewindFailingSince).Round(time.Second))
	if l.RewindImpossible {
		why = "pg_rewind cannot bring this data directory back"
	}
	switch {
	case !o.Policy.RecloneOnRewindFailure:
		return act(actWait, "%s: re-clone it: run '%s' (or set RecloneOnRewindFailure, agent --reclone-on-rewind-failure, to let pgha move it aside and clone from the leader by itself)", why, reinitCommand(o))
	case !a.Leader.Writable:
		return act(actWait, "%s; waiting for leader %s to be writable to re-clone from it", why, a.Leader.Node)
	}
	r := act(actReclone, "%s: moving the data directory aside and cloning from leader %s (RecloneOnRewindFailure)", why, a.Leader.Node)
	r.Leader = a.Leader
	return r
}

// reinitCommand is the pghactl command that re-clones this node.
func reinitCommand(o observation) string {
	cmd := "pghactl --cluster " + o.Policy.Cluster
	if o.Policy.KeyRoot != "" && o.Policy.KeyRoot != keyspace.DefaultRoot {
		cmd += " --key-root " + shellQuote(o.Policy.KeyRoot)
	}
	return cmd + " reinit " + o.Node
}

// stuckSince is the "not streaming since" clock of a standby (local's
// NotStreamingSince), given its previous value: it runs only while this
// running standby does not stream from a writable leader it was pointed
// at, and it restarts at a repoint (repointed: the standby was pointed
// at a new leader since the last round), so that a standby repointed a
// moment ago is not taken for stuck because the old leader vanished long
// before.
func stuckSince(prev, now time.Time, running, inRecovery, streaming, leaderWritable, repointed bool) time.Time {
	switch {
	case !running || !inRecovery || streaming || !leaderWritable || repointed:
		return time.Time{}
	case prev.IsZero():
		return now
	}
	return prev
}

// rewindGrace is how long a standby may fail to stream from a leader on a
// newer timeline before it is taken for diverged and rewound.
func rewindGrace(p policy) time.Duration { return max(2*time.Second, 4*p.LoopInterval) }

// switchoverTimeout bounds how long, after the leader went, candidates
// defer to a switchover or manual failover target that does not take over.
const switchoverTimeout = 10 * time.Second

func switchoverKind(sw *keyspace.SwitchoverRecord) string {
	if sw.From == "" {
		return "manual failover"
	}
	return "switchover"
}
