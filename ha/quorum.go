package ha

import (
	"fmt"

	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pgha/pgha/replicate"
)

// This file is quorum commit (SyncQuorum, SyncQuorumStrict) as pure
// functions: synchronous_standby_names = 'ANY k (v1, v2, ...)' makes each
// commit wait for any k of the voters, and a standby may be promoted only
// with the positions of at least N - k + 1 voters heard after the leader
// was lost, and only if it is the most advanced of them (R + W > N).
//
// The sync record holds the voters V_r and their k_r; what PostgreSQL
// applies is (k_a, V_a). A commit acknowledged under (k_a, V_a) is on at
// least k_a members of V_a, so at least k_a - |V_a \ V_r| of them are
// voters of the record. Any N_r - k_r + 1 voters of the record include
// one of those exactly when
//
//	k_a - |V_a \ V_r| >= k_r.                                   (Q)
//
// planQuorum keeps (Q) true at every instant for every applied
// configuration whose commits are not yet known to be covered by the
// current one: it widens the record (union of voters, minimum k) before
// it applies a new configuration, and narrows it to the new one only once
// k of the new voters have flushed past the primary's position of the
// round after the apply (so the walsenders have reloaded, and every
// commit acknowledged under the old configuration lies below that
// position, on k new voters). Widening this way preserves (Q) for every
// configuration it held for: with V ⊇ V_r and k <= k_r, the left side of
// (Q) does not shrink and the right side does not grow.

// quorumSet is a quorum configuration: any K of Voters.
type quorumSet struct {
	K      int
	Voters []string
}

func (q quorumSet) equal(o quorumSet) bool {
	return q.K == o.K && slices.Equal(sortedNames(q.Voters), sortedNames(o.Voters))
}

func sortedNames(s []string) []string { return slices.Sorted(slices.Values(s)) }

// covers reports whether record r protects every commit acknowledged under
// applied configuration a: condition (Q).
func (r quorumSet) covers(a quorumSet) bool {
	if len(a.Voters) == 0 {
		return true // asynchronous: nothing acknowledged by standbys to protect
	}
	outside := 0
	for _, v := range a.Voters {
		if !slices.Contains(r.Voters, v) {
			outside++
		}
	}
	return a.K-outside >= r.K
}

// quorumInput is what the quorum policy looks at.
type quorumInput struct {
	Strict bool
	// K is SyncStandbys: acknowledgements per commit wanted.
	K int
	// Record is the sync record (Present: it exists); Applied is what
	// synchronous_standby_names applies now ({0, nil}: asynchronous).
	Record  quorumSet
	Present bool
	Applied quorumSet
	// Streaming are the standbys streaming now, Flushed their flush
	// positions (pg_stat_replication).
	Streaming []string
	Flushed   map[string]uint64
	// Pending is the applied configuration's confirmation point: the
	// primary's write position in the first round after it was applied,
	// 0 until then.
	Pending uint64
	// NoSyncSince, Now and Grace time the fall back to asynchronous
	// commits when no standby streams (non-strict only).
	NoSyncSince time.Time
	Now         time.Time
	Grace       time.Duration
}

// quorumPlan is what the leader does this round, in order: write Widen
// to the sync record, apply Apply as synchronous_standby_names, write
// Narrow to the sync record. A nil pointer means nothing to do.
type quorumPlan struct {
	Widen       *quorumSet
	Apply       *quorumSet
	Narrow      *quorumSet
	NoSyncSince time.Time
}

// quorumTarget is the configuration wanted now: every streaming standby
// votes; k is K, or fewer when fewer stream (non-strict). ok is false when
// the current configuration must be kept (strict with too few standbys,
// or none within the grace).
func quorumTarget(in quorumInput) (quorumSet, time.Time, bool) {
	voters := sortedNames(in.Streaming)
	if len(voters) >= in.K {
		return quorumSet{K: in.K, Voters: voters}, time.Time{}, true
	}
	if in.Strict {
		return quorumSet{}, in.NoSyncSince, false
	}
	if len(voters) > 0 {
		return quorumSet{K: len(voters), Voters: voters}, time.Time{}, true
	}
	since := in.NoSyncSince
	if since.IsZero() {
		since = in.Now
	}
	if in.Now.Sub(since) < in.Grace {
		return quorumSet{}, since, false
	}
	return quorumSet{}, since, true // asynchronous
}

// planQuorum keeps (Q) at every instant; see the file's comment.
func planQuorum(in quorumInput) quorumPlan {
	target, since, ok := quorumTarget(in)
	p := quorumPlan{NoSyncSince: since}
	if !ok {
		return p
	}
	if !in.Applied.equal(target) {
		// Widen the record to protect the applied configuration, the
		// target, and whatever the record protects now.
		w := quorumSet{K: min(in.Applied.K, target.K), Voters: sortedNames(in.Record.Voters)}
		if len(in.Applied.Voters) == 0 {
			w.K = target.K
		}
		if in.Present && in.Record.K > 0 {
			w.K = min(w.K, in.Record.K)
		}
		for _, v := range slices.Concat(in.Applied.Voters, target.Voters) {
			if !slices.Contains(w.Voters, v) {
				w.Voters = append(w.Voters, v)
			}
		}
		w.Voters = sortedNames(w.Voters)
		if len(w.Voters) > 0 && w.K < 1 {
			w.K = 1
		}
		if !in.Present || !w.equal(in.Record) {
			p.Widen = &w
		}
		p.Apply = &target
		return p
	}
	if in.Present && in.Record.equal(target) {
		return p // steady
	}
	// Applied; narrow once k of its voters have flushed past the
	// confirmation point.
	if in.Pending == 0 {
		return p
	}
	confirmed := 0
	for _, v := range target.Voters {
		if in.Flushed[v] >= in.Pending {
			confirmed++
		}
	}
	if confirmed >= target.K {
		p.Narrow = &target
	}
	return p
}

