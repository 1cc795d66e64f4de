package ha

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/pgha/pgha/internal/keyspace"
	"github.com/pgha/pgha/replicate"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// This file is the loop: Run's observe → decide → act rounds (loop, step,
// observe) and the executor that carries out decide's action.

func (m *Manager) loop(ctx context.Context) error {
	if st, err := m.inst.Status(ctx); err == nil && st.Initialized && !st.StandbyConfigured {
		// A data directory configured as a primary may hold WAL that no
		// other node has: it must be rewound before it follows anyone.
		m.wasPrimary = true
	}
	every := m.loopInterval()
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		if err := m.step(ctx); err != nil {
			return err
		}
		if d := m.loopInterval(); d != every {
			every = d
			tick.Reset(every) // the config record changed it
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		case <-m.view.changed:
		case <-m.inst.Exited():
			// Observe at once: step records the crash.
		}
	}
}

// step runs one observe → decide → act round.
func (m *Manager) step(ctx context.Context) error {
	o, ok := m.observe(ctx)
	if !ok || ctx.Err() != nil {
		return nil // no cluster view yet, or stopping
	}
	m.applyConfig(ctx, o)
	a := decide(o)
	m.problem = ""
	if a.Kind == actWait && (rewindGivenUp(o.Local, o.Now) || o.Local.RewindIncomplete) {
		m.problem = a.Reason // published in the member record: an operator must act
	}
	if s := a.String(); s != m.lastAction {
		m.log.Info("decision", "action", a.Kind.String(), "reason", a.Reason)
		m.lastAction = s
	}
	started := time.Now()
	var err error
	if a.Kind != actWait && a.Kind != actLead {
		m.changeReason = a.String()
	}
	ok, left, lastErr := m.retry.allow(a, o.Now)
	switch {
	case !ok:
		// The same role change failed a moment ago: wait out its backoff
		// (Status keeps showing its error).
		err = lastErr
		m.log.Debug("retry postponed", "action", a.Kind.String(), "retry_in", left.Round(time.Millisecond).String())
	case a.Kind == actWait || a.Kind == actLead:
		err = m.execute(ctx, a, o)
	default: // a role change: one span each
		sctx, span := m.span(ctx, a.Kind.String(), o)
		err = m.execute(sctx, a, o)
		endSpan(span, err)
		if a.Kind == actFence {
			m.tel.fences.Add(ctx, 1)
		}
	}
	m.tel.loop.Record(ctx, time.Since(started).Seconds())
	if ok && ctx.Err() == nil {
		if d := m.retry.done(a, o.Now, err); err != nil {
			m.log.Warn("action did not complete", "action", a.Kind.String(), "err", err.Error(), "retry_in", d.Round(time.Millisecond).String())
		}
	}
	if errors.Is(err, ErrRefused) {
		return err
	}
	if a.Kind == actReinit && err != nil {
		// The request stays: the node retries (spaced by the retry
		// gate) and says why in its member record meanwhile.
		m.problem = reinitFailed + " (retrying; a data directory moved aside is kept): " + err.Error()
	}
	m.publish(ctx, o)
	if rev := o.Reinits[m.cfg.Node]; rev != 0 && rev == m.reinitCloned && o.Local.Streaming {
		// Re-cloned and streaming again (and published so): done.
		m.reinitDone(ctx, rev)
	}
	m.announceRole(o, a)
	m.mu.Lock()
	m.status.LastAction = a.String()
	m.status.LastError = errString(err)
	m.status.Leading = m.leading()
	m.status.Leader = ""
	if o.Leader != nil {
		m.status.Leader = o.Leader.Node
	}
	m.status.Timeline = o.Local.Timeline
	m.status.Role = Role(roleOf(o, m.leading()))
	m.tel.role.Store(m.status.Role)
	m.tel.lag.Store(lagBytes(o))
	m.status.LeaseRenewalMS = 0
	m.status.Failsafe = m.failsafeActive()
	m.status.PendingRestart = m.dyn.pending
	m.status.LoopInterval = Duration(m.loopInterval())
	t := m.currentTerm()
	if t != nil && t.Err() == nil {
		m.status.LeaseRenewalMS = float64(t.RenewalRTT().Microseconds()) / 1000
	}
	m.hs = handlerStatus{Status: m.status, LagBytes: lagBytes(o), pgRunning: o.Local.Running,
		streaming: o.Local.Streaming, lastStep: time.Now()}
	if t != nil && t.Err() == nil {
		m.hs.validUntil = t.ValidUntil()
	}
	m.mu.Unlock()
	return nil
}

