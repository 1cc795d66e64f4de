package ha

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

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
	c := startCluster(t, clusterOpts{})
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

	var other *testNode
	for _, n := range c.nodes {
		if n != lead {
			other = n
			break
		}
	}
	on := SyncOn
	want := ClusterConfig{
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
	testutil.Eventually(t, 30*time.Second, "max_connections pending on the standbys only", func() error {
		p := pendingOf(t, c)
		for _, n := range c.nodes {
			if has := slices.Contains(p[n.name], "max_connections"); has != (n != lead) {
				return fmt.Errorf("pending %v", p)
			}
		}
		return nil
	})
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
}