// quorumHeard checks the promotion rule of quorum mode for candidate
// self: with the record's N voters and k, the positions of at least
// N - k + 1 voters (this node counts if it is one) must be known from
// records written after the leader was lost. It returns why not.
func quorumHeard(o observation, heard []string) (bool, string) {
	n, k := len(o.SyncSet), o.SyncQuorum
	need := n - k + 1
	got := 0
	for _, v := range o.SyncSet {
		if slices.Contains(heard, v) {
			got++
		}
	}
	if got >= need {
		return true, ""
	}
	return false, fmt.Sprintf("quorum commit: heard %d of %d voters since the leader was lost, need %d (N - k + 1 with k = %d)", got, n, need, k)
}

// quorumRule is the promotion rule of quorum mode for this node (local
// state l), no leader being there: it must be a voter (checked by
// eligible), have heard N - k + 1 voters (fresh records, itself
// included), and no voter heard may be ahead of it: a voter that is
// ahead may hold acknowledged commits this node lacks, whether or not
// its PostgreSQL runs. The last primary of the cluster's timeline has
// every commit and is exempt.
func quorumRule(o observation) (bool, string) {
	if !o.Policy.SyncMode.quorum() || !o.SyncPresent || lastPrimary(o, o.Node, o.Local) {
		return true, ""
	}
	var heard []string
	if slices.Contains(o.SyncSet, o.Node) {
		heard = append(heard, o.Node)
	}
	self := o.Local.position()
	for _, v := range o.SyncSet {
		m, ok := o.Members[v]
		if v == o.Node || !ok || m.ModRev <= o.LeaderGoneRev {
			continue
		}
		heard = append(heard, v)
		r := m.Rec
		if pos := max(r.ReceiveLSN, r.ReplayLSN, r.WriteLSN); pos > self {
			return false, fmt.Sprintf("quorum commit: voter %s is ahead (LSN %d > %d)", v, pos, self)
		}
	}
	return quorumHeard(o, heard)
}

// parseApplied reads synchronous_standby_names as this package writes it
// ('ANY k ("a", "b")' or 'FIRST k (...)'; FIRST k of V is, for safety,
// some k of V, like ANY). Anything else is reported as not ok.
func parseApplied(s string) (quorumSet, bool) {
	if s == "" {
		return quorumSet{}, true
	}
	m := appliedRE.FindStringSubmatch(s)
	if m == nil {
		return quorumSet{}, false
	}
	k, err := strconv.Atoi(m[2])
	if err != nil {
		return quorumSet{}, false
	}
	q := quorumSet{K: k}
	for _, part := range strings.Split(m[3], ",") {
		name := strings.TrimSpace(part)
		if len(name) < 2 || name[0] != '"' || name[len(name)-1] != '"' {
			return quorumSet{}, false
		}
		q.Voters = append(q.Voters, strings.ReplaceAll(name[1:len(name)-1], `""`, `"`))
	}
	return q, k >= 1 && k <= len(q.Voters)
}

var appliedRE = regexp.MustCompile(`^(ANY|FIRST) ([0-9]+) \((.*)\)$`)

// planQuorumBeforePromote is the quorum configuration a standby about to
// be promoted applies (any k of the other members, k = SyncStandbys, or
// fewer when fewer members exist and not strict), and the sync record to
// write first: the current record widened by them (union, minimum k), so
// that (Q) holds from the promotion's first commit.
func planQuorumBeforePromote(self string, members []string, record quorumSet, present, strict bool, k int) (quorumSet, replicate.SyncSpec, error) {
	var others []string
	for _, name := range members {
		if name != self {
			others = append(others, name)
		}
	}
	others = sortedNames(others)
	if len(others) < k {
		if strict {
			return quorumSet{}, replicate.SyncSpec{}, fmt.Errorf("strict quorum commit needs %d other members to confirm commits, and %d exist", k, len(others))
		}
		k = len(others)
	}
	if k == 0 {
		return quorumSet{}, replicate.SyncSpec{}, nil
	}
	rec := quorumSet{K: k, Voters: sortedNames(record.Voters)}
	if present && record.K > 0 {
		rec.K = min(rec.K, record.K)
	}
	for _, v := range others {
		if !slices.Contains(rec.Voters, v) {
			rec.Voters = append(rec.Voters, v)
		}
	}
	rec.Voters = sortedNames(rec.Voters)
	return rec, replicate.SyncSpec{Method: replicate.SyncAny, Num: k, Names: others}, nil
}