func (m *Manager) observe(ctx context.Context) (observation, bool) {
	o := observation{Now: m.cfg.now(), Node: m.cfg.Node, Policy: m.cfg.policy()}
	if m.cfg.Watchdog == WatchdogRequired && !watchdogUsable(m.cfg.WatchdogDevice) {
		// This node may not lead: say so in its member record, so that
		// the other candidates do not wait for it.
		o.Policy.NoFailover = true
	}
	if !m.view.fill(&o) {
		return o, false
	}
	if held := applyClusterPolicy(&o.Policy, o.Config, m.cfg.LeaseTTL); held != m.loopHeld {
		if held != "" {
			m.log.Warn("cluster setting held back", "why", held)
		}
		m.loopHeld = held
	}
	if prev := time.Duration(m.loopEvery.Swap(int64(o.Policy.LoopInterval))); prev != o.Policy.LoopInterval {
		m.log.Info("loop interval changed by the cluster configuration", "from", prev, "to", o.Policy.LoopInterval)
	}
	m.termMu.Lock()
	if m.term != nil {
		if m.term.Err() == nil {
			o.Leading, o.ValidUntil = true, m.term.ValidUntil()
		}
	}
	m.termMu.Unlock()

	sctx, cancel := context.WithTimeout(ctx, m.loopInterval())
	defer cancel()
	st, err := m.inst.Status(sctx)
	if err != nil && m.inst.PID() > 0 && m.inst.ExitErr() == nil {
		// The postmaster runs but did not answer in time (a loaded
		// machine): its state is unknown, so decide nothing this round
		// rather than act on a wrong picture. The leader's fencer runs
		// on its own and still fences on time.
		m.log.Debug("PostgreSQL status unknown; skipping this round", "err", err.Error())
		return o, false
	}
	l := local{
		Initialized:        m.inst.Initialized(),
		WasPrimary:         m.wasPrimary,
		Following:          m.following,
		RewindFailures:     m.rewindFailures,
		RewindFailingSince: m.rewindFailingSince,
		RewindImpossible:   m.rewindImpossible,
		CrashedAt:          m.crashedAt,
		ReinitCloned:       m.reinitCloned,
	}
	m.startupHold(o)
	l.PromisedUntil = m.fs.promised()
	l.FailsafeHoldUntil = m.failsafeHoldUntil()
	if err == nil {
		l.RewindIncomplete = st.RewindIncomplete
		l.Diverged = st.Diverged
		l.Running = st.Running
		l.InRecovery = st.InRecovery
		m.maxTimeline = max(m.maxTimeline, st.Timeline)
		l.Timeline = m.maxTimeline
		l.SystemID = st.SystemID
		l.WriteLSN = uint64(st.WriteLSN)
		l.ReceiveLSN = uint64(st.ReceiveLSN)
		l.ReplayLSN = uint64(st.ReplayLSN)
		if !st.Running && st.CheckpointLSN != 0 {
			l.ReplayLSN = uint64(st.CheckpointLSN)
		}
		l.Streaming = st.WALReceiver != nil && st.WALReceiver.Status == "streaming"
		l.SyncStandbyNames = st.SynchronousStandbyNames
		for _, r := range st.Replicas {
			if r.State == "streaming" {
				l.StreamingStandbys = append(l.StreamingStandbys, r.Name)
				if l.StandbyFlush == nil {
					l.StandbyFlush = map[string]uint64{}
				}
				l.StandbyFlush[r.Name] = uint64(r.FlushLSN)
			}
		}
		m.notStreamingSince = stuckSince(m.notStreamingSince, o.Now, st.Running, st.InRecovery, l.Streaming,
			o.Leader != nil && o.Leader.Writable, m.repointed)
		m.repointed = false
		l.NotStreamingSince = m.notStreamingSince
		if st.Running && !st.InRecovery && o.Leading {
			m.crashedAt = time.Time{}
		}
	}
	if exit := m.inst.ExitErr(); !l.Running && o.Leading && m.crashedAt.IsZero() && exit != nil && exit != m.exitAtTerm {
		// The postmaster died under the leader (not stopped by us). This
		// holds also when Status failed because it was dying.
		m.crashedAt = o.Now
		m.log.Warn("PostgreSQL exited on the leader", "err", errString(m.inst.ExitErr()))
	}
	l.CrashedAt = m.crashedAt
	m.observeRestart(o, &l) // needs l.Running
	o.Local = l
	return o, true
}

