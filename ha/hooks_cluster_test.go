package ha

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgha/pgha/internal/testutil"
)

// hookRecorder records each node's role changes and the ctx of each, and
// checks the contract from inside the hook.
type hookRecorder struct {
	mu     sync.Mutex
	events map[string][]RoleChange
	ctxs   map[string][]context.Context
	broken []string // contract violations seen inside the hook
}

func newHookRecorder() *hookRecorder {
	return &hookRecorder{events: map[string][]RoleChange{}, ctxs: map[string][]context.Context{}}
}

func (r *hookRecorder) hook(node string) func(context.Context, RoleChange) {
	return func(ctx context.Context, ev RoleChange) {
		r.mu.Lock()
		defer r.mu.Unlock()
		if ev.Node != node || ev.Cluster != "test" {
			r.broken = append(r.broken, fmt.Sprintf("%s: change %+v names another node or cluster", node, ev))
		}
		if n := len(r.ctxs[node]); n > 0 && r.ctxs[node][n-1].Err() == nil {
			r.broken = append(r.broken, fmt.Sprintf("%s: called for %s→%s while the ctx of the previous change (→%s) is live",
				node, ev.Old, ev.New, r.events[node][n-1].New))
		}
		r.events[node] = append(r.events[node], ev)
		r.ctxs[node] = append(r.ctxs[node], ctx)
	}
}

// last returns node's latest change and its ctx.
func (r *hookRecorder) last(node string) (RoleChange, context.Context, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := len(r.events[node])
	if n == 0 {
		return RoleChange{}, nil, false
	}
	return r.events[node][n-1], r.ctxs[node][n-1], true
}

func (r *hookRecorder) waitRole(t testing.TB, node string, role Role, timeout time.Duration) {
	t.Helper()
	testutil.Eventually(t, timeout, node+"'s hook hears "+string(role), func() error {
		ev, _, ok := r.last(node)
		if !ok || ev.New != role {
			return fmt.Errorf("last change %+v", ev)
		}
		return nil
	})
}

// check verifies node's changes from index from on: each starts where
// the one before ended, the first (Old "") after a start of Run.
func (r *hookRecorder) check(t testing.TB, node string, from int) []RoleChange {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	evs := r.events[node][from:]
	var seq []string
	for i, ev := range evs {
		seq = append(seq, fmt.Sprintf("%s→%s (tl %d, token %d, %q)", ev.Old, ev.New, ev.Timeline, ev.Token, ev.Reason))
		switch {
		case i == 0 && ev.Old != "":
			t.Errorf("%s: first change after start %+v; want Old \"\"", node, ev)
		case i > 0 && ev.Old != evs[i-1].New:
			t.Errorf("%s: change %d %s→%s does not follow %s→%s", node, i, ev.Old, ev.New, evs[i-1].Old, evs[i-1].New)
		case ev.Old == ev.New:
			t.Errorf("%s: change %d is no change: %+v", node, i, ev)
		}
	}
	for _, b := range r.broken {
		t.Error(b)
	}
	t.Logf("%s's hook heard: %s", node, strings.Join(seq, "; "))
	return evs
}

