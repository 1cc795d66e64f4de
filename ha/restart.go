package ha

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/pgha/pgha/internal/keyspace"
	"github.com/pgha/pgha/replicate"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// This file is restarts: a restart request record per node
// (keyspace.RestartRequest) that the node's manager carries out (fast
// shutdown, start in the same role) and deletes, and the operations that
// write it: RestartMember for one node, RollingRestart for several in the
// order that keeps writes going (standbys one at a time, each back and
// streaming before the next; the primary last, after a switchover).

// restartState tracks the restart request this node saw (loop-owned).
type restartState struct {
	rev int64 // ModRevision of the request
	pid int   // the postmaster's PID when it was first seen
}

// observeRestart fills l.RestartDue / l.RestartDone for the request o
// holds for this node: due while the postmaster that ran when the request
// was first seen still runs; done once another one runs (restarted by the
// request or by anything else), or when the request asks only for
// pending settings and none is pending.
func (m *Manager) observeRestart(o observation, l *local) {
	if o.Restart == nil {
		m.restart = restartState{}
		return
	}
	if o.Restart.Reload {
		m.restart = restartState{}
		l.ReloadDue = l.Running
		return
	}
	if !o.Restart.At.IsZero() && (o.Now.Before(o.Restart.At) || restartAhead(o)) {
		// Not due yet: a restart for another reason before then does
		// not count as this one.
		m.restart = restartState{}
		return
	}
	pid := m.inst.PID()
	if m.restart.rev != o.RestartRev {
		m.restart = restartState{rev: o.RestartRev, pid: pid}
	}
	switch {
	case o.Restart.Pending && len(m.dyn.pending) == 0 && l.Running:
		l.RestartDone = true
	case l.Running && pid > 0 && pid != m.restart.pid:
		l.RestartDone = true
	case l.Running:
		l.RestartDue = true
	}
}

// restartAhead reports whether another node's scheduled restart, also
// due, goes before this node's: scheduled restarts run one at a time, the
// standbys in name order (a request is deleted once its standby streams
// again), the leader last.
func restartAhead(o observation) bool {
	for node, at := range o.ScheduledRestarts {
		if node == o.Node || o.Now.Before(at) {
			continue
		}
		if o.Leading {
			return true
		}
		if o.Leader != nil && node == o.Leader.Node {
			continue
		}
		if node < o.Node {
			return true
		}
	}
	return false
}

// restartAction turns a due restart request into the action for this
// round, only when the node is steady: a leader leading, or a standby
// with nothing else to do while a leader exists. A restart never
// delays a failover or a role change.
func restartAction(o observation, a action) action {
	l := o.Local
	if !l.RestartDue && !l.RestartDone && !l.ReloadDue {
		return a
	}
	steady := a.Kind == actLead || (a.Kind == actWait && !o.Leading && o.Leader != nil && l.Running && l.InRecovery)
	if !steady {
		return a
	}
	if l.ReloadDue {
		return act(actReload, "reload requested (pghactl reload)")
	}
	if l.RestartDone {
		if !o.Leading && !l.Streaming {
			return a // done once the standby streams again
		}
		return act(actRestartDone, "the requested restart is done")
	}
	return act(actRestart, "restart requested (pghactl restart)")
}

// doRestart restarts PostgreSQL in its role (fast shutdown, start).
func (m *Manager) doRestart(ctx context.Context, o observation) error {
	sctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	m.log.Info("restarting PostgreSQL on request", "pending_restart", m.dyn.pending)
	if err := m.inst.Stop(sctx, replicate.Fast); err != nil && !errors.Is(err, replicate.ErrNotRunning) {
		return fmt.Errorf("restart: stop: %w", err)
	}
	if o.Leading {
		// Not a crash: the start below is ours.
		m.exitAtTerm = m.inst.ExitErr()
	}
	start := m.inst.Start
	if o.Leading {
		start = func(ctx context.Context) error { return m.inst.StartIf(ctx, m.mayWrite) }
	}
	if err := start(sctx); err != nil && !errors.Is(err, replicate.ErrRunning) {
		return fmt.Errorf("restart: start: %w", err)
	}
	m.dyn.pid = 0 // re-apply and re-read pending settings
	// The request is removed by a later round, once a standby streams
	// again (restartAction), so that whoever waits on it sees the node
	// back in its role.
	return nil
}

// doReload reloads PostgreSQL's configuration on request, publishes what
// then waits for a restart, and removes the request.
func (m *Manager) doReload(ctx context.Context, o observation) error {
	rctx, cancel := context.WithTimeout(ctx, m.loopInterval())
	defer cancel()
	pending, err := m.inst.Reload(rctx)
	if err != nil {
		return fmt.Errorf("reload: %w", err)
	}
	m.log.Info("configuration reloaded on request", "pending_restart", pending)
	m.dyn.pending = pending
	m.dyn.pid = 0 // apply and read the cluster parameters again
	return m.ackRestart(ctx, o)
}

