package ha

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgha/pgha/internal/keyspace"
	"github.com/pgha/pgha/internal/testutil"
)

// This file tests failsafe mode (Config.Failsafe) on real clusters: three
// nodes, real PostgreSQL, etcd (three members where the quorum is lost),
// each node's HTTP handler behind a fault proxy, a plain multi-host pgx
// writer that never consults etcd, and the one-writer sampler.

const testPeerToken = "failsafe-test-token-0123456789"

// failsafeCluster starts a three-node cluster with Failsafe set as on,
// over etcd of etcdMembers members; every node serves its Handler behind
// a proxy (node.api) whose URL is its APIURL.
func failsafeCluster(t testing.TB, on bool, etcdMembers int) (*testCluster, map[string]*testutil.Proxy) {
	t.Helper()
	apis := map[string]*testutil.Proxy{}
	mgrs := map[string]*atomic.Pointer[Manager]{}
	for i := 1; i <= 3; i++ {
		name := fmt.Sprintf("n%d", i)
		p := &atomic.Pointer[Manager]{}
		mgrs[name] = p
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if m := p.Load(); m != nil {
				m.Handler().ServeHTTP(w, r)
				return
			}
			w.WriteHeader(503)
		}))
		t.Cleanup(srv.Close)
		apis[name] = testutil.StartProxy(t, name+"-api", strings.TrimPrefix(srv.URL, "http://"))
	}
	c := startCluster(t, clusterOpts{etcdMembers: etcdMembers, configure: func(node string, cfg *Config) {
		cfg.Failsafe = on
		cfg.APIURL = apis[node].URL()
		cfg.PeerToken = testPeerToken
	}, started: func(n *testNode) { mgrs[n.name].Store(n.mgr) }})
	return c, apis
}

// plainWriter inserts rows through one multi-host pgx connection string
// with target_session_attrs=read-write, as most applications connect: it
// never reads etcd. It records acknowledged ids like writer.
func (c *testCluster) plainWriter() *writer {
	c.t.Helper()
	lead := c.waitHealthy(90 * time.Second)
	ctx := context.Background()
	conn, err := lead.inst.Connect(ctx)
	if err != nil {
		c.t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "CREATE TABLE IF NOT EXISTS w (id bigint PRIMARY KEY)"); err != nil {
		c.t.Fatal(err)
	}
	conn.Close(ctx)
	var hosts, ports []string
	for _, n := range c.nodes {
		cfg := n.inst.Config()
		hosts = append(hosts, cfg.SocketDir)
		ports = append(ports, fmt.Sprint(cfg.Port))
	}
	pc := lead.inst.Config()
	dsn := fmt.Sprintf("host=%s port=%s user=%s password=%s dbname=postgres target_session_attrs=read-write connect_timeout=1",
		strings.Join(hosts, ","), strings.Join(ports, ","), pc.Superuser, pc.SuperuserPassword)
	w := &writer{}
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		var conn *pgx.Conn
		defer func() {
			if conn != nil {
				conn.Close(context.Background())
			}
		}()
		for id := int64(1); wctx.Err() == nil; id++ {
			if conn == nil {
				cctx, ccancel := context.WithTimeout(wctx, 2*time.Second)
				conn, err = pgx.Connect(cctx, dsn)
				ccancel()
				if err != nil {
					conn = nil
					sleepCtx(wctx, 20*time.Millisecond)
					id--
					continue
				}
			}
			ectx, ecancel := context.WithTimeout(wctx, 2*time.Second)
			_, err := conn.Exec(ectx, "INSERT INTO w VALUES ($1)", id)
			ecancel()
			if err != nil {
				conn.Close(context.Background())
				conn = nil
				continue
			}
			port := conn.PgConn().Conn().RemoteAddr().String()
			w.mu.Lock()
			w.acked = append(w.acked, id)
			w.ackedAt = append(w.ackedAt, time.Now())
			w.ackedBy = append(w.ackedBy, port)
			w.mu.Unlock()
			sleepCtx(wctx, 10*time.Millisecond)
		}
	}()
	w.stop = func() { cancel(); <-done }
	return w
}

// stopEtcdQuorum stops every etcd member but the first (the one the nodes'
// proxies reach): the quorum is lost, leases cannot expire. It returns a
// function that restores the quorum and waits for it.
func stopEtcdQuorum(t testing.TB, c *testCluster) func() {
	t.Helper()
	n := c.etcd.EtcdMemberCount()
	for i := 1; i < n; i++ {
		c.etcd.Stop(i)
	}
	return func() {
		var chs []<-chan error
		for i := 1; i < n; i++ {
			chs = append(chs, c.etcd.RestartAsync(i))
		}
		for _, ch := range chs {
			if err := <-ch; err != nil {
				t.Fatalf("restart etcd member: %v", err)
			}
		}
	}
}

