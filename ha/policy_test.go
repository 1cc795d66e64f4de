package ha

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/pgha/pgha/internal/keyspace"
	"github.com/pgha/pgha/replicate"
)

// namedIn is the set of standbys a synchronous_standby_names value of
// planSync's form names ("" or FIRST n (a, b)).
func namedIn(spec replicate.SyncSpec) []string { return spec.Names }

// checkSyncSteps applies plan p to the state (record, named) step by step
// and fails if, at any instant, a named standby is missing from the
// record: such a standby may hold an acknowledged commit that no
// promotable standby has.
func checkSyncSteps(t *testing.T, record, named []string, p syncPlan) (finalRecord, finalNamed []string) {
	t.Helper()
	check := func(step string) {
		for _, n := range named {
			if !slices.Contains(record, n) {
				t.Fatalf("%s: %s is synchronous but not in the sync record %v", step, n, record)
			}
		}
	}
	check("before")
	if p.Widen != nil {
		record = p.Widen
		check("after widening the record")
	}
	if p.Apply {
		named = namedIn(p.Spec)
		check("after applying synchronous_standby_names")
	}
	if p.Narrow != nil {
		record = p.Narrow
		check("after narrowing the record")
	}
	return record, named
}

func TestPlanSync(t *testing.T) {
	now := time.Unix(1000, 0)
	first := func(names ...string) replicate.SyncSpec {
		return replicate.SyncSpec{Method: replicate.SyncFirst, Num: len(names), Names: names}
	}
	for _, tc := range []struct {
		name      string
		in        syncInput
		wantNamed []string
		wantRec   []string
		wantSince time.Time
	}{
		{"first standby streams", syncInput{Mode: SyncOn, N: 1, Streaming: []string{"n2"}}, []string{"n2"}, []string{"n2"}, time.Time{}},
		{"keep the current one while it streams", syncInput{Mode: SyncOn, N: 1, Current: []string{"n3"}, Present: true,
			Streaming: []string{"n2", "n3"}, Applied: first("n3").String()}, []string{"n3"}, []string{"n3"}, time.Time{}},
		{"current one stopped streaming: switch", syncInput{Mode: SyncOn, N: 1, Current: []string{"n3"}, Present: true,
			Streaming: []string{"n2"}, Applied: first("n3").String()}, []string{"n2"}, []string{"n2"}, time.Time{}},
		{"two of three", syncInput{Mode: SyncOn, N: 2, Current: []string{"n3"}, Present: true,
			Streaming: []string{"n4", "n2", "n3"}, Applied: first("n3").String()}, []string{"n2", "n3"}, []string{"n2", "n3"}, time.Time{}},
		{"none streams, within grace: hold", syncInput{Mode: SyncOn, N: 1, Current: []string{"n2"}, Present: true,
			Applied: first("n2").String(), Now: now, Grace: 2 * time.Second}, []string{"n2"}, []string{"n2"}, now},
		{"none streams, grace over: asynchronous, empty record", syncInput{Mode: SyncOn, N: 1, Current: []string{"n2"}, Present: true,
			Applied: first("n2").String(), NoSyncSince: now.Add(-3 * time.Second), Now: now, Grace: 2 * time.Second}, nil, []string{}, now.Add(-3 * time.Second)},
		{"strict never falls back", syncInput{Mode: SyncStrict, N: 1, Current: []string{"n2"}, Present: true,
			Applied: first("n2").String(), NoSyncSince: now.Add(-time.Hour), Now: now, Grace: 2 * time.Second}, []string{"n2"}, []string{"n2"}, now.Add(-time.Hour)},
		{"steady: nothing to do", syncInput{Mode: SyncOn, N: 1, Current: []string{"n2"}, Present: true,
			Streaming: []string{"n2", "n3"}, Applied: first("n2").String()}, []string{"n2"}, []string{"n2"}, time.Time{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := planSync(tc.in)
			var named []string
			if tc.in.Applied != "" {
				named = tc.in.Current // the tests' Applied always names Current
			}
			rec, named := checkSyncSteps(t, slices.Clone(tc.in.Current), named, p)
			if !slices.Equal(named, tc.wantNamed) {
				t.Errorf("named %v, want %v", named, tc.wantNamed)
			}
			if !slices.Equal(rec, tc.wantRec) && !(len(rec) == 0 && len(tc.wantRec) == 0) {
				t.Errorf("record %v, want %v", rec, tc.wantRec)
			}
			if !p.NoSyncSince.Equal(tc.wantSince) {
				t.Errorf("NoSyncSince %v, want %v", p.NoSyncSince, tc.wantSince)
			}
		})
	}
	if p := planSync(syncInput{Mode: SyncOn, N: 1, Current: []string{"n2"}, Present: true, Streaming: []string{"n2"}, Applied: first("n2").String()}); p.Widen != nil || p.Apply || p.Narrow != nil {
		t.Errorf("steady state plans writes: %+v", p)
	}
}

