package ha

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/pgha/pgha/election"
	"github.com/pgha/pgha/internal/keyspace"
	"github.com/pgha/pgha/replicate"
)

// This file is leadership: the campaign, the term and its fencer, the
// watchdog, fencing and resigning.

func (m *Manager) leading() bool {
	m.termMu.Lock()
	defer m.termMu.Unlock()
	return m.term != nil && m.term.Err() == nil
}

// fence stops PostgreSQL accepting writes now, then gives up leadership.
func (m *Manager) fence(ctx context.Context, reason string) error {
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.cfg.FenceBudget)
	defer cancel()
	err := m.inst.Fence(fctx)
	m.wasPrimary = true
	m.log.Warn("fenced PostgreSQL", "reason", reason, "err", errString(err))
	if err == nil {
		m.disarmWatchdog()
		m.dropTerm(ctx)
		return nil
	}
	m.endTerm(ctx) // the guard stays armed and fences at the deadline
	return fmt.Errorf("fence: %w", err)
}

// dropTerm ends the term (endTerm) and disarms the fence guard: the
// caller has made sure PostgreSQL accepts no writes, or never did in
// this term.
func (m *Manager) dropTerm(ctx context.Context) {
	m.endTerm(ctx)
	m.disarmGuard()
}

// endTerm stops the fencer and resigns the term, best effort. The fence
// guard stays armed (a fence that failed leaves it to the guard).
func (m *Manager) endTerm(ctx context.Context) {
	m.termMu.Lock()
	term := m.term
	m.term = nil
	m.termMu.Unlock()
	if term == nil {
		return
	}
	m.stopFencer()
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	if err := term.Resign(rctx); err != nil {
		m.log.Debug("resign", "err", err.Error())
	}
}

// campaign runs a bounded campaign and, on winning, re-checks that this
// node is still the best candidate before it keeps the term.
func (m *Manager) campaign(ctx context.Context, o observation) error {
	if m.cfg.Watchdog == WatchdogRequired {
		if fi, err := os.Stat(m.cfg.WatchdogDevice); err != nil || fi.Mode()&os.ModeCharDevice == 0 {
			return fmt.Errorf("not campaigning: Watchdog is required and %s is not a usable watchdog device (%v); load softdog or set WatchdogDevice", m.cfg.WatchdogDevice, err)
		}
	}
	if err := m.ensureGuard(); err != nil {
		return fmt.Errorf("not campaigning: FenceGuard is on and %w", err)
	}
	rec := keyspace.LeaderRecord{Node: m.cfg.Node, Host: m.cfg.Host, Port: m.cfg.Port, Timeline: o.Local.Timeline}
	b, err := keyspace.Encode(rec)
	if err != nil {
		return err
	}
	// No promise to a failsafe leader is given while the campaign runs,
	// and none may be outstanding when it starts.
	if ok, until := m.fs.beginCampaign(time.Now()); !ok {
		m.log.Info("not campaigning: promised the failsafe leader not to", "for", time.Until(until).Round(time.Millisecond))
		return nil
	}
	defer m.fs.endCampaign()
	if f := m.onCampaign.Load(); f != nil {
		(*f)()
	}
	// Bounded: waiting in etcd's queue never decides who is promoted; a
	// candidate that did not win quickly goes back to observing.
	cctx, cancel := context.WithTimeout(ctx, 2*m.loopInterval())
	defer cancel()
	term, err := m.el.Campaign(cctx, b)
	if err != nil {
		return fmt.Errorf("campaign: %w", err)
	}
	m.setTerm(term)
	if err := m.failsafeAfterWin(ctx); err != nil {
		m.log.Warn("won the election but may not lead; resigning", "why", err.Error())
		m.dropTerm(ctx)
		return err
	}
	if err := m.armWatchdog(term); err != nil {
		m.dropTerm(ctx)
		return err
	}
	// Re-check with the freshest view: another node may have published a
	// better position while we campaigned. Not after a failsafe hold: this
	// node is the primary that went on writing, the most advanced by
	// construction, and it keeps its data without a promotion.
	if o.Local.FailsafeHoldUntil.After(o.Now) {
		m.log.Info("leading again after the lease was lost under failsafe", "token", term.Token())
		return nil
	}
	if o2, ok := m.observe(ctx); ok {
		if keep, why := keepTerm(o2); !keep {
			m.log.Info("won the election but is no longer the best candidate; resigning", "why", why)
			m.disarmWatchdog() // not promoted: PostgreSQL is still a standby
			m.dropTerm(ctx)
			return nil
		}
	}
	m.log.Info("leading", "token", term.Token())
	return nil
}