// leaderToken is the leader's node and token as the leader's own manager
// sees it.
func leaderToken(n *testNode) int64 {
	if term := n.mgr.currentTerm(); term != nil && term.Err() == nil {
		return term.Token()
	}
	return 0
}

// TestFailsafeEtcdOutage: with Failsafe on, the etcd quorum is lost for a
// while (PGHA_FAILSAFE_OUTAGE seconds, default 60): the primary keeps
// accepting writes from a plain client with no gap longer than a second,
// no sample sees two writable nodes, and after etcd returns the same node
// leads under the same term (no new election, no timeline change), with
// every acknowledged row present.
func TestFailsafeEtcdOutage(t *testing.T) {
	outage := 60 * time.Second
	if s := envInt("PGHA_FAILSAFE_OUTAGE"); s > 0 {
		outage = time.Duration(s) * time.Second
	}
	c, _ := failsafeCluster(t, true, 3)
	c.sample()
	lead := c.waitHealthy(90 * time.Second)
	waitFailsafeRecord(t, c, lead.name, 3)
	token := leaderToken(lead)
	tl := timelineOf(t, lead)
	w := c.plainWriter()
	defer w.stop()
	w.waitMore(t, 20, 30*time.Second, "writes before the outage")

	restore := stopEtcdQuorum(t, c)
	start := time.Now()
	for time.Since(start) < outage {
		if !writable(lead) {
			t.Fatalf("the primary stopped taking writes %v into the etcd outage (last action %q)", time.Since(start).Round(time.Millisecond), lead.mgr.Status().LastAction)
		}
		sleepCtx(context.Background(), 200*time.Millisecond)
	}
	pause := w.maxPause(start)
	n := w.ackedCount()
	restore()
	healed := time.Now()
	// Converged: the same term renews its lease again.
	testutil.Eventually(t, 30*time.Second, "the leader renews its lease after etcd returns", func() error {
		term := lead.mgr.currentTerm()
		if term == nil || term.Err() != nil {
			return fmt.Errorf("%s holds no term", lead.name)
		}
		if left := time.Until(term.ValidUntil()); left < c.opts.ttl/2 || lead.mgr.failsafeActive() {
			return fmt.Errorf("not renewed yet (%v left, failsafe active %v)", left, lead.mgr.failsafeActive())
		}
		return nil
	})
	t.Logf("outage %v: %d writes acknowledged during it, longest gap %v; lease renewed %v after etcd returned",
		outage, n, pause.Round(time.Millisecond), time.Since(healed).Round(time.Millisecond))
	if pause > time.Second {
		t.Errorf("longest gap between acknowledged writes during the outage = %v; want under a second", pause)
	}
	if got := leaderToken(lead); got != token {
		t.Fatalf("leader token %d after the outage; want the same term %d", got, token)
	}
	lr, err := c.leaderRecord()
	if err != nil || lr.Node != lead.name {
		t.Fatalf("leader after the outage = %+v, %v; want %s", lr, err, lead.name)
	}
	if got := timelineOf(t, lead); got != tl {
		t.Fatalf("timeline %d after the outage; want %d (no promotion)", got, tl)
	}
	w.waitMore(t, 20, 30*time.Second, "writes after the outage")
	w.stop()
	if lost := w.lost(t, lead); len(lost) > 0 {
		t.Fatalf("%d acknowledged rows missing on the leader: %v", len(lost), lost[:min(len(lost), 10)])
	}
}

// TestFailsafeOffEtcdOutage: without Failsafe, losing the etcd quorum
// fences the primary within its lease, as before.
func TestFailsafeOffEtcdOutage(t *testing.T) {
	c, _ := failsafeCluster(t, false, 3)
	c.sample()
	lead := c.waitHealthy(90 * time.Second)
	restore := stopEtcdQuorum(t, c)
	testutil.Eventually(t, c.opts.ttl+2*time.Second, "the primary fences within its lease", func() error {
		if writable(lead) {
			return errors.New("still writable")
		}
		return nil
	})
	restore()
	c.waitHealthy(90 * time.Second)
}

