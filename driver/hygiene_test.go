package driver_test

import (
	"context"
	"testing"
	"time"

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
		r.TotalConns = p.Stat().TotalConns()
		return r
	}
	raw := script("pgxpool")
	if raw.Failed != 1 || raw.Survivors != 2 {
		t.Errorf("pgxpool: %+v; want one failed Exec and the two other connections kept", raw)
	}
	sameResults(t, raw, script("driver"))
}
