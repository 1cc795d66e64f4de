package ha

import (
	"strings"
	"testing"
	"time"

	"github.com/pgha/pgha/internal/keyspace"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func baseObs() observation {
	cfg := Config{LeaseTTL: 5 * time.Second, LoopInterval: 500 * time.Millisecond, FenceBudget: time.Second,
		MaxLagOnFailover: 1 << 20, SyncMode: SyncOff, SyncStandbys: 1, PrimaryStartTimeout: 30 * time.Second}
	return observation{
		Now:    t0,
		Node:   "n1",
		Policy: cfg.policy(),
		Local: local{Initialized: true, Running: true, InRecovery: true, Timeline: 1, SystemID: 42,
			ReceiveLSN: 1000, ReplayLSN: 1000, Streaming: true, Following: "n2"},
		Members:     map[string]member{},
		Initialized: true,
		SystemID:    42,
	}
}

func leader(node string, tl uint32) *keyspace.LeaderRecord {
	return &keyspace.LeaderRecord{Node: node, Host: "h", Port: 1, Timeline: tl, Writable: true}
}

func replica(node string, tl uint32, lsn uint64, rev int64) member {
	return member{Rec: keyspace.MemberRecord{Node: node, Role: keyspace.RoleReplica, Host: "h", Port: 1, Timeline: tl,
		ReceiveLSN: lsn, ReplayLSN: lsn, Healthy: true}, ModRev: rev}
}

func TestDecide(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mod    func(o *observation)
		want   actionKind
		reason string // substring of the reason
	}{
		// Safety.
		{"writable primary without leadership fences", func(o *observation) {
			o.Local.InRecovery = false
			o.Leader = leader("n2", 2)
		}, actFence, "no leadership"},
		{"writable primary, no leader at all, fences before anything", func(o *observation) {
			o.Local.InRecovery = false
		}, actFence, "no leadership"},
		{"leader past fence point fences", func(o *observation) {
			o.Leading, o.ValidUntil = true, t0.Add(900*time.Millisecond)
			o.Local.InRecovery = false
		}, actFence, "not renewed"},
		{"leader well before fence point leads", func(o *observation) {
			o.Leading, o.ValidUntil = true, t0.Add(4*time.Second)
			o.Local.InRecovery = false
		}, actLead, "leading"},
		{"leader whose PostgreSQL is a standby promotes", func(o *observation) {
			o.Leading, o.ValidUntil = true, t0.Add(4*time.Second)
		}, actPromote, "standby"},
		// Leader with PostgreSQL down.
		{"async leader restarts crashed primary in place", func(o *observation) {
			o.Leading, o.ValidUntil = true, t0.Add(4*time.Second)
			o.Local.Running, o.Local.CrashedAt = false, t0.Add(-time.Second)
		}, actRestartPrimary, "restarting"},
		{"async leader gives up after PrimaryStartTimeout", func(o *observation) {
			o.Leading, o.ValidUntil = true, t0.Add(4*time.Second)
			o.Local.Running, o.Local.CrashedAt = false, t0.Add(-31*time.Second)
		}, actResign, "PrimaryStartTimeout"},
		{"sync leader fails over at once", func(o *observation) {
			o.Leading, o.ValidUntil = true, t0.Add(4*time.Second)
			o.Policy.SyncMode = SyncOn
			o.Local.Running, o.Local.CrashedAt = false, t0
		}, actResign, "at once"},
		// Bootstrap and join.
		{"uninitialized cluster bootstraps", func(o *observation) {
			o.Local = local{}
			o.Initialized, o.SystemID = false, 0
		}, actBootstrap, "not initialized"},
		{"empty node clones from writable leader", func(o *observation) {
			o.Local = local{}
			o.Leader = leader("n2", 1)
		}, actClone, "n2"},
		{"empty node waits for a writable leader", func(o *observation) {
			o.Local = local{}
			o.Leader = leader("n2", 1)
			o.Leader.Writable = false
		}, actWait, "clone"},
		{"foreign data directory is refused", func(o *observation) {
			o.Local.SystemID = 7
			o.Leader = leader("n2", 1)
		}, actRefuse, "another cluster"},
		// Followers.
		{"streaming follower waits", func(o *observation) { o.Leader = leader("n2", 1) }, actWait, "streaming"},
		{"follower repoints to a new leader", func(o *observation) { o.Leader = leader("n3", 2) }, actFollow, "n3"},
		{"stopped standby starts by following", func(o *observation) {
			o.Leader = leader("n2", 1)
			o.Local.Running = false
		}, actFollow, "n2"},
		{"former primary rewinds before following", func(o *observation) {
			o.Leader = leader("n2", 2)
			o.Local.Running, o.Local.WasPrimary = false, true
		}, actRewind, "ran as a primary"},
		{"standby stuck on an old timeline rewinds", func(o *observation) {
			o.Leader = leader("n2", 3)
			o.Local.Streaming, o.Local.NotStreamingSince = false, t0.Add(-3*time.Second)
		}, actRewind, "stuck"},
		{"diverged standby rewinds at once", func(o *observation) {
			o.Leader = leader("n2", 3)
			o.Local.Diverged = true
			o.Local.Streaming, o.Local.NotStreamingSince = false, t0
		}, actRewind, "diverged"},
		{"diverged flag alone, leader on the same timeline: no rewind", func(o *observation) {
			o.Leader = leader("n2", 1)
			o.Local.Diverged = true
		}, actWait, "streaming from leader n2"},
		{"standby just behind a promotion gets time to reconnect", func(o *observation) {
			o.Leader = leader("n2", 3)
			o.Local.Streaming, o.Local.NotStreamingSince = false, t0.Add(-500*time.Millisecond)
		}, actWait, "streaming from leader n2"},
		{"running standby repoints early to a leader being promoted", func(o *observation) {
			o.Leader = leader("n3", 1)
			o.Leader.Writable = false
		}, actFollow, "repointing early"},
		{"standby already following a leader being promoted waits", func(o *observation) {
			o.Leader = leader("n2", 1)
			o.Leader.Writable = false
		}, actWait, "not writable yet"},
		{"our own stale leader key: wait", func(o *observation) { o.Leader = leader("n1", 1) }, actWait, "earlier term"},
		// Candidates.
		{"sole eligible standby campaigns", func(o *observation) {}, actCampaign, "best"},
		{"paused cluster does not fail over", func(o *observation) { o.Paused = true }, actWait, "paused"},
		{"nofailover node does not campaign", func(o *observation) { o.Policy.NoFailover = true }, actWait, "nofailover"},
		{"lagging standby does not campaign", func(o *observation) { o.LastLeaderLSN = 1000 + 2<<20 }, actWait, "exceeds MaxLagOnFailover"},
		{"standby within max lag campaigns", func(o *observation) { o.LastLeaderLSN = 1000 + 1<<19 }, actCampaign, "best"},
		{"more advanced fresh member wins", func(o *observation) {
			o.LeaderGoneRev = 10
			o.Members["n3"] = replica("n3", 1, 2000, 11)
		}, actWait, "n3 is a better candidate"},
		{"stale record of a more advanced member is ignored", func(o *observation) {
			o.LeaderGoneRev = 10
			o.Members["n3"] = replica("n3", 1, 2000, 9)
		}, actCampaign, "best"},
		{"higher timeline beats higher LSN", func(o *observation) {
			o.Local.Timeline, o.Local.ReceiveLSN, o.Local.ReplayLSN = 1, 9000, 9000
			o.History = nil
			o.Members["n3"] = replica("n3", 2, 100, 11)
		}, actWait, "n3 is a better candidate"},
		{"node behind the history's timeline is not eligible", func(o *observation) {
			o.History = []keyspace.HistoryEntry{{Timeline: 2, SwitchLSN: 500, Leader: "n2"}}
		}, actWait, "behind the cluster's timeline"},
		{"priority breaks LSN ties", func(o *observation) {
			o.Members["n3"] = replica("n3", 1, 1000, 11)
			m := o.Members["n3"]
			m.Rec.Priority = 5
			o.Members["n3"] = m
		}, actWait, "n3 is a better candidate"},
		{"name breaks full ties", func(o *observation) {
			o.Node = "n4"
			o.Members["n3"] = replica("n3", 1, 1000, 11)
		}, actWait, "n3 is a better candidate"},
		{"a stale record of a healthy replica gets a grace to refresh", func(o *observation) {
			o.LeaderGoneRev, o.LeaderGoneAt = 10, t0.Add(-100*time.Millisecond)
			o.Members["n3"] = replica("n3", 1, 10, 9)
		}, actWait, "waiting for a fresh record from n3"},
		{"after the grace a silent member is taken for dead", func(o *observation) {
			o.LeaderGoneRev, o.LeaderGoneAt = 10, t0.Add(-2*time.Second)
			o.Members["n3"] = replica("n3", 1, 10, 9)
		}, actCampaign, "best"},
		{"unhealthy member is not a candidate", func(o *observation) {
			m := replica("n3", 1, 5000, 11)
			m.Rec.Healthy = false
			o.Members["n3"] = m
		}, actCampaign, "best"},
		{"sync mode: standby outside the sync set does not campaign", func(o *observation) {
			o.Policy.SyncMode = SyncOn
			o.SyncPresent, o.SyncSet = true, []string{"n3"}
		}, actWait, "synchronous standby set"},
		{"sync mode: standby in the sync set campaigns", func(o *observation) {
			o.Policy.SyncMode = SyncOn
			o.SyncPresent, o.SyncSet = true, []string{"n1"}
		}, actCampaign, "best"},
		{"sync mode: a more advanced standby outside the set does not block", func(o *observation) {
			o.Policy.SyncMode = SyncOn
			o.SyncPresent, o.SyncSet = true, []string{"n1"}
			o.Members["n3"] = replica("n3", 1, 9000, 11)
		}, actCampaign, "best"},
		// Switchover.
		{"leader resigns for a pending switchover", func(o *observation) {
			o.Leading, o.ValidUntil = true, t0.Add(4*time.Second)
			o.Local.InRecovery = false
			o.Switchover = &keyspace.SwitchoverRecord{From: "n1", To: "n3"}
			o.Members["n3"] = replica("n3", 1, 1000, 11)
		}, actResign, "switchover to n3"},
		{"switchover target campaigns after the leader resigned", func(o *observation) {
			o.LeaderGoneRev, o.LeaderGoneAt = 10, t0.Add(-100*time.Millisecond)
			o.Switchover = &keyspace.SwitchoverRecord{From: "n2", To: "n1"}
			o.Members["n3"] = replica("n3", 1, 9000, 11)
		}, actCampaign, "switchover to this node"},
		{"other nodes defer to the switchover target", func(o *observation) {
			o.LeaderGoneRev, o.LeaderGoneAt = 10, t0.Add(-100*time.Millisecond)
			o.Switchover = &keyspace.SwitchoverRecord{From: "n2", To: "n3"}
		}, actWait, "switchover to n3 pending"},
		{"a switchover target that never takes over is ignored after the timeout", func(o *observation) {
			o.LeaderGoneRev, o.LeaderGoneAt = 10, t0.Add(-time.Minute)
			o.Switchover = &keyspace.SwitchoverRecord{From: "n2", To: "n3"}
		}, actCampaign, "best"},
		{"manual failover target outside the sync set waits", func(o *observation) {
			o.Policy.SyncMode = SyncOn
			o.SyncPresent, o.SyncSet = true, []string{"n3"}
			o.Switchover = &keyspace.SwitchoverRecord{To: "n1"}
		}, actWait, "not in the synchronous standby set"},
		{"forced manual failover campaigns anyway", func(o *observation) {
			o.Policy.SyncMode = SyncOn
			o.SyncPresent, o.SyncSet = true, []string{"n3"}
			o.Switchover = &keyspace.SwitchoverRecord{To: "n1", Force: true}
		}, actCampaign, "forced"},
		{"former primary behind the cluster's timeline is not eligible", func(o *observation) {
			o.Local.WasPrimary, o.Local.Running = true, false
			o.History = []keyspace.HistoryEntry{{Timeline: 1}, {Timeline: 2, Leader: "n2"}}
		}, actWait, "former primary on timeline 1"},
		// Seen with real partitions: a former primary rewound from a leader
		// that had won but was still a standby could not start after.
		{"a former primary does not rewind from a leader still being promoted", func(o *observation) {
			o.Local.WasPrimary, o.Local.Running, o.Local.InRecovery = true, false, false
			o.Leader = leader("n2", 2)
			o.Leader.Writable = false
		}, actWait, "waiting for leader n2 to be writable before rewinding"},
		{"a former primary rewinds from a writable leader", func(o *observation) {
			o.Local.WasPrimary, o.Local.Running, o.Local.InRecovery = true, false, false
			o.Leader = leader("n2", 2)
		}, actRewind, "rewinding from leader n2"},
		// Found by the chaos harness (seed 11).
		{"the primary of the latest timeline may lead again outside the sync set (sync mode)", func(o *observation) {
			o.Policy.SyncMode = SyncOn
			o.SyncPresent, o.SyncSet = true, []string{"n3"}
			o.Local.WasPrimary, o.Local.Running, o.Local.InRecovery, o.Local.Timeline = true, false, false, 2
			o.History = []keyspace.HistoryEntry{{Timeline: 1}, {Timeline: 2, Leader: "n1"}}
		}, actCampaign, "best"},
		{"a former primary of an older timeline may not, outside the sync set", func(o *observation) {
			o.Policy.SyncMode = SyncOn
			o.SyncPresent, o.SyncSet = true, []string{"n3"}
			o.Local.WasPrimary, o.Local.Running, o.Local.InRecovery, o.Local.Timeline = true, false, false, 2
			o.History = []keyspace.HistoryEntry{{Timeline: 1}, {Timeline: 2, Leader: "n1"}, {Timeline: 3, Leader: "n3"}}
		}, actWait, "former primary on timeline 2"},
		{"a standby of the latest timeline outside the sync set may not", func(o *observation) {
			o.Policy.SyncMode = SyncOn
			o.SyncPresent, o.SyncSet = true, []string{"n3"}
			o.Local.Timeline = 2
			o.History = []keyspace.HistoryEntry{{Timeline: 1}, {Timeline: 2, Leader: "n1"}}
		}, actWait, "not in the synchronous standby set"},
		{"a primary of the latest timeline that another node promoted may not", func(o *observation) {
			o.Policy.SyncMode = SyncOn
			o.SyncPresent, o.SyncSet = true, []string{"n3"}
			o.Local.WasPrimary, o.Local.Running, o.Local.InRecovery, o.Local.Timeline = true, false, false, 2
			o.History = []keyspace.HistoryEntry{{Timeline: 1}, {Timeline: 2, Leader: "n2"}}
		}, actWait, "not in the synchronous standby set"},
		{"a half-rewound data directory is never a candidate", func(o *observation) {
			o.Local.RewindIncomplete, o.Local.Running = true, false
		}, actWait, "interrupted rewind"},
		{"a half-rewound standby is re-cloned when ReplaceDataDir allows", func(o *observation) {
			o.Leader = leader("n2", 2)
			o.Policy.ReplaceDataDir = true
			o.Local.RewindIncomplete, o.Local.Running, o.Local.WasPrimary = true, false, true
		}, actClone, "moving it aside and cloning from leader n2"},
		{"a half-rewound standby waits for a writable leader to re-clone", func(o *observation) {
			o.Leader = leader("n2", 2)
			o.Leader.Writable = false
			o.Policy.ReplaceDataDir = true
			o.Local.RewindIncomplete, o.Local.Running = true, false
		}, actWait, "waiting for leader n2 to be writable"},
		{"a half-rewound standby without ReplaceDataDir waits and says how to fix it", func(o *observation) {
			o.Leader = leader("n2", 2)
			o.Local.RewindIncomplete, o.Local.Running = true, false
		}, actWait, "--pg-replace-data-dir"},
		{"strict mode without a sync record does not fail over", func(o *observation) {
			o.Policy.SyncMode = SyncStrict
			o.History = []keyspace.HistoryEntry{{Timeline: 1}}
		}, actWait, "strict synchronous mode and no sync record"},
		{"switchover without a target picks the most advanced healthy replica", func(o *observation) {
			o.Leading, o.ValidUntil = true, t0.Add(4*time.Second)
			o.Local.InRecovery = false
			o.Switchover = &keyspace.SwitchoverRecord{From: "n1"}
			o.Members["n2"] = replica("n2", 1, 900, 11)
			o.Members["n3"] = replica("n3", 1, 1000, 11)
			sick := replica("n4", 1, 5000, 11)
			sick.Rec.Healthy = false
			o.Members["n4"] = sick
		}, actResign, "switchover to n3"},
		{"switchover in sync mode picks only a synchronous standby", func(o *observation) {
			o.Leading, o.ValidUntil = true, t0.Add(4*time.Second)
			o.Local.InRecovery = false
			o.Policy.SyncMode = SyncOn
			o.SyncPresent, o.SyncSet = true, []string{"n2"}
			o.Switchover = &keyspace.SwitchoverRecord{From: "n1"}
			o.Members["n2"] = replica("n2", 1, 900, 11)
			o.Members["n3"] = replica("n3", 1, 1000, 11)
		}, actResign, "switchover to n2"},
		{"switchover to a standby outside the sync set is not done", func(o *observation) {
			o.Leading, o.ValidUntil = true, t0.Add(4*time.Second)
			o.Local.InRecovery = false
			o.Policy.SyncMode = SyncOn
			o.SyncPresent, o.SyncSet = true, []string{"n2"}
			o.Switchover = &keyspace.SwitchoverRecord{From: "n1", To: "n3"}
			o.Members["n2"] = replica("n2", 1, 900, 11)
			o.Members["n3"] = replica("n3", 1, 1000, 11)
		}, actLead, "leading"},
		// Reinit (an operator's request).
		{"a reinit request re-clones a standby from the writable leader", func(o *observation) {
			o.Leader = leader("n2", 1)
			o.Reinits = map[string]int64{"n1": 50}
		}, actReinit, "cloning from leader n2"},
		{"a reinit request re-clones a former primary that cannot rewind", func(o *observation) {
			o.Leader = leader("n2", 2)
			o.Local.WasPrimary, o.Local.Running, o.Local.InRecovery = true, false, false
			o.Local.RewindImpossible = true
			o.Reinits = map[string]int64{"n1": 50}
		}, actReinit, "reinit requested"},
		{"a reinit request waits for a writable leader", func(o *observation) {
			o.Leader = leader("n2", 2)
			o.Leader.Writable = false
			o.Reinits = map[string]int64{"n1": 50}
		}, actWait, "reinit requested; waiting for leader n2 to be writable"},
		{"a reinit request for another node changes nothing here", func(o *observation) {
			o.Leader = leader("n2", 1)
			o.Reinits = map[string]int64{"n3": 50}
		}, actWait, "streaming from leader n2"},
		{"a reinit request already re-cloned for waits to stream, no second clone", func(o *observation) {
			o.Leader = leader("n2", 1)
			o.Reinits = map[string]int64{"n1": 50}
			o.Local.ReinitCloned = 50
		}, actWait, "streaming from leader n2"},
		{"a reinit request written again after a re-clone re-clones again", func(o *observation) {
			o.Leader = leader("n2", 1)
			o.Reinits = map[string]int64{"n1": 60}
			o.Local.ReinitCloned = 50
		}, actReinit, "reinit requested"},
		{"a leader never re-clones itself on a reinit request", func(o *observation) {
			o.Leading, o.ValidUntil = true, t0.Add(4*time.Second)
			o.Local.InRecovery = false
			o.Leader = leader("n1", 1)
			o.Reinits = map[string]int64{"n1": 50}
		}, actLead, "leading"},
		{"a failing rewind names the pghactl reinit command", func(o *observation) {
			o.Policy.Cluster = "main"
			o.Leader = leader("n2", 2)
			o.Local.WasPrimary, o.Local.Running, o.Local.InRecovery = true, false, false
			o.Local.RewindFailures, o.Local.RewindFailingSince = maxRewindFailures, t0.Add(-rewindGiveUpAfter)
		}, actWait, "run 'pghactl --cluster main reinit n1'"},
		{"rewinds failing in quick succession (a moving leader) are retried", func(o *observation) {
			o.Policy.Cluster = "main"
			o.Leader = leader("n2", 2)
			o.Local.WasPrimary, o.Local.Running, o.Local.InRecovery = true, false, false
			o.Local.RewindFailures, o.Local.RewindFailingSince = maxRewindFailures+2, t0.Add(-2*time.Second)
		}, actRewind, "rewind"},
		{"the reinit command names a non-default key root", func(o *observation) {
			o.Policy.Cluster, o.Policy.KeyRoot = "main", "/my root"
			o.Leader = leader("n2", 2)
			o.Local.WasPrimary, o.Local.Running, o.Local.InRecovery = true, false, false
			o.Local.RewindImpossible = true
		}, actWait, "run 'pghactl --cluster main --key-root '/my root' reinit n1'"},
		// Scheduled switchover.
		{"a scheduled switchover before its time: the leader leads on", func(o *observation) {
			o.Leading, o.ValidUntil = true, t0.Add(4*time.Second)
			o.Local.InRecovery = false
			o.Switchover = &keyspace.SwitchoverRecord{From: "n1", To: "n2", At: t0.Add(time.Millisecond)}
			o.Members["n2"] = replica("n2", 1, 1000, 11)
		}, actLead, "leading"},
		{"a scheduled switchover at its time is due", func(o *observation) {
			o.Leading, o.ValidUntil = true, t0.Add(4*time.Second)
			o.Local.InRecovery = false
			o.Switchover = &keyspace.SwitchoverRecord{From: "n1", To: "n2", At: t0}
			o.Members["n2"] = replica("n2", 1, 1000, 11)
		}, actSwitchoverDue, "scheduled switchover to n2 due"},
		{"a due scheduled switchover without a qualifying target waits", func(o *observation) {
			o.Leading, o.ValidUntil = true, t0.Add(4*time.Second)
			o.Local.InRecovery = false
			o.Switchover = &keyspace.SwitchoverRecord{From: "n1", To: "n9", At: t0.Add(-time.Minute)}
			o.Members["n2"] = replica("n2", 1, 1000, 11)
		}, actLead, "leading"},
		{"a scheduled switchover of another leader is not performed", func(o *observation) {
			o.Leading, o.ValidUntil = true, t0.Add(4*time.Second)
			o.Local.InRecovery = false
			o.Switchover = &keyspace.SwitchoverRecord{From: "n3", To: "n2", At: t0.Add(-time.Minute)}
			o.Members["n2"] = replica("n2", 1, 1000, 11)
		}, actLead, "leading"},
		{"candidates do not defer to a scheduled switchover's target", func(o *observation) {
			o.Switchover = &keyspace.SwitchoverRecord{From: "n3", To: "n2", At: t0.Add(-time.Minute)}
			o.LeaderGoneRev, o.LeaderGoneAt = 10, t0.Add(-time.Second)
		}, actCampaign, "best eligible candidate"},
		{"candidates defer to an immediate switchover's target", func(o *observation) {
			o.Switchover = &keyspace.SwitchoverRecord{From: "n3", To: "n2"}
			o.LeaderGoneRev, o.LeaderGoneAt = 10, t0.Add(-time.Second)
		}, actWait, "switchover to n2 pending"},
		{"switchover to an absent node is not done", func(o *observation) {
			o.Leading, o.ValidUntil = true, t0.Add(4*time.Second)
			o.Local.InRecovery = false
			o.Switchover = &keyspace.SwitchoverRecord{From: "n1", To: "n9"}
			o.Members["n3"] = replica("n3", 1, 1000, 11)
		}, actLead, "leading"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := baseObs()
			tc.mod(&o)
			got := decide(o)
			if got.Kind != tc.want || !strings.Contains(got.Reason, tc.reason) {
				t.Fatalf("decide = %v; want %v with reason containing %q", got, tc.want, tc.reason)
			}
		})
	}
}

