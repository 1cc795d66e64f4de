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
	}
	m.dropTerm(ctx)
	if err != nil {
		return fmt.Errorf("fence: %w", err)
	}
	return nil
}

// dropTerm stops the fencer and resigns the term, best effort.
func (m *Manager) dropTerm(ctx context.Context) {
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
	rec := keyspace.LeaderRecord{Node: m.cfg.Node, Host: m.cfg.Host, Port: m.cfg.Port, Timeline: o.Local.Timeline}
	b, err := keyspace.Encode(rec)
	if err != nil {
		return err
	}
	// Bounded: waiting in etcd's queue never decides who is promoted; a
	// candidate that did not win quickly goes back to observing.
	cctx, cancel := context.WithTimeout(ctx, 2*m.cfg.LoopInterval)
	defer cancel()
	term, err := m.el.Campaign(cctx, b)
	if err != nil {
		return fmt.Errorf("campaign: %w", err)
	}
	m.setTerm(term)
	if err := m.armWatchdog(term); err != nil {
		m.dropTerm(ctx)
		return err
	}
	// Re-check with the freshest view: another node may have published a
	// better position while we campaigned.
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
	m.termMu.Unlock()
	go m.fencer(term, stop, done)
}

// fencer fences PostgreSQL FenceBudget before the term's ValidUntil unless
// a renewal moved ValidUntil on, independently of the loop (which may be
// busy in a long action).
func (m *Manager) fencer(term *election.Term, stop, done chan struct{}) {
	defer close(done)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var petted time.Time // the ValidUntil of the last pet
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
		d := time.Until(at)
		if d <= 0 || term.Err() != nil && !errors.Is(term.Err(), election.ErrResigned) {
			ctx, cancel := context.WithTimeout(context.Background(), m.cfg.FenceBudget)
			err := m.inst.Fence(ctx)
			cancel()
			m.tel.fences.Add(context.Background(), 1)
			m.log.Warn("fenced PostgreSQL: lease not renewed in time", "err", errString(err), "term_err", errString(term.Err()))
			// A fence is a step down: end the term too, even if a late
			// renewal has just extended it, so that the loop does not
			// restart PostgreSQL as a primary and a standby takes over.
			if err == nil {
				m.disarmWatchdog()
			}
			rctx, rcancel := context.WithTimeout(context.Background(), time.Second)
			if err := term.Resign(rctx); err != nil {
				m.log.Debug("resign after fence", "err", err.Error())
			}
			rcancel()
			return
		}
		timer.Reset(min(d, m.cfg.LoopInterval))
		select {
		case <-stop:
			return
		case <-term.Done():
			if errors.Is(term.Err(), election.ErrResigned) {
				return
			}
		case <-timer.C:
		}
	}
}

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
