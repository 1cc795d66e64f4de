package replicate_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pgha/pgha/internal/testutil"
	"github.com/pgha/pgha/replicate"
)

// TestInterruptedRewind: a rewind cut short (here its context, as a
// source dying mid-copy would) leaves a marker; Start refuses the data
// directory, Status reports it, and only a Clone (ReplaceDataDir: the old
// directory moved aside with its marker) makes the node usable again.
// Found by the chaos harness: a standby whose rewind source was fenced
// mid-rewind was then restarted on a half-rewound directory.
func TestInterruptedRewind(t *testing.T) {
	t.Parallel()
	ctx := testutil.Ctx(t, 3*time.Minute)
	a := testutil.StartPostgres(t, testutil.PostgresOptions{Name: "ra"})
	b := testutil.StartPostgres(t, testutil.PostgresOptions{Name: "rb", CloneFrom: a})
	mustExec(t, ctx, a, "CREATE TABLE t (v text PRIMARY KEY); INSERT INTO t VALUES ('1')")
	waitRows(t, ctx, b, "t", "1")
	if _, err := b.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	mustExec(t, ctx, b, "INSERT INTO t VALUES ('2-new')")
	// a diverges with enough writes that pg_rewind has work to do.
	mustExec(t, ctx, a, "CREATE TABLE big AS SELECT g, repeat('x', 200) AS pad FROM generate_series(1, 100000) g")
	if err := a.Stop(ctx, replicate.Fast); err != nil {
		t.Fatal(err)
	}
	marker := a.Config().DataDir + ".rewind-incomplete"

	// Cancel the rewind as soon as its marker appears.
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- a.Rewind(rctx, testutil.SourceOf(b, "ra")) }()
	err := testutil.Poll(60*time.Second, func() error {
		if _, err := os.Stat(marker); err != nil {
			select {
			case err := <-done:
				t.Fatalf("Rewind returned before the cancel: %v", err)
			default:
			}
			return err
		}
		return nil
	})
	cancel()
	if err != nil {
		t.Fatalf("no rewind marker appeared: %v", err)
	}
	rerr := <-done
	if rerr == nil {
		t.Fatal("the cancelled Rewind succeeded")
	}
	t.Logf("cancelled Rewind: %v", rerr)
	if _, err := os.Stat(marker); err != nil {
		t.Fatalf("marker after an interrupted rewind: %v", err)
	}
	if st := mustStatus(t, ctx, a); !st.RewindIncomplete || st.Running {
		t.Fatalf("Status after an interrupted rewind: RewindIncomplete %v, running %v", st.RewindIncomplete, st.Running)
	}
	if err := a.Start(ctx); !errors.Is(err, replicate.ErrRewindIncomplete) {
		t.Fatalf("Start of a half-rewound directory = %v, want ErrRewindIncomplete", err)
	}
	if procs, _ := testutil.PostgresProcesses(a.Config().DataDir); len(procs) > 0 {
		t.Fatalf("a postmaster runs on the half-rewound directory: %v", procs)
	}

	// Clone with ReplaceDataDir moves the directory aside with its marker.
	cfg := a.Config()
	cfg.ReplaceDataDir = true
	a2, err := replicate.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	testutil.StopPostgresAtCleanup(t, a2)
	if err := a2.Clone(ctx, testutil.SourceOf(b, "ra")); err != nil {
		t.Fatalf("Clone over the half-rewound directory: %v", err)
	}
	if _, err := os.Stat(marker); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("marker after Clone: %v, want gone", err)
	}
	aside, _ := filepath.Glob(cfg.DataDir + ".replaced-*.rewind-incomplete")
	if len(aside) != 1 {
		t.Fatalf("marker moved aside: %v, want one", aside)
	}
	if err := a2.Start(ctx); err != nil && !errors.Is(err, replicate.ErrRunning) {
		t.Fatal(err)
	}
	waitRows(t, ctx, a2, "t", "1", "2-new")
}
