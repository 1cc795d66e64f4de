package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pgha/pgha/ha"
	"github.com/pgha/pgha/internal/testutil"
)

func TestApplySet(t *testing.T) {
	var c ha.ClusterConfig
	var d ha.ClusterConfig
	for _, kv := range []string{"loop_interval=300ms", "departed_slot_ttl=2h"} {
		if err := applySet(&d, kv); err != nil {
			t.Fatalf("applySet(%s): %v", kv, err)
		}
	}
	if got := configLines(d); !slices.Equal(got, []string{"loop_interval = 300ms", "departed_slot_ttl = 2h0m0s"}) {
		t.Fatalf("configLines = %q", got)
	}
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
		"loop_interval=1ms":       "want a duration from 10ms to 10s",
		"departed_slot_ttl=soon":  "want a duration from 1m0s",
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

// TestEditConfigEditor: without --set, edit-config opens $EDITOR on the
// configuration as YAML and proposes what was saved (the whole of it, so
// settings the operator did not touch stay); an edit that does not parse
// is refused, nothing applied, and the file kept where the error says;
// --file applies a saved file; no EDITOR is a usage error naming it.
func TestEditConfigEditor(t *testing.T) {
	c := startCluster(t, 3)
	c.waitHealthy(90*time.Second, 3)
	c.ctl(t, exitOK, "edit-config", "--force", "--set", "parameters.work_mem=16MB", "--set", "parameters.max_wal_size=1200MB")
	dir := t.TempDir()
	script := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	withEditor := func(editor string, want int, args ...string) result {
		t.Helper()
		env := map[string]string{"EDITOR": editor}
		full := append([]string{"--etcd", strings.Join(c.EtcdEndpoints(), ","), "--cluster", testClusterName}, args...)
		var out, errb bytes.Buffer
		code := runEnv(testutil.Ctx(t, time.Minute), full, func(k string) string { return env[k] }, &out, &errb)
		r := result{code, out.String(), errb.String()}
		if code != want {
			t.Fatalf("EDITOR=%s pghactl %s: %v; want exit %d", editor, strings.Join(args, " "), r, want)
		}
		return r
	}

	r := withEditor(script("good", `sed -i 's/work_mem: 16MB/work_mem: 24MB/' "$1"`), exitOK, "edit-config", "--force")
	if !strings.Contains(r.stdout, "- parameters.work_mem = 16MB") || !strings.Contains(r.stdout, "+ parameters.work_mem = 24MB") || strings.Contains(r.stdout, "max_wal_size") {
		t.Errorf("edit-config through the editor printed:\n%s\nwant work_mem 16MB → 24MB and max_wal_size untouched", r.stdout)
	}
	if cfg, _, err := ha.ShowConfig(testutil.Ctx(t, 5*time.Second), c.EtcdClient(), testClusterName); err != nil || cfg.Parameters["work_mem"] != "24MB" || cfg.Parameters["max_wal_size"] != "1200MB" {
		t.Errorf("config after the edit: %+v, %v; want work_mem 24MB and max_wal_size 1200MB", cfg.Parameters, err)
	}

	r = withEditor(script("bad", `printf 'parameters:\n  work_mem: 8MB\nsync_mod: on\n' > "$1"`), exitFailed, "edit-config", "--force")
	kept := regexp.MustCompile(`kept in (\S+\.yaml)`).FindStringSubmatch(r.stderr)
	if !strings.Contains(r.stderr, `unknown field "sync_mod"`) || kept == nil {
		t.Fatalf("a bad edit: %v; want the unknown key named and the kept file's path", r)
	}
	t.Cleanup(func() { os.Remove(kept[1]) })
	if b, err := os.ReadFile(kept[1]); err != nil || !strings.Contains(string(b), "sync_mod: on") {
		t.Errorf("the kept file %s: %q, %v; want the operator's edit", kept[1], b, err)
	}
	if cfg, _, _ := ha.ShowConfig(testutil.Ctx(t, 5*time.Second), c.EtcdClient(), testClusterName); cfg.Parameters["work_mem"] != "24MB" {
		t.Errorf("a refused edit changed the config: %+v", cfg.Parameters)
	}
	// The operator fixes the kept file and applies it with --file.
	if err := os.WriteFile(kept[1], []byte("parameters:\n  work_mem: 8MB\nsync_mode: \"on\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c.ctl(t, exitOK, "edit-config", "--force", "--file", kept[1])
	if cfg, _, err := ha.ShowConfig(testutil.Ctx(t, 5*time.Second), c.EtcdClient(), testClusterName); err != nil || cfg.Parameters["work_mem"] != "8MB" ||
		cfg.SyncMode == nil || *cfg.SyncMode != ha.SyncOn || cfg.Parameters["max_wal_size"] != "" {
		t.Errorf("config after --file: %+v, %v; want work_mem 8MB, sync_mode on, max_wal_size gone (the file is the whole config)", cfg, err)
	}
	if r := withEditor("", exitUsage, "edit-config"); !strings.Contains(r.stderr, "EDITOR") {
		t.Errorf("no EDITOR: %v; want a usage error naming EDITOR", r)
	}
	c.ctl(t, exitUsage, "edit-config", "--set", "parameters.work_mem=1MB", "--file", kept[1])
}
