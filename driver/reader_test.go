package driver_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/pgha/pgha/driver"
	"github.com/pgha/pgha/internal/testutil"
	"github.com/pgha/pgha/replicate"
)

// asyncPair starts a primary and an asynchronous streaming standby with a
// table r(v int).
func asyncPair(t *testing.T, prefix string) (primary, standby *replicate.Instance) {
	t.Helper()
	primary = testutil.StartPostgres(t, testutil.PostgresOptions{Name: prefix + "1"})
	standby = testutil.StartPostgres(t, testutil.PostgresOptions{Name: prefix + "2", CloneFrom: primary})
	ctx := testutil.Ctx(t, time.Minute)
	if err := standby.WaitStreaming(ctx); err != nil {
		t.Fatalf("standby streaming: %v", err)
	}
	if err := testutil.PostgresExec(ctx, primary, "create table r(v int)"); err != nil {
		t.Fatal(err)
	}
	return primary, standby
}

// TestReader: reads go to the replica; a replica that lags more than
// MaxReplicaLag is skipped (primary fallback, or ErrNoReplica in replicas
// mode); a causal token sends a read to the primary until the replica has
// replayed past it.
func TestReader(t *testing.T) {
	primary, standby := asyncPair(t, "rd")
	ctx := testutil.Ctx(t, 2*time.Minute)
	hosts := []*replicate.Instance{primary, standby}
	prefer := newPool(t, parse(t, connString("pgha_read_mode=prefer-replicas&pgha_max_replica_lag=64kB&pgha_probe_interval=50ms", hosts...)))
	only := newPool(t, parse(t, connString("pgha_read_mode=replicas&pgha_read_balance=least-busy&pgha_max_replica_lag=64kB&pgha_probe_interval=50ms", hosts...)))
	nolimit := newPool(t, parse(t, connString("pgha_read_mode=replicas&pgha_max_replica_lag=-1&pgha_probe_interval=50ms", hosts...)))
	for _, p := range []*driver.Pool{prefer, only, nolimit} {
		if err := p.Ping(ctx); err != nil {
			t.Fatal(err)
		}
	}
	inRecovery := func(rd *driver.Reader) (bool, error) {
		var r bool
		err := rd.QueryRow(ctx, "select pg_is_in_recovery()").Scan(&r)
		return r, err
	}
	testutil.Eventually(t, 10*time.Second, "prefer-replicas read served by the replica", func() error {
		r, err := inRecovery(prefer.Reader())
		if err == nil && !r {
			err = fmt.Errorf("served by the primary; pool state: %s", prefer.DebugState())
		}
		return err
	})
	testutil.Eventually(t, 10*time.Second, "replicas-only read served by the replica", func() error {
		_, err := inRecovery(only.Reader())
		return err
	})
	// A read-only transaction on the replica.
	tx, err := only.Reader().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var r bool
	if err := tx.QueryRow(ctx, "select pg_is_in_recovery()").Scan(&r); err != nil || !r {
		t.Errorf("Reader().Begin on the replica: in recovery %v, err %v", r, err)
	}
	tx.Rollback(ctx)
	// Writes still go to the primary.
	if _, err := prefer.Exec(ctx, "insert into r values (1)"); err != nil {
		t.Fatal(err)
	}

	// Make the replica lag: pause replay and write about 2 MB of WAL.
	if err := testutil.PostgresExec(ctx, standby, "select pg_wal_replay_pause()"); err != nil {
		t.Fatal(err)
	}
	if _, err := prefer.Exec(ctx, "insert into r select g from generate_series(1, 50000) g"); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "lagging replica skipped", func() error {
		r, err := inRecovery(prefer.Reader())
		if err != nil {
			return err
		}
		if r {
			return errors.New("read still served by the lagging replica")
		}
		return nil
	})
	testutil.Eventually(t, 10*time.Second, "replicas-only read with the replica lagging fails with ErrNoReplica", func() error {
		if _, err := inRecovery(only.Reader()); !errors.Is(err, driver.ErrNoReplica) {
			return fmt.Errorf("got %v", err)
		}
		return nil
	})

	// Read-your-writes against the paused replica (no lag limit).
	if _, err := nolimit.Exec(ctx, "insert into r values (-7)"); err != nil {
		t.Fatal(err)
	}
	tok, err := nolimit.CausalToken(ctx)
	if err != nil {
		t.Fatal(err)
	}
	see := func(withToken bool) (replica, seen bool, err error) {
		c := ctx
		if withToken {
			c = driver.WithCausalToken(ctx, tok)
		}
		err = nolimit.Reader().QueryRow(c, "select pg_is_in_recovery(), exists(select 1 from r where v = -7)").Scan(&replica, &seen)
		return
	}
	if replica, seen, err := see(false); err != nil || !replica || seen {
		t.Errorf("read without a token: replica %v, sees the write %v, err %v; want the paused replica, not seeing it", replica, seen, err)
	}
	if replica, seen, err := see(true); err != nil || replica || !seen {
		t.Errorf("read with a token while the replica is behind: replica %v, sees the write %v, err %v; want the primary", replica, seen, err)
	}
	if err := testutil.PostgresExec(ctx, standby, "select pg_wal_replay_resume()"); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "token read served by the caught-up replica", func() error {
		replica, seen, err := see(true)
		if err != nil {
			return err
		}
		if !replica || !seen {
			return fmt.Errorf("replica %v, sees the write %v", replica, seen)
		}
		return nil
	})
	testutil.Eventually(t, 10*time.Second, "caught-up replica used again", func() error {
		r, err := inRecovery(prefer.Reader())
		if err == nil && !r {
			err = errors.New("still on the primary")
		}
		return err
	})
}