// armWatchdog arms the watchdog for a new term, before anything can make
// this node's PostgreSQL writable. In required mode a failure is returned
// (the caller gives the term up); in automatic mode it is logged.
func (m *Manager) armWatchdog(term *election.Term) error {
	if m.cfg.Watchdog == WatchdogOff {
		return nil
	}
	wd, err := openWatchdog(m.cfg.WatchdogDevice, time.Now(), term.ValidUntil())
	if err != nil {
		if m.cfg.Watchdog == WatchdogRequired {
			return fmt.Errorf("watchdog required: %w", err)
		}
		m.log.Warn("leading without a watchdog (Watchdog is automatic)", "err", err.Error())
		return nil
	}
	m.termMu.Lock()
	m.wd = wd
	m.termMu.Unlock()
	m.log.Info("watchdog armed", "device", wd.path, "timeout", wd.timeout)
	return nil
}

// disarmWatchdog disarms the watchdog; call it only once PostgreSQL no
// longer accepts writes.
func (m *Manager) disarmWatchdog() {
	m.termMu.Lock()
	wd := m.wd
	m.wd = nil
	m.termMu.Unlock()
	if wd == nil {
		return
	}
	if err := wd.disarm(); err != nil {
		m.log.Error("disarm watchdog", "device", wd.path, "err", err.Error())
	}
}

func (m *Manager) setTerm(term *election.Term) {
	// A postmaster that had already exited when the term began (a former
	// primary fenced in an earlier term, re-elected) did not crash under
	// this term.
	m.exitAtTerm = m.inst.ExitErr()
	m.termMu.Lock()
	m.term = term
	m.fencerStop = make(chan struct{})
	m.fencerDone = make(chan struct{})
	stop, done := m.fencerStop, m.fencerDone
	g := m.guard
	m.termMu.Unlock()
	if g != nil {
		// Armed before anything can make PostgreSQL writable.
		if err := g.arm(term.ValidUntil().Add(-m.cfg.FenceBudget)); err != nil {
			m.log.Error("arm the fence guard", "err", err.Error())
		}
	}
	go m.fencer(term, stop, done)
	if m.cfg.Failsafe {
		go m.failsafeKeeper(term, stop)
	}
}

// pokeFencer makes the fencer re-read the term's deadline now.
func (m *Manager) pokeFencer() {
	select {
	case m.fencerPoke <- struct{}{}:
	default:
	}
}

// fencer fences PostgreSQL FenceBudget before the term's ValidUntil unless
// a renewal moved ValidUntil on, independently of the loop (which may be
// busy in a long action).
func (m *Manager) fencer(term *election.Term, stop, done chan struct{}) {
	defer close(done)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var petted time.Time // the ValidUntil of the last pet
	m.termMu.Lock()
	g := m.guard
	m.termMu.Unlock()
	var guardDone <-chan struct{}
	if g != nil {
		guardDone = g.done
	}
	for {
		if vu := term.ValidUntil(); vu.After(petted) {
			m.termMu.Lock()
			wd := m.wd
			m.termMu.Unlock()
			if wd != nil && shouldPet(time.Now(), vu, wd.timeout) {
				if err := wd.pet(); err != nil {
					m.log.Error("pet watchdog", "err", err.Error())
				}
				petted = vu
			}
		}
		at := term.ValidUntil().Add(-m.cfg.FenceBudget)
		if g != nil {
			if err := g.arm(at); err != nil {
				m.log.Error("extend the fence guard's deadline", "err", err.Error())
			}
		}
		d := time.Until(at)
		guardLost := g != nil && !g.alive()
		if d > 0 && !guardLost && m.failsafeHold(term, stop) {
			return // a new term took over without a fence
		}
		if d <= 0 || guardLost || term.Err() != nil && !errors.Is(term.Err(), election.ErrResigned) {
			// Before the fence: a restart of PostgreSQL as a primary that
			// the loop decided on a moment ago must see it (mayWrite).
			m.fencedTerm.Store(term)
			ctx, cancel := context.WithTimeout(context.Background(), m.cfg.FenceBudget)
			err := m.inst.Fence(ctx)
			cancel()
			m.tel.fences.Add(context.Background(), 1)
			if guardLost {
				// Fail safe: without its guard, a freeze of this process
				// could leave a writable primary behind.
				m.log.Warn("fenced PostgreSQL: the fence guard exited", "err", errString(err))
			} else {
				m.log.Warn("fenced PostgreSQL: lease not renewed in time", "err", errString(err), "term_err", errString(term.Err()))
			}
			// A fence is a step down: end the term too, even if a late
			// renewal has just extended it, so that the loop does not
			// restart PostgreSQL as a primary and a standby takes over.
			if err == nil {
				m.disarmWatchdog()
				m.disarmGuard()
			}
			rctx, rcancel := context.WithTimeout(context.Background(), time.Second)
			if err := term.Resign(rctx); err != nil {
				m.log.Debug("resign after fence", "err", err.Error())
			}
			rcancel()
			return
		}
		timer.Reset(min(d, m.loopInterval()))
		select {
		case <-stop:
			return
		case <-term.Done():
			if errors.Is(term.Err(), election.ErrResigned) {
				return
			}
		case <-guardDone:
			guardDone = nil // fenced on the next pass
		case <-m.fencerPoke:
		case <-timer.C:
		}
	}
}

