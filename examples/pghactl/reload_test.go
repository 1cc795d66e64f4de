package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pgha/pgha/ha"
	"github.com/pgha/pgha/internal/testutil"
)

// show reads a setting on node n with a fresh session.
func (c *testCluster) show(t *testing.T, node, name string) string {
	t.Helper()
	conn, err := c.Instance(node).Connect(testutil.Ctx(t, 10*time.Second))
	if err != nil {
		t.Fatalf("connect to %s: %v", node, err)
	}
	defer conn.Close(context.Background())
	var v string
	if err := conn.QueryRow(testutil.Ctx(t, 10*time.Second), "SELECT current_setting($1)", name).Scan(&v); err != nil {
		t.Fatalf("%s: current_setting(%s): %v", node, name, err)
	}
	return v
}

// startedAt is when node n's postmaster started.
func (c *testCluster) startedAt(t *testing.T, node string) time.Time {
	t.Helper()
	conn, err := c.Instance(node).Connect(testutil.Ctx(t, 10*time.Second))
	if err != nil {
		return time.Time{}
	}
	defer conn.Close(context.Background())
	var at time.Time
	if err := conn.QueryRow(testutil.Ctx(t, 10*time.Second), "SELECT pg_postmaster_start_time()").Scan(&at); err != nil {
		return time.Time{}
	}
	return at
}

