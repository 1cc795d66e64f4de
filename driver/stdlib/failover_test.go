package stdlib_test

import (
	"context"
	"database/sql"
	sqldriver "database/sql/driver"
	"errors"
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pgha/pgha/driver"
	"github.com/pgha/pgha/driver/stdlib"
	"github.com/pgha/pgha/internal/testutil"
	"github.com/pgha/pgha/replicate"
)

// pair starts a primary and a streaming standby with a table w(v int
// primary key); with sync, replication to the standby is synchronous, so
// that no acknowledged commit can be lost when the primary is killed.
func pair(t *testing.T, prefix string, sync bool) (primary, standby *replicate.Instance) {
	t.Helper()
	primary = testutil.StartPostgres(t, testutil.PostgresOptions{Name: prefix + "1"})
	standby = testutil.StartPostgres(t, testutil.PostgresOptions{Name: prefix + "2", CloneFrom: primary})
	ctx := testutil.Ctx(t, time.Minute)
	if err := standby.WaitStreaming(ctx); err != nil {
		t.Fatalf("standby streaming: %v", err)
	}
	if sync {
		if _, err := primary.SetSynchronousStandbys(ctx, replicate.SyncSpec{Method: replicate.SyncAny, Num: 1, Names: []string{prefix + "2"}}); err != nil {
			t.Fatalf("synchronous standby: %v", err)
		}
	}
	if err := testutil.PostgresExec(ctx, primary, "create table w(v int primary key)"); err != nil {
		t.Fatalf("create table: %v", err)
	}
	return primary, standby
}

// kill sends SIGKILL to inst's postmaster and waits for it to exit.
func kill(t testing.TB, inst *replicate.Instance) {
	t.Helper()
	exited := inst.Exited()
	pid := inst.PID()
	if pid == 0 || exited == nil {
		t.Fatalf("kill %s: not running", inst.Config().Name)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill %s (pid %d): %v", inst.Config().Name, pid, err)
	}
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		t.Fatalf("postmaster of %s (pid %d) did not exit after SIGKILL", inst.Config().Name, pid)
	}
}

// promote moves the leader record of cluster from old to the standby the
// way the HA manager does: old resigns, the standby campaigns not writable
// yet, promotes, then proclaims itself writable.
func promote(t *testing.T, ctx context.Context, etcd []string, cluster string, old *leaderTerm, name string, standby *replicate.Instance) {
	t.Helper()
	if err := old.Resign(ctx); err != nil {
		t.Fatalf("resign: %v", err)
	}
	term := campaign(t, ctx, etcd, cluster, name, standby, false)
	if _, err := standby.Promote(ctx); err != nil {
		t.Fatalf("promote %s: %v", name, err)
	}
	if err := term.Proclaim(ctx, leaderRecord(name, standby, true)); err != nil {
		t.Fatalf("proclaim: %v", err)
	}
}

// sqlWriter inserts 1, 2, 3, ... through a *sql.DB until stopped: odd
// values with ExecContext, even ones in a transaction. Every 10th write
// it checks that the write path reaches a server out of recovery.
type sqlWriter struct {
	mu    sync.Mutex
	acked []int
	typed map[string]int // typed errors seen, by kind
	bad   []error        // untyped errors or writes on a standby
	stop  chan struct{}
	done  chan struct{}
}

