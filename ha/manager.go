package ha

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pgha/pgha/election"
	"github.com/pgha/pgha/internal/keyspace"
	"github.com/pgha/pgha/replicate"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sync/errgroup"
)

// This file is the Manager: its state, New, Run, Status and leaving the
// cluster. The loop is in loop.go, leadership in term.go, bootstrap in
// bootstrap.go, promotion in promote.go, the leader's upkeep in leader.go,
// member records in publish.go, the pure decisions in decide.go.

// ErrRefused: this node refuses to join the cluster (its data directory
// belongs to another cluster). Run returns it wrapped with the reason.
var ErrRefused = errors.New("ha: node refuses to join the cluster")

// Status is a snapshot of the manager's view of its node. Its JSON form
// (snake_case) is what the HTTP endpoints answer.
type Status struct {
	Node    string `json:"node"`
	Role    Role   `json:"role"`
	Leading bool   `json:"leading"`
	// Leader is the current leader node, "" if none.
	Leader   string `json:"leader"`
	Timeline uint32 `json:"timeline"`
	// LastAction is the loop's latest decision and its reason.
	LastAction string `json:"last_action"`
	// LastError is the latest action's error, "" if it succeeded.
	LastError string `json:"last_error,omitempty"`
	// LeaseRenewalMS is the round trip of the leader's last lease renewal
	// in milliseconds (0 when not leading). Over a tenth of the lease TTL
	// makes a false fence likely: the election logs a warning, and
	// pgha.election.renewal.duration has every renewal.
	LeaseRenewalMS float64 `json:"lease_renewal_ms,omitempty"`
	// Failsafe is true while this leader stays writable on its members'
	// promises because its lease cannot be renewed (Config.Failsafe).
	Failsafe bool `json:"failsafe,omitempty"`
	// PendingRestart names the PostgreSQL settings that wait for a
	// restart of this node (see ClusterConfig).
	PendingRestart []string `json:"pending_restart,omitempty"`
	// LoopInterval is the loop interval in effect: Config.LoopInterval,
	// or the cluster configuration's (ClusterConfig.LoopInterval).
	LoopInterval Duration `json:"loop_interval"`
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
	wd         *watchdog   // armed while leading, when configured
	guard      *fenceGuard // Config.FenceGuard's process; nil without one
	fencerStop chan struct{}
	fencerDone chan struct{}
	// fencerPoke wakes the fencer after a failsafe extension, so that
	// the fence guard's deadline moves at once.
	fencerPoke chan struct{}
	// fencedTerm is the term whose fencer has fenced (set before the
	// fence): no start as a primary under it (mayWrite).
	fencedTerm atomic.Pointer[election.Term]
	// fs is the failsafe state (Config.Failsafe); started is when Run
	// began, for the start-up hold of a restarted member.
	fs      failsafe
	started time.Time
	// dyn is what applyConfig last applied (loop-owned).
	dyn dynState
	// restart is the restart request this node saw (loop-owned).
	restart restartState
	// onCampaign, set by tests, is called when a campaign starts.
	onCampaign atomic.Pointer[func()]

	wasPrimary bool
	following  string
	// notStreamingSince: when a running standby was first seen not
	// streaming; zero while it streams.
	notStreamingSince time.Time
	// rewindFailures counts failed rewinds in a row; rewindImpossible:
	// the last said only a new clone helps (loop-owned).
	rewindFailures     int
	rewindFailingSince time.Time
	rewindImpossible   bool
	// problem is what the member record's Problem says (loop-owned).
	problem string
	// reinitCloned is the revision of the reinit request this node has
	// re-cloned for; the request is deleted once it streams (loop-owned).
	reinitCloned int64
	// repointed: the standby was pointed at a leader (follow, clone,
	// rewind) since the last observation; the stuck clock restarts.
	repointed bool
	// maxTimeline is the highest timeline this data directory was seen
	// on since it was last cloned or rewound. A standby reports the
	// timeline of its WAL receiver, or without one that of its last
	// restartpoint, which lags after a promotion it followed; timelines
	// only grow, so the highest seen is the one it replays.
	maxTimeline uint32
	// noSyncSince is when the leader first saw no streaming standby to
	// name synchronous (sync mode on); zero otherwise.
	noSyncSince time.Time
	// quorumPending is the confirmation point of the quorum configuration
	// applied last (0 until set); quorumArm: set it on the next round.
	quorumPending uint64
	quorumArm     bool
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
	// hooks calls Config.OnRoleChange; nil without one. hookRole is the
	// role last handed to it and changeReason the latest role-changing
	// decision (both loop-owned).
	hooks        *roleHooks
	hookRole     Role
	changeReason string
	// loopEvery is the loop interval in effect (nanoseconds): the node's
	// own, or the config record's; loopHeld says why the record's is not
	// used (loop-owned).
	loopEvery atomic.Int64
	loopHeld  string
}

// loopInterval is the loop interval in effect. Safe for concurrent use.
func (m *Manager) loopInterval() time.Duration { return time.Duration(m.loopEvery.Load()) }

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
		retry: retryGate{min: cfg.LoopInterval, max: retryMax}, fencerPoke: make(chan struct{}, 1),
		view: newView(cfg.Client, layout, cfg.Node, cfg.now, log)}
	m.status.Node = cfg.Node
	m.loopEvery.Store(int64(cfg.LoopInterval))
	if cfg.OnRoleChange != nil {
		if m.hooks, err = newRoleHooks(cfg.OnRoleChange, log, cfg.MeterProvider, cfg.Node, cfg.LeaseTTL); err != nil {
			return nil, fmt.Errorf("ha: telemetry: %w", err)
		}
	}
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
	m.started = time.Now()
	if err := m.ensureGuard(); err != nil {
		return fmt.Errorf("ha: %w", err)
	}
	if m.hooks != nil {
		m.hooks.start()
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { m.view.run(gctx); return nil })
	g.Go(func() error { return m.loop(gctx) })
	err := g.Wait()
	clean := false
	if !m.abandon {
		clean = m.leave()
	} else {
		m.stopFencer()
	}
	m.stopGuard(!clean)
	if m.hooks != nil {
		m.hooks.close() // after the leave: a hook never delays it
	}
	m.inst.Close() // the status session; the next user of the Instance reopens it
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		return nil
	}
	return err
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// leave is called when Run ends: a leader stops its PostgreSQL and
// resigns. It reports false if it led and could not stop PostgreSQL (the
// fence guard and the watchdog then stay armed).
func (m *Manager) leave() bool {
	stopped := true
	m.termMu.Lock()
	term := m.term
	m.termMu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if term != nil {
		m.stopFencer()
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
			m.disarmGuard()
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
	return stopped
}
