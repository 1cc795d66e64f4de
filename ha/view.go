package ha

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pgha/pgha/internal/backoff"
	"github.com/pgha/pgha/internal/keyspace"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// view is this node's cached picture of the cluster's etcd keys, kept up
// to date by one watch on the cluster prefix. Records that do not decode
// are logged and treated as absent.
type view struct {
	cli    *clientv3.Client
	layout keyspace.Layout
	log    *slog.Logger
	// self is this node's name: changes to its own member record (which
	// it writes itself) never wake its loop.
	self string
	// now is the manager's clock (Config.now): when the leader was seen
	// to go is compared with observations' Now.
	now func() time.Time

	mu   sync.Mutex
	kvs  map[string]*mvccpb.KeyValue
	rev  int64 // revision the cache reflects
	gone int64 // revision at which the leader key was deleted; 0 while there is a leader
	// goneAt is when the leader was seen to go, on the local clock.
	goneAt  time.Time
	hadLead bool
	// lastLeaderLSN is the highest write LSN the current or last leader
	// published in its member record.
	lastLeaderLSN  uint64
	lastLeaderNode string
	ready          bool
	// changed is signalled (non-blocking) when a change needs a decision
	// (see digestLocked), never for this node's own member record or a
	// member's heartbeat.
	changed chan struct{}
	warned  map[string]bool
	// logIgnored, when set, receives records that do not decode instead
	// of the log (ClusterStatus reports them).
	logIgnored func(key string, err error)
}

func newView(cli *clientv3.Client, layout keyspace.Layout, self string, now func() time.Time, log *slog.Logger) *view {
	if now == nil {
		now = time.Now
	}
	return &view{cli: cli, layout: layout, self: self, now: now, log: log, kvs: map[string]*mvccpb.KeyValue{},
		changed: make(chan struct{}, 1), warned: map[string]bool{}}
}

// run keeps the cache current until ctx is done.
func (v *view) run(ctx context.Context) {
	// Every manager of the cluster sees the same etcd outage: jittered
	// backoff keeps them from re-reading in lockstep.
	b := backoff.New(50*time.Millisecond, 2*time.Second)
	for ctx.Err() == nil {
		resp, err := v.cli.Get(ctx, v.layout.Prefix(), clientv3.WithPrefix())
		if err != nil {
			if !b.Wait(ctx) {
				return
			}
			continue
		}
		v.mu.Lock()
		v.kvs = map[string]*mvccpb.KeyValue{}
		for _, kv := range resp.Kvs {
			v.kvs[string(kv.Key)] = kv
		}
		v.rev = resp.Header.Revision
		v.afterChangeLocked(resp.Header.Revision)
		v.ready = true
		v.mu.Unlock()
		v.signal()

		started := time.Now()
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		for wr := range v.cli.Watch(wctx, v.layout.Prefix(), clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1)) {
			if wr.Err() != nil {
				break
			}
			v.mu.Lock()
			before := v.digestLocked()
			for _, ev := range wr.Events {
				switch ev.Type {
				case clientv3.EventTypePut:
					v.kvs[string(ev.Kv.Key)] = ev.Kv
				case clientv3.EventTypeDelete:
					delete(v.kvs, string(ev.Kv.Key))
				}
				// Evaluate leadership after each event so the revision at
				// which the leader went is exact.
				v.afterChangeLocked(ev.Kv.ModRevision)
			}
			v.rev = wr.Header.Revision
			wake := v.digestLocked() != before
			v.mu.Unlock()
			if wake {
				v.signal()
			}
		}
		cancel()
		// The watch broke (etcd leader lost, compaction): re-read after a
		// jittered wait, longer if it keeps breaking at once.
		if time.Since(started) > 2*time.Second {
			b.Reset()
		}
		if !b.Wait(ctx) {
			return
		}
	}
}

