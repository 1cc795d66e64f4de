package ha

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pgha/pgha/election"
	"github.com/pgha/pgha/internal/keyspace"
	"github.com/pgha/pgha/replicate"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sync/errgroup"
)

// ErrRefused: this node refuses to join the cluster (its data directory
// belongs to another cluster). Run returns it wrapped with the reason.
var ErrRefused = errors.New("ha: node refuses to join the cluster")

// Status is a snapshot of the manager's view of its node.
type Status struct {
	Node     string
	Role     keyspace.Role
	Leading  bool
	Leader   string // current leader node, "" if none
	Timeline uint32
	// LastAction is the loop's latest decision and its reason.
	LastAction string
	// LastError is the latest action's error, "" if it succeeded.
	LastError string
}

// Manager runs the HA loop of one node. Create it with [New] and run it
// with [Manager.Run]; [Manager.Status] may be called from any goroutine.
type Manager struct {
	cfg    Config
	layout keyspace.Layout
	inst   *replicate.Instance
	el     *election.Elector
	view   *view
	log    *slog.Logger
	tel    *telemetry

	mu     sync.Mutex
	status Status
	hs     handlerStatus

	// Loop-owned state (only the Run goroutine touches it, except term,
	// which the fencer also reads under termMu).
	termMu     sync.Mutex
	term       *election.Term
	wd         *watchdog // armed while leading, when configured
	fencerStop chan struct{}
	fencerDone chan struct{}

	wasPrimary bool
	following  string
	// notStreamingSince: when a running standby was first seen not
	// streaming; zero while it streams.
	notStreamingSince time.Time
	// maxTimeline is the highest timeline this data directory was seen
	// on since it was last cloned or rewound. A standby reports the
	// timeline of its WAL receiver, or without one that of its last
	// restartpoint, which lags after a promotion it followed; timelines
	// only grow, so the highest seen is the one it replays.
	maxTimeline uint32
	// noSyncSince is when the leader first saw no streaming standby to
	// name synchronous (sync mode on); zero otherwise.
	noSyncSince time.Time
	// abandon makes Run return without leaving the cluster cleanly, like a
	// crashed process (tests use it to lose a node).
	abandon   bool
	crashedAt time.Time
	// exitAtTerm is the postmaster's exit error when the current term
	// began (nil if it ran): only a later exit is a crash under this term.
	exitAtTerm error
	lastAction string
	// retry spaces out retries of a failing role change.
	retry retryGate
	// ownSlots are the replication slots this manager created while
	// leading, with when their member was first seen gone (zero while it
	// is a member); see Config.DepartedSlotTTL.
	ownSlots map[string]time.Time
	member   clientv3.LeaseID
	// memberStop stops the keep-alive of the member lease (owned by the
	// loop goroutine, like member); memberLost is set when that
	// keep-alive ends.
	memberStop context.CancelFunc
	memberLost atomic.Bool
	// published is the member record last written, with when (o.Now)
	// and at which etcd revision; see publishDue.
	published published
}

// New validates cfg and returns a Manager. It contacts nothing.
func New(cfg Config) (*Manager, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	layout, err := keyspace.NewLayout(cfg.KeyRoot, cfg.Cluster)
	if err != nil {
		return nil, &ConfigError{"KeyRoot", cfg.KeyRoot, err.Error()}
	}
	log := cfg.Logger.With("cluster", cfg.Cluster, "node", cfg.Node)
	el, err := election.New(election.Config{
		Client:         cfg.Client,
		Prefix:         layout.Leader(),
		LeaseTTL:       cfg.LeaseTTL,
		Logger:         log,
		TracerProvider: cfg.TracerProvider,
		MeterProvider:  cfg.MeterProvider,
	})
	if err != nil {
		return nil, fmt.Errorf("ha: election: %w", err)
	}
	tel, err := newTelemetry(cfg.TracerProvider, cfg.MeterProvider, cfg.Node)
	if err != nil {
		return nil, fmt.Errorf("ha: telemetry: %w", err)
	}
	m := &Manager{cfg: cfg, layout: layout, inst: cfg.Instance, el: el, log: log, tel: tel,
		retry: retryGate{min: cfg.LoopInterval, max: retryMax},
		view:  newView(cfg.Client, layout, cfg.Node, log)}
	m.status.Node = cfg.Node
	return m, nil
}