// reinitDone deletes this node's reinit request once it streams from a
// fresh clone, if it is still the one at revision rev: a request written
// since is a new one.
func (m *Manager) reinitDone(ctx context.Context, rev int64) {
	key := m.layout.Reinit(m.cfg.Node)
	dctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	if _, err := m.cfg.Client.Txn(dctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).Then(clientv3.OpDelete(key)).Commit(); err != nil {
		// Retried next round.
		m.log.Warn("delete the reinit request", "err", err.Error())
		return
	}
	m.log.Info("reinit done: cloned afresh from the leader")
}

// lagBytes is how far a standby's replay is behind the leader's last
// published write position; -1 when unknown or not a standby.
func lagBytes(o observation) int64 {
	l := o.Local
	if o.LastLeaderLSN == 0 || !l.InRecovery || !l.Running {
		return -1
	}
	return max(0, int64(o.LastLeaderLSN)-int64(l.ReplayLSN))
}

func roleOf(o observation, leading bool) keyspace.Role {
	switch {
	case !o.Local.Initialized:
		return keyspace.RoleStarting
	case !o.Local.Running:
		if o.Local.WasPrimary {
			return keyspace.RoleFenced
		}
		return keyspace.RoleStopped
	case !o.Local.InRecovery && leading:
		return keyspace.RolePrimary
	case o.Local.InRecovery:
		return keyspace.RoleReplica
	}
	return keyspace.RoleFenced
}

// opTimeout bounds actions that talk to a running PostgreSQL and should
// take well under a second (promote, follow); long ones (clone, rewind) are
// bounded only by Run's context.
const opTimeout = 30 * time.Second

// source returns the replication source for a leader.
func (m *Manager) source(l *keyspace.LeaderRecord) replicate.Source {
	return replicate.Source{Host: l.Host, Port: l.Port, Slot: replicate.SlotName(m.cfg.Node)}
}

