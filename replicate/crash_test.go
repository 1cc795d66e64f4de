package replicate_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/pgha/pgha/internal/testutil"
	"github.com/pgha/pgha/replicate"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// TestRewindAfterCrash: the primary is killed with SIGKILL after writing
// rows its standby never got, the standby is promoted, and the crashed
// ex-primary is rewound (pg_rewind runs its crash recovery first) and
// follows with the new primary's rows only. Every role change is traced.
func TestRewindAfterCrash(t *testing.T) {
	t.Parallel()
	ctx := testutil.Ctx(t, 3*time.Minute)
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { tp.Shutdown(context.Background()) })
	traced := func(c *replicate.Config) { c.TracerProvider = tp }

	a := testutil.StartPostgres(t, testutil.PostgresOptions{Name: "ca", Configure: traced})
	b := testutil.StartPostgres(t, testutil.PostgresOptions{Name: "cb", CloneFrom: a, Configure: traced})
	mustExec(t, ctx, a, "CREATE TABLE t (v text PRIMARY KEY); INSERT INTO t VALUES ('1-both')")
	waitRows(t, ctx, b, "t", "1-both")

	// b stops listening to a, a writes rows b never sees, then a crashes.
	if err := b.Stop(ctx, replicate.Fast); err != nil {
		t.Fatal(err)
	}
	mustExec(t, ctx, a, "INSERT INTO t SELECT 'stray-' || g FROM generate_series(1, 1000) g")
	exited := a.Exited()
	if err := killPID(a.PID()); err != nil {
		t.Fatal(err)
	}
	<-exited
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	mustExec(t, ctx, b, "INSERT INTO t VALUES ('2-new-primary')")
	if st := mustStatus(t, ctx, a); st.ClusterState != "in production" {
		t.Fatalf("crashed a's cluster state = %q, want \"in production\" (not shut down cleanly)", st.ClusterState)
	}
	testutil.Eventually(t, 30*time.Second, "rewind the crashed a", func() error {
		// Backends of the killed postmaster may hold shared memory for a
		// moment, which pg_rewind's crash recovery refuses: retry.
		return a.Rewind(ctx, testutil.SourceOf(b, "ca"))
	})
	if err := a.WaitStreaming(ctx); err != nil {
		t.Fatal(err)
	}
	mustExec(t, ctx, b, "INSERT INTO t VALUES ('3-after')")
	waitRows(t, ctx, a, "t", "1-both", "2-new-primary", "3-after")

	var names []string
	for _, s := range rec.Ended() {
		names = append(names, s.Name())
	}
	for _, want := range []string{"replicate.Init", "replicate.Clone", "replicate.Promote", "replicate.Rewind"} {
		if !slices.Contains(names, want) {
			t.Errorf("spans %v lack %s", names, want)
		}
	}
}

// TestRewindImpossibleWhenWALGone: an ex-primary that diverged and then
// recycled the WAL around the fork point cannot be rewound; Rewind says so
// with ErrRewindImpossible, so the HA manager knows to clone afresh.
func TestRewindImpossibleWhenWALGone(t *testing.T) {
	t.Parallel()
	ctx := testutil.Ctx(t, 3*time.Minute)
	small := map[string]string{"wal_keep_size": "0", "min_wal_size": "32MB", "max_wal_size": "32MB"}
	a := testutil.StartPostgres(t, testutil.PostgresOptions{Name: "wa", Parameters: small})
	b := testutil.StartPostgres(t, testutil.PostgresOptions{Name: "wb", CloneFrom: a, Parameters: small})
	mustExec(t, ctx, a, "CREATE TABLE t (v text)")
	waitRows(t, ctx, b, "t")
	if _, err := b.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	// b no longer streams from a: drop its slot so a keeps no old WAL.
	testutil.Eventually(t, 30*time.Second, "drop b's slot on a", func() error { return a.DropSlot(ctx, "wb") })
	for range 6 {
		mustExec(t, ctx, a, "INSERT INTO t SELECT 'stray' FROM generate_series(1, 1000); SELECT pg_switch_wal(); CHECKPOINT")
	}
	if err := a.Fence(ctx); err != nil {
		t.Fatal(err)
	}
	err := a.Rewind(ctx, testutil.SourceOf(b, ""))
	t.Logf("Rewind error: %v", err)
	var re *replicate.RewindError
	if !errors.Is(err, replicate.ErrRewindImpossible) || !errors.As(err, &re) || !re.Impossible {
		t.Fatalf("Rewind with the fork point's WAL gone = %v, want a *RewindError with ErrRewindImpossible", err)
	}
	if !a.Initialized() {
		t.Fatal("the data directory is gone after a failed rewind")
	}
}