func startSQLWriter(ctx context.Context, db *sql.DB) *sqlWriter {
	w := &sqlWriter{typed: map[string]int{}, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for i := 1; ; i++ {
			select {
			case <-w.stop:
				return
			case <-ctx.Done():
				return
			default:
			}
			octx, cancel := context.WithTimeout(ctx, 20*time.Second)
			var err error
			if i%2 == 1 {
				_, err = db.ExecContext(octx, "insert into w(v) values ($1)", i)
			} else {
				var tx *sql.Tx
				if tx, err = db.BeginTx(octx, nil); err == nil {
					if _, err = tx.ExecContext(octx, "insert into w(v) values ($1)", i); err == nil {
						err = tx.Commit()
					} else {
						tx.Rollback()
					}
				}
			}
			if i%10 == 0 && err == nil {
				var inRecovery bool
				if cerr := db.QueryRowContext(octx, "select pg_is_in_recovery()").Scan(&inRecovery); cerr == nil && inRecovery {
					w.mu.Lock()
					w.bad = append(w.bad, fmt.Errorf("write %d: the *sql.DB's connection is to a server in recovery", i))
					w.mu.Unlock()
				}
			}
			cancel()
			w.mu.Lock()
			switch {
			case err == nil:
				w.acked = append(w.acked, i)
			case errors.Is(err, driver.ErrOutcomeUnknown):
				w.typed["outcome unknown"]++
			case errors.Is(err, driver.ErrNoPrimary):
				w.typed["no primary"]++
			case errors.Is(err, driver.ErrFailover):
				w.typed["failover"]++
			default:
				w.bad = append(w.bad, fmt.Errorf("write %d: untyped error: %w", i, err))
			}
			w.mu.Unlock()
		}
	}()
	return w
}

func (w *sqlWriter) ackedCount() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.acked)
}

func (w *sqlWriter) waitAcked(t *testing.T, n int, what string) {
	t.Helper()
	testutil.Eventually(t, 30*time.Second, what, func() error {
		if got := w.ackedCount(); got < n {
			return fmt.Errorf("%d writes acknowledged, want %d", got, n)
		}
		return nil
	})
}

// check stops the writer and verifies that it met only typed errors and
// that every acknowledged write is on server.
func (w *sqlWriter) check(t *testing.T, server *replicate.Instance) {
	t.Helper()
	close(w.stop)
	<-w.done
	for _, err := range w.bad {
		t.Error(err)
	}
	ctx := testutil.Ctx(t, 30*time.Second)
	lost := 0
	for _, v := range w.acked {
		if n, err := testutil.PostgresQueryInt(ctx, server, "select count(*) from w where v = $1", v); err != nil || n != 1 {
			lost++
		}
	}
	if lost > 0 {
		t.Errorf("%d of %d acknowledged writes are missing on %s", lost, len(w.acked), server.Config().Name)
	}
	t.Logf("writer: %d acknowledged, typed errors %v", len(w.acked), w.typed)
}

// TestFailover: a database/sql writer (autocommit inserts and
// transactions) keeps writing while the primary is killed and the standby
// promoted; the pool follows the leader record, writes resume on the new
// primary, none lands on a standby, no acknowledged write is lost
// (synchronous replication) and every error matches one of the driver's
// typed errors.
func TestFailover(t *testing.T) {
	primary, standby := pair(t, "sf", true)
	etcd := testutil.StartEtcd(t, 1)
	ctx := testutil.Ctx(t, 2*time.Minute)
	term1 := campaign(t, ctx, etcd.Endpoints(), "sf", "sf1", primary, true)
	pool := newPool(t, connString("pgha_cluster=sf&pgha_failover_timeout=20s&pgha_etcd="+etcd.Endpoints()[0]))
	db := stdlib.OpenDBFromPool(pool)
	closeDB(t, db)
	w := startSQLWriter(ctx, db)
	w.waitAcked(t, 50, "writes before the failover")

	kill(t, primary)
	before := w.ackedCount()
	promote(t, ctx, etcd.Endpoints(), "sf", term1, "sf2", standby)
	w.waitAcked(t, before+50, "writes after the promotion")
	w.check(t, standby)
	var port int
	if err := db.QueryRowContext(ctx, "select inet_server_port()").Scan(&port); err != nil || port != standby.Config().Port {
		t.Errorf("*sql.DB writes to port %d (err %v), want the new primary's %d", port, err, standby.Config().Port)
	}
}

