package ha

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgha/pgha/internal/testutil"
	"github.com/pgha/pgha/replicate"
)

// fakeRewindBinDir returns a directory holding the machine's PostgreSQL
// programs (symlinks) except pg_rewind, which fails the way pg_rewind does
// when only a new clone can help.
func fakeRewindBinDir(t *testing.T) string {
	t.Helper()
	real := testutil.PostgresBinDir(t)
	dir, err := os.MkdirTemp("", "pgha-fakebin-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(real)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.Name() == "pg_rewind" {
			continue
		}
		if err := os.Symlink(filepath.Join(real, e.Name()), filepath.Join(dir, e.Name())); err != nil {
			t.Fatal(err)
		}
	}
	script := "#!/bin/sh\necho \"pg_rewind: error: could not find common ancestor of the source and target cluster's timelines\" >&2\nexit 1\n"
	if err := os.WriteFile(filepath.Join(dir, "pg_rewind"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestRecloneOnRewindFailure: a former primary whose rewind cannot succeed
// (pg_rewind says only a new clone helps) moves its data directory aside
// and clones from the new leader with RecloneOnRewindFailure; without it,
// it waits and publishes the problem and the fix in its member record (the
// exact pghactl reinit command), and that reinit brings it back.
func TestRecloneOnRewindFailure(t *testing.T) {
	for _, reclone := range []bool{true, false} {
		t.Run(fmt.Sprintf("reclone=%v", reclone), func(t *testing.T) {
			bin := fakeRewindBinDir(t)
			c := startCluster(t, clusterOpts{
				pgConfig:  func(_ string, pc *replicate.Config) { pc.BinDir = bin },
				configure: func(_ string, cfg *Config) { cfg.RecloneOnRewindFailure = reclone },
			})
			old := c.waitHealthy(90 * time.Second)
			w := c.startWriter()
			w.waitMore(t, 20, 30*time.Second, "writes before the loss")
			c.stopManager(old, true)
			kill9(t, old)
			c.waitNewLeader(old.name, 30*time.Second, "a new leader")
			w.waitMore(t, 20, 30*time.Second, "writes on the new primary")
			w.stop()
			c.startManager(old) // it needs a rewind, which cannot succeed
			if reclone {
				c.waitHealthy(120 * time.Second)
				aside, _ := filepath.Glob(old.inst.Config().DataDir + ".replaced-*")
				if len(aside) == 0 {
					t.Fatalf("no data directory moved aside next to %s", old.inst.Config().DataDir)
				}
				return
			}
			testutil.Eventually(t, 60*time.Second, old.name+" publishes the problem", func() error {
				st, err := ClusterStatus(context.Background(), c.cli, "test")
				if err != nil {
					return err
				}
				for _, m := range st.Members {
					if m.Node == old.name {
						if !strings.Contains(m.Problem, "RecloneOnRewindFailure") || !strings.Contains(m.Problem, "run 'pghactl --cluster test reinit "+old.name+"'") {
							return fmt.Errorf("%s's problem: %q", m.Node, m.Problem)
						}
						if m.Streaming {
							t.Fatalf("%s streams although its rewind cannot succeed", m.Node)
						}
						return nil
					}
				}
				return fmt.Errorf("no member record for %s", old.name)
			})
			if aside, _ := filepath.Glob(old.inst.Config().DataDir + ".replaced-*"); len(aside) > 0 {
				t.Fatalf("the data directory was moved aside without RecloneOnRewindFailure: %v", aside)
			}
			// The fix the problem names: an operator's reinit.
			if err := Reinit(testutil.Ctx(t, 2*time.Minute), c.cli, "test", old.name); err != nil {
				t.Fatalf("Reinit(%s) as the problem says: %v", old.name, err)
			}
			c.waitHealthy(60 * time.Second)
			if aside, _ := filepath.Glob(old.inst.Config().DataDir + ".replaced-*"); len(aside) != 1 {
				t.Fatalf("directories moved aside by the reinit: %v; want one", aside)
			}
		})
	}
}
