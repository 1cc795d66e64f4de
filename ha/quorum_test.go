package ha

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/pgha/pgha/internal/keyspace"
)

// TestPlanQuorumInvariantRandom drives planQuorum through random rounds
// (standbys streaming or not, flushing or lagging, k and strictness
// varying) and checks condition (Q) at every step of every round: the
// sync record must cover every applied configuration whose commits are
// not yet known to be on k voters of a later one. A record that does not
// cover one lets a candidate be promoted that lacks an acknowledged
// commit.
func TestPlanQuorumInvariantRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	nodes := []string{"n2", "n3", "n4", "n5"}
	for run := range 1000 {
		strict := run%3 == 0
		k := 1 + r.IntN(3)
		var record quorumSet
		present := false
		var applied quorumSet
		// live are the applied configurations whose commits may not be
		// on k voters of a later one: the record must cover them all.
		var live []quorumSet
		var pending uint64
		arm := false
		var since time.Time
		now := time.Unix(0, 0)
		lsn := uint64(100)
		flushed := map[string]uint64{}
		check := func(step string) {
			for _, c := range live {
				if !record.covers(c) {
					t.Fatalf("run %d (k %d, strict %v), %s: record %+v does not cover applied %+v", run, k, strict, step, record, c)
				}
			}
		}
		for round := range 40 {
			lsn += uint64(1 + r.IntN(100))
			var streaming []string
			for _, n := range nodes {
				if r.IntN(4) > 0 {
					streaming = append(streaming, n)
					if r.IntN(2) == 0 {
						flushed[n] = lsn // caught up
					}
				}
			}
			now = now.Add(time.Duration(r.IntN(3000)) * time.Millisecond)
			if arm {
				pending, arm = lsn, false
			}
			// The model's own view, independent of the plan: commits
			// acknowledged under earlier configurations lie below
			// pending (the first round after the latest apply); once k
			// voters of the latest have flushed past it, they hold them.
			if pending != 0 && len(live) > 1 {
				confirmed := 0
				for _, v := range applied.Voters {
					if flushed[v] >= pending {
						confirmed++
					}
				}
				if confirmed >= applied.K {
					live = []quorumSet{applied}
				}
			}
			p := planQuorum(quorumInput{Strict: strict, K: k, Record: record, Present: present, Applied: applied,
				Streaming: streaming, Flushed: flushed, Pending: pending, NoSyncSince: since, Now: now, Grace: 2 * time.Second})
			since = p.NoSyncSince
			check(fmt.Sprintf("round %d before", round))
			if p.Widen != nil {
				record, present = *p.Widen, true
				check(fmt.Sprintf("round %d after widening", round))
			}
			if p.Apply != nil {
				applied = *p.Apply
				live = append(live, applied)
				pending, arm = 0, true
				check(fmt.Sprintf("round %d after applying", round))
			}
			if p.Narrow != nil {
				record, present = *p.Narrow, true
				check(fmt.Sprintf("round %d after narrowing", round))
			}
			if len(applied.Voters) > 0 && applied.K > len(applied.Voters) {
				t.Fatalf("applied %+v: k above the voters", applied)
			}
			if strict && len(applied.Voters) > 0 && applied.K != k {
				t.Fatalf("strict mode applied k %d, want %d", applied.K, k)
			}
		}
	}
}

func TestPlanQuorumSteps(t *testing.T) {
	v := func(k int, voters ...string) quorumSet { return quorumSet{K: k, Voters: voters} }
	// First standbys: record widened (written first), then applied.
	p := planQuorum(quorumInput{K: 1, Streaming: []string{"n3", "n2"}})
	if p.Widen == nil || !p.Widen.equal(v(1, "n2", "n3")) || p.Apply == nil || !p.Apply.equal(v(1, "n2", "n3")) || p.Narrow != nil {
		t.Fatalf("first plan %+v", p)
	}
	// Steady.
	p = planQuorum(quorumInput{K: 1, Record: v(1, "n2", "n3"), Present: true, Applied: v(1, "n2", "n3"), Streaming: []string{"n2", "n3"}})
	if p.Widen != nil || p.Apply != nil || p.Narrow != nil {
		t.Fatalf("steady plan %+v", p)
	}
	// n3 stops streaming: ANY 1 (n2) applied, record keeps n3 until
	// confirmed.
	p = planQuorum(quorumInput{K: 1, Record: v(1, "n2", "n3"), Present: true, Applied: v(1, "n2", "n3"), Streaming: []string{"n2"}})
	if p.Widen != nil || p.Apply == nil || !p.Apply.equal(v(1, "n2")) || p.Narrow != nil {
		t.Fatalf("voter lost: %+v", p)
	}
	in := quorumInput{K: 1, Record: v(1, "n2", "n3"), Present: true, Applied: v(1, "n2"), Streaming: []string{"n2"},
		Flushed: map[string]uint64{"n2": 90}, Pending: 100}
	if p := planQuorum(in); p.Narrow != nil {
		t.Fatalf("narrowed before n2 confirmed the point: %+v", p)
	}
	in.Flushed["n2"] = 100
	if p := planQuorum(in); p.Narrow == nil || !p.Narrow.equal(v(1, "n2")) {
		t.Fatalf("not narrowed once confirmed: %+v", p)
	}
	// A voter added: the record widened first, then applied.
	p = planQuorum(quorumInput{K: 1, Record: v(1, "n2"), Present: true, Applied: v(1, "n2"), Streaming: []string{"n2", "n3"}})
	if p.Widen == nil || !p.Widen.equal(v(1, "n2", "n3")) || p.Apply == nil || !p.Apply.equal(v(1, "n2", "n3")) {
		t.Fatalf("voter added: %+v", p)
	}
	// k raised from 1 to 2 (config change): the record keeps k 1 until
	// confirmed.
	p = planQuorum(quorumInput{K: 2, Record: v(1, "n2", "n3"), Present: true, Applied: v(1, "n2", "n3"), Streaming: []string{"n2", "n3"}})
	if p.Widen != nil || p.Apply == nil || !p.Apply.equal(v(2, "n2", "n3")) {
		t.Fatalf("k raised: %+v", p)
	}
	// k lowered from 2 to 1: the record is lowered first.
	p = planQuorum(quorumInput{K: 1, Record: v(2, "n2", "n3"), Present: true, Applied: v(2, "n2", "n3"), Streaming: []string{"n2", "n3"}})
	if p.Widen == nil || !p.Widen.equal(v(1, "n2", "n3")) || p.Apply == nil || !p.Apply.equal(v(1, "n2", "n3")) {
		t.Fatalf("k lowered: %+v", p)
	}
	// Strict with too few: keep what is applied.
	p = planQuorum(quorumInput{Strict: true, K: 2, Record: v(2, "n2", "n3"), Present: true, Applied: v(2, "n2", "n3"), Streaming: []string{"n2"}})
	if p.Widen != nil || p.Apply != nil || p.Narrow != nil {
		t.Fatalf("strict with one standby: %+v", p)
	}
}

