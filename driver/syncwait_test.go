package driver_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/pgha/pgha/driver"
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

// TestSyncWaitCancelledOnServer: when PostgreSQL cancels a commit's wait
// for the synchronous standby on the server side (pg_cancel_backend from
// another session, as an operator or a watchdog script would), it reports
// success with only a WARNING, although the commit may exist on the
// primary alone and be lost on a failover. The pool must not pass that on
// as a success: Exec, QueryRow and Commit return an error matching
// ErrOutcomeUnknown and ErrNotReplicated. Once the standby is back,
// commits on the same connections succeed plainly. (statement_timeout
// cannot do this: PostgreSQL disarms it before a commit.)
func TestSyncWaitCancelledOnServer(t *testing.T) {
	primary, standby := pair(t, "sc")
	p := newPool(t, parse(t, connString("pool_max_conns=2", primary)))
	ctx := testutil.Ctx(t, time.Minute)
	if _, err := p.Exec(ctx, "insert into w values (0)"); err != nil {
		t.Fatalf("insert with the standby up: %v", err)
	}
	if err := standby.Stop(ctx, replicate.Fast); err != nil {
		t.Fatal(err)
	}
	// run runs op, which blocks waiting for the synchronous standby, and
	// cancels that wait from another session.
	run := func(what string, v int, op func() error) {
		t.Helper()
		done := make(chan error, 1)
		go func() { done <- op() }()
		testutil.Eventually(t, 20*time.Second, what+": a commit waiting for the synchronous standby, cancelled", func() error {
			n, err := testutil.PostgresQueryInt(ctx, primary,
				"select count(pg_cancel_backend(pid)) from pg_stat_activity where wait_event = 'SyncRep'")
			if err != nil {
				return err
			}
			if n == 0 {
				return errors.New("no backend waits for the synchronous standby yet")
			}
			return nil
		})
		var err error
		select {
		case err = <-done:
		case <-ctx.Done():
			t.Fatalf("%s: still blocked after its wait was cancelled", what)
		}
		if !errors.Is(err, driver.ErrOutcomeUnknown) || !errors.Is(err, driver.ErrNotReplicated) {
			t.Errorf("%s whose wait for the synchronous standby the server cancelled = %v; want an error matching ErrOutcomeUnknown and ErrNotReplicated", what, err)
		} else {
			t.Logf("%s: %v", what, err)
		}
		// The row is committed on the primary: "unknown", not "not committed".
		n, qerr := testutil.PostgresQueryInt(ctx, primary, "select count(*) from w where v = $1", v)
		if qerr != nil {
			t.Fatal(qerr)
		}
		if n != 1 {
			t.Errorf("%s: row %d is not committed on the primary (count %d); the warning said it was", what, v, n)
		}
	}
	run("Exec", 1, func() error {
		_, err := p.Exec(ctx, "insert into w values (1)")
		return err
	})
	run("QueryRow", 2, func() error {
		var got int
		return p.QueryRow(ctx, "insert into w values (2) returning v").Scan(&got)
	})
	run("Commit", 3, func() error {
		tx, err := p.Begin(ctx)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "insert into w values (3)"); err != nil {
			return err
		}
		return tx.Commit(ctx)
	})

	// The warning belongs to its statement only: with the standby back,
	// the same connections commit without error.
	if err := standby.Start(ctx); err != nil {
		t.Fatal(err)
	}
	for i := 4; i < 10; i++ {
		if _, err := p.Exec(ctx, "insert into w values ($1)", i); err != nil {
			t.Fatalf("insert %d with the standby back: %v", i, err)
		}
	}
	tx, err := p.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "insert into w values (10)"); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatalf("commit with the standby back: %v", err)
	}
}
