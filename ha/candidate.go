package ha

import (
	"cmp"
	"fmt"
	"slices"

	"github.com/pgha/pgha/internal/keyspace"
)

// This file is candidate choice: who may be promoted (eligible), who is
// the best candidate on fresh records, and a switchover's target. Pure,
// like decide.go.

// latestTimeline is the cluster's newest timeline from the history.
func latestTimeline(o observation) uint32 {
	if n := len(o.History); n > 0 {
		return o.History[n-1].Timeline
	}
	return 0
}

// lastPrimary reports whether node is the primary of the cluster's latest
// timeline, by its own local state (l.WasPrimary is known only for this
// node): it acknowledged every commit acknowledged on that timeline, so in
// synchronous mode it may lead again although it is not in the sync set
// (which names its standbys). Without this, a leader that lost its lease
// while its only synchronous standby was lost too would leave the cluster
// without a primary for good.
func lastPrimary(o observation, node string, l local) bool {
	n := len(o.History)
	return node == o.Node && l.WasPrimary && n > 0 && o.History[n-1].Leader == node && l.Timeline == o.History[n-1].Timeline
}

// eligible reports whether node (with local state l) may be promoted.
func eligible(o observation, node string, l local) (bool, string) {
	switch {
	case node == o.Node && o.Policy.NoFailover:
		return false, "nofailover is set"
	case o.Failsafe != nil && !o.Failsafe.Has(node):
		return false, fmt.Sprintf("not named in the failsafe record of %s: only its members may lead while it exists", o.Failsafe.Leader)
	case !l.Initialized:
		return false, "no data"
	case l.RewindIncomplete:
		return false, "an interrupted rewind left the data directory unusable"
	case l.WasPrimary && o.Initialized && len(o.History) > 0 && l.Timeline < latestTimeline(o):
		return false, fmt.Sprintf("former primary on timeline %d, behind the cluster's timeline %d", l.Timeline, latestTimeline(o))
	case l.Timeline < latestTimeline(o):
		return false, fmt.Sprintf("on timeline %d, behind the cluster's timeline %d", l.Timeline, latestTimeline(o))
	case o.Policy.SyncMode != SyncOff && o.SyncPresent && !slices.Contains(o.SyncSet, node) && !lastPrimary(o, node, l):
		return false, "not in the synchronous standby set"
	case (o.Policy.SyncMode == SyncStrict || o.Policy.SyncMode == SyncQuorumStrict) && !o.SyncPresent && o.Initialized && len(o.History) > 0:
		return false, "strict synchronous mode and no sync record"
	case o.LastLeaderLSN > 0 && l.position() < o.LastLeaderLSN && o.LastLeaderLSN-l.position() > uint64(o.Policy.MaxLagOnFailover):
		return false, fmt.Sprintf("lag %d bytes exceeds MaxLagOnFailover %d", o.LastLeaderLSN-l.position(), o.Policy.MaxLagOnFailover)
	}
	return true, ""
}

// candidate is one node's bid, as seen in its fresh member record (or, for
// this node, its own local state).
type candidate struct {
	Node     string
	Timeline uint32
	LSN      uint64
	Priority int
}

// bestCandidate ranks this node and every member whose record is fresh
// (written after the leader was lost): highest (timeline, LSN), then
// priority, then name. Members that are not eligible by their own record
// are skipped. It returns the winner and, when it is not this node, why.
func bestCandidate(o observation) (string, string) {
	self := candidate{Node: o.Node, Timeline: o.Local.Timeline, LSN: o.Local.position(), Priority: o.Policy.Priority}
	cands := []candidate{self}
	for name, m := range o.Members {
		if name == o.Node {
			continue
		}
		r := m.Rec
		if m.ModRev <= o.LeaderGoneRev {
			continue // stale: written before the leader was lost
		}
		if r.NoFailover || !r.Healthy || r.Role != keyspace.RoleReplica {
			continue
		}
		ml := local{Initialized: true, Timeline: r.Timeline, ReceiveLSN: r.ReceiveLSN, ReplayLSN: r.ReplayLSN}
		if ok, _ := eligible(o, name, ml); !ok {
			continue
		}
		cands = append(cands, candidate{Node: name, Timeline: r.Timeline, LSN: ml.position(), Priority: r.Priority})
	}
	slices.SortFunc(cands, func(a, b candidate) int {
		return cmp.Or(
			cmp.Compare(b.Timeline, a.Timeline),
			cmp.Compare(b.LSN, a.LSN),
			cmp.Compare(b.Priority, a.Priority),
			cmp.Compare(a.Node, b.Node),
		)
	})
	best := cands[0]
	if best.Node == o.Node {
		return o.Node, ""
	}
	return best.Node, fmt.Sprintf("%s is a better candidate (timeline %d, LSN %d, priority %d) than this node (timeline %d, LSN %d, priority %d)",
		best.Node, best.Timeline, best.LSN, best.Priority, self.Timeline, self.LSN, self.Priority)
}

// switchoverTarget returns the node a pending switchover hands over to, or
// "" if no standby qualifies: the named one if it is a healthy streaming
// replica, else the most advanced healthy replica (ties: priority, then
// name; never map order).
func switchoverTarget(o observation) string {
	var cands []candidate
	for name, m := range o.Members {
		r := m.Rec
		if name == o.Node || !r.Healthy || r.Role != keyspace.RoleReplica || r.NoFailover {
			continue
		}
		if o.Policy.SyncMode != SyncOff && o.SyncPresent && !slices.Contains(o.SyncSet, name) {
			continue
		}
		if o.Switchover.To != "" && name != o.Switchover.To {
			continue
		}
		cands = append(cands, candidate{Node: name, LSN: max(r.ReceiveLSN, r.ReplayLSN), Priority: r.Priority})
	}
	if len(cands) == 0 {
		return ""
	}
	return slices.MinFunc(cands, rankReplica).Node
}