// TestPlanSyncInvariantRandom drives planSync through random sequences of
// streaming sets and checks the invariant at every step of every round.
func TestPlanSyncInvariantRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	nodes := []string{"n2", "n3", "n4", "n5"}
	for run := range 500 {
		mode := []SyncMode{SyncOn, SyncStrict}[run%2]
		n := 1 + r.IntN(3)
		var record, named []string
		present := false
		var since time.Time
		now := time.Unix(0, 0)
		for range 30 {
			var streaming []string
			for _, x := range nodes {
				if r.IntN(3) > 0 {
					streaming = append(streaming, x)
				}
			}
			now = now.Add(time.Duration(r.IntN(3000)) * time.Millisecond)
			applied := ""
			if len(named) > 0 {
				applied = replicate.SyncSpec{Method: replicate.SyncFirst, Num: len(named), Names: named}.String()
			}
			p := planSync(syncInput{Mode: mode, N: n, Current: record, Present: present, Streaming: streaming,
				Applied: applied, NoSyncSince: since, Now: now, Grace: 2 * time.Second})
			record, named = checkSyncSteps(t, record, named, p)
			present = present || p.Widen != nil || p.Narrow != nil
			since = p.NoSyncSince
			if len(named) > n {
				t.Fatalf("%d standbys named, want at most %d", len(named), n)
			}
			if mode == SyncStrict && len(record) == 0 && present {
				// Strict never empties the record once it named someone.
				t.Fatalf("strict mode emptied the sync record")
			}
		}
	}
}

func TestPlanSyncBeforePromote(t *testing.T) {
	union, spec, err := planSyncBeforePromote("n2", []string{"n3", "n1", "n2"}, []string{"n2"}, SyncOn, 1)
	if err != nil || !slices.Equal(union, []string{"n1", "n2", "n3"}) || spec.String() != (replicate.SyncSpec{Method: replicate.SyncFirst, Num: 1, Names: []string{"n1", "n3"}}).String() {
		t.Errorf("got %v %v %v", union, spec, err)
	}
	if union, _, err := planSyncBeforePromote("n2", []string{"n2"}, nil, SyncOn, 1); union != nil || err != nil {
		t.Errorf("alone, on: %v %v", union, err)
	}
	if _, _, err := planSyncBeforePromote("n2", []string{"n2"}, nil, SyncStrict, 1); err == nil {
		t.Errorf("alone, strict: no error")
	}
}

func TestPlanSlots(t *testing.T) {
	now := time.Unix(1000, 0)
	own := map[string]time.Time{"n2": {}, "n3": now.Add(-time.Hour), "n4": {}, "n1": {}}
	p := planSlots("n1", []string{"n1", "n2"}, own, now, 30*time.Minute)
	if !slices.Equal(p.Ensure, []string{"n2"}) {
		t.Errorf("Ensure %v", p.Ensure)
	}
	if !slices.Equal(p.Drop, []string{"n3"}) {
		t.Errorf("Drop %v, want [n3] (gone for an hour)", p.Drop)
	}
	if !p.Gone["n4"].Equal(now) || !p.Gone["n2"].IsZero() || !p.Gone["n1"].IsZero() {
		t.Errorf("Gone %v", p.Gone)
	}
	if !own["n4"].IsZero() {
		t.Errorf("planSlots changed its input")
	}
	if p := planSlots("n1", []string{"n1"}, own, now, -1); len(p.Drop) != 0 {
		t.Errorf("negative TTL drops %v", p.Drop)
	}
}

func TestKeepTerm(t *testing.T) {
	o := baseObs()
	o.Leading = true
	o.Leader = leader("n1", 1)
	o.Local.ReceiveLSN, o.Local.ReplayLSN = 100, 100
	o.Members = map[string]member{"n2": {Rec: keyspace.MemberRecord{Node: "n2", Role: keyspace.RoleReplica, Healthy: true, Timeline: 1, ReceiveLSN: 200}, ModRev: 5}}
	if keep, why := keepTerm(o); keep {
		t.Errorf("kept the term although n2 is ahead (%s)", why)
	}
	o.Switchover = &keyspace.SwitchoverRecord{From: "n3", To: "n1"}
	if keep, _ := keepTerm(o); !keep {
		t.Errorf("a switchover to this node: term not kept")
	}
	o.Switchover = nil
	o.Members["n2"] = member{Rec: keyspace.MemberRecord{Node: "n2", Role: keyspace.RoleReplica, Healthy: true, Timeline: 1, ReceiveLSN: 50}, ModRev: 5}
	if keep, why := keepTerm(o); !keep {
		t.Errorf("best candidate did not keep its term: %s", why)
	}
}

func TestSwitchoverTargetDeterministic(t *testing.T) {
	o := baseObs()
	o.Switchover = &keyspace.SwitchoverRecord{From: "n1"}
	rec := func(n string, lsn uint64, prio int) member {
		return member{Rec: keyspace.MemberRecord{Node: n, Role: keyspace.RoleReplica, Healthy: true, ReceiveLSN: lsn, Priority: prio}}
	}
	o.Members = map[string]member{"n1": {}, "n4": rec("n4", 100, 0), "n2": rec("n2", 100, 0), "n3": rec("n3", 100, 0), "n5": rec("n5", 90, 9)}
	for range 50 { // map order varies between iterations
		if got := switchoverTarget(o); got != "n2" {
			t.Fatalf("target %s, want n2 (equal LSN and priority: lowest name)", got)
		}
	}
	o.Members["n3"] = rec("n3", 100, 1)
	if got := switchoverTarget(o); got != "n3" {
		t.Errorf("target %s, want n3 (higher priority at equal LSN)", got)
	}
	o.Switchover.To = "n5"
	if got := switchoverTarget(o); got != "n5" {
		t.Errorf("target %s, want the named n5", got)
	}
}
