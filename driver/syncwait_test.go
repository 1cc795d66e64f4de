package driver_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/pgha/pgha/internal/testutil"
	"github.com/pgha/pgha/replicate"
)

// TestSyncWaitCancelled: when a commit waits for the synchronous standby
// and the caller's deadline ends the wait, PostgreSQL has committed locally
// (the commit may exist only on the primary). The caller must get an error,
// never a success: pgx returns the context's error, and the pool passes it
// on (a caller's deadline is the caller's error).
func TestSyncWaitCancelled(t *testing.T) {
	primary, standby := pair(t, "sw")
	p := newPool(t, parse(t, connString("", primary)))
	ctx := testutil.Ctx(t, time.Minute)
	if _, err := p.Exec(ctx, "insert into w values (0)"); err != nil {
		t.Fatalf("insert with the standby up: %v", err)
	}
	// With the synchronous standby down, commits wait for it.
	if err := standby.Stop(ctx, replicate.Fast); err != nil {
		t.Fatal(err)
	}

	ectx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err := p.Exec(ectx, "insert into w values (1)")
	cancel()
	if err == nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Exec whose wait for the synchronous standby was cancelled = %v; want an error matching context.DeadlineExceeded", err)
	}

	tx, err := p.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "insert into w values (2)"); err != nil {
		t.Fatal(err)
	}
	cctx, ccancel := context.WithTimeout(ctx, 300*time.Millisecond)
	err = tx.Commit(cctx)
	ccancel()
	if err == nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Commit whose wait for the synchronous standby was cancelled = %v; want an error matching context.DeadlineExceeded", err)
	}
	for _, v := range []int{1, 2} {
		n, qerr := testutil.PostgresQueryInt(ctx, primary, "select count(*) from w where v = $1", v)
		if qerr != nil {
			t.Fatal(qerr)
		}
		// PostgreSQL committed it locally: the error means "unknown
		// outcome", not "not committed".
		if n != 1 {
			t.Logf("row %d not committed locally (PostgreSQL version behaviour)", v)
		}
	}
}