// Status returns the latest status snapshot. Safe for concurrent use.
func (m *Manager) Status() Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.status
}

// Run runs the HA loop until ctx is done or the node refuses to join
// (an error wrapping [ErrRefused]). When ctx ends it leaves the cluster
// cleanly: a leader stops its PostgreSQL (fast shutdown, which sends the
// last WAL to the standbys) and resigns, so that a standby takes over at
// once; a standby leaves its PostgreSQL running. Run returns nil after a
// clean exit.
func (m *Manager) Run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { m.view.run(gctx); return nil })
	g.Go(func() error { return m.loop(gctx) })
	err := g.Wait()
	if !m.abandon {
		m.leave()
	} else {
		m.stopFencer()
	}
	m.inst.Close() // the status session; the next user of the Instance reopens it
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		return nil
	}
	return err
}

func (m *Manager) loop(ctx context.Context) error {
	if st, err := m.inst.Status(ctx); err == nil && st.Initialized && !st.StandbyConfigured {
		// A data directory configured as a primary may hold WAL that no
		// other node has: it must be rewound before it follows anyone.
		m.wasPrimary = true
	}
	tick := time.NewTicker(m.cfg.LoopInterval)
	defer tick.Stop()
	for {
		if err := m.step(ctx); err != nil {
			return err
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
	a := decide(o)
	if s := a.String(); s != m.lastAction {
		m.log.Info("decision", "action", a.Kind.String(), "reason", a.Reason)
		m.lastAction = s
	}
	started := time.Now()
	var err error
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
	m.publish(ctx, o)
	m.mu.Lock()
	m.status.LastAction = a.String()
	m.status.LastError = errString(err)
	m.status.Leading = m.leading()
	m.status.Leader = ""
	if o.Leader != nil {
		m.status.Leader = o.Leader.Node
	}
	m.status.Timeline = o.Local.Timeline
	m.status.Role = roleOf(o, m.leading())
	m.tel.role.Store(m.status.Role)
	m.tel.lag.Store(lagBytes(o))
	m.hs = handlerStatus{Status: m.status, LagBytes: lagBytes(o), pgRunning: o.Local.Running,
		streaming: o.Local.Streaming, lastStep: time.Now()}
	if t := m.currentTerm(); t != nil && t.Err() == nil {
		m.hs.validUntil = t.ValidUntil()
	}
	m.mu.Unlock()
	return nil
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func (m *Manager) leading() bool {
	m.termMu.Lock()
	defer m.termMu.Unlock()
	return m.term != nil && m.term.Err() == nil
}

func (m *Manager) observe(ctx context.Context) (observation, bool) {
	o := observation{Now: m.cfg.now(), Node: m.cfg.Node, Cfg: m.cfg}
	if m.cfg.Watchdog == WatchdogRequired && !watchdogUsable(m.cfg.WatchdogDevice) {
		// This node may not lead: say so in its member record, so that
		// the other candidates do not wait for it.
		o.Cfg.NoFailover = true
	}
	if !m.view.fill(&o) {
		return o, false
	}
	m.termMu.Lock()
	if m.term != nil {
		if m.term.Err() == nil {
			o.Leading, o.ValidUntil = true, m.term.ValidUntil()
		}
	}
	m.termMu.Unlock()

	sctx, cancel := context.WithTimeout(ctx, m.cfg.LoopInterval)
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
		Initialized: m.inst.Initialized(),
		WasPrimary:  m.wasPrimary,
		Following:   m.following,
		CrashedAt:   m.crashedAt,
	}
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
		switch {
		case !st.Running || !st.InRecovery || l.Streaming:
			m.notStreamingSince = time.Time{}
		case m.notStreamingSince.IsZero():
			m.notStreamingSince = o.Now
		}
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
	o.Local = l
	return o, true
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

// leave is called when Run ends: a leader stops its PostgreSQL and resigns.
func (m *Manager) leave() {
	m.termMu.Lock()
	term := m.term
	m.termMu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if term != nil {
		m.stopFencer()
		stopped := true
		if term.Err() == nil {
			if err := m.inst.Stop(ctx, replicate.Fast); err != nil {
				m.log.Warn("stop PostgreSQL on leave", "err", err.Error())
				if err := m.inst.Fence(ctx); err != nil {
					stopped = false
					m.log.Error("fence PostgreSQL on leave; the watchdog stays armed", "err", err.Error())
				}
			}
		}
		if stopped {
			m.disarmWatchdog()
		}
		if err := term.Resign(ctx); err != nil {
			m.log.Warn("resign on leave", "err", err.Error())
		}
	}
	if m.memberStop != nil {
		defer m.memberStop()
	}
	if m.member != 0 {
		m.cfg.Client.Revoke(ctx, m.member)
	}
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
		m.wasPrimary, m.following, m.maxTimeline = false, a.Leader.Node, 0
		if err := m.inst.Start(ctx); err != nil && !errors.Is(err, replicate.ErrRunning) {
			return fmt.Errorf("start after clone: %w", err)
		}
		return nil
	case actFollow:
		ctx, cancel := context.WithTimeout(ctx, opTimeout)
		defer cancel()
		if err := m.inst.Follow(ctx, m.source(a.Leader)); err != nil {
			return fmt.Errorf("follow %s: %w", a.Leader.Node, err)
		}
		m.following = a.Leader.Node
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
			return fmt.Errorf("rewind from %s: %w", a.Leader.Node, err)
		}
		m.wasPrimary, m.following, m.maxTimeline = false, a.Leader.Node, 0
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
		if err := m.inst.Start(sctx); err != nil && !errors.Is(err, replicate.ErrRunning) {
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
		return m.resign(ctx, o, a.Reason)
	}
	return fmt.Errorf("unknown action %v", a.Kind)
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
	o2, ok := m.observe(ctx)
	named := o2.Switchover != nil && o2.Switchover.To == m.cfg.Node
	if ok && !named { // a switchover or manual failover names this node: it is the choice
		o2.Leading = false
		o2.Leader = nil
		if best, why := bestCandidate(o2); best != m.cfg.Node {
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

// bootstrap: with no leader and no initialize key, win the election, then
// initdb, start, and record the system identifier, all guarded by the term.
func (m *Manager) bootstrap(ctx context.Context, o observation) error {
	if o.Leader != nil {
		return nil
	}
	if err := m.campaign(ctx, o); err != nil {
		return err
	}
	term := m.currentTerm()
	if term == nil {
		return nil
	}
	resp, err := m.cfg.Client.Get(ctx, m.layout.Initialize())
	if err != nil {
		return fmt.Errorf("bootstrap: read initialize: %w", err)
	}
	if len(resp.Kvs) > 0 {
		m.disarmWatchdog()
		m.dropTerm(ctx) // someone else initialized the cluster meanwhile
		return nil
	}
	if err := m.inst.Init(ctx); err != nil {
		m.disarmWatchdog()
		m.dropTerm(ctx)
		return fmt.Errorf("bootstrap: %w", err)
	}
	if err := m.inst.Start(ctx); err != nil {
		m.dropTerm(ctx)
		return fmt.Errorf("bootstrap: start: %w", err)
	}
	st, err := m.inst.Status(ctx)
	if err != nil {
		return fmt.Errorf("bootstrap: status: %w", err)
	}
	m.wasPrimary = true
	rec, err := keyspace.Encode(keyspace.InitializeRecord{SystemID: strconv.FormatUint(st.SystemID, 10), Node: m.cfg.Node})
	if err != nil {
		return err
	}
	hist, _ := keyspace.Encode(keyspace.HistoryRecord{Entries: []keyspace.HistoryEntry{{Timeline: st.Timeline, Leader: m.cfg.Node, Reason: "bootstrap", Token: term.Token(), Time: time.Now().UTC()}}})
	tr, err := m.cfg.Client.Txn(ctx).
		If(term.IsOwner(), clientv3.Compare(clientv3.CreateRevision(m.layout.Initialize()), "=", 0)).
		Then(clientv3.OpPut(m.layout.Initialize(), string(rec)), clientv3.OpPut(m.layout.History(), string(hist))).
		Commit()
	if err != nil {
		return fmt.Errorf("bootstrap: write initialize: %w", err)
	}
	if !tr.Succeeded {
		return m.fence(ctx, "bootstrap: lost leadership or the cluster was initialized by another node")
	}
	m.log.Info("bootstrapped the cluster", "system_id", st.SystemID, "timeline", st.Timeline)
	return m.proclaim(ctx, term, st.Timeline, true)
}

func (m *Manager) proclaim(ctx context.Context, term *election.Term, tl uint32, writable bool) error {
	b, err := keyspace.Encode(keyspace.LeaderRecord{Node: m.cfg.Node, Host: m.cfg.Host, Port: m.cfg.Port, Timeline: tl, Writable: writable})
	if err != nil {
		return err
	}
	return term.Proclaim(ctx, b)
}

// promote promotes PostgreSQL while the term is live; the leader record
// (not writable) has been visible since the campaign won, so pools have
// already stopped writing to the old primary.
func (m *Manager) promote(ctx context.Context, o observation) error {
	term := m.currentTerm()
	if term == nil || term.Err() != nil {
		return nil
	}
	if time.Until(term.ValidUntil()) < m.cfg.FenceBudget {
		return fmt.Errorf("promote: term too close to its deadline")
	}
	if m.cfg.SyncMode != SyncOff {
		// A standby carries no synchronous_standby_names: promoted as is,
		// it would acknowledge commits alone until the first heartbeat.
		// Name every other member first (and widen the sync key before
		// that), so no commit is ever acknowledged without a standby.
		if err := m.syncBeforePromote(ctx, term, o); err != nil {
			return fmt.Errorf("promote: %w", err)
		}
	}
	tl, err := m.inst.Promote(ctx)
	if err != nil {
		return fmt.Errorf("promote: %w", err)
	}
	m.wasPrimary, m.following, m.crashedAt = true, "", time.Time{}
	reason := "failover"
	if sw := o.Switchover; sw != nil && sw.To == m.cfg.Node {
		reason = switchoverKind(sw)
	} else if sw != nil && sw.From != "" && sw.To == "" {
		reason = "switchover"
	}
	if err := m.appendHistory(ctx, term, keyspace.HistoryEntry{Timeline: tl, SwitchLSN: o.Local.position(), Leader: m.cfg.Node, Reason: reason, Token: term.Token(), Time: time.Now().UTC()}); err != nil {
		m.log.Warn("append timeline history", "err", err.Error())
	}
	m.tel.promotions.Add(ctx, 1)
	m.log.Info("promoted", "timeline", tl, "token", term.Token())
	return m.proclaim(ctx, term, tl, true)
}

// appendHistory appends e to the history key, guarded by the term.
func (m *Manager) appendHistory(ctx context.Context, term *election.Term, e keyspace.HistoryEntry) error {
	for range 5 {
		resp, err := m.cfg.Client.Get(ctx, m.layout.History())
		if err != nil {
			return err
		}
		var h keyspace.HistoryRecord
		var modRev int64
		if len(resp.Kvs) > 0 {
			modRev = resp.Kvs[0].ModRevision
			if d, err := keyspace.Decode[keyspace.HistoryRecord](resp.Kvs[0].Value); err == nil {
				h = d
			}
		}
		if n := len(h.Entries); n > 0 && h.Entries[n-1].Timeline >= e.Timeline {
			return nil
		}
		h.Entries = append(h.Entries, e)
		b, err := keyspace.Encode(h)
		if err != nil {
			return err
		}
		tr, err := m.cfg.Client.Txn(ctx).
			If(term.IsOwner(), clientv3.Compare(clientv3.ModRevision(m.layout.History()), "=", modRev)).
			Then(clientv3.OpPut(m.layout.History(), string(b))).Commit()
		if err != nil {
			return err
		}
		if tr.Succeeded {
			return nil
		}
	}
	return errors.New("history changed concurrently 5 times")
}

// lead is the leader's heartbeat: publish a writable leader record, keep a
// replication slot per member, maintain the synchronous standby set.
func (m *Manager) lead(ctx context.Context, o observation) error {
	term := m.currentTerm()
	if term == nil {
		return nil
	}
	if o.Leader == nil || o.Leader.Node != m.cfg.Node || !o.Leader.Writable || o.Leader.Timeline != o.Local.Timeline {
		if err := m.proclaim(ctx, term, o.Local.Timeline, true); err != nil {
			return err
		}
	}
	if o.Switchover != nil && o.Switchover.From != m.cfg.Node {
		// A switchover record that names another node as the old leader
		// is stale: remove it (guarded by our leadership).
		// Only the record observed: an operator's new request written
		// since (naming this node) must survive (TestSwitchoverToEveryNode
		// lost one that way in CI).
		m.cfg.Client.Txn(ctx).If(term.IsOwner(), clientv3.Compare(clientv3.ModRevision(m.layout.Switchover()), "=", o.SwitchoverRev)).
			Then(clientv3.OpDelete(m.layout.Switchover())).Commit()
	}
	m.maintainSlots(ctx, o)
	if m.cfg.SyncMode != SyncOff {
		return m.maintainSync(ctx, term, o)
	}
	return nil
}

// maintainSlots keeps a replication slot for every other member, and
// drops a slot this manager created once its member has been gone for
// DepartedSlotTTL, so that a departed node's slot does not retain WAL on
// the leader forever.
func (m *Manager) maintainSlots(ctx context.Context, o observation) {
	if m.ownSlots == nil {
		m.ownSlots = map[string]time.Time{}
	}
	present := map[string]bool{}
	for name := range o.Members {
		if name == m.cfg.Node {
			continue
		}
		slot := replicate.SlotName(name)
		present[slot] = true
		if err := m.inst.EnsureSlot(ctx, slot); err != nil {
			m.log.Debug("ensure slot", "member", name, "err", err.Error())
			continue
		}
		m.ownSlots[slot] = time.Time{}
	}
	for slot, gone := range m.ownSlots {
		switch {
		case present[slot] || slot == replicate.SlotName(m.cfg.Node):
		case gone.IsZero():
			m.ownSlots[slot] = o.Now
		case m.cfg.DepartedSlotTTL > 0 && o.Now.Sub(gone) >= m.cfg.DepartedSlotTTL:
			if err := m.inst.DropSlot(ctx, slot); err != nil {
				m.log.Debug("drop slot of departed member", "slot", slot, "err", err.Error())
				continue
			}
			delete(m.ownSlots, slot)
			m.log.Info("dropped the replication slot of a departed member", "slot", slot, "gone_for", o.Now.Sub(gone).Round(time.Second).String())
		}
	}
}

// maintainSync keeps synchronous_standby_names and the sync key in step so
// that the sync key always contains every standby that may hold a commit
// the others lack: it is widened before synchronous_standby_names names a
// new standby, and narrowed only after a standby left it.
func (m *Manager) maintainSync(ctx context.Context, term *election.Term, o observation) error {
	sctx, cancel := context.WithTimeout(ctx, m.cfg.LoopInterval)
	defer cancel()
	st, err := m.inst.Status(sctx)
	if err != nil {
		return err
	}
	var streaming []string
	for _, r := range st.Replicas {
		if r.State == "streaming" {
			streaming = append(streaming, r.Name)
		}
	}
	// Keep current sync standbys that still stream, then add others by name.
	var want []string
	for _, n := range o.SyncSet {
		if slices.Contains(streaming, n) && len(want) < m.cfg.SyncStandbys {
			want = append(want, n)
		}
	}
	slices.Sort(streaming)
	for _, n := range streaming {
		if len(want) < m.cfg.SyncStandbys && !slices.Contains(want, n) {
			want = append(want, n)
		}
	}
	if len(want) == 0 {
		if m.cfg.SyncMode == SyncStrict {
			// Strict: keep waiting for the current sync standbys; never
			// drop to asynchronous.
			return nil
		}
		// On: fall back to asynchronous commits only when no standby has
		// streamed for a while, not during a WAL receiver's reconnect:
		// while the sync key is empty no standby may be promoted.
		if m.noSyncSince.IsZero() {
			m.noSyncSince = time.Now()
		}
		if time.Since(m.noSyncSince) < rewindGrace(m.cfg) {
			return nil
		}
	} else {
		m.noSyncSince = time.Time{}
	}
	slices.Sort(want)
	union := slices.Clone(o.SyncSet)
	for _, n := range want {
		if !slices.Contains(union, n) {
			union = append(union, n)
		}
	}
	slices.Sort(union)
	if !o.SyncPresent || !slices.Equal(union, sortedCopy(o.SyncSet)) {
		if err := m.writeSync(ctx, term, union); err != nil {
			return err
		}
	}
	spec := replicate.SyncSpec{Method: replicate.SyncFirst, Num: len(want), Names: want}
	if len(want) == 0 {
		spec = replicate.SyncSpec{}
	}
	if spec.String() != st.SynchronousStandbyNames {
		if _, err := m.inst.SetSynchronousStandbys(ctx, spec); err != nil {
			return fmt.Errorf("set synchronous_standby_names: %w", err)
		}
	}
	if !slices.Equal(union, want) {
		return m.writeSync(ctx, term, want)
	}
	return nil
}

// syncBeforePromote names every other member as a synchronous standby
// candidate (FIRST n of them, n = SyncStandbys) on this standby before it
// is promoted, after widening the sync key to include them.
func (m *Manager) syncBeforePromote(ctx context.Context, term *election.Term, o observation) error {
	var others []string
	for name := range o.Members {
		if name != m.cfg.Node {
			others = append(others, name)
		}
	}
	if len(others) == 0 {
		if m.cfg.SyncMode == SyncStrict {
			return errors.New("strict synchronous mode and no other member to confirm commits")
		}
		return nil
	}
	slices.Sort(others)
	union := slices.Clone(o.SyncSet)
	for _, n := range others {
		if !slices.Contains(union, n) {
			union = append(union, n)
		}
	}
	slices.Sort(union)
	if err := m.writeSync(ctx, term, union); err != nil {
		return err
	}
	spec := replicate.SyncSpec{Method: replicate.SyncFirst, Num: min(m.cfg.SyncStandbys, len(others)), Names: others}
	if _, err := m.inst.SetSynchronousStandbys(ctx, spec); err != nil {
		return fmt.Errorf("set synchronous_standby_names before promotion: %w", err)
	}
	return nil
}

func sortedCopy(s []string) []string {
	c := slices.Clone(s)
	slices.Sort(c)
	return c
}

func (m *Manager) writeSync(ctx context.Context, term *election.Term, standbys []string) error {
	if standbys == nil {
		standbys = []string{}
	}
	b, err := keyspace.Encode(keyspace.SyncRecord{Leader: m.cfg.Node, Standbys: standbys})
	if err != nil {
		return err
	}
	tr, err := m.cfg.Client.Txn(ctx).If(term.IsOwner()).Then(clientv3.OpPut(m.layout.Sync(), string(b))).Commit()
	if err != nil {
		return fmt.Errorf("write sync key: %w", err)
	}
	if !tr.Succeeded {
		return election.ErrNotLeader
	}
	return nil
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
