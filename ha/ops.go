package ha

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/pgha/pgha/election"
	"github.com/pgha/pgha/internal/etcdmirror"
	"github.com/pgha/pgha/internal/keyspace"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Errors returned by the operations ([Switchover], [Failover], ...).
var (
	// ErrNoLeader: the operation needs a leader and there is none. It is
	// election.ErrNoLeader: errors.Is matches either name.
	ErrNoLeader = election.ErrNoLeader
	// ErrLeaderAlive: a manual failover was asked while a leader holds the
	// cluster; use Switchover.
	ErrLeaderAlive = errors.New("ha: the cluster has a leader; use Switchover")
	// ErrUnknownMember: the named node has no member record.
	ErrUnknownMember = errors.New("ha: no such member")
	// ErrNotSynchronous: the failover target is outside the synchronous set
	// and could lack acknowledged commits; pass force to accept the loss.
	ErrNotSynchronous = errors.New("ha: target is not a synchronous standby")
)

// OpOption tunes an operation.
type OpOption func(*opOptions)

type opOptions struct{ root string }

// WithKeyRoot sets the etcd key root (default "/pgha").
func WithKeyRoot(root string) OpOption { return func(o *opOptions) { o.root = root } }

func layoutFor(cluster string, opts []OpOption) (keyspace.Layout, error) {
	var o opOptions
	for _, f := range opts {
		f(&o)
	}
	return keyspace.NewLayout(o.root, cluster)
}

// ClusterState is a cluster as recorded in etcd, for operators and tools.
type ClusterState struct {
	Cluster string `json:"cluster"`
	// Leader is the leader record, nil when there is no leader.
	Leader *Leader `json:"leader,omitempty"`
	// Members in name order.
	Members  []Member `json:"members"`
	SystemID string   `json:"system_id,omitempty"`
	// SyncSet is the sync record: the standbys that may be promoted in
	// synchronous mode.
	SyncSet []string `json:"sync_set,omitempty"`
	// Paused: maintenance mode, no automatic failover; PauseReason is
	// what the operator gave, if anything.
	Paused      bool           `json:"paused"`
	PauseReason string         `json:"pause_reason,omitempty"`
	History     []HistoryEntry `json:"history,omitempty"`
	// Switchover is a pending switchover or manual failover, if any.
	Switchover *SwitchoverRequest `json:"switchover,omitempty"`
	// Ignored lists keys whose records did not decode, with why.
	Ignored []string `json:"ignored,omitempty"`
}

// ClusterStatus reads the cluster's state from etcd with one linearizable
// read. Records that do not decode are listed in Ignored, not returned as
// errors.
func ClusterStatus(ctx context.Context, cli *clientv3.Client, cluster string, opts ...OpOption) (ClusterState, error) {
	layout, err := layoutFor(cluster, opts)
	if err != nil {
		return ClusterState{}, err
	}
	resp, err := cli.Get(ctx, layout.Prefix(), clientv3.WithPrefix())
	if err != nil {
		return ClusterState{}, fmt.Errorf("ha: read cluster %s: %w", cluster, err)
	}
	v := newView(cli, layout, "", nil, nil)
	for _, kv := range resp.Kvs {
		v.kvs[string(kv.Key)] = kv
	}
	v.ready = true
	var o observation
	v.logIgnored = func(key string, err error) { o.ignored = append(o.ignored, key+": "+err.Error()) }
	v.fill(&o)
	st := ClusterState{Cluster: cluster, Leader: leaderOf(o.Leader), SyncSet: o.SyncSet, Paused: o.Paused,
		History: historyOf(o.History), Switchover: switchoverOf(o.Switchover), Ignored: o.ignored}
	if o.SystemID != 0 {
		st.SystemID = strconv.FormatUint(o.SystemID, 10)
	}
	if r, ok := decodeKV[keyspace.PauseRecord](v, layout.Pause()); ok {
		st.PauseReason = r.Reason
	}
	for name, m := range o.Members {
		mem := memberOf(m.Rec)
		mem.Leader = o.Leader != nil && o.Leader.Node == name
		mem.Sync = slices.Contains(o.SyncSet, name)
		st.Members = append(st.Members, mem)
	}
	slices.SortFunc(st.Members, func(a, b Member) int { return strings.Compare(a.Node, b.Node) })
	return st, nil
}

// Switchover asks the current leader to hand over to node to (or, with to
// empty, to the most advanced healthy standby) and waits until a new leader
// is writable or ctx is done. The leader stops writes with a fast shutdown,
// which sends its last WAL to the connected standbys, then resigns; the
// target, having received everything, promotes: no acknowledged commit is
// lost. It returns the new leader's name.
func Switchover(ctx context.Context, cli *clientv3.Client, cluster, to string, opts ...OpOption) (string, error) {
	layout, err := layoutFor(cluster, opts)
	if err != nil {
		return "", err
	}
	st, err := ClusterStatus(ctx, cli, cluster, opts...)
	if err != nil {
		return "", err
	}
	if st.Leader == nil {
		return "", fmt.Errorf("ha: switchover in %s: %w", cluster, ErrNoLeader)
	}
	from := st.Leader.Node
	if to != "" {
		if to == from {
			return "", fmt.Errorf("ha: switchover in %s: %s already leads", cluster, to)
		}
		if !hasMember(st, to) {
			return "", fmt.Errorf("ha: switchover in %s to %s: %w", cluster, to, ErrUnknownMember)
		}
	}
	b, err := keyspace.Encode(keyspace.SwitchoverRecord{From: from, To: to})
	if err != nil {
		return "", err
	}
	if _, err := cli.Put(ctx, layout.Switchover(), string(b)); err != nil {
		return "", fmt.Errorf("ha: switchover in %s: write request: %w", cluster, err)
	}
	return waitNewLeader(ctx, cli, cluster, from, opts)
}

