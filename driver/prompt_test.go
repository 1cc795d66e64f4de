package driver_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgha/pgha/driver"
	"github.com/pgha/pgha/internal/testutil"
)

// TestContractPromptErrors: with one host that cannot serve (nothing
// listening, a wrong password, a missing database) and no failover going
// on, an operation fails as promptly as through pgxpool, with pgxpool's
// error text wrapped in an error that matches ErrNoPrimary; not after
// FailoverTimeout.
func TestContractPromptErrors(t *testing.T) {
	primary := testutil.StartPostgres(t, testutil.PostgresOptions{Name: "pe1"})
	ctx := testutil.Ctx(t, time.Minute)
	for _, tc := range []struct{ name, connStr string }{
		{"unreachable", fmt.Sprintf("postgres://postgres@%s/postgres?sslmode=disable&connect_timeout=5", testutil.FreeAddr(t))},
		{"wrong password", fmt.Sprintf("postgres://postgres:wrong@%s/postgres?sslmode=disable", addrOf(primary))},
		{"missing database", strings.Replace(connString("", primary), "/postgres?", "/nosuchdb?", 1)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			type result struct {
				Fast, ConnectError bool
				Err                string
			}
			run := func(name string) (result, error) {
				cs := tc.connStr
				if name == "driver" {
					cs += "&pgha_failover_timeout=30s"
				}
				p, _ := contractPool(t, ctx, name, cs, nil)
				start := time.Now()
				_, err := p.Exec(ctx, "select 1")
				var ce *pgconn.ConnectError
				r := result{Fast: time.Since(start) < 5*time.Second, ConnectError: errors.As(err, &ce)}
				if err != nil {
					r.Err = err.Error()
				}
				return r, err
			}
			raw, _ := run("pgxpool")
			ours, oursErr := run("driver")
			if raw.Err == "" || !raw.Fast || !raw.ConnectError {
				t.Fatalf("pgxpool: %+v", raw)
			}
			if !errors.Is(oursErr, driver.ErrNoPrimary) {
				t.Errorf("driver: %v; want ErrNoPrimary", oursErr)
			}
			// The driver's error wraps the same underlying error.
			if strings.HasSuffix(ours.Err, raw.Err) {
				ours.Err = raw.Err
			}
			sameResults(t, raw, ours)
		})
	}
}

// TestCallerDeadlineWhileWaiting: a caller's deadline that expires while
// the pool waits for a primary (one was known and is gone) returns an
// error matching both context.DeadlineExceeded and ErrNoPrimary that says
// what the pool waited for.
func TestCallerDeadlineWhileWaiting(t *testing.T) {
	primary := testutil.StartPostgres(t, testutil.PostgresOptions{Name: "dw1"})
	ctx := testutil.Ctx(t, time.Minute)
	p := newPool(t, parse(t, connString("pgha_failover_timeout=30s", primary)))
	if err := p.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	if err := testutil.StopPostgres(primary); err != nil {
		t.Fatal(err)
	}
	p.Reset() // no idle connection to find broken: the next one is refused
	sctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := p.Exec(sctx, "select 1")
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, driver.ErrNoPrimary) {
		t.Fatalf("Exec while the only primary is down: %v; want an error matching context.DeadlineExceeded and ErrNoPrimary", err)
	}
	if !strings.Contains(err.Error(), "waiting for a writable primary") {
		t.Errorf("error %q does not say what the pool waited for", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Exec returned after %v, long after the caller's 300ms deadline", d)
	}
}
