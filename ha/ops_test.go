package ha

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgha/pgha/internal/testutil"
)

// TestSwitchoverUnderWriter: a planned switchover loses no acknowledged
// write; the old leader rejoins as a standby.
func TestSwitchoverUnderWriter(t *testing.T) {
	c := startCluster(t, clusterOpts{})
	c.sample()
	old := c.waitHealthy(90 * time.Second)
	w := c.startWriter()
	defer w.stop()
	w.waitMore(t, 50, 30*time.Second, "writes before the switchover")
	// Take the leader at the moment of the request (a loaded machine may
	// have failed over since waitHealthy).
	lr, err := c.leaderRecord()
	if err != nil {
		t.Fatal(err)
	}
	old = c.node(lr.Node)
	var target string
	for _, n := range c.nodes {
		if n != old {
			target = n.name
			break
		}
	}
	start := time.Now()
	got, err := Switchover(testutil.Ctx(t, 30*time.Second), c.cli, "test", target)
	if err != nil {
		t.Fatalf("Switchover to %s: %v", target, err)
	}
	if got != target {
		t.Fatalf("Switchover to %s: new leader %s", target, got)
	}
	w.waitMore(t, 50, 30*time.Second, "writes after the switchover")
	t.Logf("switchover: request → new leader writable %v; longest write pause %v", time.Since(start).Round(time.Millisecond), w.maxPause(start).Round(time.Millisecond))
	lead := c.waitHealthy(60 * time.Second)
	if lead.name != target {
		t.Fatalf("leader %s after switchover to %s", lead.name, target)
	}
	w.stop()
	if lost := w.lost(t, lead); len(lost) > 0 {
		t.Fatalf("switchover lost %d acknowledged writes: %v", len(lost), lost)
	}
	st, err := ClusterStatus(testutil.Ctx(t, 5*time.Second), c.cli, "test")
	if err != nil || st.Switchover != nil {
		t.Fatalf("switchover record left behind: %+v, %v", st.Switchover, err)
	}
	if _, err := Switchover(testutil.Ctx(t, 5*time.Second), c.cli, "test", "nope"); !errors.Is(err, ErrUnknownMember) {
		t.Fatalf("Switchover to an unknown node = %v; want ErrUnknownMember", err)
	}
	if _, err := Failover(testutil.Ctx(t, 5*time.Second), c.cli, "test", old.name, false); !errors.Is(err, ErrLeaderAlive) {
		t.Fatalf("Failover with a live leader = %v; want ErrLeaderAlive", err)
	}
}

// TestPauseNoFailover: while paused, losing the primary promotes nobody;
// after Resume a standby takes over.
func TestPauseNoFailover(t *testing.T) {
	c := startCluster(t, clusterOpts{})
	c.sample()
	old := c.waitHealthy(90 * time.Second)
	if err := Pause(testutil.Ctx(t, 5*time.Second), c.cli, "test", "maintenance"); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "every node sees the pause", func() error {
		for _, n := range c.nodes {
			if n.mgr == nil {
				continue
			}
			var o observation
			n.mgr.view.fill(&o)
			if !o.Paused {
				return fmt.Errorf("%s not paused", n.name)
			}
		}
		return nil
	})
	c.stopManager(old, true)
	kill9(t, old)
	// Watch, for three lease TTLs (an observation window, not a wait for
	// a condition), that no other node takes over.
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for deadline := time.Now().Add(3 * c.opts.ttl); time.Now().Before(deadline); <-tick.C {
		if lr, err := c.leaderRecord(); err == nil && lr.Node != old.name {
			t.Fatalf("%s took over while the cluster was paused", lr.Node)
		}
	}
	if err := Resume(testutil.Ctx(t, 5*time.Second), c.cli, "test"); err != nil {
		t.Fatal(err)
	}
	c.waitNewLeader(old.name, 30*time.Second, "a new leader after Resume")
}

