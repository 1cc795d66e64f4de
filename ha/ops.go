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
	"time"

	"github.com/pgha/pgha/election"
	"github.com/pgha/pgha/internal/etcdmirror"
	"github.com/pgha/pgha/internal/keyspace"
	"github.com/pgha/pgha/replicate"
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
	// ErrIsLeader: the operation ([Reinit], [Remove]) names the current
	// leader; switch over first.
	ErrIsLeader = errors.New("ha: the node is the leader")
	// ErrMemberLive: [Remove] was asked for a member whose record is on a
	// live lease (its manager runs, or died less than a lease TTL ago);
	// stop its manager first.
	ErrMemberLive = errors.New("ha: the member is live")
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
	// Switchover is a pending switchover or manual failover, if any (a
	// scheduled one has At set).
	Switchover *SwitchoverRequest `json:"switchover,omitempty"`
	// Reinits are the nodes with a pending reinit request ([Reinit]), in
	// name order.
	Reinits []string `json:"reinits,omitempty"`
	// Removals are the remove requests ([Remove]) still recorded, in node
	// order.
	Removals []RemoveRequest `json:"removals,omitempty"`
	// Restarts are the restart and reload requests not yet carried out,
	// in node order (scheduled ones have At set).
	Restarts []RestartRequest `json:"restarts,omitempty"`
	// Ignored lists keys whose records did not decode, with why.
	Ignored []string `json:"ignored,omitempty"`
}