// Failover promotes node to when the cluster has no leader (forced, manual
// failover) and waits until it is writable or ctx is done. It refuses when
// a leader exists ([ErrLeaderAlive]), and, unless force is set, a target
// outside the synchronous set in synchronous mode ([ErrNotSynchronous]),
// which could lack acknowledged commits.
func Failover(ctx context.Context, cli *clientv3.Client, cluster, to string, force bool, opts ...OpOption) (string, error) {
	layout, err := layoutFor(cluster, opts)
	if err != nil {
		return "", err
	}
	st, err := ClusterStatus(ctx, cli, cluster, opts...)
	if err != nil {
		return "", err
	}
	if st.Leader != nil {
		return "", fmt.Errorf("ha: failover in %s: %w (%s)", cluster, ErrLeaderAlive, st.Leader.Node)
	}
	if !hasMember(st, to) {
		return "", fmt.Errorf("ha: failover in %s to %q: %w", cluster, to, ErrUnknownMember)
	}
	if !force && st.SyncSet != nil && !slices.Contains(st.SyncSet, to) {
		return "", fmt.Errorf("ha: failover in %s to %s: %w (sync set %v)", cluster, to, ErrNotSynchronous, st.SyncSet)
	}
	b, err := keyspace.Encode(keyspace.SwitchoverRecord{To: to, Force: force})
	if err != nil {
		return "", err
	}
	if _, err := cli.Put(ctx, layout.Switchover(), string(b)); err != nil {
		return "", fmt.Errorf("ha: failover in %s: write request: %w", cluster, err)
	}
	return waitNewLeader(ctx, cli, cluster, "", opts)
}

func hasMember(st ClusterState, node string) bool {
	return slices.ContainsFunc(st.Members, func(m Member) bool { return m.Node == node })
}

// waitNewLeader waits until a writable leader other than from exists,
// by the one leader rule (election.LeaderKV), mirroring the election's
// keys (internal/etcdmirror).
func waitNewLeader(ctx context.Context, cli *clientv3.Client, cluster, from string, opts []OpOption) (string, error) {
	layout, _ := layoutFor(cluster, opts)
	mr, err := etcdmirror.New(etcdmirror.Config{Client: cli, Key: layout.Leader() + "/", Prefix: true, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return "", err
	}
	keys := etcdmirror.State{}
	var found string
	errFound := errors.New("found")
	err = mr.Run(ctx, func(u etcdmirror.Update) error {
		keys.Apply(u)
		if kv := election.LeaderKV(layout.Leader(), maps.Values(keys)); kv != nil {
			if r, err := keyspace.Decode[keyspace.LeaderRecord](kv.Value); err == nil && r.Node != from && r.Writable {
				found = r.Node
				return errFound
			}
		}
		return nil
	})
	if found != "" {
		return found, nil
	}
	return "", fmt.Errorf("ha: wait for the new leader of %s: %w", cluster, err)
}

// WithdrawSwitchover deletes a pending switchover or manual failover
// request if it is still exactly req (as [Switchover] or [Failover] wrote
// it), so that a request whose caller gave up cannot fire later. It
// reports whether it deleted it: false means the request was already
// acted on, withdrawn, or replaced by another.
func WithdrawSwitchover(ctx context.Context, cli *clientv3.Client, cluster string, req SwitchoverRequest, opts ...OpOption) (bool, error) {
	layout, err := layoutFor(cluster, opts)
	if err != nil {
		return false, err
	}
	b, err := keyspace.Encode(keyspace.SwitchoverRecord{From: req.From, To: req.To, Force: req.Force})
	if err != nil {
		return false, err
	}
	key := layout.Switchover()
	resp, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.Value(key), "=", string(b))).Then(clientv3.OpDelete(key)).Commit()
	if err != nil {
		return false, fmt.Errorf("ha: withdraw the switchover request in %s: %w", cluster, err)
	}
	return resp.Succeeded, nil
}

// ValidName reports whether name is a valid cluster or node name: 1-63
// letters, digits, '_', '.' or '-'. The error says what is wrong.
func ValidName(name string) error { return keyspace.ValidName(name) }

// DefaultKeyRoot is the default etcd key root: a cluster's keys live under
// DefaultKeyRoot/<cluster>/.
const DefaultKeyRoot = keyspace.DefaultRoot

// Pause puts the cluster in maintenance mode: no automatic failover while
// the pause key exists. Nodes keep following the leader; a leader keeps
// leading.
func Pause(ctx context.Context, cli *clientv3.Client, cluster, reason string, opts ...OpOption) error {
	layout, err := layoutFor(cluster, opts)
	if err != nil {
		return err
	}
	b, err := keyspace.Encode(keyspace.PauseRecord{Reason: reason})
	if err != nil {
		return err
	}
	if _, err := cli.Put(ctx, layout.Pause(), string(b)); err != nil {
		return fmt.Errorf("ha: pause %s: %w", cluster, err)
	}
	return nil
}

// Resume ends maintenance mode.
func Resume(ctx context.Context, cli *clientv3.Client, cluster string, opts ...OpOption) error {
	layout, err := layoutFor(cluster, opts)
	if err != nil {
		return err
	}
	if _, err := cli.Delete(ctx, layout.Pause()); err != nil {
		return fmt.Errorf("ha: resume %s: %w", cluster, err)
	}
	return nil
}
