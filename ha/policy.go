package ha

import (
	"cmp"
	"errors"
	"maps"
	"slices"
	"time"

	"github.com/pgha/pgha/internal/keyspace"
	"github.com/pgha/pgha/replicate"
)

// This file holds the leader's policies as pure functions of plain values
// (CloudNativePG's replicas_quorum.go is the model): which standbys are
// synchronous and when to fall back to asynchronous commits, which
// replication slots to keep and drop, whether a fresh winner keeps its
// term. leader.go and term.go are the thin I/O shells around them. Each
// computes on copies and returns what to do; none reads a clock.

// syncInput is what the synchronous-set policy looks at.
type syncInput struct {
	Mode SyncMode
	// N is SyncStandbys: how many standbys confirm each commit.
	N int
	// Current is the sync record's standbys; Present whether it exists.
	Current []string
	Present bool
	// Streaming are the standbys streaming from the leader now
	// (pg_stat_replication state "streaming").
	Streaming []string
	// Applied is the synchronous_standby_names in effect.
	Applied string
	// NoSyncSince is when the leader first found no standby to name (zero
	// otherwise); Grace how long it waits then before it falls back to
	// asynchronous commits (SyncOn only).
	NoSyncSince time.Time
	Now         time.Time
	Grace       time.Duration
}

// syncPlan is what the leader does, in this order: write Widen to the sync
// record (if not nil), apply Spec as synchronous_standby_names (if Apply),
// write Narrow to the sync record (if not nil).
type syncPlan struct {
	Widen  []string
	Spec   replicate.SyncSpec
	Apply  bool
	Narrow []string
	// NoSyncSince is the value to keep for the next round.
	NoSyncSince time.Time
}

// planSync keeps this invariant: at every instant, every standby that
// synchronous_standby_names names (so that may hold an acknowledged commit
// the others lack) is in the sync record, the set of standbys that may be
// promoted. So the record is widened before a standby is named, and
// narrowed only after it is no longer named. Standbys already synchronous
// stay while they stream; others are added by name order. With none
// streaming, SyncStrict keeps waiting for the named ones (writes stop);
// SyncOn waits Grace (a WAL receiver's reconnect) and then falls back to
// asynchronous commits with an empty record, so that no standby can then
// be promoted automatically.
func planSync(in syncInput) syncPlan {
	var want []string
	for _, n := range in.Current {
		if slices.Contains(in.Streaming, n) && len(want) < in.N {
			want = append(want, n)
		}
	}
	streaming := slices.Sorted(slices.Values(in.Streaming))
	for _, n := range streaming {
		if len(want) < in.N && !slices.Contains(want, n) {
			want = append(want, n)
		}
	}
	p := syncPlan{}
	if len(want) == 0 {
		if in.Mode == SyncStrict {
			return syncPlan{NoSyncSince: in.NoSyncSince} // keep waiting: never asynchronous
		}
		p.NoSyncSince = in.NoSyncSince
		if p.NoSyncSince.IsZero() {
			p.NoSyncSince = in.Now
		}
		if in.Now.Sub(p.NoSyncSince) < in.Grace {
			return p
		}
	}
	slices.Sort(want)
	union := sortedUnion(in.Current, want)
	if !in.Present || !slices.Equal(union, slices.Sorted(slices.Values(in.Current))) {
		p.Widen = union
	}
	if len(want) > 0 {
		p.Spec = replicate.SyncSpec{Method: replicate.SyncFirst, Num: len(want), Names: want}
	}
	p.Apply = p.Spec.String() != in.Applied
	if !slices.Equal(union, want) {
		p.Narrow = want
		if p.Narrow == nil {
			p.Narrow = []string{}
		}
	}
	return p
}

// errStrictNoStandby: strict synchronous mode has no standby to confirm
// the new primary's commits.
var errStrictNoStandby = errors.New("strict synchronous mode and no other member to confirm commits")

// planSyncBeforePromote names every other member as a synchronous standby
// candidate (FIRST n of them) on a standby about to be promoted: promoted
// as it is, it would carry no synchronous_standby_names and acknowledge
// commits alone. It returns the sync record to write first (the current
// one widened by them) and the spec to apply; a zero spec with no error
// means nothing to do (SyncOn with no other member).
func planSyncBeforePromote(self string, members []string, current []string, mode SyncMode, n int) ([]string, replicate.SyncSpec, error) {
	var others []string
	for _, name := range members {
		if name != self {
			others = append(others, name)
		}
	}
	if len(others) == 0 {
		if mode == SyncStrict {
			return nil, replicate.SyncSpec{}, errStrictNoStandby
		}
		return nil, replicate.SyncSpec{}, nil
	}
	slices.Sort(others)
	return sortedUnion(current, others), replicate.SyncSpec{Method: replicate.SyncFirst, Num: min(n, len(others)), Names: others}, nil
}

