package stdlib_test

import (
	"database/sql"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgha/pgha/driver"
	"github.com/pgha/pgha/driver/stdlib"
	"github.com/pgha/pgha/internal/testutil"
)

// TestReaderDB: a *sql.DB from OpenDBFromReader sends statements through
// the pool's Reader (pgha_read_mode=replicas: to the standby), its
// transactions are read-only on one node at the isolation level asked
// for, its prepared statements run, a causal token in the context is
// honoured, and a write through it is refused by the replica.
func TestReaderDB(t *testing.T) {
	primary, standby := pair(t, "sr", false)
	ctx := testutil.Ctx(t, time.Minute)
	pool := newPool(t, connString("pgha_read_mode=replicas&pgha_max_replica_lag=-1", primary, standby))
	if err := pool.Ping(ctx); err != nil { // waits for the first probe of the hosts
		t.Fatal(err)
	}
	db := stdlib.OpenDBFromPool(pool)
	closeDB(t, db)
	rdb := stdlib.OpenDBFromReader(pool.Reader())
	closeDB(t, rdb)

	testutil.Eventually(t, 10*time.Second, "read served by the standby", func() error {
		var inRecovery bool
		if err := rdb.QueryRowContext(ctx, "select pg_is_in_recovery()").Scan(&inRecovery); err != nil {
			return err
		}
		if !inRecovery {
			return errors.New("read served by the primary")
		}
		return nil
	})
	if err := rdb.PingContext(ctx); err != nil {
		t.Errorf("Ping: %v", err)
	}

	tx, err := rdb.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelRepeatableRead})
	if err != nil {
		t.Fatal(err)
	}
	var iso, ro string
	var inRecovery bool
	if err := tx.QueryRowContext(ctx, "select current_setting('transaction_isolation'), current_setting('transaction_read_only'), pg_is_in_recovery()").Scan(&iso, &ro, &inRecovery); err != nil {
		t.Fatal(err)
	}
	if iso != "repeatable read" || ro != "on" || !inRecovery {
		t.Errorf("reader transaction: isolation %q, read only %q, in recovery %v; want repeatable read, on, true", iso, ro, inRecovery)
	}
	if err := tx.Commit(); err != nil {
		t.Errorf("commit of a reader transaction: %v", err)
	}

	st, err := rdb.PrepareContext(ctx, "select $1::int + 1")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		var n int
		if err := st.QueryRowContext(ctx, i).Scan(&n); err != nil || n != i+1 {
			t.Errorf("prepared statement(%d) = %d, %v", i, n, err)
		}
	}
	st.Close()

	// Read-your-writes with a causal token.
	if _, err := db.ExecContext(ctx, "insert into w values (1)"); err != nil {
		t.Fatal(err)
	}
	tok, err := pool.CausalToken(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var n int
	if err := rdb.QueryRowContext(driver.WithCausalToken(ctx, tok), "select count(*) from w where v = 1").Scan(&n); err != nil || n != 1 {
		t.Errorf("read with the causal token of a write: %d rows, %v; want 1", n, err)
	}

	_, err = rdb.ExecContext(ctx, "insert into w values (2)")
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "25006" {
		t.Errorf("write through the reader *sql.DB: %v; want SQLSTATE 25006 from the replica", err)
	}
}
