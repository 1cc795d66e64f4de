package ha

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pgha/pgha/election"
	"github.com/pgha/pgha/internal/etcdmirror"
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

// run keeps the cache current until ctx is done, through the one etcd
// mirror (internal/etcdmirror): a read of the cluster's prefix, a watch
// from there, a re-read after a jittered backoff when the watch breaks or
// is compacted, and a new watch when it goes silent (a stream pinned to a
// dead or partitioned etcd member). The loop is woken on the first
// snapshot and every re-read, and otherwise only when a change needs a
// decision (digestLocked).
func (v *view) run(ctx context.Context) {
	mr, err := etcdmirror.New(etcdmirror.Config{Client: v.cli, Key: v.layout.Prefix(), Prefix: true, Logger: v.log})
	if err != nil {
		v.log.Error("cluster view", "err", err.Error()) // cannot happen: the config is ours
		return
	}
	mr.Run(ctx, func(u etcdmirror.Update) error {
		v.mu.Lock()
		wake := true
		if u.Snapshot {
			v.kvs = make(map[string]*mvccpb.KeyValue, len(u.KVs))
			for _, kv := range u.KVs {
				v.kvs[string(kv.Key)] = kv
			}
			v.afterChangeLocked(u.Revision)
			v.ready = true
		} else {
			before := v.digestLocked()
			for _, ev := range u.Events {
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
			wake = v.digestLocked() != before
		}
		v.rev = u.Revision
		v.mu.Unlock()
		if wake {
			v.signal()
		}
		return nil
	})
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

// leaderTerm returns the leader's node and token (the create revision of
// its election key) in this view; "" and 0 when there is none.
func (v *view) leaderTerm() (string, int64) {
	v.mu.Lock()
	defer v.mu.Unlock()
	r, key := v.leaderLocked()
	if r == nil {
		return "", 0
	}
	return r.Node, v.kvs[key].CreateRevision
}

// leaderLocked returns the leader record and its election key, or nil,
// by the one leader rule (election.LeaderKV).
func (v *view) leaderLocked() (*keyspace.LeaderRecord, string) {
	best := election.LeaderKV(v.layout.Leader(), maps.Values(v.kvs))
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
		if name := keyspace.RequestNode(v.layout.Reinits(), k); name != "" {
			if r, ok := decodeKV[keyspace.ReinitRecord](v, k); ok && r.Node != name {
				v.warnLocked(k, fmt.Errorf("reinit record names node %q, not the key's %q", r.Node, name))
			} else if ok {
				if o.Reinits == nil {
					o.Reinits = map[string]int64{}
				}
				o.Reinits[name] = kv.ModRevision
			}
			continue
		}
		if name := keyspace.RequestNode(v.layout.RestartPrefix(), k); name != "" {
			if r, ok := decodeKV[keyspace.RestartRequest](v, k); ok && !r.At.IsZero() {
				if o.ScheduledRestarts == nil {
					o.ScheduledRestarts = map[string]time.Time{}
				}
				o.ScheduledRestarts[name] = r.At
			}
			continue
		}
		if name := keyspace.RequestNode(v.layout.Removes(), k); name != "" {
			if r, ok := decodeKV[keyspace.RemoveRecord](v, k); ok && r.Node != name {
				v.warnLocked(k, fmt.Errorf("remove record names node %q, not the key's %q", r.Node, name))
			} else if ok {
				if o.Removals == nil {
					o.Removals = map[string]removal{}
				}
				o.Removals[name] = removal{Rec: r, ModRev: kv.ModRevision}
			}
			continue
		}
		name := v.layout.MemberName(k)
		if name == "" {
			continue
		}
		if r, ok := decodeKV[keyspace.MemberRecord](v, k); ok {
			o.Members[name] = member{Rec: r, ModRev: kv.ModRevision, Lease: kv.Lease}
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
		o.SyncPresent, o.SyncSet, o.SyncQuorum = true, r.Standbys, r.Quorum
	}
	_, o.Paused = v.kvs[v.layout.Pause()]
	if r, ok := decodeKV[keyspace.ConfigRecord](v, v.layout.Config()); ok {
		o.Config = &r
	}
	if r, ok := decodeKV[keyspace.ConfigProposal](v, v.layout.ConfigProposal()); ok {
		o.ConfigProposal, o.ConfigProposalRev = &r, v.kvs[v.layout.ConfigProposal()].ModRevision
	}
	if r, ok := decodeKV[keyspace.RestartRequest](v, v.layout.Restart(v.self)); ok {
		o.Restart, o.RestartRev = &r, v.kvs[v.layout.Restart(v.self)].ModRevision
	}
	if r, ok := decodeKV[keyspace.FailsafeRecord](v, v.layout.Failsafe()); ok {
		o.Failsafe = &r
	} else if _, present := v.kvs[v.layout.Failsafe()]; present {
		// A record that does not decode still bars campaigns: no node
		// can tell whether it is named.
		o.Failsafe = &keyspace.FailsafeRecord{Leader: "(undecodable)"}
	}
	if r, ok := decodeKV[keyspace.SwitchoverRecord](v, v.layout.Switchover()); ok {
		o.Switchover, o.SwitchoverRev = &r, v.kvs[v.layout.Switchover()].ModRevision
	}
	return true
}
