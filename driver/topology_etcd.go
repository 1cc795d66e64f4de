package driver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/pgha/pgha/election"
	"github.com/pgha/pgha/internal/etcdmirror"
	"github.com/pgha/pgha/internal/keyspace"
)

// startEtcd starts the goroutine that follows the leader record and the
// member records: one mirror (one etcd watcher) of the cluster's prefix.
func (p *Pool) startEtcd(cli *clientv3.Client) error {
	mr, err := etcdmirror.New(etcdmirror.Config{Client: cli, Key: p.layout.Prefix(), Prefix: true, Logger: p.log, OnBreak: p.etcdBroke, SilenceLimit: watchSilenceLimit})
	if err != nil {
		return fmt.Errorf("driver: watch %s: %w", p.layout.Prefix(), err)
	}
	p.wg.Go(func() { p.watchCluster(mr) })
	p.wg.Go(func() { p.rereadLeader(cli) })
	return nil
}

// rereadLeader reads the leader key when the probes ask (helpLeaderLocked)
// and applies what it finds, until the pool closes. Each read is a
// linearizable Get bounded by leaderReadTimeout, tried up to three times:
// the client's balancer sends each attempt to the next etcd member, so a
// read that went to a dead member is followed by one to a live member
// (the watch's stream, in contrast, stays on its member until it is found
// silent).
func (p *Pool) rereadLeader(cli *clientv3.Client) {
	pfx := p.layout.Leader() + "/"
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-p.reread:
		}
		for range 3 {
			ctx, cancel := context.WithTimeout(p.ctx, leaderReadTimeout)
			resp, err := cli.Get(ctx, pfx, clientv3.WithPrefix())
			cancel()
			if p.ctx.Err() != nil {
				return
			}
			if err != nil {
				p.log.Debug("leader key read failed", "err", err)
				continue
			}
			var l election.Leader
			if kv := election.LeaderKV(pfx, slices.Values(resp.Kvs)); kv != nil {
				l = election.Leader{Key: string(kv.Key), Value: kv.Value, Token: kv.CreateRevision}
			}
			p.log.Debug("leader key read: a probe found another node writable", "revision", resp.Header.Revision)
			p.applyLeader(l, resp.Header.Revision)
			break
		}
	}
}

// watchSilenceLimit is the mirror's SilenceLimit; zero for its default
// (3 s). Tests raise it to show that the probes' help does not depend on
// the watch's own silence bound.
var watchSilenceLimit time.Duration

// leaderReadTimeout bounds one read of the leader key by rereadLeader.
const leaderReadTimeout = time.Second

// nodeLocked returns the node called name at host:port, replacing a node
// of that name whose address changed. Called under p.mu.
func (p *Pool) nodeLocked(name, host string, port int) *node {
	addr := joinHostPort(host, uint16(port))
	if n := p.nodes[name]; n != nil {
		if n.addr == addr {
			return n
		}
		p.log.Info("node address changed", "node", name, "from", n.addr, "to", addr)
		p.dropNodeLocked(n)
	}
	n := newNode(name, host, uint16(port))
	p.nodes[name] = n
	return n
}

// dropNodeLocked removes n and closes its pools in the background (closing
// waits for acquired connections). Called under p.mu.
func (p *Pool) dropNodeLocked(n *node) {
	delete(p.nodes, n.key)
	n.dropped = true
	if p.primary.Load() == n {
		p.primary.Store(nil)
	}
	p.wg.Go(n.closePools)
}

