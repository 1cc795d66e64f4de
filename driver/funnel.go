package driver

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// This file is the one path every [Pool] method takes: pick the primary,
// run the operation on it, classify a failure, and maybe retry once on the
// (new) primary. The methods in pool.go only say what to run and which
// retry policy applies.

// retryPolicy says when an operation that failed may run a second time.
type retryPolicy int

const (
	// retryIfUnapplied retries a failure that cannot have applied anything
	// (not sent, or refused as read-only); a connection broken after the
	// request was sent is retried only under [WithIdempotent], and is
	// otherwise [ErrOutcomeUnknown]. Exec, Query, QueryRow.
	retryIfUnapplied retryPolicy = iota
	// retryAlways also retries a connection broken after sending: the
	// operation has no effect of its own. Ping, Acquire, BEGIN.
	retryAlways
	// retryIfUnsent retries only a failure before anything was sent: the
	// operation consumes its input (CopyFrom's row source).
	retryIfUnsent
	// retryNever never retries: the operation's errors surface later, when
	// its results are read (SendBatch). It is only routed.
	retryNever
)

// run is the funnel. It waits (up to FailoverTimeout) for a primary, runs
// f on it and, when f fails, classifies the error: it withdraws or
// re-checks the node as the class says and, if policy allows, runs f
// again on the primary found after the failure. A failure that cannot
// have applied anything (not sent, or refused as read-only) is retried as
// long as the wait for a primary stays within FailoverTimeout, counted
// from the call's start over all its waits; any other retry happens once.
// When that budget runs out, the error is an [*Error] of kind
// ErrNoPrimary wrapping the last failure. f must report the operation's
// own failure as its error; results go through its closure. The error
// returned is the classified one (an [*Error] for ErrOutcomeUnknown and
// ErrNoPrimary) or, when the failure is not the pool's business, f's
// error as is.
func (p *Pool) run(ctx context.Context, op string, policy retryPolicy, f func(n *node) error) error {
	deadline := time.Now().Add(p.cfg.FailoverTimeout)
	n, err := p.writer(ctx, deadline)
	if err != nil {
		return err
	}
	for attempt := 0; ; attempt++ {
		p.tel.routed(n, true)
		err = f(n)
		if err == nil {
			return nil
		}
		at := time.Now()
		retry, rerr := p.afterErr(ctx, n, op, err, policy)
		if !retry {
			return rerr
		}
		if unapplied := classify(ctx, err) != classConn; !unapplied && attempt > 0 || attempt >= maxAttempts {
			return rerr
		}
		if !at.Before(deadline) {
			return &Error{Kind: ErrNoPrimary, Op: op, Node: n.key, Err: err}
		}
		if n, err = p.retryTarget(ctx, n, err, at, deadline); err != nil {
			return err
		}
	}
}

// maxAttempts bounds the runs of one operation: each retry waits for new
// evidence (another primary, or a probe that found the node writable
// again), and all within FailoverTimeout; this is a backstop.
const maxAttempts = 8

// afterErr records what err says about n (a failed connection, a node
// that refused a write) and decides whether the operation may run again:
// retry (true), or return the error it returns.
func (p *Pool) afterErr(ctx context.Context, n *node, op string, err error, policy retryPolicy) (bool, error) {
	class := classify(ctx, err)
	switch class {
	case classUnsent:
		if !errors.Is(err, errNotPrimary) {
			p.connFailed(n, err)
		}
	case classReadOnly:
		p.markReadOnly(n, err)
	case classConn:
		p.connFailed(n, err)
		if policy != retryAlways && !isIdempotent(ctx) {
			return false, &Error{Kind: ErrOutcomeUnknown, Op: op, Node: n.key, Err: err}
		}
	default:
		return false, err
	}
	switch policy {
	case retryNever:
		return false, err
	case retryIfUnsent:
		return class == classUnsent, err
	}
	return true, err
}

// retryTarget returns the node to retry on after err on n at time at.
func (p *Pool) retryTarget(ctx context.Context, n *node, err error, at, deadline time.Time) (*node, error) {
	if errors.Is(err, errNotPrimary) || errors.Is(err, errReadOnlyConn) || classify(ctx, err) == classReadOnly {
		return p.writer(ctx, deadline)
	}
	return p.await(ctx, n, at, deadline)
}

// writer returns the primary, waiting until deadline for one. While a
// planned switchover of the primary is requested (p.hold), it waits for
// the new primary instead, up to the hold's end.
func (p *Pool) writer(ctx context.Context, deadline time.Time) (*node, error) {
	if n := p.primary.Load(); n != nil {
		if h := p.hold.Load(); h == nil || h.node != n {
			return n, nil
		}
		return p.held(ctx, n, deadline)
	}
	return p.await(ctx, nil, time.Time{}, deadline)
}