// TestHookFailover: on a failover (the primary's manager and postmaster
// killed) each node's hook hears its changes in order, the new primary's
// replica→primary with its term's token and the new timeline, each ctx
// cancelled when its role ended; the old primary rejoins as a replica and
// its hook hears that too.
func TestHookFailover(t *testing.T) {
	rec := newHookRecorder()
	c := startCluster(t, clusterOpts{configure: func(node string, cfg *Config) {
		cfg.OnRoleChange = rec.hook(node)
	}})
	c.sample()
	old := c.waitHealthy(90 * time.Second)
	for _, n := range c.nodes {
		want := RoleReplica
		if n == old {
			want = RolePrimary
		}
		rec.waitRole(t, n.name, want, 30*time.Second)
	}
	oldPrimary, oldCtx, _ := rec.last(old.name)

	c.stopManager(old, true)
	kill9(t, old)
	c.waitNewLeader(old.name, 30*time.Second, "a new leader")
	lead := c.waitHealthy(60*time.Second, old.name)
	rec.waitRole(t, lead.name, RolePrimary, 30*time.Second)
	if oldCtx.Err() == nil {
		t.Errorf("the old primary's ctx is live after its Run ended")
	}

	evs := rec.check(t, lead.name, 0)
	if len(evs) < 2 {
		t.Fatalf("%s heard %d changes", lead.name, len(evs))
	}
	prom, before := evs[len(evs)-1], evs[len(evs)-2]
	if before.New != RoleReplica || prom.New != RolePrimary {
		t.Fatalf("%s's last changes %+v, %+v; want →replica, then replica→primary", lead.name, before, prom)
	}
	if prom.Token <= oldPrimary.Token || prom.Timeline <= before.Timeline || !strings.Contains(prom.Reason, "failover") {
		t.Errorf("%s's promotion %+v; want a token above the old primary's %d, a timeline above %d, reason failover", lead.name, prom, oldPrimary.Token, before.Timeline)
	}
	if before.Token != 0 {
		t.Errorf("%s: replica change with token %d; want 0 (no term held)", lead.name, before.Token)
	}
	rec.mu.Lock()
	ctxs := rec.ctxs[lead.name]
	replicaCtx, primaryCtx := ctxs[len(ctxs)-2], ctxs[len(ctxs)-1]
	rec.mu.Unlock()
	if replicaCtx.Err() == nil || primaryCtx.Err() != nil {
		t.Errorf("%s: replica role's ctx err %v (want cancelled), primary role's ctx err %v (want live)", lead.name, replicaCtx.Err(), primaryCtx.Err())
	}
	for _, n := range c.nodes {
		if n == lead || n == old {
			continue
		}
		for _, ev := range rec.check(t, n.name, 0) {
			if ev.New == RolePrimary {
				t.Errorf("%s's hook heard it become primary: %+v", n.name, ev)
			}
		}
	}
	evs = rec.check(t, old.name, 0)
	if last := evs[len(evs)-1]; last.New != RolePrimary || last.Token == 0 {
		t.Errorf("the old primary's last change before its loss %+v; want →primary with a token", last)
	}

	// The old primary's node comes back: its hook hears a first role,
	// then replica once it has rewound and follows.
	rec.mu.Lock()
	from := len(rec.events[old.name])
	rec.mu.Unlock()
	c.startManager(old)
	c.waitHealthy(90 * time.Second)
	rec.waitRole(t, old.name, RoleReplica, 30*time.Second)
	for _, ev := range rec.check(t, old.name, from) {
		if ev.New == RolePrimary {
			t.Errorf("the rejoining node's hook heard primary: %+v", ev)
		}
	}
}

// TestHookBlockingDoesNotDelayFailover: with a hook that blocks (ignoring
// its ctx) from each node's first role change on, the cluster still
// bootstraps, and a failover (the primary's manager and postmaster
// killed → a new writable leader) takes as long as without the hook. The
// hook is still blocked on the node that becomes primary when the
// failover happens.
func TestHookBlockingDoesNotDelayFailover(t *testing.T) {
	const ttl = 2 * time.Second
	failover := func(t *testing.T, blocking bool) time.Duration {
		releases := map[string]chan struct{}{}
		var blocked sync.Map // node → *atomic.Int32 (calls in progress)
		for _, n := range []string{"n1", "n2"} {
			releases[n] = make(chan struct{})
			blocked.Store(n, new(atomic.Int32))
		}
		var once sync.Map
		release := func(node string) {
			if _, done := once.LoadOrStore(node, true); !done {
				close(releases[node])
			}
		}
		c := startCluster(t, clusterOpts{n: 2, ttl: ttl, configure: func(node string, cfg *Config) {
			if !blocking {
				return
			}
			cfg.OnRoleChange = func(ctx context.Context, ev RoleChange) {
				b, _ := blocked.Load(node)
				b.(*atomic.Int32).Add(1)
				defer b.(*atomic.Int32).Add(-1)
				select { // a minute or more; the test ends it sooner
				case <-releases[node]:
				case <-time.After(2 * time.Minute):
				}
			}
		}})
		// Runs before the cluster's cleanup: Run waits for the call.
		t.Cleanup(func() { release("n1"); release("n2") })
		c.sample()
		old := c.waitHealthy(90 * time.Second)
		var survivor *testNode
		for _, n := range c.nodes {
			if n != old {
				survivor = n
			}
		}
		if b, _ := blocked.Load(survivor.name); blocking && b.(*atomic.Int32).Load() != 1 {
			t.Fatalf("%s's hook is not blocked when the failover starts: the test shows nothing", survivor.name)
		}
		release(old.name) // its Run returns only after its hook did
		start := time.Now()
		c.stopManager(old, true)
		kill9(t, old)
		c.waitNewLeader(old.name, 30*time.Second, "a new writable leader")
		d := time.Since(start)
		if b, _ := blocked.Load(survivor.name); blocking && b.(*atomic.Int32).Load() != 1 {
			t.Fatalf("%s's hook stopped blocking during the failover", survivor.name)
		}
		return d
	}
	var plain, withHook time.Duration
	t.Run("no hook", func(t *testing.T) { plain = failover(t, false) })
	t.Run("blocking hook", func(t *testing.T) { withHook = failover(t, true) })
	t.Logf("leader lost → new writable leader (TTL %v): %v without a hook, %v with a blocked hook", ttl,
		plain.Round(time.Millisecond), withHook.Round(time.Millisecond))
	limit := 2*ttl + time.Second
	for name, d := range map[string]time.Duration{"without a hook": plain, "with a blocked hook": withHook} {
		if d == 0 || d > limit {
			t.Errorf("failover %s took %v; want at most 2×TTL + 1s = %v", name, d, limit)
		}
	}
}

