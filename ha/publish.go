package ha

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/pgha/pgha/internal/keyspace"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Member records are written when their content changes in a way another
// node or a pool acts on, and otherwise only as a heartbeat (publishDue).
// Writing every loop round made every node's loop wake the others (a
// member record is a change every view sees) and kept the machine busy.
//
// Freshness each consumer gets:
//   - role, health, streaming, timeline, tags and address: at once (the
//     round they change);
//   - the leader's write position (LastLeaderLSN, the reference of
//     MaxLagOnFailover): every round it moves, as before;
//   - a standby's positions: when its lag moved by lagPublishStep or more
//     since it was last written, or on the heartbeat; while there is no
//     leader, every round they move, and at once after the leader was lost
//     (the "fresh record" rule of candidate choice: only records written
//     after the leader key was deleted count);
//   - UpdatedAt (for humans): at least every heartbeat.

// lagPublishStep is how far a standby's lag may move before its member
// record is rewritten (readers with a lag limit use it).
const lagPublishStep = 64 << 10

// heartbeat is the longest a member record goes unwritten: one lease TTL.
func heartbeat(c Config) time.Duration { return c.LeaseTTL }

// published is the last member record this node wrote.
type published struct {
	rec keyspace.MemberRecord
	at  time.Time // o.Now of the round that wrote it
	rev int64     // etcd revision of the write; 0 if none yet
}

// publishDue reports whether rec must be written now, given the last
// record written, and why. Pure: tests drive it with plain values.
func publishDue(last published, rec keyspace.MemberRecord, o observation, every time.Duration) (bool, string) {
	p := last.rec
	switch {
	case last.rev == 0:
		return true, "first record"
	case o.ViewRev >= last.rev && !recordOf(o, o.Node):
		return true, "this node's record is gone from etcd"
	case o.LeaderGoneRev != 0 && last.rev <= o.LeaderGoneRev:
		return true, "the leader is gone: a fresh record for candidate choice"
	case p.Role != rec.Role || p.Healthy != rec.Healthy || p.Streaming != rec.Streaming || p.Timeline != rec.Timeline ||
		p.SystemID != rec.SystemID || p.NoFailover != rec.NoFailover || p.Priority != rec.Priority ||
		p.Host != rec.Host || p.Port != rec.Port || p.APIURL != rec.APIURL || !maps.Equal(p.Tags, rec.Tags) || p.Problem != rec.Problem ||
		!slices.Equal(p.PendingRestart, rec.PendingRestart) || !maps.Equal(p.HotStandby, rec.HotStandby):
		return true, "role, health, tags, problem or settings changed"
	case p.WriteLSN != rec.WriteLSN:
		return true, "the primary's write position moved"
	case o.Leader == nil && (p.ReceiveLSN != rec.ReceiveLSN || p.ReplayLSN != rec.ReplayLSN):
		return true, "positions moved while there is no leader"
	case (p.LagBytes < 0) != (rec.LagBytes < 0) || absDiff(p.LagBytes, rec.LagBytes) >= lagPublishStep:
		return true, "lag moved"
	case o.Now.Sub(last.at) >= every:
		return true, "heartbeat"
	}
	return false, ""
}

func recordOf(o observation, node string) bool {
	_, ok := o.Members[node]
	return ok
}

func absDiff(a, b int64) int64 {
	if a > b {
		return a - b
	}
	return b - a
}

// memberRecord is this node's member record for observation o.
func (m *Manager) memberRecord(o observation) keyspace.MemberRecord {
	l := o.Local
	return keyspace.MemberRecord{
		Node: m.cfg.Node, Role: roleOf(o, o.Leading), Host: m.cfg.Host, Port: m.cfg.Port,
		Timeline: l.Timeline, SystemID: strconv.FormatUint(l.SystemID, 10),
		WriteLSN: l.WriteLSN, ReceiveLSN: l.ReceiveLSN, ReplayLSN: l.ReplayLSN,
		LagBytes: lagBytes(o), Healthy: l.Running, Streaming: l.Streaming,
		NoFailover: o.Policy.NoFailover, Priority: m.cfg.Priority, Problem: m.problem, APIURL: m.cfg.APIURL,
		PendingRestart: m.dyn.pending, HotStandby: m.dyn.hotStandby,
	}
}

// publish writes this node's member record on its own lease, when
// publishDue says it is due.
func (m *Manager) publish(ctx context.Context, o observation) {
	rec := m.memberRecord(o)
	if m.member != 0 && m.memberLost.Load() {
		m.memberStop()
		m.member = 0
	}
	if due, _ := publishDue(m.published, rec, o, heartbeat(m.cfg)); !due && m.member != 0 {
		return
	}
	pctx, cancel := context.WithTimeout(ctx, m.loopInterval())
	defer cancel()
	if m.member == 0 {
		g, err := m.cfg.Client.Grant(pctx, int64(m.cfg.LeaseTTL/time.Second))
		if err != nil {
			return
		}
		kctx, stop := context.WithCancel(context.WithoutCancel(ctx))
		ka, err := m.cfg.Client.KeepAlive(kctx, g.ID)
		if err != nil {
			stop()
			return
		}
		m.memberStop = stop
		m.memberLost.Store(false)
		go func() {
			for range ka { // drain; the channel closes when the lease is lost or revoked
			}
			// The lease is gone (expired during an etcd outage, or
			// revoked): the next round grants a new one and writes the
			// record again.
			m.memberLost.Store(true)
		}()
		m.member = g.ID
	}
	stamped := rec
	stamped.UpdatedAt = time.Now().UTC() // for humans only
	b, err := keyspace.Encode(stamped)
	if err != nil {
		m.log.Error("encode member record", "err", err)
		return
	}
	resp, err := m.cfg.Client.Put(pctx, m.layout.Member(m.cfg.Node), string(b), clientv3.WithLease(m.member))
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil {
			return
		}
		m.log.Debug("publish member record", "err", err)
		// The lease may be gone: grant a new one next time, and stop
		// renewing this one, so that repeated errors do not pile up
		// leases and keep-alives.
		m.member = 0
		m.memberStop()
		return
	}
	m.published = published{rec: rec, at: o.Now, rev: resp.Header.Revision}
	m.tel.memberWrites.Add(ctx, 1)
}
