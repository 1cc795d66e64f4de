package driver_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgha/pgha/internal/testutil"
)

// TestContractBrokenConnDroppedAlone: when the server ends one session of
// a pool, the operation on it fails and that connection alone is dropped:
// the pool's other connections stay open, as with pgxpool (no reconnect
// storm after one error).
func TestContractBrokenConnDroppedAlone(t *testing.T) {
	primary := testutil.StartPostgres(t, testutil.PostgresOptions{Name: "bc1"})
	ctx := testutil.Ctx(t, time.Minute)
	admin := newPool(t, parse(t, connString("", primary)))
	type result struct {
		Failed, Survivors int
		TotalConns        int32
	}
	script := func(name string) result {
		p, _ := contractPool(t, ctx, name, connString("", primary), func(c *pgxpool.Config) {
			c.MaxConns = 3
			// Hand out idle connections unchecked, so that the broken one
			// is used and fails.
			c.ShouldPing = func(context.Context, pgxpool.ShouldPingParams) bool { return false }
		})
		var held []*pgxpool.Conn
		pids := map[uint32]bool{}
		for range 3 {
			c, err := p.Acquire(ctx)
			if err != nil {
				t.Fatal(err)
			}
			held = append(held, c)
			pids[c.Conn().PgConn().PID()] = true
		}
		victim := held[2].Conn().PgConn().PID()
		for _, c := range held {
			c.Release()
		}
		var ok bool
		if err := admin.QueryRow(ctx, "select pg_terminate_backend($1)", int32(victim)).Scan(&ok); err != nil || !ok {
			t.Fatalf("terminate backend %d: %v %v", victim, ok, err)
		}
		var r result
		for range 3 {
			if _, err := p.Exec(ctx, "select 1"); err != nil {
				r.Failed++
			}
		}
		// The pids of the pool's connections that were open before.
		for _, c := range p.AcquireAllIdle(ctx) {
			if pids[c.Conn().PgConn().PID()] {
				r.Survivors++
			}
			c.Release()
		}
		// A destroyed connection leaves the pool's count asynchronously
		// (pgxpool closes it in the background): read the count once it
		// has settled on the survivors, or after a bound.
		testutil.Poll(5*time.Second, func() error {
			if n := p.Stat().TotalConns(); n != int32(r.Survivors) {
				return fmt.Errorf("%d connections", n)
			}
			return nil
		})
		r.TotalConns = p.Stat().TotalConns()
		return r
	}
	raw := script("pgxpool")
	if raw.Failed != 1 || raw.Survivors != 2 {
		t.Errorf("pgxpool: %+v; want one failed Exec and the two other connections kept", raw)
	}
	sameResults(t, raw, script("driver"))
}

// TestContractBeginQueryKillsSession: a custom BeginQuery that makes the
// server end the session fails BeginTx through both pools with the
// server's error, and leaves no connection behind.
func TestContractBeginQueryKillsSession(t *testing.T) {
	primary := testutil.StartPostgres(t, testutil.PostgresOptions{Name: "bk1"})
	ctx := testutil.Ctx(t, time.Minute)
	type result struct {
		Err        string
		SQLState   string
		TotalConns int32
		After      string
	}
	script := func(name string) result {
		p, _ := contractPool(t, ctx, name, connString("", primary), nil)
		var r result
		tx, err := p.BeginTx(ctx, pgx.TxOptions{BeginQuery: "select pg_terminate_backend(pg_backend_pid())"})
		if err == nil {
			tx.Rollback(ctx)
			r.Err = "none"
		} else {
			var pe *pgconn.PgError
			if errors.As(err, &pe) {
				r.SQLState = pe.Code
			}
			r.Err = "error"
		}
		// pgxpool destroys a broken connection in the background.
		testutil.Eventually(t, 10*time.Second, "broken connection destroyed", func() error {
			if r.TotalConns = p.Stat().TotalConns(); r.TotalConns != 0 {
				return errors.New("still counted")
			}
			return nil
		})
		if _, err := p.Exec(ctx, "select 1"); err != nil {
			r.After = err.Error()
		}
		return r
	}
	raw := script("pgxpool")
	if raw.Err != "error" || raw.SQLState != "57P01" {
		t.Errorf("pgxpool: %+v; want admin_shutdown (57P01)", raw)
	}
	sameResults(t, raw, script("driver"))
}
