package replicate_test

import (
	"context"
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