// ackRestart deletes the restart request observed in o (not a newer one).
func (m *Manager) ackRestart(ctx context.Context, o observation) error {
	key := m.layout.Restart(m.cfg.Node)
	_, err := m.cfg.Client.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", o.RestartRev)).
		Then(clientv3.OpDelete(key)).Commit()
	if err != nil {
		return fmt.Errorf("restart: remove the request: %w", err)
	}
	return nil
}

// RestartMember asks node's manager to restart its PostgreSQL (a fast
// shutdown and a start in the same role) and waits until the manager
// has done it and the node is healthy again (a standby streaming). With
// pendingOnly, a node with no setting waiting for a restart is left
// alone. A leader restarts in place: its writes pause meanwhile; use
// RollingRestart to hand over first. When ctx ends first, the request
// stays: the manager still carries it out.
func RestartMember(ctx context.Context, cli *clientv3.Client, cluster, node string, pendingOnly bool, opts ...OpOption) error {
	l, err := layoutFor(cluster, opts)
	if err != nil {
		return err
	}
	if err := putRestart(ctx, cli, cluster, node, keyspace.RestartRequest{Pending: pendingOnly}, opts); err != nil {
		return err
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("ha: restart of %s not done: %w (the request stays; its manager carries it out)", node, context.Cause(ctx))
		case <-tick.C:
		}
		resp, err := cli.Get(ctx, l.Restart(node), clientv3.WithCountOnly())
		if err != nil || resp.Count > 0 {
			continue
		}
		st, err := ClusterStatus(ctx, cli, cluster, opts...)
		if err != nil {
			continue
		}
		i := slices.IndexFunc(st.Members, func(m Member) bool { return m.Node == node })
		if i < 0 {
			continue
		}
		mem := st.Members[i]
		if mem.Healthy && (mem.Leader || mem.Streaming) {
			return nil
		}
	}
}

// ScheduleRestart asks node's manager to restart its PostgreSQL at at (a
// fast shutdown and a start in the same role) and returns at once. Due
// scheduled restarts run one node at a time: the standbys in name order,
// each back and streaming before the next, the primary last and in place
// (its writes pause for the restart; schedule a switchover first to avoid
// that). With pendingOnly the node restarts only if a setting waits for a
// restart. A later request for the node replaces this one;
// CancelRestart withdraws it.
func ScheduleRestart(ctx context.Context, cli *clientv3.Client, cluster, node string, at time.Time, pendingOnly bool, opts ...OpOption) error {
	if at.IsZero() {
		return errors.New("ha: ScheduleRestart: at is the zero time; give the time the restart is due (RestartMember restarts now)")
	}
	return putRestart(ctx, cli, cluster, node, keyspace.RestartRequest{Pending: pendingOnly, At: at.UTC()}, opts)
}

// CancelRestart withdraws node's restart or reload request, if any, and
// reports whether there was one. A restart already under way completes.
func CancelRestart(ctx context.Context, cli *clientv3.Client, cluster, node string, opts ...OpOption) (bool, error) {
	l, err := layoutFor(cluster, opts)
	if err != nil {
		return false, err
	}
	if err := keyspace.ValidName(node); err != nil {
		return false, fmt.Errorf("ha: node %q: %w", node, err)
	}
	resp, err := cli.Delete(ctx, l.Restart(node))
	if err != nil {
		return false, fmt.Errorf("ha: delete the restart request of %s: %w", node, err)
	}
	return resp.Deleted > 0, nil
}

// ReloadMembers asks the managers of nodes (every member when empty) to
// reload their PostgreSQL configuration (pg_reload_conf: the node's files
// are read again) and waits until each has. It returns, per node, the
// settings that wait for a restart after the reload. When ctx ends first,
// the requests stay: the managers still carry them out.
func ReloadMembers(ctx context.Context, cli *clientv3.Client, cluster string, nodes []string, opts ...OpOption) (map[string][]string, error) {
	l, err := layoutFor(cluster, opts)
	if err != nil {
		return nil, err
	}
	st, err := ClusterStatus(ctx, cli, cluster, opts...)
	if err != nil {
		return nil, err
	}
	if len(nodes) == 0 {
		for _, m := range st.Members {
			nodes = append(nodes, m.Node)
		}
	}
	for _, n := range nodes {
		if !hasMember(st, n) {
			return nil, fmt.Errorf("%w: %s", ErrUnknownMember, n)
		}
	}
	for _, n := range nodes {
		if err := putRestart(ctx, cli, cluster, n, keyspace.RestartRequest{Reload: true}, opts); err != nil {
			return nil, err
		}
	}
	waiting := slices.Clone(nodes)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for len(waiting) > 0 {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("ha: reload not done on %v: %w (the requests stay; their managers carry them out)", waiting, context.Cause(ctx))
		case <-tick.C:
		}
		waiting = slices.DeleteFunc(waiting, func(n string) bool {
			resp, err := cli.Get(ctx, l.Restart(n), clientv3.WithCountOnly())
			return err == nil && resp.Count == 0
		})
	}
	// The member records carry what is pending once the managers have
	// published after the reload: read them once every request is gone.
	pending := map[string][]string{}
	if st, err = ClusterStatus(ctx, cli, cluster, opts...); err != nil {
		return nil, err
	}
	for _, m := range st.Members {
		if slices.Contains(nodes, m.Node) {
			pending[m.Node] = m.PendingRestart
		}
	}
	return pending, nil
}