// TestFailsafePrimaryCutFromEtcd: the primary alone loses etcd (and, in
// the second case, its link to one member too); the other members reach
// etcd, so they refuse the promise: the primary fences by its lease as
// without Failsafe, and exactly one new primary appears.
func TestFailsafePrimaryCutFromEtcd(t *testing.T) {
	for _, alsoMember := range []bool{false, true} {
		t.Run(fmt.Sprintf("also-from-a-member=%v", alsoMember), func(t *testing.T) {
			c, apis := failsafeCluster(t, true, 1)
			c.sample()
			old := c.waitHealthy(90 * time.Second)
			waitFailsafeRecord(t, c, old.name, 3)
			w := c.plainWriter()
			defer w.stop()
			w.waitMore(t, 20, 30*time.Second, "writes before the cut")
			if alsoMember {
				for _, n := range c.nodes {
					if n != old {
						apis[n.name].Blackhole()
						defer apis[n.name].Pass()
						break
					}
				}
			}
			old.proxy.Blackhole()
			cut := time.Now()
			// By its lease deadline (at most TTL after the cut), not later: a
			// member that promised although it reaches etcd (or a leader that
			// did not need every promise) would keep it until the members'
			// views lose its key, about 3 s here.
			testutil.Eventually(t, c.opts.ttl+500*time.Millisecond, "the cut-off primary fences by its lease", func() error {
				if writable(old) {
					return errors.New("still writable")
				}
				return nil
			})
			t.Logf("fenced %v after the cut", time.Since(cut).Round(time.Millisecond))
			c.waitNewLeader(old.name, 30*time.Second, "a new leader")
			w.waitMore(t, 20, 30*time.Second, "writes on the new primary")
			old.proxy.Pass()
			c.waitHealthy(90 * time.Second)
		})
	}
}

// TestFailsafeMemberSilent: during a whole-etcd outage one member cannot
// answer the leader: its HTTP endpoint black-holed (a frozen member: the
// call times out) or resetting connections (the call fails at once). The
// leader has no promise from it and fences by its lease.
func TestFailsafeMemberSilent(t *testing.T) {
	for _, mode := range []string{"blackhole", "reset"} {
		t.Run(mode, func(t *testing.T) {
			c, apis := failsafeCluster(t, true, 3)
			c.sample()
			lead := c.waitHealthy(90 * time.Second)
			waitFailsafeRecord(t, c, lead.name, 3)
			var other string
			for _, n := range c.nodes {
				if n != lead {
					other = n.name
					break
				}
			}
			if mode == "blackhole" {
				apis[other].Blackhole()
			} else {
				apis[other].Reset()
			}
			restore := stopEtcdQuorum(t, c)
			cut := time.Now()
			testutil.Eventually(t, c.opts.ttl+500*time.Millisecond, "the primary fences without every promise", func() error {
				if writable(lead) {
					return errors.New("still writable")
				}
				return nil
			})
			t.Logf("fenced %v after the quorum was lost", time.Since(cut).Round(time.Millisecond))
			apis[other].Pass()
			restore()
			c.waitHealthy(90 * time.Second)
		})
	}
}

// TestFailsafePromiseHeld: every node is cut from a working etcd (its
// quorum intact, so the leader's lease expires there) while the leader
// keeps writing on promises; then the leader dies and the members reach
// etcd again. No member campaigns before its promise runs out, and one of
// them then takes over.
func TestFailsafePromiseHeld(t *testing.T) {
	c, _ := failsafeCluster(t, true, 1)
	c.sample()
	old := c.waitHealthy(90 * time.Second)
	waitFailsafeRecord(t, c, old.name, 3)
	for _, n := range c.nodes {
		n.proxy.Blackhole()
	}
	// Past the lease: only promises keep the primary.
	cut := time.Now()
	for time.Since(cut) < 2*c.opts.ttl {
		if !writable(old) {
			t.Fatalf("the primary stopped taking writes %v after the cut", time.Since(cut).Round(time.Millisecond))
		}
		sleepCtx(context.Background(), 100*time.Millisecond)
	}
	c.stopManager(old, true)
	kill9(t, old)
	promised := map[string]time.Time{}
	for _, n := range c.nodes {
		if n != old {
			promised[n.name] = n.mgr.fs.promised()
			if !time.Now().Before(promised[n.name]) {
				t.Fatalf("%s holds no running promise (until %v)", n.name, promised[n.name])
			}
		}
	}
	var mu sync.Mutex
	firstCampaign := map[string]time.Time{}
	for _, n := range c.nodes {
		if n != old {
			f := func() {
				mu.Lock()
				if firstCampaign[n.name].IsZero() {
					firstCampaign[n.name] = time.Now()
				}
				mu.Unlock()
			}
			n.mgr.onCampaign.Store(&f)
			n.proxy.Pass()
		}
	}
	c.waitNewLeader(old.name, 30*time.Second, "a new leader")
	mu.Lock()
	defer mu.Unlock()
	for name, at := range firstCampaign {
		if at.Before(promised[name]) {
			t.Errorf("%s campaigned %v before its promise ran out", name, promised[name].Sub(at))
		}
	}
	if len(firstCampaign) == 0 {
		t.Fatal("no campaign recorded")
	}
}