// digestLocked summarises what in the view can change a decision, so
// that the loop wakes for those changes only (it runs every LoopInterval
// anyway): the leader key and record; every key other than member records
// (initialize, config, sync, switchover, pause, history), by revision;
// and of other members' records, whether they exist and the fields that
// decide roles and eligibility (role, health, streaming, timeline, tags,
// address). Their WAL positions count only while there is no leader: a
// failover is then choosing among fresh records. This node's own member
// record is left out: the loop wrote it.
func (v *view) digestLocked() string {
	var b strings.Builder
	_, lkey := v.leaderLocked()
	if kv := v.kvs[lkey]; kv != nil {
		fmt.Fprintf(&b, "L %s %d\n", lkey, kv.ModRevision)
	}
	noLeader := lkey == ""
	keys := make([]string, 0, len(v.kvs))
	for k := range v.kvs {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	pfx := v.layout.Leader() + "/"
	for _, k := range keys {
		kv := v.kvs[k]
		name := v.layout.MemberName(k)
		switch {
		case strings.HasPrefix(k, pfx):
			// Covered by the leader rule above.
		case name == "":
			fmt.Fprintf(&b, "K %s %d\n", k, kv.ModRevision)
		case name == v.self:
		default:
			r, err := keyspace.Decode[keyspace.MemberRecord](kv.Value)
			if err != nil {
				fmt.Fprintf(&b, "M %s undecodable %d\n", name, kv.ModRevision)
				continue
			}
			fmt.Fprintf(&b, "M %s %s %t %t %d %t %d %s %s:%d %v %s\n", name, r.Role, r.Healthy, r.Streaming, r.Timeline,
				r.NoFailover, r.Priority, r.SystemID, r.Host, r.Port, r.Tags, r.APIURL)
			if noLeader {
				fmt.Fprintf(&b, "  %d %d %d %d\n", kv.ModRevision, r.WriteLSN, r.ReceiveLSN, r.ReplayLSN)
			}
		}
	}
	return b.String()
}

func (v *view) signal() {
	select {
	case v.changed <- struct{}{}:
	default:
	}
}

// afterChangeLocked updates the leader-loss bookkeeping at revision rev.
func (v *view) afterChangeLocked(rev int64) {
	lr, _ := v.leaderLocked()
	switch {
	case lr != nil:
		v.hadLead, v.gone = true, 0
		if lr.Node != v.lastLeaderNode {
			v.lastLeaderNode = lr.Node
			v.lastLeaderLSN = 0
		}
		if kv, ok := v.kvs[v.layout.Member(lr.Node)]; ok {
			if m, err := keyspace.Decode[keyspace.MemberRecord](kv.Value); err == nil && m.Role == keyspace.RolePrimary {
				v.lastLeaderLSN = max(v.lastLeaderLSN, m.WriteLSN)
			}
		}
	case v.gone == 0:
		// No leader now: only records written after rev are fresh.
		v.gone = rev
		v.goneAt = v.now()
	}
}

// leaderLocked returns the leader record and its election key, or nil.
func (v *view) leaderLocked() (*keyspace.LeaderRecord, string) {
	pfx := v.layout.Leader() + "/"
	var best *mvccpb.KeyValue
	for k, kv := range v.kvs {
		if !strings.HasPrefix(k, pfx) || kv.Lease == 0 || k != pfx+strconv.FormatInt(kv.Lease, 16) {
			continue
		}
		if best == nil || kv.CreateRevision < best.CreateRevision {
			best = kv
		}
	}
	if best == nil {
		return nil, ""
	}
	r, err := keyspace.Decode[keyspace.LeaderRecord](best.Value)
	if err != nil {
		v.warnLocked(string(best.Key), err)
		return nil, ""
	}
	return &r, string(best.Key)
}

func (v *view) warnLocked(key string, err error) {
	if v.logIgnored != nil {
		v.logIgnored(key, err)
		return
	}
	if v.warned[key] {
		return
	}
	v.warned[key] = true
	v.log.Warn("ignoring an etcd record that does not decode", "key", key, "err", err.Error())
}

func decodeKV[T keyspace.Record](v *view, key string) (T, bool) {
	var zero T
	kv, ok := v.kvs[key]
	if !ok {
		return zero, false
	}
	r, err := keyspace.Decode[T](kv.Value)
	if err != nil {
		v.warnLocked(key, err)
		return zero, false
	}
	return r, true
}

// fill copies the cluster part of an observation.
func (v *view) fill(o *observation) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	if !v.ready {
		return false
	}
	o.Leader, _ = v.leaderLocked()
	o.LeaderGoneRev = v.gone
	o.ViewRev = v.rev
	o.LeaderGoneAt = v.goneAt
	o.LastLeaderLSN = v.lastLeaderLSN
	o.Members = map[string]member{}
	for k, kv := range v.kvs {
		name := v.layout.MemberName(k)
		if name == "" {
			continue
		}
		if r, ok := decodeKV[keyspace.MemberRecord](v, k); ok {
			o.Members[name] = member{Rec: r, ModRev: kv.ModRevision}
		}
	}
	if r, ok := decodeKV[keyspace.InitializeRecord](v, v.layout.Initialize()); ok {
		o.Initialized = true
		o.SystemID, _ = strconv.ParseUint(r.SystemID, 10, 64)
	}
	if r, ok := decodeKV[keyspace.HistoryRecord](v, v.layout.History()); ok {
		o.History = r.Entries
	}
	if r, ok := decodeKV[keyspace.SyncRecord](v, v.layout.Sync()); ok {
		o.SyncPresent, o.SyncSet = true, r.Standbys
	}
	_, o.Paused = v.kvs[v.layout.Pause()]
	if r, ok := decodeKV[keyspace.SwitchoverRecord](v, v.layout.Switchover()); ok {
		o.Switchover, o.SwitchoverRev = &r, v.kvs[v.layout.Switchover()].ModRevision
	}
	return true
}
