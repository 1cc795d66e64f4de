package driver_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgha/pgha/driver"
	"github.com/pgha/pgha/internal/keyspace"
	"github.com/pgha/pgha/internal/testutil"
	"github.com/pgha/pgha/replicate"
)

// bhWriter is one writer of TestBlackholedPrimaryFailover: it inserts
// through the pool, with or without a deadline, and records how long each
// call took and how it failed.
type bhWriter struct {
	mu      sync.Mutex
	started time.Time // start of the call in progress; zero between calls
	longest time.Duration
	calls   int
	bad     []error
	typed   map[string]int
	lastAck time.Time
}

// TestBlackholedPrimaryFailover: the primary's PostgreSQL black-holes every
// packet from the pool (a TCP proxy that stops forwarding without closing,
// the pool's TCP keepalive and TCP_USER_TIMEOUT off, so that nothing but
// the pool's own failover handling can end a call), and so does the etcd
// member the pool's watch is on (one of three). The leader record then
// moves to the promoted standby. Eight writers run throughout, half of
// them without a deadline, through four connections (so that calls wait
// in Acquire too). No call may take longer than FailoverTimeout plus a
// generous margin, every error must be a typed one, and writes must resume
// on the new primary soon after its leader record is written.
func TestBlackholedPrimaryFailover(t *testing.T) {
	primary, standby := pair(t, "bh")
	ctx := testutil.Ctx(t, 3*time.Minute)
	// Asynchronous: the old primary, cut off from the pool only, must not
	// wait for a standby that is being promoted.
	if _, err := primary.SetSynchronousStandbys(ctx, replicate.SyncSpec{}); err != nil {
		t.Fatal(err)
	}
	pgProxy := testutil.StartProxy(t, "bh1-pg", addrOf(primary))
	_, ps, _ := net.SplitHostPort(pgProxy.Addr())
	pgProxyPort, _ := strconv.Atoi(ps)

	etcd := testutil.StartEtcd(t, 3)
	etcdProxy := testutil.StartProxy(t, "bh-etcd0", strings.TrimPrefix(etcd.Members()[0].ClientURL, "http://"))

	term1, err := campaignT(ctx, etcd.Endpoints(), "bh", "bh1", primary, true)
	if err != nil {
		t.Fatal(err)
	}
	defer term1.Close()
	rec, err := keyspace.Encode(keyspace.LeaderRecord{Node: "bh1", Host: "127.0.0.1", Port: pgProxyPort, Writable: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := term1.Proclaim(ctx, rec); err != nil {
		t.Fatal(err)
	}

	const failoverTimeout = 5 * time.Second
	// The pool's etcd client knows only the proxied member at first, so
	// its watch starts there; the other members are added once it runs.
	cli := testutil.NewEtcdClient(t, etcdProxy.URL())
	cfg := parse(t, connString(fmt.Sprintf("pool_max_conns=4&pgha_failover_timeout=%v&pgha_probe_timeout=500ms&pgha_write_keepalive=off&pgha_write_tcp_user_timeout=off", failoverTimeout)))
	cfg.Hosts = nil
	cfg.Etcd = cli
	cfg.Cluster = "bh"
	p := newPool(t, cfg)
	if _, err := p.Exec(ctx, "insert into w values (0)"); err != nil {
		t.Fatalf("first write: %v", err)
	}
	cli.SetEndpoints(append([]string{etcdProxy.URL()}, etcd.Endpoints()[1:]...)...)

	// Writers: i%2 == 0 without a deadline (released only when the test
	// ends), the others with one well above the bound (so that no
	// deadline error can hide a hang).
	noDeadline, stopWriters := context.WithCancel(context.Background())
	defer stopWriters()
	var (
		next    int64
		nextMu  sync.Mutex
		wg      sync.WaitGroup
		stop    = make(chan struct{})
		writers []*bhWriter
	)
	var stopOnce sync.Once
	halt := func() {
		stopOnce.Do(func() {
			close(stop)
			pgProxy.Pass()
			etcdProxy.Pass()
			stopWriters()
			wg.Wait()
		})
	}
	defer halt()
	for i := range 8 {
		w := &bhWriter{typed: map[string]int{}}
		writers = append(writers, w)
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				nextMu.Lock()
				next++
				v := next
				nextMu.Unlock()
				octx, cancel := noDeadline, context.CancelFunc(func() {})
				if i%2 == 1 {
					octx, cancel = context.WithTimeout(ctx, time.Minute)
				}
				start := time.Now()
				w.mu.Lock()
				w.started = start
				w.mu.Unlock()
				var err error
				if i%4 == 3 {
					// A transaction: ErrFailover is its typed error.
					tx, berr := p.Begin(octx)
					if err = berr; err == nil {
						if _, err = tx.Exec(octx, "insert into w values ($1)", v); err == nil {
							err = tx.Commit(octx)
						} else {
							tx.Rollback(octx)
						}
					}
				} else {
					_, err = p.Exec(octx, "insert into w values ($1)", v)
				}
				cancel()
				d := time.Since(start)
				w.mu.Lock()
				w.started = time.Time{}
				w.calls++
				w.longest = max(w.longest, d)
				select {
				case <-stop:
					w.mu.Unlock()
					return // the end of the test cut it short
				default:
				}
				switch {
				case err == nil:
					w.lastAck = time.Now()
				case errors.Is(err, driver.ErrOutcomeUnknown):
					w.typed["outcome unknown"]++
				case errors.Is(err, driver.ErrFailover):
					w.typed["failover"]++
				case errors.Is(err, driver.ErrNoPrimary):
					w.typed["no primary"]++
				default:
					w.bad = append(w.bad, fmt.Errorf("writer %d: write %d after %v: untyped error: %w", i, v, d.Round(time.Millisecond), err))
				}
				w.mu.Unlock()
			}
		})
	}
	acked := func(after time.Time) int {
		n := 0
		for _, w := range writers {
			w.mu.Lock()
			if w.lastAck.After(after) {
				n++
			}
			w.mu.Unlock()
		}
		return n
	}
	testutil.Eventually(t, 30*time.Second, "every writer acknowledged before the fault", func() error {
		if n := acked(time.Time{}); n < len(writers) {
			return fmt.Errorf("%d of %d writers acknowledged a write", n, len(writers))
		}
		return nil
	})

	// The fault: every packet between the pool and the old primary's
	// PostgreSQL, and between the pool and the etcd member its watch is
	// on, vanishes.
	faultAt := time.Now()
	pgProxy.Blackhole()
	etcdProxy.Blackhole()

	// The failover, as the HA manager makes it: the old term ends, the
	// standby campaigns, promotes, then proclaims itself writable.
	if err := term1.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	term2, err := campaignT(ctx, etcd.Endpoints()[1:], "bh", "bh2", standby, false)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { term2.Resign(context.Background()); term2.Close() }()
	if _, err := standby.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	if err := term2.Proclaim(ctx, leaderRecord("bh2", standby, true)); err != nil {
		t.Fatal(err)
	}
	recordAt := time.Now()
	t.Logf("fault at 0; new writable leader record at %v", recordAt.Sub(faultAt).Round(time.Millisecond))

	// Writes resume on the new primary (the old one is unreachable: every
	// acknowledgement after the record is the new primary's).
	testutil.Eventually(t, 20*time.Second, "a write acknowledged after the new leader record", func() error {
		if acked(recordAt) == 0 {
			return fmt.Errorf("no write acknowledged since the record (%s)", p.DebugState())
		}
		return nil
	})
	resumed := time.Now()
	for _, w := range writers {
		w.mu.Lock()
		if w.lastAck.After(recordAt) && w.lastAck.Before(resumed) {
			resumed = w.lastAck
		}
		w.mu.Unlock()
	}
	t.Logf("first write acknowledged by the new primary %v after its leader record", resumed.Sub(recordAt).Round(time.Millisecond))

	// No call may outlast the bound, finished or still running: wait until
	// every call that started before the fault's bound elapsed has ended
	// (each writer has started a call after faultAt+bound, or is idle).
	bound := failoverTimeout + 10*time.Second
	testutil.Eventually(t, bound+20*time.Second, "every writer past the bound with no call older than it", func() error {
		now := time.Now()
		for i, w := range writers {
			w.mu.Lock()
			started := w.started
			w.mu.Unlock()
			if !started.IsZero() && now.Sub(started) > bound {
				return fmt.Errorf("writer %d: a call running for %v (bound %v; %s)", i, now.Sub(started).Round(time.Millisecond), bound, p.DebugState())
			}
		}
		if now.Sub(faultAt) < bound+time.Second {
			return errors.New("the fault is younger than the bound")
		}
		return nil
	})
	if n := acked(time.Now().Add(-5 * time.Second)); n < len(writers) {
		t.Errorf("%d of %d writers acknowledged a write in the last 5 s", n, len(writers))
	}
	halt()
	typed := map[string]int{}
	for i, w := range writers {
		for _, err := range w.bad {
			t.Error(err)
		}
		if w.longest > bound {
			t.Errorf("writer %d: a call took %v (bound %v)", i, w.longest.Round(time.Millisecond), bound)
		}
		for k, v := range w.typed {
			typed[k] += v
		}
	}
	longest := time.Duration(0)
	for _, w := range writers {
		longest = max(longest, w.longest)
	}
	t.Logf("longest call %v; typed errors %v", longest.Round(time.Millisecond), typed)
}