// TestStuckSince: the clock that takes a standby for stuck on an old
// timeline runs only while it does not stream from a writable leader, and
// restarts when it is repointed (seen with real partitions: a standby
// repointed a moment ago was rewound because the clock had started when
// the old leader vanished).
func TestStuckSince(t *testing.T) {
	t1 := t0.Add(10 * time.Second)
	for _, tc := range []struct {
		name                                                      string
		prev                                                      time.Time
		running, inRecovery, streaming, leaderWritable, repointed bool
		want                                                      time.Time
	}{
		{"starts when it stops streaming", time.Time{}, true, true, false, true, false, t1},
		{"keeps running", t0, true, true, false, true, false, t0},
		{"streaming resets it", t0, true, true, true, true, false, time.Time{}},
		{"a repoint restarts it", t0, true, true, false, true, true, time.Time{}},
		{"no writable leader: not running", t0, true, true, false, false, false, time.Time{}},
		{"a primary has none", t0, true, false, false, true, false, time.Time{}},
		{"stopped: none", t0, false, true, false, true, false, time.Time{}},
	} {
		if got := stuckSince(tc.prev, t1, tc.running, tc.inRecovery, tc.streaming, tc.leaderWritable, tc.repointed); !got.Equal(tc.want) {
			t.Errorf("%s: stuckSince = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestPlanRemovals: the leader forgets only members that are gone: a
// record on a lease (live) or the leader itself is refused, a member with
// neither a record nor a slot is unknown, a lease-less record is deleted,
// a slot shared by a live member's name is kept, and answered requests
// are left alone.
func TestPlanRemovals(t *testing.T) {
	rec := func(node string, lease int64) member {
		m := replica(node, 1, 1, 5)
		m.Lease = lease
		return m
	}
	members := map[string]member{"n1": rec("n1", 7), "n2": rec("n2", 8), "stale": rec("stale", 0), "a_b": rec("a_b", 9)}
	req := func(nodes ...string) map[string]removal {
		r := map[string]removal{}
		for _, n := range nodes {
			r[n] = removal{Rec: keyspace.RemoveRecord{Node: n}, ModRev: 3}
		}
		return r
	}
	slots := []string{"n2", "gone", "stale", "a_b"}
	for _, tc := range []struct {
		name string
		req  map[string]removal
		want removeStep
	}{
		{"a live member is refused", req("n2"), removeStep{Node: "n2", Outcome: keyspace.RemoveLive}},
		{"the leader itself is refused", req("n1"), removeStep{Node: "n1", Outcome: keyspace.RemoveLive}},
		{"a departed member's slot is dropped", req("gone"), removeStep{Node: "gone", DropSlot: "gone"}},
		{"neither record nor slot: unknown", req("ghost"), removeStep{Node: "ghost", Outcome: keyspace.RemoveUnknown}},
		{"a record without a lease is deleted with its slot", req("stale"), removeStep{Node: "stale", DropSlot: "stale", DeleteRecord: true}},
		{"a slot a live member's name maps to is kept", req("a-b"), removeStep{Node: "a-b", Outcome: keyspace.RemoveUnknown}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := planRemovals("n1", members, tc.req, slots)
			if len(got) != 1 || got[0] != tc.want {
				t.Fatalf("planRemovals = %+v; want [%+v]", got, tc.want)
			}
		})
	}
	answered := req("ghost")
	answered["ghost"] = removal{Rec: keyspace.RemoveRecord{Node: "ghost", Outcome: keyspace.RemoveUnknown}}
	if got := planRemovals("n1", members, answered, slots); len(got) != 0 {
		t.Fatalf("an answered request planned again: %+v", got)
	}
}