// RestartRequest is a node's restart or reload request waiting for its
// manager ([RestartMember], [ScheduleRestart], [ReloadMembers]).
type RestartRequest struct {
	Node string `json:"node"`
	// At is when a scheduled restart is due; zero for one asked now.
	At time.Time `json:"at,omitzero"`
	// Pending: only if a setting waits for a restart.
	Pending bool `json:"pending,omitempty"`
	// Reload: a configuration reload, not a restart.
	Reload bool `json:"reload,omitempty"`
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
	st.Reinits = slices.Sorted(maps.Keys(o.Reinits))
	for _, kv := range resp.Kvs {
		if node := keyspace.RequestNode(layout.RestartPrefix(), string(kv.Key)); node != "" {
			if r, ok := decodeKV[keyspace.RestartRequest](v, string(kv.Key)); ok {
				st.Restarts = append(st.Restarts, RestartRequest{Node: node, At: r.At, Pending: r.Pending, Reload: r.Reload})
			}
		}
	}
	slices.SortFunc(st.Restarts, func(a, b RestartRequest) int { return strings.Compare(a.Node, b.Node) })
	for _, node := range slices.Sorted(maps.Keys(o.Removals)) {
		r := o.Removals[node].Rec
		st.Removals = append(st.Removals, RemoveRequest{Node: node, Outcome: r.Outcome, Leader: r.Leader})
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
	b, err := keyspace.Encode(keyspace.SwitchoverRecord{From: req.From, To: req.To, Force: req.Force, At: req.At})
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

// pollEvery is how often the operations re-read etcd while they wait for
// the managers to act on a request.
const pollEvery = 200 * time.Millisecond

// Reinit asks node, a standby, to re-clone its data directory from the
// leader, and waits until it streams again or ctx is done. The node's
// manager stops its PostgreSQL, moves the data directory aside
// (DataDir.replaced-<time>; never deleted: remove it by hand once the
// node is healthy), clones afresh with pg_basebackup and starts, then
// deletes the request. It refuses the leader ([ErrIsLeader]: switch over
// first), an unknown node ([ErrUnknownMember]) and a cluster without a
// leader to clone from ([ErrNoLeader]).
//
// While the re-clone fails, the node says why in its member record's
// Problem (pghactl list shows it) and retries; Reinit then returns that
// problem as its error, and the request stays pending (the node keeps
// retrying; [WithdrawReinit] cancels it). A node that is down acts on the
// request when its manager next runs.
func Reinit(ctx context.Context, cli *clientv3.Client, cluster, node string, opts ...OpOption) error {
	layout, err := layoutFor(cluster, opts)
	if err != nil {
		return err
	}
	if err := keyspace.ValidName(node); err != nil {
		return fmt.Errorf("ha: reinit: node %w", err)
	}
	st, err := ClusterStatus(ctx, cli, cluster, opts...)
	if err != nil {
		return err
	}
	switch {
	case !hasMember(st, node):
		return fmt.Errorf("ha: reinit %s in %s: %w", node, cluster, ErrUnknownMember)
	case st.Leader == nil:
		return fmt.Errorf("ha: reinit %s in %s: %w to clone from", node, cluster, ErrNoLeader)
	case st.Leader.Node == node:
		return fmt.Errorf("ha: reinit %s in %s: %w: a leader cannot re-clone itself; switch over first, then reinit it as a standby", node, cluster, ErrIsLeader)
	}
	b, err := keyspace.Encode(keyspace.ReinitRecord{Node: node, RequestedAt: time.Now().UTC()})
	if err != nil {
		return err
	}
	key := layout.Reinit(node)
	// A request already pending is joined, not rewritten: a new revision
	// would make the node re-clone a second time.
	if _, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).Then(clientv3.OpPut(key, string(b))).Commit(); err != nil {
		return fmt.Errorf("ha: reinit %s in %s: write request: %w", node, cluster, err)
	}
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	requested := true
	for {
		st, err := ClusterStatus(ctx, cli, cluster, opts...)
		if err == nil {
			m, ok := memberNamed(st, node)
			pending := slices.Contains(st.Reinits, node)
			switch {
			case pending && ok && strings.HasPrefix(m.Problem, reinitFailed):
				return fmt.Errorf("ha: reinit %s in %s: %s", node, cluster, m.Problem)
			case !pending && requested && ok && m.Leader:
				return fmt.Errorf("ha: reinit %s in %s: %w: it became the leader before re-cloning; the request was dropped", node, cluster, ErrIsLeader)
			case !pending && ok && m.Role == RoleReplica && m.Streaming:
				return nil
			}
			requested = pending
		}
		select {
		case <-ctx.Done():
			if requested {
				return fmt.Errorf("ha: reinit %s in %s: not done (the request stays pending): %w", node, cluster, ctx.Err())
			}
			return fmt.Errorf("ha: reinit %s in %s: re-cloned, but not streaming yet: %w", node, cluster, ctx.Err())
		case <-tick.C:
		}
	}
}

// reinitFailed starts the member record's Problem while a requested
// reinit fails.
const reinitFailed = "reinit requested but failed"

// WithdrawReinit deletes node's pending reinit request, if any, and
// reports whether there was one. A re-clone already under way completes.
func WithdrawReinit(ctx context.Context, cli *clientv3.Client, cluster, node string, opts ...OpOption) (bool, error) {
	layout, err := layoutFor(cluster, opts)
	if err != nil {
		return false, err
	}
	if err := keyspace.ValidName(node); err != nil {
		return false, fmt.Errorf("ha: withdraw reinit: node %w", err)
	}
	resp, err := cli.Delete(ctx, layout.Reinit(node))
	if err != nil {
		return false, fmt.Errorf("ha: withdraw the reinit request of %s in %s: %w", node, cluster, err)
	}
	return resp.Deleted > 0, nil
}

func memberNamed(st ClusterState, node string) (Member, bool) {
	i := slices.IndexFunc(st.Members, func(m Member) bool { return m.Node == node })
	if i < 0 {
		return Member{}, false
	}
	return st.Members[i], true
}

// Remove forgets a departed member: the leader drops its replication slot
// (which would otherwise retain WAL for DepartedSlotTTL) and deletes its
// member record if one without a lease is left, then deletes the request.
// Remove waits for that, or until ctx is done. It refuses a live member
// ([ErrMemberLive]: its record is on a live lease, so its manager runs or
// died less than a lease TTL ago; stop it first), the leader
// ([ErrIsLeader]), a node with neither a member record nor a slot on the
// leader ([ErrUnknownMember]), and a cluster without a leader
// ([ErrNoLeader]: the leader carries it out). A removed node that starts
// again simply rejoins.
func Remove(ctx context.Context, cli *clientv3.Client, cluster, node string, opts ...OpOption) error {
	layout, err := layoutFor(cluster, opts)
	if err != nil {
		return err
	}
	if err := keyspace.ValidName(node); err != nil {
		return fmt.Errorf("ha: remove: node %w", err)
	}
	live := fmt.Errorf("ha: remove %s from %s: %w: its member record is on a live lease (its manager runs, or stopped less than a lease TTL ago): stop its manager and PostgreSQL first, then remove it", node, cluster, ErrMemberLive)
	resp, err := cli.Get(ctx, layout.Member(node))
	if err != nil {
		return fmt.Errorf("ha: remove %s from %s: %w", node, cluster, err)
	}
	if len(resp.Kvs) > 0 && resp.Kvs[0].Lease != 0 {
		return live
	}
	st, err := ClusterStatus(ctx, cli, cluster, opts...)
	if err != nil {
		return err
	}
	switch {
	case st.Leader == nil:
		return fmt.Errorf("ha: remove %s from %s: %w to carry it out", node, cluster, ErrNoLeader)
	case st.Leader.Node == node:
		return fmt.Errorf("ha: remove %s from %s: %w: switch over and stop it first", node, cluster, ErrIsLeader)
	}
	b, err := keyspace.Encode(keyspace.RemoveRecord{Node: node, RequestedAt: time.Now().UTC()})
	if err != nil {
		return err
	}
	key := layout.Remove(node)
	if _, err := cli.Put(ctx, key, string(b)); err != nil {
		return fmt.Errorf("ha: remove %s from %s: write request: %w", node, cluster, err)
	}
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	for {
		resp, err := cli.Get(ctx, key)
		if err == nil {
			if len(resp.Kvs) == 0 {
				return nil // done
			}
			kv := resp.Kvs[0]
			r, derr := keyspace.Decode[keyspace.RemoveRecord](kv.Value)
			if derr == nil && r.Outcome != "" {
				// Answered: delete the answer (unless replaced) and say it.
				cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", kv.ModRevision)).Then(clientv3.OpDelete(key)).Commit()
				if r.Outcome == keyspace.RemoveLive {
					return live
				}
				return fmt.Errorf("ha: remove %s from %s: %w: no member record and no replication slot %s on leader %s: nothing to forget",
					node, cluster, ErrUnknownMember, replicate.SlotName(node), r.Leader)
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("ha: remove %s from %s: not done (the request stays pending; the leader acts on it in its next round): %w", node, cluster, ctx.Err())
		case <-tick.C:
		}
	}
}

// ScheduleSwitchover asks the current leader to hand over to node to (or,
// with to empty, to the most advanced healthy standby) at the instant at,
// and returns at once. The leader performs it in its first loop round
// at or after at by its own clock (within one LoopInterval); until then
// [ClusterStatus] shows it in Switchover, and [CancelSwitchover] cancels
// it. at is wall-clock time compared on the leader only: the operator's
// and the leader's clocks should be roughly in sync, which affects when
// the switchover happens, never its safety. A switchover scheduled by a
// leader that lost leadership before at is dropped. at must be in the
// future, and no other switchover may be pending.
func ScheduleSwitchover(ctx context.Context, cli *clientv3.Client, cluster, to string, at time.Time, opts ...OpOption) error {
	layout, err := layoutFor(cluster, opts)
	if err != nil {
		return err
	}
	if !at.After(time.Now()) {
		return fmt.Errorf("ha: scheduled switchover in %s: at %s is not in the future", cluster, at.Format(time.RFC3339))
	}
	st, err := ClusterStatus(ctx, cli, cluster, opts...)
	if err != nil {
		return err
	}
	if st.Leader == nil {
		return fmt.Errorf("ha: scheduled switchover in %s: %w", cluster, ErrNoLeader)
	}
	from := st.Leader.Node
	if to != "" {
		if to == from {
			return fmt.Errorf("ha: scheduled switchover in %s: %s already leads", cluster, to)
		}
		if !hasMember(st, to) {
			return fmt.Errorf("ha: scheduled switchover in %s to %s: %w", cluster, to, ErrUnknownMember)
		}
	}
	b, err := keyspace.Encode(keyspace.SwitchoverRecord{From: from, To: to, At: at})
	if err != nil {
		return err
	}
	key := layout.Switchover()
	resp, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).Then(clientv3.OpPut(key, string(b))).Commit()
	if err != nil {
		return fmt.Errorf("ha: scheduled switchover in %s: write request: %w", cluster, err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("ha: scheduled switchover in %s: a switchover or failover is already pending (see ClusterStatus): cancel it first", cluster)
	}
	return nil
}

// CancelSwitchover deletes the pending switchover or manual failover
// request, scheduled or not, and returns it; ok is false when none was
// pending. A switchover already under way is not stopped.
func CancelSwitchover(ctx context.Context, cli *clientv3.Client, cluster string, opts ...OpOption) (req SwitchoverRequest, ok bool, err error) {
	layout, err := layoutFor(cluster, opts)
	if err != nil {
		return req, false, err
	}
	key := layout.Switchover()
	resp, err := cli.Delete(ctx, key, clientv3.WithPrevKV())
	if err != nil {
		return req, false, fmt.Errorf("ha: cancel the switchover in %s: %w", cluster, err)
	}
	if len(resp.PrevKvs) == 0 {
		return req, false, nil
	}
	if r, err := keyspace.Decode[keyspace.SwitchoverRecord](resp.PrevKvs[0].Value); err == nil {
		req = *switchoverOf(&r)
	}
	return req, true, nil
}