// TestProbesFindNewLeader: the pool's etcd watch sits on a black-holed
// etcd member and, here, would not give up on it for a minute (its
// silence bound raised); the primary's postmaster is killed and the
// standby promoted under a new leader record. The probes find the leader's
// node unreachable and the standby writable, and have the leader key read
// at once from a live member: writes resume on the new primary long
// before the watch would have noticed.
func TestProbesFindNewLeader(t *testing.T) {
	defer driver.SetWatchSilenceLimit(time.Minute)()
	primary, standby := pair(t, "pf")
	ctx := testutil.Ctx(t, 2*time.Minute)
	if _, err := primary.SetSynchronousStandbys(ctx, replicate.SyncSpec{}); err != nil {
		t.Fatal(err)
	}
	etcd := testutil.StartEtcd(t, 3)
	etcdProxy := testutil.StartProxy(t, "pf-etcd0", strings.TrimPrefix(etcd.Members()[0].ClientURL, "http://"))
	term1, err := campaignT(ctx, etcd.Endpoints()[1:], "pf", "pf1", primary, true)
	if err != nil {
		t.Fatal(err)
	}
	defer term1.Close()
	// The member records, as the managers publish them (their heartbeats
	// would not reach the pool through the black-holed member anyway).
	layout, _ := keyspace.NewLayout("", "pf")
	admin := etcd.Client(t)
	for name, m := range map[string]keyspace.MemberRecord{
		"pf1": {Node: "pf1", Role: keyspace.RolePrimary, Host: "127.0.0.1", Port: primary.Config().Port, Healthy: true},
		"pf2": {Node: "pf2", Role: keyspace.RoleReplica, Host: "127.0.0.1", Port: standby.Config().Port, Healthy: true},
	} {
		b, err := keyspace.Encode(m)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := admin.Put(ctx, layout.Member(name), string(b)); err != nil {
			t.Fatal(err)
		}
	}
	cli := testutil.NewEtcdClient(t, etcdProxy.URL())
	cfg := parse(t, connString("pgha_failover_timeout=20s&pgha_probe_timeout=500ms"))
	cfg.Hosts = nil
	cfg.Etcd = cli
	cfg.Cluster = "pf"
	p := newPool(t, cfg)
	if _, err := p.Exec(ctx, "insert into w values (0)"); err != nil {
		t.Fatalf("first write: %v", err)
	}
	cli.SetEndpoints(append([]string{etcdProxy.URL()}, etcd.Endpoints()[1:]...)...)

	etcdProxy.Blackhole()
	defer etcdProxy.Pass()
	kill(t, primary)
	if err := term1.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	term2, err := campaignT(ctx, etcd.Endpoints()[1:], "pf", "pf2", standby, false)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { term2.Resign(context.Background()); term2.Close() }()
	if _, err := standby.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	if err := term2.Proclaim(ctx, leaderRecord("pf2", standby, true)); err != nil {
		t.Fatal(err)
	}
	recordAt := time.Now()
	// One call on the write path waits for the primary (and so has the
	// prober run); it must land on the new one well before the watch
	// would notice (its silence bound is a minute here; the etcd client's
	// gRPC keepalive, raised to 10 s by gRPC, breaks the stream after
	// about 11 s): 5 s is a generous bound.
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var port int
	// Idempotent: the idle connection to the killed postmaster may break
	// after the query was sent.
	err = p.QueryRow(driver.WithIdempotent(wctx), "select inet_server_port()").Scan(&port)
	if err != nil || port != standby.Config().Port {
		t.Fatalf("write after the failover: port %d, %v; want the new primary's %d (%s)", port, err, standby.Config().Port, p.DebugState())
	}
	t.Logf("write acknowledged by the new primary %v after its leader record", time.Since(recordAt).Round(time.Millisecond))
}