func sortedUnion(a, b []string) []string {
	u := slices.Clone(a)
	for _, n := range b {
		if !slices.Contains(u, n) {
			u = append(u, n)
		}
	}
	slices.Sort(u)
	return u
}

// slotPlan is what the leader does with replication slots this round.
type slotPlan struct {
	// Ensure are the slots to create if missing, one per other member.
	Ensure []string
	// Drop are slots this manager created whose member has been gone for
	// the departed-slot TTL.
	Drop []string
	// Gone is the new "first seen gone" mark of each slot this manager
	// owns (zero while its member is present); Ensure and Drop results
	// are applied on top by the caller.
	Gone map[string]time.Time
}

// planSlots keeps a slot for every other member, and drops a slot this
// manager created (own, with when its member was first seen gone) once
// its member has been gone for ttl (never when ttl <= 0). Slots it did not
// create are never in own, so never dropped.
func planSlots(self string, members []string, own map[string]time.Time, now time.Time, ttl time.Duration) slotPlan {
	p := slotPlan{Gone: make(map[string]time.Time, len(own))}
	present := map[string]bool{}
	for _, name := range members {
		if name == self {
			continue
		}
		slot := replicate.SlotName(name)
		if !present[slot] {
			present[slot] = true
			p.Ensure = append(p.Ensure, slot)
		}
	}
	slices.Sort(p.Ensure)
	for slot, gone := range own {
		switch {
		case present[slot] || slot == replicate.SlotName(self):
			p.Gone[slot] = time.Time{}
		case gone.IsZero():
			p.Gone[slot] = now
		default:
			p.Gone[slot] = gone
			if ttl > 0 && now.Sub(gone) >= ttl {
				p.Drop = append(p.Drop, slot)
			}
		}
	}
	slices.Sort(p.Drop)
	return p
}

// keepTerm reports whether a candidate that has just won the election
// keeps its term, judged on a fresh observation o (taken after the win):
// a switchover or manual failover naming it is the operator's choice;
// otherwise it must still be the best candidate, since another node may
// have published a better position while it campaigned.
func keepTerm(o observation) (bool, string) {
	if o.Switchover != nil && o.Switchover.To == o.Node && o.Switchover.At.IsZero() {
		return true, ""
	}
	o.Leading, o.Leader = false, nil
	if best, why := bestCandidate(o); best != o.Node {
		return false, why
	}
	return quorumRule(o)
}

// rankReplica orders switchover targets: most advanced first, then higher
// priority, then name, so that the choice never depends on map order.
func rankReplica(a, b candidate) int {
	return cmp.Or(cmp.Compare(b.LSN, a.LSN), cmp.Compare(b.Priority, a.Priority), cmp.Compare(a.Node, b.Node))
}

// removeStep is what the leader does for one remove request.
type removeStep struct {
	Node string
	// Outcome, when set, is written into the request instead of acting
	// (keyspace.RemoveLive, keyspace.RemoveUnknown).
	Outcome string
	// DropSlot is the slot to drop ("" for none); DeleteRecord: delete
	// the member record, which is on no lease.
	DropSlot     string
	DeleteRecord bool
}

// planRemovals decides, for each pending remove request (in node order),
// what the leader self does, given the member records and the slots on
// its server. A member whose record is on a lease is live (etcd deletes a
// key when its lease expires), and so is the leader itself: refused. A
// member with neither a record nor a slot is unknown. A slot that another
// live member's name maps to (SlotName is not one-to-one) is kept.
func planRemovals(self string, members map[string]member, removals map[string]removal, slots []string) []removeStep {
	var steps []removeStep
	for _, node := range slices.Sorted(maps.Keys(removals)) {
		if removals[node].Rec.Outcome != "" {
			continue // answered; the operator's tool deletes it
		}
		m, present := members[node]
		if node == self || present && m.Lease != 0 {
			steps = append(steps, removeStep{Node: node, Outcome: keyspace.RemoveLive})
			continue
		}
		st := removeStep{Node: node, DeleteRecord: present}
		slot := replicate.SlotName(node)
		shared := false
		for name := range members {
			if name != node && replicate.SlotName(name) == slot {
				shared = true
			}
		}
		if slices.Contains(slots, slot) && !shared {
			st.DropSlot = slot
		}
		if !present && st.DropSlot == "" {
			st.Outcome = keyspace.RemoveUnknown
		}
		steps = append(steps, st)
	}
	return steps
}