func (m *Manager) execute(ctx context.Context, a action, o observation) error {
	switch a.Kind {
	case actWait:
		return nil
	case actRefuse:
		return fmt.Errorf("%w: %s", ErrRefused, a.Reason)
	case actFence:
		return m.fence(ctx, a.Reason)
	case actBootstrap:
		return m.bootstrap(ctx, o)
	case actClone:
		if err := m.inst.Clone(ctx, m.source(a.Leader)); err != nil {
			return fmt.Errorf("clone from %s: %w", a.Leader.Node, err)
		}
		m.wasPrimary, m.following, m.maxTimeline, m.repointed = false, a.Leader.Node, 0, true
		if err := m.inst.Start(ctx); err != nil && !errors.Is(err, replicate.ErrRunning) {
			return fmt.Errorf("start after clone: %w", err)
		}
		// A fresh clone is what a pending reinit request asks for (a
		// reinit that failed after moving the directory aside ends here).
		m.reinitCloned = o.Reinits[m.cfg.Node]
		return nil
	case actReclone, actReinit:
		if o.Local.Running {
			if err := m.inst.Stop(ctx, replicate.Fast); err != nil {
				return fmt.Errorf("stop before re-cloning: %w", err)
			}
		}
		if err := m.inst.Reclone(ctx, m.source(a.Leader)); err != nil {
			return fmt.Errorf("re-clone from %s: %w", a.Leader.Node, err)
		}
		m.wasPrimary, m.following, m.maxTimeline, m.repointed = false, a.Leader.Node, 0, true
		m.rewindFailures, m.rewindImpossible = 0, false
		if err := m.inst.Start(ctx); err != nil && !errors.Is(err, replicate.ErrRunning) {
			return fmt.Errorf("start after re-clone: %w", err)
		}
		m.reinitCloned = o.Reinits[m.cfg.Node]
		return nil
	case actFollow:
		ctx, cancel := context.WithTimeout(ctx, opTimeout)
		defer cancel()
		if err := m.inst.Follow(ctx, m.source(a.Leader)); err != nil {
			return fmt.Errorf("follow %s: %w", a.Leader.Node, err)
		}
		m.following, m.repointed = a.Leader.Node, true
		if !o.Local.Running {
			if err := m.inst.Start(ctx); err != nil && !errors.Is(err, replicate.ErrRunning) {
				return fmt.Errorf("start to follow %s: %w", a.Leader.Node, err)
			}
		}
		return nil
	case actRewind:
		if o.Local.Running {
			if err := m.inst.Stop(ctx, replicate.Fast); err != nil {
				return fmt.Errorf("stop before rewind: %w", err)
			}
		}
		if err := m.inst.Rewind(ctx, m.source(a.Leader)); err != nil {
			if m.rewindFailures == 0 {
				m.rewindFailingSince = o.Now
			}
			m.rewindFailures++
			m.rewindImpossible = errors.Is(err, replicate.ErrRewindImpossible)
			return fmt.Errorf("rewind from %s: %w", a.Leader.Node, err)
		}
		m.rewindFailures, m.rewindImpossible = 0, false
		m.wasPrimary, m.following, m.maxTimeline, m.repointed = false, a.Leader.Node, 0, true
		if err := m.inst.Start(ctx); err != nil && !errors.Is(err, replicate.ErrRunning) {
			return fmt.Errorf("start after rewind: %w", err)
		}
		return nil
	case actStart, actRestartPrimary:
		if a.Kind == actRestartPrimary && m.crashedAt.IsZero() {
			m.crashedAt = o.Now
		}
		sctx, cancel := context.WithTimeout(ctx, m.cfg.PrimaryStartTimeout)
		defer cancel()
		start := m.inst.Start
		if a.Kind == actRestartPrimary {
			// As a primary: only while the term lasts, atomically with
			// the fencer's fence (the observation may predate it).
			start = func(ctx context.Context) error { return m.inst.StartIf(ctx, m.mayWrite) }
		}
		if err := start(sctx); err != nil && !errors.Is(err, replicate.ErrRunning) {
			return fmt.Errorf("start: %w", err)
		}
		return nil
	case actCampaign:
		return m.campaign(ctx, o)
	case actPromote:
		pctx, cancel := context.WithTimeout(ctx, opTimeout)
		defer cancel()
		return m.promote(pctx, o)
	case actLead:
		// The heartbeat must never hold the loop: a PostgreSQL call on a
		// server that just died could otherwise wait forever, and the loop
		// would miss the crash.
		lctx, cancel := context.WithTimeout(ctx, m.cfg.LeaseTTL/2)
		defer cancel()
		return m.lead(lctx, o)
	case actResign:
		if sw := o.Switchover; sw != nil && sw.From == m.cfg.Node && sw.At.IsZero() && o.Local.Running && !o.Local.InRecovery && m.cfg.SwitchoverDrain > 0 {
			// A planned handover: let the open transactions finish (the
			// pools following the leader record hold new work meanwhile).
			if _, err := m.inst.DrainTransactions(ctx, m.cfg.SwitchoverDrain); err != nil {
				m.log.Warn("switchover: draining client transactions failed; stopping anyway", "err", err.Error())
			}
		}
		return m.resign(ctx, o, a.Reason)
	case actRestart:
		return m.doRestart(ctx, o)
	case actRestartDone:
		return m.ackRestart(ctx, o)
	case actReload:
		return m.doReload(ctx, o)
	case actSwitchoverDue:
		return m.switchoverDue(ctx, o)
	}
	return fmt.Errorf("unknown action %v", a.Kind)
}