// waitFailsafeRecord waits until the leader's failsafe record names n
// members.
func waitFailsafeRecord(t testing.TB, c *testCluster, leader string, n int) {
	t.Helper()
	layout, _ := keyspace.NewLayout("", "test")
	testutil.Eventually(t, 30*time.Second, "the failsafe record", func() error {
		resp, err := c.cli.Get(context.Background(), layout.Failsafe())
		if err != nil {
			return err
		}
		if len(resp.Kvs) == 0 {
			return errors.New("no failsafe record")
		}
		r, err := keyspace.Decode[keyspace.FailsafeRecord](resp.Kvs[0].Value)
		if err != nil {
			return err
		}
		if r.Leader != leader || len(r.Members) != n {
			return fmt.Errorf("record %+v", r)
		}
		for _, m := range r.Members {
			if m.APIURL == "" {
				return fmt.Errorf("member %s without API URL", m.Node)
			}
		}
		return nil
	})
}

func timelineOf(t testing.TB, n *testNode) uint32 {
	t.Helper()
	st, err := n.inst.Status(context.Background())
	if err != nil {
		t.Fatalf("status of %s: %v", n.name, err)
	}
	return st.Timeline
}

// TestFailsafeAfterOwnFence: a node whose own fencer ended its term (it
// was cut from etcd and replaced) rejoins as a standby and then promises
// like any member: a later loss of the etcd quorum does not fence the new
// leader. (A node that still held its ended term refused every promise,
// found by the chaos harness.)
func TestFailsafeAfterOwnFence(t *testing.T) {
	c, _ := failsafeCluster(t, true, 3)
	c.sample()
	old := c.waitHealthy(90 * time.Second)
	old.proxy.Blackhole()
	c.waitNewLeader(old.name, 30*time.Second, "a new leader after the cut")
	old.proxy.Pass()
	lead := c.waitHealthy(90 * time.Second)
	if lead == old {
		t.Fatalf("%s leads again", old.name)
	}
	waitFailsafeRecord(t, c, lead.name, 3)
	token := leaderToken(lead)
	restore := stopEtcdQuorum(t, c)
	start := time.Now()
	for time.Since(start) < 3*c.opts.ttl {
		if !writable(lead) {
			t.Fatalf("the leader fenced %v into the etcd outage (last action %q)", time.Since(start).Round(time.Millisecond), lead.mgr.Status().LastAction)
		}
		sleepCtx(context.Background(), 100*time.Millisecond)
	}
	restore()
	testutil.Eventually(t, 30*time.Second, "the same term renews after etcd returns", func() error {
		if got := leaderToken(lead); got != token {
			return fmt.Errorf("token %d, want %d", got, token)
		}
		if lead.mgr.failsafeActive() {
			return errors.New("still on promises")
		}
		return nil
	})
}

// TestFailsafeLeaseLostKeepsPrimary: every node is cut from an etcd that
// keeps its quorum, so etcd expires the leader's lease while its members'
// promises keep it writable. When the nodes reach etcd again, the leader
// learns its lease is gone while the promises still run: it campaigns
// again and wins a new term without a fence (same postmaster, same
// timeline, writable throughout), and no other node leads.
func TestFailsafeLeaseLostKeepsPrimary(t *testing.T) {
	c, _ := failsafeCluster(t, true, 1)
	c.sample()
	lead := c.waitHealthy(90 * time.Second)
	waitFailsafeRecord(t, c, lead.name, 3)
	token, tl, pid := leaderToken(lead), timelineOf(t, lead), lead.inst.PID()
	for _, n := range c.nodes {
		n.proxy.Blackhole()
	}
	cut := time.Now()
	for time.Since(cut) < 2*c.opts.ttl { // past the lease: etcd expires it
		if !writable(lead) {
			t.Fatalf("the primary stopped taking writes %v after the cut", time.Since(cut).Round(time.Millisecond))
		}
		sleepCtx(context.Background(), 100*time.Millisecond)
	}
	for _, n := range c.nodes {
		n.proxy.Pass()
	}
	healed := time.Now()
	testutil.Eventually(t, 30*time.Second, "the leader leads again under a new term", func() error {
		if !writable(lead) {
			return fmt.Errorf("%s not writable (last action %q)", lead.name, lead.mgr.Status().LastAction)
		}
		if got := leaderToken(lead); got == 0 || got == token {
			return fmt.Errorf("token %d (was %d)", got, token)
		}
		return nil
	})
	t.Logf("new term %d %v after the nodes reached etcd again", leaderToken(lead), time.Since(healed).Round(time.Millisecond))
	if got := lead.inst.PID(); got != pid {
		t.Fatalf("postmaster %d, was %d: the primary was fenced and restarted", got, pid)
	}
	if got := timelineOf(t, lead); got != tl {
		t.Fatalf("timeline %d, was %d", got, tl)
	}
	lr, err := c.leaderRecord()
	if err != nil || lr.Node != lead.name {
		t.Fatalf("leader record %+v, %v; want %s", lr, err, lead.name)
	}
}