// TestDeposedConnNotReused: the leader record moves away from a primary
// that keeps running and accepting writes (its manager froze, say). The
// *sql.DB's connections to it, idle (SetMaxIdleConns) or pinned (db.Conn),
// report IsValid false and ResetSession ErrBadConn, so database/sql never
// reuses them; a statement on the pinned one fails with an error matching
// driver.ErrFailover and driver.ErrBadConn; and no write reaches the old
// primary once the pool switched.
func TestDeposedConnNotReused(t *testing.T) {
	primary, standby := pair(t, "sd", false)
	etcd := testutil.StartEtcd(t, 1)
	ctx := testutil.Ctx(t, 2*time.Minute)
	term1 := campaign(t, ctx, etcd.Endpoints(), "sd", "sd1", primary, true)
	pool := newPool(t, connString("pgha_cluster=sd&pgha_failover_timeout=20s&pgha_etcd="+etcd.Endpoints()[0]))
	db := stdlib.OpenDBFromPool(pool)
	db.SetMaxIdleConns(4)
	closeDB(t, db)

	pinned, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer pinned.Close()
	if _, err := pinned.ExecContext(ctx, "insert into w values (1)"); err != nil {
		t.Fatal(err)
	}
	// Idle connections kept by the *sql.DB.
	var held []*sql.Conn
	for range 3 {
		c, err := db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	for _, c := range held {
		c.Close()
	}
	if idle := db.Stats().Idle; idle != 3 {
		t.Fatalf("%d idle connections in the *sql.DB, want 3", idle)
	}
	validity := func(c *sql.Conn) (valid bool, reset error) {
		t.Helper()
		err := c.Raw(func(dc any) error {
			valid = dc.(sqldriver.Validator).IsValid()
			reset = dc.(sqldriver.SessionResetter).ResetSession(ctx)
			return nil
		})
		if err != nil {
			t.Fatalf("Raw: %v", err)
		}
		return valid, reset
	}
	if valid, reset := validity(pinned); !valid || reset != nil {
		t.Fatalf("before the switch: IsValid %v, ResetSession %v; want true, nil", valid, reset)
	}

	promote(t, ctx, etcd.Endpoints(), "sd", term1, "sd2", standby)
	testutil.Eventually(t, 10*time.Second, "pool switched to sd2", func() error {
		var port int
		if err := pool.QueryRow(ctx, "select inet_server_port()").Scan(&port); err != nil {
			return err
		}
		if port != standby.Config().Port {
			return fmt.Errorf("pool writes to port %d", port)
		}
		return nil
	})
	if valid, reset := validity(pinned); valid || !errors.Is(reset, sqldriver.ErrBadConn) {
		t.Errorf("after the switch: IsValid %v, ResetSession %v; want false, driver.ErrBadConn", valid, reset)
	}
	_, err = pinned.ExecContext(ctx, "insert into w values (2)")
	if !errors.Is(err, driver.ErrFailover) || !errors.Is(err, sqldriver.ErrBadConn) {
		t.Errorf("statement on a pinned connection to the deposed primary: %v; want driver.ErrFailover and driver.ErrBadConn", err)
	}
	for i := 3; i < 23; i++ {
		var port int
		if err := db.QueryRowContext(ctx, "insert into w values ($1) returning inet_server_port()", i).Scan(&port); err != nil {
			t.Fatalf("write %d after the switch: %v", i, err)
		}
		if port != standby.Config().Port {
			t.Fatalf("write %d after the switch went to port %d, want the new primary's %d", i, port, standby.Config().Port)
		}
	}
	if n, err := testutil.PostgresQueryInt(ctx, primary, "select count(*) from w"); err != nil || n != 1 {
		t.Errorf("old primary has %d rows (err %v), want only the one written before the switch", n, err)
	}
	if n, err := testutil.PostgresQueryInt(ctx, standby, "select count(*) from w where v >= 3"); err != nil || n != 20 {
		t.Errorf("new primary has %d of the 20 writes after the switch (err %v)", n, err)
	}
}
