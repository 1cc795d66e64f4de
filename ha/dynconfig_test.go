package ha

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pgha/pgha/internal/keyspace"
	"github.com/pgha/pgha/internal/testutil"
	"github.com/pgha/pgha/replicate"
)

func settingOn(t testing.TB, n *testNode, name string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := n.inst.Settings(ctx)
	if err != nil {
		return "error: " + err.Error()
	}
	return s[name].Value
}

func pendingOf(t testing.TB, c *testCluster) map[string][]string {
	t.Helper()
	st, err := ClusterStatus(context.Background(), c.cli, "test")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	for _, m := range st.Members {
		out[m.Node] = m.PendingRestart
	}
	return out
}

// TestClusterConfig: a configuration proposed cluster-wide is checked by
// the leader against pg_settings before any node sees it (bad values are
// rejected with the setting and the reason), then reaches every node: a
// reloadable parameter takes effect everywhere without a restart, a node
// override wins on its node, a restart-only parameter is published as
// pending restart, and an HA setting (sync mode) overrides every node's
// own.
func TestClusterConfig(t *testing.T) {
	c := startCluster(t, clusterOpts{telemetry: true})
	c.sample()
	lead := c.waitHealthy(90 * time.Second)
	ctx := testutil.Ctx(t, 2*time.Minute)

	err := ProposeConfig(ctx, c.cli, "test", ClusterConfig{Parameters: map[string]string{"work_mem": "10kB", "wal_levl": "replica"}})
	if !errors.Is(err, ErrConfigRejected) || !strings.Contains(err.Error(), "work_mem") || !strings.Contains(err.Error(), "wal_levl is not a setting") {
		t.Fatalf("ProposeConfig(bad) = %v; want ErrConfigRejected naming work_mem and wal_levl", err)
	}
	if cfg, rev, err := ShowConfig(ctx, c.cli, "test"); err != nil || rev != 0 || cfg.Parameters != nil {
		t.Fatalf("config after a rejected proposal = %+v rev %d, %v; want none", cfg, rev, err)
	}

	long := Duration(c.opts.ttl / 2)
	err = ProposeConfig(ctx, c.cli, "test", ClusterConfig{LoopInterval: &long})
	if !errors.Is(err, ErrConfigRejected) || !strings.Contains(err.Error(), "loop_interval") {
		t.Fatalf("ProposeConfig(loop_interval %v, half the TTL) = %v; want ErrConfigRejected naming loop_interval", long, err)
	}

	var other *testNode
	for _, n := range c.nodes {
		if n != lead {
			other = n
			break
		}
	}
	on := SyncOn
	loop := Duration(350 * time.Millisecond)
	want := ClusterConfig{
		LoopInterval:   &loop,
		SyncMode:       &on,
		Parameters:     map[string]string{"work_mem": "12MB", "shared_buffers": "48MB"},
		NodeParameters: map[string]map[string]string{other.name: {"work_mem": "24MB"}},
	}
	if err := ProposeConfig(ctx, c.cli, "test", want); err != nil {
		t.Fatalf("ProposeConfig: %v", err)
	}
	testutil.Eventually(t, 30*time.Second, "work_mem reloaded on every node, the override on its node", func() error {
		for _, n := range c.nodes {
			w := "12288"
			if n == other {
				w = "24576"
			}
			if got := settingOn(t, n, "work_mem"); got != w {
				return fmt.Errorf("%s: work_mem %s, want %s kB", n.name, got, w)
			}
		}
		return nil
	})
	testutil.Eventually(t, 30*time.Second, "shared_buffers pending restart on every node", func() error {
		p := pendingOf(t, c)
		for _, n := range c.nodes {
			if !slices.Contains(p[n.name], "shared_buffers") {
				return fmt.Errorf("pending restart %v", p)
			}
		}
		return nil
	})
	c.waitSyncSet() // sync mode on from the record, though every Config says off
	testutil.Eventually(t, 10*time.Second, "every manager loops every 350ms, the record's interval", func() error {
		for _, n := range c.nodes {
			if got := n.mgr.Status().LoopInterval; got != loop {
				return fmt.Errorf("%s: loop interval %v", n.name, time.Duration(got))
			}
		}
		return nil
	})
	// And they do: over 3 s a steady node loops about 3 s / 350 ms ≈ 9
	// times (its own 200 ms would make 15), plus a wake for each cluster
	// change it sees.
	before, start := c.loopCounts(t), time.Now()
	testutil.Eventually(t, 5*time.Second, "3 s pass", func() error { // a measuring window, not a synchronisation
		if time.Since(start) < 3*time.Second {
			return errors.New("measuring")
		}
		return nil
	})
	after, took := c.loopCounts(t), time.Since(start)
	for i, n := range c.nodes {
		if got, most := after[i]-before[i], int64(took/(350*time.Millisecond))+3; got > most {
			t.Errorf("%s looped %d times in %v; want at most %d at the record's 350 ms", n.name, got, took.Round(time.Millisecond), most)
		}
	}

	// A restart applies the pending setting and clears the flag.
	if err := other.inst.Stop(ctx, replicate.Fast); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 60*time.Second, "the restarted standby runs with shared_buffers 48MB, nothing pending", func() error {
		if got := settingOn(t, other, "shared_buffers"); got != "6144" {
			return fmt.Errorf("shared_buffers %s", got)
		}
		if p := pendingOf(t, c)[other.name]; len(p) != 0 {
			return fmt.Errorf("still pending %v", p)
		}
		return nil
	})
}