// TestQuorumRule: with N voters and k acknowledgements per commit, a
// candidate may be promoted only with N - k + 1 voters heard after the
// leader was lost, and only if none of them is ahead.
func TestQuorumRule(t *testing.T) {
	base := func(k int, voters ...string) observation {
		o := baseObs()
		o.Policy.SyncMode = SyncQuorum
		o.SyncPresent, o.SyncSet, o.SyncQuorum = true, voters, k
		o.LeaderGoneRev = 10
		o.Local.ReceiveLSN, o.Local.ReplayLSN = 500, 500
		o.Members = map[string]member{}
		return o
	}
	heard := func(o *observation, name string, lsn uint64, rev int64) {
		o.Members[name] = member{Rec: keyspace.MemberRecord{Node: name, Role: keyspace.RoleReplica, Healthy: true, Timeline: 1, ReceiveLSN: lsn}, ModRev: rev}
	}
	for _, tc := range []struct {
		name string
		o    func() observation
		ok   bool
	}{
		{"N 3, k 1: itself and two others heard", func() observation {
			o := base(1, "n1", "n2", "n3")
			heard(&o, "n2", 400, 11)
			heard(&o, "n3", 300, 12)
			return o
		}, true},
		{"N 3, k 1: only N - k voters heard (one stale)", func() observation {
			o := base(1, "n1", "n2", "n3")
			heard(&o, "n2", 400, 11)
			heard(&o, "n3", 300, 9) // written before the leader was lost
			return o
		}, false},
		{"N 3, k 2: two heard suffice", func() observation {
			o := base(2, "n1", "n2", "n3")
			heard(&o, "n2", 400, 11)
			return o
		}, true},
		{"N 3, k 2: itself alone is N - k", func() observation {
			return base(2, "n1", "n2", "n3")
		}, false},
		{"a heard voter ahead, though down", func() observation {
			o := base(2, "n1", "n2", "n3")
			heard(&o, "n2", 600, 11)
			m := o.Members["n2"]
			m.Rec.Healthy = false
			o.Members["n2"] = m
			return o
		}, false},
		{"not a voter: not counted as heard", func() observation {
			o := base(2, "n2", "n3", "n4")
			heard(&o, "n2", 400, 11)
			return o
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if ok, why := quorumRule(tc.o()); ok != tc.ok {
				t.Errorf("quorumRule = %v (%s), want %v", ok, why, tc.ok)
			}
		})
	}
	// decide waits, for good, without enough voters heard (no grace).
	o := base(1, "n1", "n2", "n3")
	heard(&o, "n2", 400, 11)
	o.LeaderGoneAt = o.Now.Add(-time.Hour)
	if a := decide(o); a.Kind != actWait {
		t.Errorf("decide with N - k voters heard an hour after the leader went = %v, want wait", a)
	}
}

func TestParseApplied(t *testing.T) {
	for _, tc := range []struct {
		s    string
		want quorumSet
		ok   bool
	}{
		{"", quorumSet{}, true},
		{`ANY 1 ("n2", "n3")`, quorumSet{1, []string{"n2", "n3"}}, true},
		{`FIRST 2 ("a", "b", "c")`, quorumSet{2, []string{"a", "b", "c"}}, true},
		{`ANY 3 ("n2", "n3")`, quorumSet{}, false},
		{`n2, n3`, quorumSet{}, false},
	} {
		got, ok := parseApplied(tc.s)
		if ok != tc.ok || ok && !got.equal(tc.want) {
			t.Errorf("parseApplied(%q) = %+v, %v; want %+v, %v", tc.s, got, ok, tc.want, tc.ok)
		}
	}
	if !slices.Equal(sortedNames([]string{"b", "a"}), []string{"a", "b"}) {
		t.Fatal("sortedNames")
	}
}