// applyLeader applies a leader observation made at etcd revision rev.
// One older than the last applied is ignored: the watch and the reads of
// rereadLeader may deliver out of order.
func (p *Pool) applyLeader(l election.Leader, rev int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || rev < p.leaderRev {
		return
	}
	p.leaderRev = rev
	p.etcdAnswered = true
	if l.IsZero() {
		p.leader = ""
		p.lastErr = errors.New("no leader in etcd")
		p.publishLocked("no leader record")
		return
	}
	rec, err := keyspace.Decode[keyspace.LeaderRecord](l.Value)
	if err != nil {
		// A record that does not parse is treated as absent.
		p.log.Error("leader record does not parse: treating as no leader", "key", l.Key, "err", err)
		p.leader = ""
		p.lastErr = fmt.Errorf("leader record %s: %w", l.Key, err)
		p.publishLocked("leader record does not parse")
		return
	}
	n := p.nodeLocked(rec.Node, rec.Host, rec.Port)
	changed := p.leader != rec.Node
	if prev := p.nodes[p.leader]; changed && prev != nil && prev != p.primary.Load() {
		// A leader that never became the primary here: close the write
		// pool a prewarm may have opened to it.
		p.depose(prev)
	}
	p.leader = rec.Node
	switch {
	case rec.Writable:
		n.ws.Store(int32(wWritable))
	case changed:
		// A new leader that is not yet promoted: its manager proclaims it
		// writable once promoted; the probes see it first when that is
		// slow (see probeTargetsLocked).
		n.ws.Store(int32(wUnknown))
		p.leaderSince = time.Now()
		p.lastErr = fmt.Errorf("leader %s is not writable yet", rec.Node)
		p.prewarm(n)
	}
	p.publishLocked("leader record")
	p.kickProber()
}

// watchCluster follows the leader record and the member records until the
// pool closes, through one etcd mirror of the cluster's prefix
// (internal/etcdmirror): a read, a watch from there, a jittered re-read
// when it breaks (every pool of every application watches these records:
// after an etcd outage they must not all re-read at once), and a new watch
// on another endpoint when the stream goes silent (a stream pinned to a
// dead or partitioned etcd member). One watcher per pool, not one per
// record kind: etcd serves each with its own progress requests. The
// leader is chosen by [election.LeaderKV], as election.Observe does; the
// other keys of the prefix (sync, config, history, ...) are ignored.
func (p *Pool) watchCluster(mr *etcdmirror.Mirror) {
	recs := etcdmirror.State{}
	leaderPfx := p.layout.Leader() + "/"
	membersPfx := p.layout.Members()
	var last election.Leader
	var lastSwitchover []byte
	sent := false
	mr.Run(p.ctx, func(u etcdmirror.Update) error {
		recs.Apply(u)
		members := u.Snapshot
		for _, ev := range u.Events {
			if strings.HasPrefix(string(ev.Kv.Key), membersPfx) {
				members = true
			}
		}
		var l election.Leader
		if kv := election.LeaderKV(leaderPfx, maps.Values(recs)); kv != nil {
			l = election.Leader{Key: string(kv.Key), Value: kv.Value, Token: kv.CreateRevision}
		}
		if !sent || l.Key != last.Key || l.Token != last.Token || !bytes.Equal(l.Value, last.Value) {
			p.applyLeader(l, u.Revision)
			last, sent = l, true
		}
		var sw []byte
		if kv, ok := recs[p.layout.Switchover()]; ok {
			sw = kv.Value
		}
		if !bytes.Equal(sw, lastSwitchover) {
			p.applySwitchover(sw)
			lastSwitchover = sw
		}
		if members {
			vals := map[string][]byte{}
			for k, kv := range recs {
				if strings.HasPrefix(k, membersPfx) {
					vals[k] = kv.Value
				}
			}
			p.applyMembers(vals)
		} else {
			p.noteEtcdLive()
		}
		return nil
	})
}

// switchoverHold is a planned switchover seen in etcd: operations that
// would start on node wait for the new primary until until.
type switchoverHold struct {
	node  *node
	until time.Time
}