// held waits while a planned switchover moves the primary away from n:
// until another node is the primary (or none is: then as await), the
// request is gone, its drain time has passed, or deadline.
func (p *Pool) held(ctx context.Context, n *node, deadline time.Time) (*node, error) {
	start := time.Now()
	defer func() { p.tel.waited(ctx, time.Since(start)) }()
	for {
		p.mu.Lock()
		ch := p.changed
		p.mu.Unlock()
		cur := p.primary.Load()
		if cur == nil {
			return p.await(ctx, nil, time.Time{}, deadline)
		}
		h := p.hold.Load()
		now := time.Now()
		if cur != n || h == nil || h.node != n || !now.Before(h.until) || !now.Before(deadline) {
			return cur, nil
		}
		timer := time.NewTimer(min(h.until.Sub(now), deadline.Sub(now)))
		select {
		case <-ch:
		case <-timer.C:
		case <-ctx.Done():
			timer.Stop()
			err := fmt.Errorf("%w after %v waiting for a planned switchover from %s", ctx.Err(), time.Since(start).Round(time.Millisecond), n.key)
			return nil, &Error{Kind: ErrNoPrimary, Op: "wait", Node: n.key, Err: err}
		}
		timer.Stop()
	}
}

// await waits for a primary, until deadline. With failed != nil it waits
// for a primary other than failed, or for a probe of failed sent after
// since that found it writable.
//
// It waits only while a failover can be in progress (see
// [Pool.failoverPossibleLocked]); otherwise it fails at once, as pgxpool
// would, with an [*Error] of kind ErrNoPrimary that wraps why there is no
// primary (the probe's dial, authentication or database error). It gives
// up at deadline with ErrNoPrimary, and when ctx ends with an
// error matching both ErrNoPrimary and ctx's error, saying what it waited
// for.
func (p *Pool) await(ctx context.Context, failed *node, since, deadline time.Time) (*node, error) {
	start := time.Now()
	p.waiters.Add(1)
	p.kickProber()
	defer func() {
		p.waiters.Add(-1)
		p.tel.waited(ctx, time.Since(start))
	}()
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	for {
		p.mu.Lock()
		ch, closed, possible, last := p.changed, p.closed, p.failoverPossibleLocked(), p.lastErr
		p.mu.Unlock()
		if closed {
			return nil, ErrClosed
		}
		var holdUntil <-chan time.Time
		var ht *time.Timer
		if n := p.primary.Load(); n != nil {
			if h := p.hold.Load(); h != nil && h.node == n && time.Now().Before(h.until) {
				// A planned switchover of n was requested: as in held.
				ht = time.NewTimer(time.Until(h.until))
				holdUntil = ht.C
			} else if n != failed {
				return n, nil
			} else if r := n.probe.Load(); r != nil && r.at.After(since) && r.writable() {
				return n, nil
			}
		}
		if !possible && holdUntil == nil {
			return nil, &Error{Kind: ErrNoPrimary, Op: "wait", Node: keyOf(failed), Err: last}
		}
		select {
		case <-holdUntil:
		case <-ch:
		case <-ctx.Done():
			p.mu.Lock()
			last := p.lastErr
			p.mu.Unlock()
			what := "a writable primary"
			if failed != nil {
				what = "a writable primary after node " + failed.key + " failed"
			}
			err := fmt.Errorf("%w after %v waiting for %s", ctx.Err(), time.Since(start).Round(time.Millisecond), what)
			if last != nil {
				err = fmt.Errorf("%w (last error: %w)", err, last)
			}
			return nil, &Error{Kind: ErrNoPrimary, Op: "wait", Node: keyOf(failed), Err: err}
		case <-timer.C:
			p.mu.Lock()
			last := p.lastErr
			p.mu.Unlock()
			return nil, &Error{Kind: ErrNoPrimary, Op: "wait", Node: keyOf(failed), Err: last}
		}
		if ht != nil {
			ht.Stop()
		}
	}
}

// failoverPossibleLocked reports whether a primary may appear soon enough
// to be worth waiting for: a primary was known and is gone (a failover or
// a restart is in progress), a leader record names a node that is not
// writable yet (a promotion is under way), or the pool has not heard yet
// from its source of truth (etcd has not answered; in host mode, the
// first probe of every host has not returned). A single host presumed to
// be the primary counts as known once a probe or a new connection found
// it writable. Otherwise (no host ever
// accepted writes, or etcd names no leader and never did) an operation
// fails at once, as with pgxpool. Called under p.mu.
func (p *Pool) failoverPossibleLocked() bool {
	switch {
	case p.single:
		// Presumed, not found: wait only once it was seen writable.
		return p.hostNodes[0].confirmed.Load() || p.probeRounds == 0
	case p.everPrimary:
		return true
	case p.etcdMode && p.etcdAnswered:
		return p.leader != ""
	case p.etcdMode:
		return true
	}
	return p.probeRounds == 0
}

// markReadOnly records that n refused a write, and withdraws it as primary.
func (p *Pool) markReadOnly(n *node, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if n.state() != wReadOnly {
		n.ws.Store(int32(wReadOnly))
		p.lastErr = err
		p.publishLocked("node refused a write: " + err.Error())
	}
	p.kickProber()
}

// connFailed records a connection failure on n and has the prober check
// n at once. The broken connection alone is dropped (pgxpool destroys a
// closed connection on release); the node's idle connections are closed
// only once the node is known down: its probe failed (probeRound), the
// leader moved or it turned read-only (switchPrimaryLocked).
func (p *Pool) connFailed(n *node, err error) {
	p.mu.Lock()
	p.lastErr = err
	p.mu.Unlock()
	p.kickProber()
}

func (p *Pool) kickProber() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}
