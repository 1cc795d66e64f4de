package ha

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
)

// This file is the role-change hook (Config.OnRoleChange): the loop hands
// each change of its published role to roleHooks, which calls the hook on
// a goroutine of its own, so that no hook can hold up a fence, a
// resignation or a promotion.

// RoleChange is one change of this node's role, as its member record
// publishes it, passed to [Config.OnRoleChange].
type RoleChange struct {
	// Old is the role before the change: "" for the first role after
	// [Manager.Run] started.
	Old Role
	// New is the role the node now publishes.
	New Role
	// Timeline is the PostgreSQL timeline the node is on; 0 when unknown
	// (no data directory yet).
	Timeline uint32
	// Token is the fencing token (the election term's create revision,
	// [election.Term.Token]) of the term this node held when it published
	// New; 0 when it held none. It grows with every term.
	Token int64
	// Reason is the loop's latest role-changing decision and its reason,
	// for example "campaign: no leader; this node is the best eligible
	// candidate" or "promote (failover)". For humans and logs; its wording
	// may change.
	Reason string
	// Cluster and Node name this node.
	Cluster string
	Node    string
	// Coalesced is how many later changes were folded into this one
	// because the queue of waiting changes was full (see
	// [Config.OnRoleChange]); 0 normally. When it is above 0, Old is the
	// role before the first folded change and may equal New.
	Coalesced int
}

// roleChangeQueue is how many changes wait for a slow hook before the
// newest waiting one absorbs the next.
const roleChangeQueue = 16

// roleHooks calls Config.OnRoleChange on its own goroutine, one change at
// a time, in order. emit never blocks.
type roleHooks struct {
	fn        func(context.Context, RoleChange)
	log       *slog.Logger
	slowAfter time.Duration
	panics    metric.Int64Counter
	slow      metric.Int64Counter
	coalesced metric.Int64Counter
	attrs     metric.MeasurementOption

	base context.Context // cancelled by close
	stop context.CancelFunc
	wake chan struct{} // capacity 1
	done chan struct{} // closed when run returns

	mu     sync.Mutex
	queue  []pendingChange
	last   context.CancelFunc // cancels the ctx of the latest change (waiting or delivered)
	closed bool
}

type pendingChange struct {
	ev     RoleChange
	ctx    context.Context
	cancel context.CancelFunc
}

// newRoleHooks returns the dispatcher for fn; start it with start.
func newRoleHooks(fn func(context.Context, RoleChange), log *slog.Logger, mp metric.MeterProvider, node string, slowAfter time.Duration) (*roleHooks, error) {
	if mp == nil {
		mp = metricnoop.NewMeterProvider()
	}
	m := mp.Meter(instrumentationName)
	h := &roleHooks{fn: fn, log: log, slowAfter: slowAfter,
		attrs: metric.WithAttributes(attribute.String("pgha.node", node))}
	var err error
	if h.panics, err = m.Int64Counter("pgha.ha.hook.panics", metric.WithDescription("Calls of the role-change hook that panicked (recovered).")); err != nil {
		return nil, err
	}
	if h.slow, err = m.Int64Counter("pgha.ha.hook.slow", metric.WithDescription("Calls of the role-change hook that ran longer than the lease TTL.")); err != nil {
		return nil, err
	}
	if h.coalesced, err = m.Int64Counter("pgha.ha.hook.coalesced", metric.WithDescription("Role changes folded into a waiting one because the hook's queue was full.")); err != nil {
		return nil, err
	}
	return h, nil
}

// start starts the dispatching goroutine; close stops and joins it.
func (h *roleHooks) start() {
	h.base, h.stop = context.WithCancel(context.Background())
	h.wake = make(chan struct{}, 1)
	h.done = make(chan struct{})
	go h.run()
}