// stopFencer stops the term's fencer. The fence guard stays armed: the
// caller disarms it once PostgreSQL cannot accept writes (or it is not a
// primary), and a simulated crash leaves it armed, as a real one would.
func (m *Manager) stopFencer() {
	m.termMu.Lock()
	stop, done := m.fencerStop, m.fencerDone
	m.fencerStop, m.fencerDone = nil, nil
	m.termMu.Unlock()
	if stop != nil {
		close(stop)
		<-done
	}
}

func (m *Manager) disarmGuard() {
	m.termMu.Lock()
	g := m.guard
	m.termMu.Unlock()
	if g != nil {
		if err := g.disarm(); err != nil {
			m.log.Error("disarm the fence guard", "err", err.Error())
		}
	}
}

// ensureGuard starts the fence guard if Config.FenceGuard asks for one and
// none runs (at start, and before a campaign after the guard exited).
func (m *Manager) ensureGuard() error {
	if !m.cfg.FenceGuard {
		return nil
	}
	m.termMu.Lock()
	g := m.guard
	m.termMu.Unlock()
	if g != nil && g.alive() {
		return nil
	}
	if g != nil {
		g.stop()
	}
	ng, err := startFenceGuard(m.inst.Config().DataDir, m.inst.Config().FenceTimeout, m.log)
	if err != nil {
		return err
	}
	m.termMu.Lock()
	m.guard = ng
	m.termMu.Unlock()
	return nil
}

// stopGuard ends the fence guard when Run ends. With abandon (a simulated
// crash, or a leave that could not stop PostgreSQL) it only closes the
// guard's stdin, as the death of this process would: the guard fences at
// the deadline if still armed, then exits.
func (m *Manager) stopGuard(abandon bool) {
	m.termMu.Lock()
	g := m.guard
	m.guard = nil
	m.termMu.Unlock()
	if g == nil {
		return
	}
	if abandon {
		g.notify.Close()
		return
	}
	g.stop()
}

func (m *Manager) currentTerm() *election.Term {
	m.termMu.Lock()
	defer m.termMu.Unlock()
	return m.term
}

// resign gives up leadership: stop PostgreSQL first (a fast shutdown sends
// the last WAL to connected standbys), then resign so a standby takes over.
func (m *Manager) resign(ctx context.Context, o observation, reason string) error {
	if o.Local.Running {
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := m.inst.Stop(sctx, replicate.Fast)
		cancel()
		if err != nil {
			if ferr := m.inst.Fence(ctx); ferr != nil {
				return fmt.Errorf("stop before resign: %w; fence: %w", err, ferr)
			}
		}
	}
	m.wasPrimary = true
	m.crashedAt = time.Time{}
	m.disarmWatchdog() // PostgreSQL is stopped
	m.log.Info("resigning leadership", "reason", reason)
	m.dropTerm(ctx)
	return nil
}

// currentGuard returns the fence guard, nil without one.
func (m *Manager) currentGuard() *fenceGuard {
	m.termMu.Lock()
	defer m.termMu.Unlock()
	return m.guard
}

// mayWrite reports whether this node may start its PostgreSQL as a
// primary now: it holds a live term that its fencer has not given up,
// with time left before the fence deadline, and its fence guard (if any)
// runs. Used with replicate's StartIf, which evaluates it atomically with
// respect to Fence: a decision taken on an observation from just before
// the fencer fenced must not start a writable primary after the fence.
func (m *Manager) mayWrite() bool {
	term := m.currentTerm()
	if term == nil || term.Err() != nil || m.fencedTerm.Load() == term {
		return false
	}
	if !time.Now().Before(term.ValidUntil().Add(-m.cfg.FenceBudget)) {
		return false
	}
	if g := m.currentGuard(); g != nil && !g.alive() {
		return false
	}
	return true
}