// TestReload: a setting changed in one node's own configuration (ALTER
// SYSTEM writes postgresql.auto.conf, no reload) takes effect only after
// 'pghactl reload NODE', which waits until the node has reloaded; a
// restart-only setting changed the same way is reported pending.
func TestReload(t *testing.T) {
	c := startCluster(t, 3)
	st := c.waitHealthy(90*time.Second, 3)
	n := standbyNames(st)[0]
	before := c.show(t, n, "work_mem")
	conn, err := c.Instance(n).Connect(testutil.Ctx(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{"ALTER SYSTEM SET work_mem = '7MB'", "ALTER SYSTEM SET max_wal_size = '1500MB'", "ALTER SYSTEM SET shared_buffers = '48MB'"} {
		if _, err := conn.Exec(testutil.Ctx(t, 10*time.Second), q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	conn.Close(context.Background())
	if got := c.show(t, n, "work_mem"); got != before {
		t.Fatalf("work_mem on %s = %s before any reload; want the old %s (the test needs ALTER SYSTEM not to reload)", n, got, before)
	}
	r := c.ctl(t, exitOK, "reload", n)
	t.Logf("pghactl reload %s:\n%s", n, r.stdout)
	if got := c.show(t, n, "work_mem"); got != "7MB" {
		t.Errorf("work_mem on %s = %s after pghactl reload; want 7MB", n, got)
	}
	if got := c.show(t, n, "max_wal_size"); got != "1500MB" {
		t.Errorf("max_wal_size on %s = %s after pghactl reload; want 1500MB", n, got)
	}
	if !strings.Contains(r.stdout, n+": reloaded; pending restart: shared_buffers") {
		t.Errorf("pghactl reload output does not report shared_buffers pending on %s:\n%s", n, r.stdout)
	}
	for _, other := range st.Members {
		if other.Node != n && c.show(t, other.Node, "work_mem") != before {
			t.Errorf("%s reloaded too; only %s was named", other.Node, n)
		}
	}
	// Every node: --json gives the pending settings by node.
	r = c.ctl(t, exitOK, "--json", "reload")
	if !strings.Contains(r.stdout, `"`+n+`": [`) || !strings.Contains(r.stdout, "shared_buffers") {
		t.Errorf("pghactl --json reload: %s; want %s with shared_buffers pending", r.stdout, n)
	}
	c.ctl(t, exitFailed, "reload", "nosuchnode")
}

// TestScheduledRestart: 'restart --at' returns at once; each named
// standby restarts at the time, not before, one at a time (the second
// starts after the first streams again); the primary is refused without
// --no-switchover, and --cancel withdraws a request.
func TestScheduledRestart(t *testing.T) {
	c := startCluster(t, 3)
	st := c.waitHealthy(90*time.Second, 3)
	standbys := standbyNames(st)
	slices.Sort(standbys)
	before := map[string]time.Time{}
	for _, m := range st.Members {
		before[m.Node] = c.startedAt(t, m.Node)
	}

	r := c.ctl(t, exitFailed, "restart", "--at", time.Now().Add(time.Hour).UTC().Format(time.RFC3339), st.Leader.Node)
	if !strings.Contains(r.stderr, "--no-switchover") {
		t.Errorf("scheduling the primary's restart without --no-switchover: %v; want a refusal naming --no-switchover", r)
	}
	c.ctl(t, exitOK, "restart", "--at", time.Now().Add(time.Hour).UTC().Format(time.RFC3339), standbys[0])
	if r := c.ctl(t, exitOK, "list"); !strings.Contains(r.stdout, "SCHEDULED restart of "+standbys[0]) {
		t.Errorf("list does not show the scheduled restart:\n%s", r.stdout)
	}
	if r := c.ctl(t, exitOK, "restart", "--cancel", standbys[0]); !strings.Contains(r.stdout, "withdrawn") {
		t.Errorf("restart --cancel: %s", r.stdout)
	}
	if st, _ := ha.ClusterStatus(context.Background(), c.EtcdClient(), testClusterName); len(st.Restarts) != 0 {
		t.Fatalf("restart requests after --cancel: %+v", st.Restarts)
	}

	// RFC 3339 has whole seconds: at least 2 s ahead.
	at := time.Now().Add(3 * time.Second).Truncate(time.Second)
	c.ctl(t, exitOK, "restart", "--role", "replica", "--at", at.UTC().Format(time.RFC3339))
	// The standby that goes first is back and streaming before the
	// second goes down: sample who is down while they run.
	var bothDown []string
	testutil.Eventually(t, 90*time.Second, "both standbys restarted and the requests gone", func() error {
		st, err := ha.ClusterStatus(context.Background(), c.EtcdClient(), testClusterName)
		if err != nil {
			return err
		}
		var down []string
		for _, m := range st.Members {
			if !m.Leader && (!m.Healthy || !m.Streaming) {
				down = append(down, m.Node)
			}
		}
		if len(down) > 1 {
			bothDown = append(bothDown, fmt.Sprint(down))
		}
		if len(st.Restarts) > 0 {
			return fmt.Errorf("requests left: %+v", st.Restarts)
		}
		if len(down) > 0 {
			return fmt.Errorf("%v not streaming", down)
		}
		return nil
	})
	if len(bothDown) > 0 {
		t.Errorf("both standbys down at once (%d samples: %v); scheduled restarts must run one at a time", len(bothDown), bothDown[0])
	}
	started := map[string]time.Time{}
	for _, m := range st.Members {
		started[m.Node] = c.startedAt(t, m.Node)
	}
	for _, s := range standbys {
		if !started[s].After(before[s]) {
			t.Errorf("%s not restarted: postmaster started %v, as before", s, started[s])
		}
		if started[s].Before(at) {
			t.Errorf("%s restarted at %v, before its time %v", s, started[s], at)
		}
	}
	if !started[standbys[0]].Before(started[standbys[1]]) {
		t.Errorf("%s started at %v, %s at %v: want name order", standbys[0], started[standbys[0]], standbys[1], started[standbys[1]])
	}
	if !started[st.Leader.Node].Equal(before[st.Leader.Node]) {
		t.Errorf("the primary %s restarted (%v → %v); only replicas were scheduled", st.Leader.Node, before[st.Leader.Node], started[st.Leader.Node])
	}
	t.Logf("scheduled at %v: %s started %v after, %s %v after", at.Format(time.RFC3339), standbys[0], started[standbys[0]].Sub(at).Round(time.Millisecond),
		standbys[1], started[standbys[1]].Sub(at).Round(time.Millisecond))
}