// applySwitchover follows the switchover record (nil when there is none):
// an immediate request to hand over from the current leader starts a
// hold of SwitchoverDrain; its removal ends it. A scheduled one (At set)
// holds nothing until the leader makes it immediate.
func (p *Pool) applySwitchover(v []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	var from string
	if v != nil {
		r, err := keyspace.Decode[keyspace.SwitchoverRecord](v)
		if err != nil {
			p.log.Warn("switchover record does not parse: ignoring it", "err", err)
		} else if r.At.IsZero() {
			from = r.From
		}
	}
	n := p.nodes[from]
	if from == "" || from != p.leader || n == nil || p.cfg.SwitchoverDrain <= 0 {
		if p.hold.Swap(nil) != nil {
			p.publishLocked("switchover request gone")
		}
		return
	}
	if h := p.hold.Load(); h != nil && h.node == n {
		return
	}
	p.hold.Store(&switchoverHold{node: n, until: time.Now().Add(p.cfg.SwitchoverDrain)})
	n.openGate() // calls queued for a connection to n come back to be held
	p.log.Info("planned switchover requested: new operations wait for the new primary", "from", from, "up to", p.cfg.SwitchoverDrain)
	p.publishLocked("switchover requested")
}

// noteEtcdLive records that the mirror delivered. Called by watchCluster.
func (p *Pool) noteEtcdLive() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.etcdLive && !p.closed {
		p.etcdLive = true
		p.log.Debug("etcd answers: roles and lag from the member records, probes stop")
		p.publishLocked("etcd answers")
	}
}

// applyMembers replaces the member records with recs (key → value).
func (p *Pool) applyMembers(recs map[string][]byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	members := map[string]keyspace.MemberRecord{}
	for k, v := range recs {
		name := p.layout.MemberName(k)
		if name == "" {
			continue
		}
		m, err := keyspace.Decode[keyspace.MemberRecord](v)
		if err != nil || m.Node != name {
			if err == nil {
				err = fmt.Errorf("record names node %q", m.Node)
			}
			// Every member update re-reads all records: log a bad one once
			// per value, not on every update.
			if p.badMembers[k] != string(v) {
				p.badMembers[k] = string(v)
				p.log.Warn("member record does not parse: ignoring it", "key", k, "err", err)
			}
			continue
		}
		delete(p.badMembers, k)
		members[name] = m
	}
	for k := range p.badMembers {
		if _, ok := recs[k]; !ok {
			delete(p.badMembers, k)
		}
	}
	p.members = members
	if !p.etcdLive {
		p.etcdLive = true
		p.log.Debug("etcd answers: roles and lag from the member records, probes stop")
	}
	for name, m := range members {
		n := p.nodeLocked(name, m.Host, m.Port)
		n.recordLag.Store(m.LagBytes)
		// A published replay position is a lower bound of the replica's
		// (replay only moves forward): it can answer a causal check.
		if m.Role == keyspace.RoleReplica {
			n.noteReplay(m.ReplayLSN)
		}
	}
	// Drop nodes that are neither members nor the leader.
	for name, n := range p.nodes {
		if _, ok := members[name]; !ok && name != p.leader {
			p.dropNodeLocked(n)
		}
	}
	// While etcd answers, a replica's lag is its record's: within 64 KiB
	// of the truth or one heartbeat (LeaseTTL) old (docs/design.md).
	for name, n := range p.nodes {
		lag := int64(-1)
		if m, ok := members[name]; ok && m.Role == keyspace.RoleReplica && m.Healthy {
			lag = m.LagBytes
		}
		n.lag.Store(lag)
	}
	p.publishLocked("member records")
}

// etcdBroke is the member mirror's OnBreak: the watch broke or went
// silent, so etcd may be unreachable. Until the mirror delivers again
// (applyMembers), the pool probes every node as in host mode: roles and
// lag from the probes, and the leader record still names the primary.
func (p *Pool) etcdBroke(b etcdmirror.Break) {
	p.mu.Lock()
	if p.etcdLive && !p.closed {
		p.etcdLive = false
		p.log.Info("etcd watch broke: probing the nodes until etcd answers again", "why", b.String())
		p.publishLocked("etcd watch broke")
	}
	p.mu.Unlock()
	p.kickProber()
}

// byRecordsLocked reports whether the member records are the evidence of
// roles and lag: etcd mode, etcd has answered, and the member watch has
// delivered since it last broke. Then no node is probed but to confirm the
// leader (see probeTargetsLocked). Called under p.mu.
func (p *Pool) byRecordsLocked() bool {
	return p.etcdMode && p.etcdAnswered && p.etcdLive
}