// putRestart writes node's restart request after checking it is a member.
func putRestart(ctx context.Context, cli *clientv3.Client, cluster, node string, r keyspace.RestartRequest, opts []OpOption) error {
	l, err := layoutFor(cluster, opts)
	if err != nil {
		return err
	}
	st, err := ClusterStatus(ctx, cli, cluster, opts...)
	if err != nil {
		return err
	}
	if !hasMember(st, node) {
		return fmt.Errorf("%w: %s", ErrUnknownMember, node)
	}
	b, err := keyspace.Encode(r)
	if err != nil {
		return err
	}
	if _, err := cli.Put(ctx, l.Restart(node), string(b)); err != nil {
		return fmt.Errorf("ha: write the restart request of %s: %w", node, err)
	}
	return nil
}

// RollingRestartOptions chooses what RollingRestart restarts.
type RollingRestartOptions struct {
	// Nodes to restart; empty means every member.
	Nodes []string
	// PendingOnly restarts only members with a setting waiting for a
	// restart (Member.PendingRestart).
	PendingOnly bool
	// Role restricts the restart to RolePrimary or RoleReplica members;
	// "" for both.
	Role Role
	// NoSwitchover restarts the primary in place (its writes pause for
	// the restart) instead of handing over to a restarted standby first.
	NoSwitchover bool
	// Progress, when set, is called before each step.
	Progress func(step string)
}

// RollingRestart restarts the chosen members one at a time: the standbys
// first, each back and streaming before the next; then the primary,
// after a planned switchover to a standby (no acknowledged commit lost;
// clients of driver.Pool see one pause) unless NoSwitchover, and the old
// primary, now a standby, restarts last. It returns the nodes restarted,
// in order.
func RollingRestart(ctx context.Context, cli *clientv3.Client, cluster string, o RollingRestartOptions, opts ...OpOption) ([]string, error) {
	st, err := ClusterStatus(ctx, cli, cluster, opts...)
	if err != nil {
		return nil, err
	}
	if st.Leader == nil {
		return nil, fmt.Errorf("%w: a rolling restart needs a leader to hand over", ErrNoLeader)
	}
	for _, n := range o.Nodes {
		if !hasMember(st, n) {
			return nil, fmt.Errorf("%w: %s", ErrUnknownMember, n)
		}
	}
	want := func(m Member) bool {
		if len(o.Nodes) > 0 && !slices.Contains(o.Nodes, m.Node) {
			return false
		}
		if o.PendingOnly && len(m.PendingRestart) == 0 {
			return false
		}
		switch o.Role {
		case RolePrimary:
			return m.Leader
		case RoleReplica:
			return !m.Leader
		}
		return true
	}
	progress := func(s string) {
		if o.Progress != nil {
			o.Progress(s)
		}
	}
	var done []string
	var primary *Member
	for _, m := range st.Members {
		if !want(m) {
			continue
		}
		if m.Leader {
			primary = &m
			continue
		}
		progress("restart standby " + m.Node)
		if err := RestartMember(ctx, cli, cluster, m.Node, o.PendingOnly, opts...); err != nil {
			return done, err
		}
		done = append(done, m.Node)
	}
	if primary == nil && o.PendingOnly && len(done) > 0 && (len(o.Nodes) == 0 || slices.Contains(o.Nodes, st.Leader.Node)) && o.Role != RoleReplica {
		// A setting a standby needs at least as large as its primary's
		// (max_connections, ...) is raised on the primary only once every
		// standby runs with it: give the primary a few loops to publish it.
		deadline := time.Now().Add(5 * time.Second)
		for primary == nil && time.Now().Before(deadline) && ctx.Err() == nil {
			if st2, err := ClusterStatus(ctx, cli, cluster, opts...); err == nil {
				for _, m := range st2.Members {
					if m.Leader && want(m) {
						primary = &m
					}
				}
			}
			if primary == nil {
				sleepCtx(ctx, 200*time.Millisecond)
			}
		}
	}
	if primary == nil {
		return done, nil
	}
	if o.NoSwitchover {
		progress("restart primary " + primary.Node + " in place")
		if err := RestartMember(ctx, cli, cluster, primary.Node, o.PendingOnly, opts...); err != nil {
			return done, err
		}
		return append(done, primary.Node), nil
	}
	progress("switchover from primary " + primary.Node)
	to, err := Switchover(ctx, cli, cluster, "", opts...)
	if err != nil {
		return done, fmt.Errorf("switchover before restarting the primary %s: %w", primary.Node, err)
	}
	progress("restart " + primary.Node + " (now a standby of " + to + ")")
	if err := RestartMember(ctx, cli, cluster, primary.Node, o.PendingOnly, opts...); err != nil {
		return done, err
	}
	return append(done, primary.Node), nil
}

// sleepCtx waits d or until ctx is done (a poll's pace, or a load's in
// tests; never a synchronisation), and reports whether d passed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
