package etcdmirror

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/pgha/pgha/internal/testutil"
)

// run runs a mirror of cfg in the background until the end of the test and
// records what it delivers.
type run struct {
	mu        sync.Mutex
	state     State
	rev       int64
	snapshots int
	breaks    []Break
	done      chan error
}

func startMirror(t *testing.T, cfg Config, tweak ...func(*Mirror)) *run {
	t.Helper()
	r := &run{state: State{}, done: make(chan error, 1)}
	cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg.OnBreak = func(b Break) {
		r.mu.Lock()
		r.breaks = append(r.breaks, b)
		r.mu.Unlock()
	}
	m, err := New(cfg)
	if err != nil {
		t.Fatalf("New(%+v): %v", cfg, err)
	}
	for _, f := range tweak {
		f(m)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		r.done <- m.Run(ctx, func(u Update) error {
			r.mu.Lock()
			defer r.mu.Unlock()
			if !u.Snapshot && (len(u.Events) == 0 || u.Events[0].Kv.ModRevision <= r.rev) {
				return fmt.Errorf("update at revision %d with %d events: the first is not after revision %d", u.Revision, len(u.Events), r.rev)
			}
			if u.Snapshot {
				r.snapshots++
			}
			r.state.Apply(u)
			r.rev = u.Revision
			return nil
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-r.done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run returned %v at the end of the test; want context.Canceled", err)
		}
	})
	return r
}

// has reports whether the mirrored state is exactly want (key → value).
func (r *run) has(want map[string]string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	got := map[string]string{}
	for k, kv := range r.state {
		got[k] = string(kv.Value)
	}
	if !maps.Equal(got, want) {
		return fmt.Errorf("mirrored %v at revision %d; want %v", got, r.rev, want)
	}
	return nil
}

func (r *run) allBreaks() []Break {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.breaks)
}

func (r *run) breaksOf(kind BreakKind) []Break {
	var bs []Break
	for _, b := range r.allBreaks() {
		if b.Kind == kind {
			bs = append(bs, b)
		}
	}
	return bs
}

func (r *run) snapshotCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.snapshots
}

func put(t *testing.T, cli *clientv3.Client, kvs ...string) int64 {
	t.Helper()
	var rev int64
	for i := 0; i < len(kvs); i += 2 {
		resp, err := cli.Put(testutil.Ctx(t, 10*time.Second), kvs[i], kvs[i+1])
		if err != nil {
			t.Fatalf("put %s: %v", kvs[i], err)
		}
		rev = resp.Header.Revision
	}
	return rev
}

func TestMirrorFollowsPrefix(t *testing.T) {
	c := testutil.StartEtcd(t, 1)
	cli := c.Client(t)
	// The last write before the snapshot is in the range: the watch must
	// not deliver it again.
	put(t, cli, "/pq", "outside", "/o", "outside", "/p/a", "1", "/p/b", "2")
	r := startMirror(t, Config{Client: cli, Key: "/p/", Prefix: true}, func(m *Mirror) { m.pageSize = 1 })
	testutil.Eventually(t, 10*time.Second, "first snapshot, read in pages of one key", func() error {
		return r.has(map[string]string{"/p/a": "1", "/p/b": "2"})
	})

	put(t, cli, "/p/c", "3", "/p/a", "1b", "/o", "outside again")
	if _, err := cli.Delete(testutil.Ctx(t, 10*time.Second), "/p/b"); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "puts and deletes mirrored", func() error {
		return r.has(map[string]string{"/p/a": "1b", "/p/c": "3"})
	})
	if n := r.snapshotCount(); n != 1 {
		t.Errorf("%d snapshots on a healthy etcd; want 1", n)
	}
}

func TestMirrorSingleKey(t *testing.T) {
	c := testutil.StartEtcd(t, 1)
	cli := c.Client(t)
	r := startMirror(t, Config{Client: cli, Key: "/k"})
	testutil.Eventually(t, 10*time.Second, "empty snapshot", func() error {
		if r.snapshotCount() == 0 {
			return errors.New("no snapshot yet")
		}
		return r.has(map[string]string{})
	})
	put(t, cli, "/k", "v", "/k2", "not mirrored")
	testutil.Eventually(t, 10*time.Second, "the key, not its neighbour", func() error {
		return r.has(map[string]string{"/k": "v"})
	})
}

// TestMirrorKeepsQuietWatchAlive: an idle watch answers progress requests,
// so it is never taken for a silent one.
func TestMirrorKeepsQuietWatchAlive(t *testing.T) {
	c := testutil.StartEtcd(t, 1)
	cli := c.Client(t)
	r := startMirror(t, Config{Client: cli, Key: "/p/", Prefix: true, ProgressInterval: 50 * time.Millisecond, SilenceLimit: 300 * time.Millisecond})
	testutil.Eventually(t, 10*time.Second, "first snapshot", func() error {
		if r.snapshotCount() == 0 {
			return errors.New("no snapshot yet")
		}
		return nil
	})
	// An observation window, not synchronisation: ten silence limits with
	// no event at all.
	window := time.NewTimer(3 * time.Second)
	defer window.Stop()
	<-window.C
	if breaks := r.allBreaks(); len(breaks) != 0 {
		t.Fatalf("an idle, healthy watch was abandoned: %v", breaks)
	}
}