// emit queues ev for the hook and cancels the ctx of the change before
// it (that role has ended). It never blocks on the hook.
func (h *roleHooks) emit(ev RoleChange) {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return
	}
	if h.last != nil {
		h.last()
	}
	ctx, cancel := context.WithCancel(h.base)
	h.last = cancel
	p := pendingChange{ev: ev, ctx: ctx, cancel: cancel}
	folded := false
	if n := len(h.queue); n >= roleChangeQueue {
		// Full: the newest waiting change absorbs this one, so the hook
		// still learns the current role, and Old stays the role it
		// last heard of.
		tail := &h.queue[n-1]
		p.ev.Old = tail.ev.Old
		p.ev.Coalesced = tail.ev.Coalesced + 1
		*tail = p
		folded = true
	} else {
		h.queue = append(h.queue, p)
	}
	h.mu.Unlock()
	if folded {
		h.coalesced.Add(context.Background(), 1, h.attrs)
		h.log.Warn("role-change hook is behind: change folded into the last waiting one",
			"old_role", string(p.ev.Old), "new_role", string(p.ev.New), "coalesced", p.ev.Coalesced, "queue", roleChangeQueue)
	}
	select {
	case h.wake <- struct{}{}:
	default:
	}
}

func (h *roleHooks) run() {
	defer close(h.done)
	for {
		h.mu.Lock()
		if h.closed {
			h.mu.Unlock()
			return
		}
		if len(h.queue) == 0 {
			h.mu.Unlock()
			select {
			case <-h.wake:
			case <-h.base.Done():
			}
			continue
		}
		p := h.queue[0]
		h.queue[0] = pendingChange{}
		h.queue = h.queue[1:]
		h.mu.Unlock()
		h.call(p)
	}
}

// call runs the hook for p on a goroutine it joins, recovering a panic
// and logging a call that outlasts slowAfter.
func (h *roleHooks) call(p pendingChange) {
	start := time.Now()
	type outcome struct {
		panicked bool
		value    any
		stack    []byte
	}
	res := make(chan outcome, 1)
	go func() {
		panicked := true
		defer func() {
			if !panicked {
				res <- outcome{}
				return
			}
			// recover is nil after runtime.Goexit: not a panic.
			r := recover()
			res <- outcome{panicked: r != nil, value: r, stack: debug.Stack()}
		}()
		h.fn(p.ctx, p.ev)
		panicked = false
	}()
	timer := time.NewTimer(h.slowAfter)
	defer timer.Stop()
	var out outcome
	select {
	case out = <-res:
	case <-timer.C:
		h.slow.Add(context.Background(), 1, h.attrs)
		h.log.Warn("role-change hook is slow; later role changes wait for it",
			"old_role", string(p.ev.Old), "new_role", string(p.ev.New), "running_for", time.Since(start).Round(time.Millisecond).String())
		out = <-res
		h.log.Info("slow role-change hook returned", "new_role", string(p.ev.New), "took", time.Since(start).Round(time.Millisecond).String())
	}
	if out.panicked {
		h.panics.Add(context.Background(), 1, h.attrs)
		h.log.Error("role-change hook panicked; recovered", "old_role", string(p.ev.Old), "new_role", string(p.ev.New),
			"panic", fmt.Sprint(out.value), "stack", string(out.stack))
	}
}

// close cancels every change's ctx, drops the changes not yet delivered
// and waits for the call in progress to return.
func (h *roleHooks) close() {
	h.mu.Lock()
	h.closed = true
	for _, p := range h.queue {
		p.cancel()
	}
	h.queue = nil
	h.mu.Unlock()
	h.stop()
	t := time.NewTimer(h.slowAfter)
	defer t.Stop()
	select {
	case <-h.done:
	case <-t.C:
		h.log.Warn("waiting for the role-change hook to return before Run returns; its ctx is cancelled")
		<-h.done
	}
}

// announceRole hands the role this round published (the member record's,
// roleOf at observation) to the hook when it differs from the last one.
// Called by the loop after the round's action; it never blocks.
func (m *Manager) announceRole(o observation, a action) {
	if m.hooks == nil {
		return
	}
	role := Role(roleOf(o, o.Leading))
	if role == m.hookRole {
		return
	}
	ev := RoleChange{Old: m.hookRole, New: role, Timeline: o.Local.Timeline, Reason: m.changeReason,
		Cluster: m.cfg.Cluster, Node: m.cfg.Node}
	if ev.Reason == "" {
		ev.Reason = a.String()
	}
	if t := m.currentTerm(); o.Leading && t != nil {
		ev.Token = t.Token()
	}
	m.hookRole = role
	m.log.Info("role changed", "old_role", string(ev.Old), "new_role", string(ev.New), "timeline", ev.Timeline, "reason", ev.Reason)
	m.hooks.emit(ev)
}
