package ha

import (
	"testing"
	"time"

	"github.com/pgha/pgha/internal/keyspace"
)

// TestPublishDue: a member record is rewritten for what other nodes and
// pools act on, and otherwise only on the heartbeat.
func TestPublishDue(t *testing.T) {
	t0 := time.Unix(1000, 0)
	standby := keyspace.MemberRecord{Node: "n2", Role: keyspace.RoleReplica, Host: "h", Port: 5432, Timeline: 3,
		ReceiveLSN: 1000, ReplayLSN: 1000, LagBytes: 0, Healthy: true, Streaming: true}
	primary := keyspace.MemberRecord{Node: "n1", Role: keyspace.RolePrimary, Host: "h", Port: 5432, Timeline: 3,
		WriteLSN: 5000, LagBytes: -1, Healthy: true}
	leader := &keyspace.LeaderRecord{Node: "n1", Writable: true, Timeline: 3}
	with := func(r keyspace.MemberRecord, f func(*keyspace.MemberRecord)) keyspace.MemberRecord {
		f(&r)
		return r
	}
	obs := func(node string, now time.Duration, f func(*observation)) observation {
		o := observation{Node: node, Now: t0.Add(now), Leader: leader, ViewRev: 10,
			Members: map[string]member{"n1": {}, "n2": {}}}
		if f != nil {
			f(&o)
		}
		return o
	}
	const beat = 5 * time.Second
	last := func(r keyspace.MemberRecord) published { return published{rec: r, at: t0, rev: 10} }
	for _, tc := range []struct {
		name string
		last published
		rec  keyspace.MemberRecord
		o    observation
		want bool
	}{
		{"first record", published{}, standby, obs("n2", 0, nil), true},
		{"nothing changed", last(standby), standby, obs("n2", time.Second, nil), false},
		{"positions moved a little", last(standby), with(standby, func(r *keyspace.MemberRecord) {
			r.ReceiveLSN, r.ReplayLSN, r.LagBytes = 9000, 8000, 1000
		}), obs("n2", time.Second, nil), false},
		{"lag moved by a step", last(standby), with(standby, func(r *keyspace.MemberRecord) { r.LagBytes = lagPublishStep }), obs("n2", time.Second, nil), true},
		{"lag became unknown", last(standby), with(standby, func(r *keyspace.MemberRecord) { r.LagBytes = -1 }), obs("n2", time.Second, nil), true},
		{"heartbeat due", last(standby), standby, obs("n2", beat, nil), true},
		{"heartbeat not yet", last(standby), standby, obs("n2", beat-time.Millisecond, nil), false},
		{"stopped streaming", last(standby), with(standby, func(r *keyspace.MemberRecord) { r.Streaming = false }), obs("n2", time.Second, nil), true},
		{"unhealthy", last(standby), with(standby, func(r *keyspace.MemberRecord) { r.Healthy = false }), obs("n2", time.Second, nil), true},
		{"new timeline", last(standby), with(standby, func(r *keyspace.MemberRecord) { r.Timeline = 4 }), obs("n2", time.Second, nil), true},
		{"role changed", last(standby), with(standby, func(r *keyspace.MemberRecord) { r.Role = keyspace.RolePrimary }), obs("n2", time.Second, nil), true},
		{"nofailover set", last(standby), with(standby, func(r *keyspace.MemberRecord) { r.NoFailover = true }), obs("n2", time.Second, nil), true},
		{"priority changed", last(standby), with(standby, func(r *keyspace.MemberRecord) { r.Priority = 7 }), obs("n2", time.Second, nil), true},
		{"tags changed", last(standby), with(standby, func(r *keyspace.MemberRecord) { r.Tags = map[string]string{"zone": "a"} }), obs("n2", time.Second, nil), true},
		{"primary wrote WAL", last(primary), with(primary, func(r *keyspace.MemberRecord) { r.WriteLSN++ }), obs("n1", time.Second, nil), true},
		{"idle primary", last(primary), primary, obs("n1", time.Second, nil), false},
		{"leader gone after the last write: fresh record", last(standby), standby, obs("n2", time.Second, func(o *observation) {
			o.Leader, o.LeaderGoneRev = nil, 12
		}), true},
		{"leader gone before the last write: already fresh", last(standby), standby, obs("n2", time.Second, func(o *observation) {
			o.Leader, o.LeaderGoneRev = nil, 9
		}), false},
		{"no leader and replay moved", last(standby), with(standby, func(r *keyspace.MemberRecord) { r.ReplayLSN++ }), obs("n2", time.Second, func(o *observation) {
			o.Leader, o.LeaderGoneRev = nil, 9
		}), true},
		{"own record deleted", last(standby), standby, obs("n2", time.Second, func(o *observation) {
			delete(o.Members, "n2")
		}), true},
		{"own record not yet in the view", last(standby), standby, obs("n2", time.Second, func(o *observation) {
			delete(o.Members, "n2")
			o.ViewRev = 9
		}), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, why := publishDue(tc.last, tc.rec, tc.o, beat)
			if got != tc.want {
				t.Errorf("publishDue = %v (%q), want %v", got, why, tc.want)
			}
		})
	}
}