// TestMirrorResumesSilentWatch: a connection that drops every byte without
// failing (gRPC notices only after its 10 s keep-alive floor) is noticed
// within the silence limit, and the mirror catches up once bytes flow.
func TestMirrorResumesSilentWatch(t *testing.T) {
	c := testutil.StartEtcd(t, 1)
	direct := c.Client(t)
	px := testutil.StartProxy(t, "etcd", strings.TrimPrefix(c.Endpoints()[0], "http://"))
	cli := testutil.NewEtcdClient(t, px.URL())
	put(t, direct, "/p/a", "1")
	r := startMirror(t, Config{Client: cli, Key: "/p/", Prefix: true, ProgressInterval: 100 * time.Millisecond, SilenceLimit: 500 * time.Millisecond})
	testutil.Eventually(t, 10*time.Second, "first snapshot", func() error {
		return r.has(map[string]string{"/p/a": "1"})
	})

	px.Blackhole()
	put(t, direct, "/p/b", "2")
	testutil.Eventually(t, 5*time.Second, "the blackholed watch is reported silent", func() error {
		if len(r.breaksOf(Silent)) == 0 {
			return fmt.Errorf("no silent break yet; breaks: %v", r.allBreaks())
		}
		return nil
	})
	px.Pass()
	testutil.Eventually(t, 30*time.Second, "the mirror catches up after the network heals", func() error {
		return r.has(map[string]string{"/p/a": "1", "/p/b": "2"})
	})
}

// TestMirrorRereadsAfterCompaction: the member the mirror's client talks
// to stops; while it is down the others change and compact the range; when
// it is back, the watch cannot resume (its revision is compacted) and the
// mirror reads the range again.
func TestMirrorRereadsAfterCompaction(t *testing.T) {
	c := testutil.StartEtcd(t, 3)
	direct := c.Client(t)
	cli := testutil.NewEtcdClient(t, c.Members()[0].ClientURL)
	put(t, direct, "/p/a", "1", "/p/b", "2")
	r := startMirror(t, Config{Client: cli, Key: "/p/", Prefix: true, ProgressInterval: 100 * time.Millisecond, SilenceLimit: 500 * time.Millisecond})
	testutil.Eventually(t, 10*time.Second, "first snapshot", func() error {
		return r.has(map[string]string{"/p/a": "1", "/p/b": "2"})
	})

	c.Stop(0)
	others := testutil.NewEtcdClient(t, c.Members()[1].ClientURL, c.Members()[2].ClientURL)
	put(t, others, "/p/a", "1b", "/p/c", "3")
	if _, err := others.Delete(testutil.Ctx(t, 10*time.Second), "/p/b"); err != nil {
		t.Fatal(err)
	}
	rev := put(t, others, "/q", "moves the revision on")
	if _, err := others.Compact(testutil.Ctx(t, 10*time.Second), rev, clientv3.WithCompactPhysical()); err != nil {
		t.Fatalf("compact at %d: %v", rev, err)
	}
	c.Restart(0)

	testutil.Eventually(t, 30*time.Second, "the mirror reads the range again after the member restart", func() error {
		return r.has(map[string]string{"/p/a": "1b", "/p/c": "3"})
	})
	if len(r.breaksOf(Compacted)) == 0 {
		t.Errorf("no compacted break reported; breaks: %v", r.allBreaks())
	}
	if n := r.snapshotCount(); n < 2 {
		t.Errorf("%d snapshots; want a second one after the compaction", n)
	}
}

func TestRunReturnsWhyItStopped(t *testing.T) {
	c := testutil.StartEtcd(t, 1)
	cli := c.Client(t)
	m, err := New(Config{Client: cli, Key: "/p/", Prefix: true})
	if err != nil {
		t.Fatal(err)
	}
	stop := errors.New("enough")
	put(t, cli, "/p/a", "1")
	err = m.Run(testutil.Ctx(t, 10*time.Second), func(u Update) error {
		if u.Snapshot {
			put(t, cli, "/p/b", "2")
			return nil
		}
		return stop
	})
	if !errors.Is(err, stop) {
		t.Errorf("Run = %v; want the callback's error", err)
	}

	ctx, cancel := context.WithCancelCause(t.Context())
	closed := errors.New("closed by the test")
	err = m.Run(ctx, func(Update) error { cancel(closed); return nil })
	if !errors.Is(err, closed) {
		t.Errorf("Run = %v; want the context's cause", err)
	}
}

func TestConfigValidate(t *testing.T) {
	cli := &clientv3.Client{}
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Key: "/k"}, "etcdmirror: Client <nil> is required"},
		{Config{Client: cli}, `etcdmirror: Key "" is required`},
		{Config{Client: cli, Key: "/k", ProgressInterval: time.Second, SilenceLimit: time.Second}, "etcdmirror: SilenceLimit 1s must be above ProgressInterval (1s)"},
		{Config{Client: cli, Key: "/k", MinBackoff: time.Second, MaxBackoff: time.Millisecond}, "etcdmirror: MaxBackoff 1ms must not be below MinBackoff (1s)"},
		{Config{Client: cli, Key: "/k", ProgressInterval: -time.Second}, "etcdmirror: ProgressInterval -1s must be positive"},
		{Config{Client: cli, Key: "/k"}, ""},
	} {
		err := tc.cfg.Validate()
		if tc.want == "" {
			if err != nil {
				t.Errorf("Validate(%+v) = %v; want nil", tc.cfg, err)
			}
			continue
		}
		var ce *ConfigError
		if !errors.As(err, &ce) || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("Validate(%+v) = %v; want a *ConfigError starting %q", tc.cfg, err, tc.want)
		}
	}
}
