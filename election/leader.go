package election

import (
	"iter"
	"strconv"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
)

// IsCandidate reports whether kv is a candidate key of the election at
// prefix: a key named prefix + "/" + its own lease ID in lower-case hex,
// bound to that non-zero lease (the layout of etcd's concurrency.Election
// and of [Elector.Campaign]). A trailing "/" on prefix is ignored. Any
// other key under the prefix is foreign: it takes no part in the election.
func IsCandidate(prefix string, kv *mvccpb.KeyValue) bool {
	if kv == nil || kv.Lease == 0 {
		return false
	}
	pfx := strings.TrimRight(prefix, "/") + "/"
	return string(kv.Key) == pfx+strconv.FormatInt(kv.Lease, 16)
}

// LeaderKV returns the leader key of the election at prefix among kvs, or
// nil when none of them is a candidate ([IsCandidate]). The leader is the
// candidate with the lowest create revision; on equal create revisions
// (keys created in one transaction, which Campaign never does) the lower
// key wins, so the answer never depends on the order of kvs. kvs may hold
// any keys, in any order: those that are not candidates of this election
// are ignored. The leader's create revision is its term's fencing token
// ([Term.Token], [Leader.Token]).
//
// This is the one rule for "who leads": everything that reads the
// election's keys from etcd (a Get, a watch, a cached copy) decides with
// it, e.g. LeaderKV(prefix, slices.Values(resp.Kvs)) or
// LeaderKV(prefix, maps.Values(cache)).
func LeaderKV(prefix string, kvs iter.Seq[*mvccpb.KeyValue]) *mvccpb.KeyValue {
	var best *mvccpb.KeyValue
	for kv := range kvs {
		if !IsCandidate(prefix, kv) {
			continue
		}
		if best == nil || kv.CreateRevision < best.CreateRevision ||
			kv.CreateRevision == best.CreateRevision && string(kv.Key) < string(best.Key) {
			best = kv
		}
	}
	return best
}
