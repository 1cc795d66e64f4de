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

func TestApplySet(t *testing.T) {
	var c ha.ClusterConfig
	for _, kv := range []string{"parameters.work_mem=64MB", "node_parameters.n2.work_mem=128MB", "sync_mode=quorum", "sync_standbys=2", "max_lag_on_failover=1048576"} {
		if err := applySet(&c, kv); err != nil {
			t.Fatalf("applySet(%s): %v", kv, err)
		}
	}
	want := []string{"max_lag_on_failover = 1048576", "sync_mode = quorum", "sync_standbys = 2", "parameters.work_mem = 64MB", "node_parameters.n2.work_mem = 128MB"}
	if got := configLines(c); !slices.Equal(got, want) {
		t.Fatalf("configLines = %q; want %q", got, want)
	}
	for _, kv := range []string{"parameters.work_mem=", "node_parameters.n2.work_mem=", "sync_mode="} {
		if err := applySet(&c, kv); err != nil {
			t.Fatal(err)
		}
	}
	if got := configLines(c); !slices.Equal(got, []string{"max_lag_on_failover = 1048576", "sync_standbys = 2"}) {
		t.Fatalf("after unsets: %q", got)
	}
	for kv, want := range map[string]string{
		"sync_mode=sometimes":     "want off, on, strict, quorum or quorum-strict",
		"sync_standbys=0":         "want a number >= 1",
		"work_mem=1MB":            "unknown key",
		"parameters.=1":           "name the parameter",
		"node_parameters.n1=1":    "want node_parameters.NODE.PARAMETER=value",
		"max_lag_on_failover=-1":  "want a number of bytes",
		"node_parameters.a/b.x=1": "node \"a/b\"",
		"just-a-word":             "want key=value",
	} {
		if err := applySet(&c, kv); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("applySet(%s) = %v; want an error containing %q", kv, err, want)
		}
	}
}

// TestEditConfig: edit-config proposes the change (the leader checks it),
// show-config prints it and the members' pending restarts; a value the
// server rejects fails with the reason; without --force and without a
// terminal it refuses.
func TestEditConfig(t *testing.T) {
	c := startCluster(t, 3)
	c.waitHealthy(90*time.Second, 3)
	c.ctl(t, exitUsage, "edit-config", "--set", "parameters.work_mem=16MB")
	r := c.ctl(t, exitFailed, "edit-config", "--force", "--set", "parameters.work_mem=1kB")
	if !strings.Contains(r.stderr, "work_mem") || !strings.Contains(r.stderr, "outside the allowed range") {
		t.Fatalf("a bad value: %s", r)
	}
	r = c.ctl(t, exitOK, "edit-config", "--force", "--set", "parameters.work_mem=16MB", "--set", "parameters.shared_buffers=40MB")
	if !strings.Contains(r.stdout, "+ parameters.work_mem = 16MB") {
		t.Fatalf("edit-config printed no diff: %s", r)
	}
	testutil.Eventually(t, 30*time.Second, "show-config lists the change and the pending restarts", func() error {
		r := c.ctl(t, exitOK, "show-config")
		if !strings.Contains(r.stdout, "parameters.work_mem = 16MB") {
			return fmt.Errorf("show-config: %s", r.stdout)
		}
		for _, n := range c.Nodes() {
			if !strings.Contains(r.stdout, fmt.Sprintf("# %s: pending restart: shared_buffers", n)) {
				return fmt.Errorf("show-config: %s", r.stdout)
			}
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, n := range c.Nodes() {
		s, err := c.Instance(n).Settings(ctx)
		if err != nil || s["work_mem"].Value != "16384" {
			t.Errorf("%s: work_mem %q, %v; want 16384 kB", n, s["work_mem"].Value, err)
		}
	}
	r = c.ctl(t, exitOK, "show-config", "--json")
	if !strings.Contains(r.stdout, `"work_mem": "16MB"`) {
		t.Fatalf("show-config --json: %s", r.stdout)
	}
}
