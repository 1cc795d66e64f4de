package driver

import (
	"slices"
	"strings"

	"github.com/pgha/pgha/internal/keyspace"
)

// nodeView is what the choice of primary and replicas reads about one node:
// plain values, copied from the node's atomics under Pool.mu.
type nodeView struct {
	key   string
	state wstate
	// inRecovery: the node's latest probe succeeded and found it in recovery.
	inRecovery bool
	// probed: the node has a probe result (inRecovery is evidence).
	probed bool
	// notReplica: its member record names another role than replica.
	notReplica bool
	// recordReplica: its member record says a healthy replica.
	recordReplica bool
}

// topoInput is the evidence the choice is made from.
type topoInput struct {
	// byLeader: etcd has answered, so the leader record names the primary.
	byLeader bool
	// byRecords: etcd answers (its watch is not broken), so the member
	// records name the replicas; the nodes are not probed then.
	byRecords bool
	// leader is the node name of the leader record; "" if none.
	leader string
	// nodes are the candidates, in the pool's order (candidatesLocked).
	nodes []nodeView
	// current is the key of the primary now; "" if none.
	current string
	// presume: host mode with one host, presumed the primary until it is
	// found read-only (probes run only after failures).
	presume bool
}

// topoChoice is the outcome.
type topoChoice struct {
	// primary is the key of the node to write to; "" if none.
	primary string
	// replicas are the keys of the nodes that may serve reads, in key order.
	replicas []string
	// writable lists the hosts that accept writes when there are several
	// (host mode); nil otherwise.
	writable []string
}

// chooseTopology picks the primary and the replicas. It is pure.
//
// The rule (invariant 5, the pool never writes to a standby): with etcd,
// the primary is the leader record's node, and only while the latest
// evidence says it accepts writes; without etcd (or before etcd answers),
// the primary is the one candidate that accepts writes, or the only host
// (presume) unless it was found read-only. When several do,
// the current primary is kept if it is among them and none is chosen
// otherwise: the pool never picks a side in a split brain. Replicas are
// the other nodes whose member record says a healthy replica while etcd
// answers (byRecords: no node is probed then); otherwise the nodes whose
// latest probe found them in recovery (less, with etcd, those whose
// member record names another role), or, for a node not probed yet, whose
// member record says a healthy replica.
func chooseTopology(in topoInput) topoChoice {
	var out topoChoice
	if in.byLeader {
		for _, n := range in.nodes {
			if n.key == in.leader && n.state == wWritable {
				out.primary = n.key
			}
		}
	} else {
		var writable []string
		for _, n := range in.nodes {
			if n.state == wWritable {
				writable = append(writable, n.key)
			}
		}
		switch {
		case in.presume && len(in.nodes) == 1 && in.nodes[0].state != wReadOnly:
			out.primary = in.nodes[0].key
		case len(writable) == 1:
			out.primary = writable[0]
		case len(writable) > 1:
			out.writable = writable
			if slices.Contains(writable, in.current) {
				out.primary = in.current
			}
		}
	}
	for _, n := range in.nodes {
		replica := n.inRecovery && !(in.byLeader && n.notReplica)
		if in.byRecords || !n.probed {
			replica = n.recordReplica
		}
		if n.key == out.primary || !replica {
			continue
		}
		out.replicas = append(out.replicas, n.key)
	}
	return out
}

// publishLocked recomputes the primary and the replicas from the current
// evidence (chooseTopology), applies the choice and wakes waiters. Called
// under p.mu.
func (p *Pool) publishLocked(reason string) {
	if p.closed {
		return
	}
	old := p.primary.Load()
	cands := p.candidatesLocked()
	byKey := make(map[string]*node, len(cands))
	in := topoInput{byLeader: p.etcdMode && p.etcdAnswered, byRecords: p.byRecordsLocked(), leader: p.leader, current: keyOf(old), presume: p.single}
	for _, n := range cands {
		byKey[n.key] = n
		v := nodeView{key: n.key, state: n.state()}
		if r := n.probe.Load(); r != nil {
			v.probed = true
			v.inRecovery = r.err == nil && r.inRecovery
		}
		if m, ok := p.members[n.key]; ok {
			v.notReplica = m.Role != keyspace.RoleReplica
			v.recordReplica = m.Role == keyspace.RoleReplica && m.Healthy
		}
		in.nodes = append(in.nodes, v)
	}
	choice := chooseTopology(in)

	next := byKey[choice.primary]
	if choice.writable == nil {
		p.splitWarned = ""
	} else if k := strings.Join(choice.writable, ","); k != p.splitWarned {
		p.splitWarned = k
		p.log.Warn("several hosts accept writes", "hosts", choice.writable, "keeping", keyOf(next))
	}
	if next != nil && (next.dropped || p.writePool(next) == nil) {
		next = nil
	}
	if next != old {
		p.switchPrimaryLocked(old, next, reason)
	}
	reps := make([]*node, 0, len(choice.replicas))
	for _, k := range choice.replicas {
		reps = append(reps, byKey[k])
	}
	p.replicas.Store(&reps)
	close(p.changed)
	p.changed = make(chan struct{})
}

// switchPrimaryLocked makes next the primary instead of old (either may be
// nil): it stores it, deposes old (closes its write pool), logs the
// change and counts a failover. Called under p.mu.
func (p *Pool) switchPrimaryLocked(old, next *node, reason string) {
	p.primary.Store(next)
	if old != nil {
		p.depose(old)
	}
	switch {
	case next == nil:
		p.log.Warn("no writable primary", "previous", keyOf(old), "reason", reason)
	case old == nil:
		p.log.Info("primary found", "node", next.key, "addr", next.addr, "reason", reason)
	default:
		p.log.Warn("primary changed", "from", old.key, "to", next.key, "addr", next.addr, "reason", reason)
	}
	if next != nil && p.tel.everPrimary.Swap(true) && p.tel.lastPrimary != next.key {
		p.tel.failover(p.ctx, next.key)
	}
	if next != nil {
		p.tel.lastPrimary = next.key
		p.everPrimary = true
	}
}

// candidatesLocked lists the nodes the topology currently knows, in key
// order once etcd has answered (the host list's order before).
func (p *Pool) candidatesLocked() []*node {
	if p.etcdMode && !p.etcdAnswered {
		return p.hostNodes
	}
	ns := make([]*node, 0, len(p.nodes))
	for _, n := range p.nodes {
		ns = append(ns, n)
	}
	slices.SortFunc(ns, func(a, b *node) int { return strings.Compare(a.key, b.key) })
	return ns
}

func keyOf(n *node) string {
	if n == nil {
		return ""
	}
	return n.key
}