// TestHookPanics: a hook that panics on every call does not stop the
// manager: a one-node cluster bootstraps, the node leads, each panic is
// logged and counted, and the hook is still called for later changes.
func TestHookPanics(t *testing.T) {
	logs := &lockedBuffer{}
	var heard sync.Map
	c := startCluster(t, clusterOpts{n: 1, telemetry: true, configure: func(node string, cfg *Config) {
		cfg.Logger = slog.New(slog.NewTextHandler(io.MultiWriter(t.Output(), logs), &slog.HandlerOptions{Level: slog.LevelInfo}))
		cfg.OnRoleChange = func(ctx context.Context, ev RoleChange) {
			heard.Store(ev.New, true)
			panic("hook failure on " + string(ev.New))
		}
	}})
	n := c.waitHealthy(90 * time.Second)
	testutil.Eventually(t, 30*time.Second, "the hook hears primary, and panics", func() error {
		if _, ok := heard.Load(RolePrimary); !ok {
			return fmt.Errorf("no primary change heard")
		}
		if !strings.Contains(logs.String(), "hook failure on primary") {
			return fmt.Errorf("the panic on primary is not logged")
		}
		return nil
	})
	var roles int
	heard.Range(func(any, any) bool { roles++; return true })
	if p := counter(t, n.reader, "pgha.ha.hook.panics"); p != int64(roles) || p < 2 {
		t.Errorf("pgha.ha.hook.panics = %d; want one per change heard (%d), at least 2", p, roles)
	}
	if !strings.Contains(logs.String(), "role-change hook panicked") {
		t.Errorf("no \"role-change hook panicked\" log line")
	}
	select {
	case err := <-n.done:
		t.Fatalf("Run returned %v after the hook panicked", err)
	default:
	}
	if s := n.mgr.Status(); s.Role != RolePrimary || !s.Leading || !writable(n) {
		t.Fatalf("status after the panics %+v; want a writable leading primary", s)
	}
}

// TestHookSwitchover: on a planned switchover the old primary's hook
// hears that it is no longer primary (the ctx of its primary role ends)
// and then replica; the target's hears replica→primary, reason
// switchover.
func TestHookSwitchover(t *testing.T) {
	rec := newHookRecorder()
	c := startCluster(t, clusterOpts{n: 2, configure: func(node string, cfg *Config) {
		cfg.OnRoleChange = rec.hook(node)
	}})
	c.sample()
	old := c.waitHealthy(90 * time.Second)
	var target *testNode
	for _, n := range c.nodes {
		if n != old {
			target = n
		}
	}
	rec.waitRole(t, old.name, RolePrimary, 30*time.Second)
	rec.waitRole(t, target.name, RoleReplica, 30*time.Second)
	_, primaryCtx, _ := rec.last(old.name)
	rec.mu.Lock()
	from := len(rec.events[old.name])
	rec.mu.Unlock()

	if got, err := Switchover(testutil.Ctx(t, 30*time.Second), c.cli, "test", target.name); err != nil || got != target.name {
		t.Fatalf("Switchover to %s: %s, %v", target.name, got, err)
	}
	c.waitHealthy(60 * time.Second)
	rec.waitRole(t, target.name, RolePrimary, 30*time.Second)
	rec.waitRole(t, old.name, RoleReplica, 30*time.Second)
	if primaryCtx.Err() == nil {
		t.Errorf("%s: the ctx of its primary role is live after the switchover", old.name)
	}
	rec.check(t, old.name, 0)
	rec.mu.Lock()
	after := slices.Clone(rec.events[old.name][from:])
	rec.mu.Unlock()
	if len(after) == 0 || after[0].Old != RolePrimary {
		t.Errorf("%s's hook after the switchover: %+v; want changes from primary", old.name, after)
	}
	for _, ev := range after {
		if ev.New == RolePrimary {
			t.Errorf("%s's hook heard primary again: %+v", old.name, ev)
		}
	}
	evs := rec.check(t, target.name, 0)
	if prom := evs[len(evs)-1]; prom.Old != RoleReplica || !strings.Contains(prom.Reason, "switchover") || prom.Token == 0 {
		t.Errorf("%s's promotion %+v; want replica→primary, reason switchover, a token", target.name, prom)
	}
}