// TestLaggingStandbyNotPromoted: a standby whose WAL receiver is frozen
// (SIGSTOP) falls beyond MaxLagOnFailover and is never promoted; the more
// advanced standby wins.
func TestLaggingStandbyNotPromoted(t *testing.T) {
	c := startCluster(t, clusterOpts{maxLag: 256 << 10})
	c.sample()
	old := c.waitHealthy(90 * time.Second)
	var lagging, good *testNode
	for _, n := range c.nodes {
		if n == old {
			continue
		}
		if lagging == nil {
			lagging = n
		} else {
			good = n
		}
	}
	ctx := testutil.Ctx(t, 60*time.Second)
	pid, err := testutil.PostgresQueryInt(ctx, lagging.inst, "SELECT pid FROM pg_stat_wal_receiver")
	if err != nil || pid <= 0 {
		t.Fatalf("WAL receiver pid on %s: %d, %v", lagging.name, pid, err)
	}
	if err := syscall.Kill(int(pid), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(int(pid), syscall.SIGCONT) })
	if err := testutil.PostgresExec(ctx, old.inst, "CREATE TABLE bulk AS SELECT g, repeat('x', 200) AS pad FROM generate_series(1, 20000) g"); err != nil {
		t.Fatal(err)
	}
	// Wait until the standbys know the leader's new position and the good
	// standby has it.
	var leaderLSN int64
	testutil.Eventually(t, 20*time.Second, "the leader's position is published and the good standby has it", func() error {
		st, err := ClusterStatus(ctx, c.cli, "test")
		if err != nil {
			return err
		}
		var lag, goodLag int64 = -1, -1
		for _, m := range st.Members {
			switch m.Node {
			case old.name:
				leaderLSN = int64(m.WriteLSN)
			case lagging.name:
				lag = m.LagBytes
			case good.name:
				goodLag = m.LagBytes
			}
		}
		if lag < 256<<10 || goodLag != 0 {
			return fmt.Errorf("lagging standby lag %d, good standby lag %d (leader at %d)", lag, goodLag, leaderLSN)
		}
		return nil
	})
	c.stopManager(old, true)
	kill9(t, old)
	testutil.Eventually(t, 30*time.Second, "the good standby takes over", func() error {
		lr, err := c.leaderRecord()
		if err != nil {
			return err
		}
		if lr.Node == lagging.name {
			t.Fatalf("the lagging standby %s was promoted", lagging.name)
		}
		if lr.Node != good.name || !lr.Writable {
			return fmt.Errorf("leader %s writable %v", lr.Node, lr.Writable)
		}
		return nil
	})
	t.Logf("lagging standby's last decision: %s", lagging.mgr.Status().LastAction)
}

// TestHandler: the HTTP endpoints report roles; /cluster has no secrets.
func TestHandler(t *testing.T) {
	c := startCluster(t, clusterOpts{})
	lead := c.waitHealthy(90 * time.Second)
	get := func(n *testNode, path string) (int, string) {
		t.Helper()
		rec := httptest.NewRecorder()
		n.mgr.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		b, _ := io.ReadAll(rec.Result().Body)
		return rec.Code, string(b)
	}
	testutil.Eventually(t, 10*time.Second, "endpoints reflect the roles", func() error {
		for _, n := range c.nodes {
			want := map[string]int{"/primary": 503, "/replica": 200, "/health": 200, "/readiness": 200, "/liveness": 200}
			if n == lead {
				want["/primary"], want["/replica"] = 200, 503
			}
			for path, code := range want {
				if got, body := get(n, path); got != code {
					return fmt.Errorf("%s %s = %d (%s); want %d", n.name, path, got, body, code)
				}
			}
		}
		return nil
	})
	code, body := get(lead, "/cluster")
	var st ClusterState
	if code != 200 || json.Unmarshal([]byte(body), &st) != nil || len(st.Members) != 3 || st.Leader == nil {
		t.Fatalf("/cluster = %d %s", code, body)
	}
	for _, secret := range []string{testutil.PostgresSuperuserPassword, testutil.PostgresReplicationPassword} {
		if strings.Contains(body, secret) {
			t.Fatalf("/cluster leaks a password")
		}
	}
	if code, _ := get(lead, "/replica?lag=abc"); code != 400 {
		t.Fatalf("/replica?lag=abc = %d; want 400", code)
	}
}