// TestHotStandbySettingsOrder: max_connections raised cluster-wide is
// taken by the standbys first; the primary's configured value stays at
// what its standbys run with until every one of them runs with the new
// value, so that no standby ever runs with less than its primary (it
// could not run hot standby after the primary's restart).
func TestHotStandbySettingsOrder(t *testing.T) {
	c := startCluster(t, clusterOpts{})
	lead := c.waitHealthy(90 * time.Second)
	ctx := testutil.Ctx(t, 3*time.Minute)
	before := settingOn(t, lead, "max_connections")
	if err := ProposeConfig(ctx, c.cli, "test", ClusterConfig{Parameters: map[string]string{"max_connections": "150"}}); err != nil {
		t.Fatal(err)
	}
	waitPending(t, c, lead, true, "max_connections pending on the standbys only")
	for _, n := range c.nodes {
		if n != lead {
			if err := n.inst.Stop(ctx, replicate.Fast); err != nil {
				t.Fatal(err)
			}
		}
	}
	testutil.Eventually(t, 60*time.Second, "the standbys run with 150, then the primary has it pending", func() error {
		for _, n := range c.nodes {
			if n != lead && settingOn(t, n, "max_connections") != "150" {
				return fmt.Errorf("%s runs with %s", n.name, settingOn(t, n, "max_connections"))
			}
		}
		if p := pendingOf(t, c)[lead.name]; !slices.Contains(p, "max_connections") {
			return fmt.Errorf("primary's pending %v", p)
		}
		return nil
	})
	if got := settingOn(t, lead, "max_connections"); got != before {
		t.Fatalf("the primary runs with max_connections %s; want %s until it restarts", got, before)
	}
	c.waitHealthy(60 * time.Second)

	// Lowering is the mirror: the primary first. Restarted (in place: the
	// manager starts it again), the primary runs with 150; lowered to 120,
	// only the primary has it pending, the standbys' files keep 150 while
	// the primary runs with more than 120.
	restartPrimary := func(want string) {
		t.Helper()
		if err := lead.inst.Stop(ctx, replicate.Fast); err != nil {
			t.Fatal(err)
		}
		testutil.Eventually(t, 60*time.Second, "the primary restarted in place with max_connections "+want, func() error {
			if got := settingOn(t, lead, "max_connections"); got != want {
				return fmt.Errorf("%s runs with %s", lead.name, got)
			}
			return nil
		})
		if l := c.waitHealthy(60 * time.Second); l != lead {
			t.Fatalf("leader %s after restarting %s in place", l.name, lead.name)
		}
	}
	restartPrimary("150")
	if err := ProposeConfig(ctx, c.cli, "test", ClusterConfig{Parameters: map[string]string{"max_connections": "120"}}); err != nil {
		t.Fatal(err)
	}
	waitPending(t, c, lead, false, "max_connections 120 pending on the primary only")
	restartPrimary("120")
	waitPending(t, c, lead, true, "then the standbys have 120 pending")
	for _, n := range c.nodes {
		if n != lead {
			if got := settingOn(t, n, "max_connections"); got != "150" {
				t.Errorf("%s runs with %s before its restart; want 150", n.name, got)
			}
		}
	}
}

// TestApplyClusterPolicy: the record's loop interval and departed-slot TTL
// override the node's own; a loop interval the node's lease TTL cannot
// take is held back with the reason, the node keeping its own.
func TestApplyClusterPolicy(t *testing.T) {
	own := policy{LoopInterval: 500 * time.Millisecond, DepartedSlotTTL: 30 * time.Minute}
	p := own
	if held := applyClusterPolicy(&p, &keyspace.ConfigRecord{LoopInterval: "1s", DepartedSlotTTL: "2h"}, 5*time.Second); held != "" || p.LoopInterval != time.Second || p.DepartedSlotTTL != 2*time.Hour {
		t.Errorf("TTL 5s: policy %+v, held %q; want loop 1s, departed 2h, nothing held", p, held)
	}
	p = own
	if held := applyClusterPolicy(&p, &keyspace.ConfigRecord{LoopInterval: "1s"}, 2*time.Second); !strings.Contains(held, "loop_interval 1s") || p.LoopInterval != own.LoopInterval {
		t.Errorf("TTL 2s: policy %+v, held %q; want the node's own 500ms kept and the reason", p, held)
	}
	p = own
	if held := applyClusterPolicy(&p, &keyspace.ConfigRecord{LoopInterval: "1 second"}, 5*time.Second); held != "" || p != own {
		t.Errorf("an undecodable duration changed the policy: %+v, %q", p, held)
	}
	if err := (keyspace.ConfigRecord{DepartedSlotTTL: "10s"}).Validate(); err == nil || !strings.Contains(err.Error(), "departed_slot_ttl") {
		t.Errorf("departed_slot_ttl 10s validated: %v", err)
	}
}

// waitPending waits until max_connections is pending exactly on the
// standbys (onStandbys) or exactly on lead.
func waitPending(t *testing.T, c *testCluster, lead *testNode, onStandbys bool, what string) {
	t.Helper()
	testutil.Eventually(t, 30*time.Second, what, func() error {
		p := pendingOf(t, c)
		for _, n := range c.nodes {
			if has := slices.Contains(p[n.name], "max_connections"); has != ((n != lead) == onStandbys) {
				return fmt.Errorf("pending %v", p)
			}
		}
		return nil
	})
}
