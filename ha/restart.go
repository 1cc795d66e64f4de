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

// restartAction turns a due restart request into the action for this
// round, only when the node is steady: a leader leading, or a standby
// with nothing else to do while a leader exists. A restart never
// delays a failover or a role change.
func restartAction(o observation, a action) action {
	l := o.Local
	if !l.RestartDue && !l.RestartDone {
		return a
	}
	steady := a.Kind == actLead || (a.Kind == actWait && !o.Leading && o.Leader != nil && l.Running && l.InRecovery)
	if !steady {
		return a
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
	st, err := ClusterStatus(ctx, cli, cluster, opts...)
	if err != nil {
		return err
	}
	if !hasMember(st, node) {
		return fmt.Errorf("%w: %s", ErrUnknownMember, node)
	}
	b, err := keyspace.Encode(keyspace.RestartRequest{Pending: pendingOnly})
	if err != nil {
		return err
	}
	if _, err := cli.Put(ctx, l.Restart(node), string(b)); err != nil {
		return fmt.Errorf("ha: write the restart request: %w", err)
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
