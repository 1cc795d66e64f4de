package driver_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgha/pgha/driver"
	"github.com/pgha/pgha/internal/testutil"
	"github.com/pgha/pgha/replicate"
)

// pair starts a primary and a streaming standby, with synchronous
// replication to the standby so that no acknowledged commit can be lost when
// the primary is killed, and a table w(v int primary key).
func pair(t *testing.T, prefix string) (primary, standby *replicate.Instance) {
	t.Helper()
	return pairMode(t, prefix, true)
}

// pairMode is pair with synchronous replication (sync) or without.
func pairMode(t *testing.T, prefix string, sync bool) (primary, standby *replicate.Instance) {
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
	// Take the exit channel first: once the postmaster is gone, Exited
	// returns nil (and a nil channel blocks forever).
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

// writer inserts 1, 2, 3, ... through the pool until stopped, and checks
// every few writes that the write path's connection is to a server out of
// recovery.
type writer struct {
	mu       sync.Mutex
	acked    []int
	unknown  []int
	typed    map[string]int // typed errors seen, by kind
	bad      []error        // untyped errors or invariant violations
	stop     chan struct{}
	done     chan struct{}
	next     int
	lastAckd time.Time
}

func startWriter(ctx context.Context, p *driver.Pool) *writer {
	w := &writer{typed: map[string]int{}, stop: make(chan struct{}), done: make(chan struct{})}
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
			_, err := p.Exec(octx, "insert into w(v) values ($1)", i)
			if i%10 == 0 && err == nil {
				var inRecovery bool
				cerr := p.AcquireFunc(octx, func(c *pgxpool.Conn) error {
					return c.QueryRow(octx, "select pg_is_in_recovery()").Scan(&inRecovery)
				})
				if cerr == nil && inRecovery {
					w.mu.Lock()
					w.bad = append(w.bad, fmt.Errorf("write %d: the write path's connection is to a server in recovery", i))
					w.mu.Unlock()
				}
			}
			cancel()
			w.mu.Lock()
			switch {
			case err == nil:
				w.acked = append(w.acked, i)
				w.lastAckd = time.Now()
			case errors.Is(err, driver.ErrOutcomeUnknown):
				w.unknown = append(w.unknown, i)
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

func (w *writer) ackedCount() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.acked)
}

func (w *writer) halt() {
	close(w.stop)
	<-w.done
}

// check stops the writer and verifies that every acknowledged write is on
// the server reached through check.
func (w *writer) check(t *testing.T, server *replicate.Instance) {
	t.Helper()
	w.halt()
	for _, err := range w.bad {
		t.Error(err)
	}
	ctx := testutil.Ctx(t, 30*time.Second)
	conn, err := server.Connect(ctx)
	if err != nil {
		t.Fatalf("connect to %s: %v", server.Config().Name, err)
	}
	defer conn.Close(context.Background())
	present := map[int]bool{}
	rows, err := conn.Query(ctx, "select v from w")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var v int
		rows.Scan(&v)
		present[v] = true
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	lost := 0
	for _, v := range w.acked {
		if !present[v] {
			lost++
		}
	}
	if lost > 0 {
		t.Errorf("%d of %d acknowledged writes are missing on %s", lost, len(w.acked), server.Config().Name)
	}
	t.Logf("writer: %d acknowledged, %d with unknown outcome, typed errors %v", len(w.acked), len(w.unknown), w.typed)
}

// churn runs transactions and single-row queries through the pool from
// several goroutines, and records every error that is not one of the
// pool's typed errors (or a plain statement error it must pass through).
type churn struct {
	stop chan struct{}
	wg   sync.WaitGroup
	mu   sync.Mutex
	ok   int
	bad  []error
}

func startChurn(ctx context.Context, p *driver.Pool, goroutines int) *churn {
	c := &churn{stop: make(chan struct{})}
	typed := func(err error) bool {
		return err == nil || errors.Is(err, driver.ErrFailover) || errors.Is(err, driver.ErrOutcomeUnknown) || errors.Is(err, driver.ErrNoPrimary)
	}
	for g := range goroutines {
		c.wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-c.stop:
					return
				default:
				}
				octx, cancel := context.WithTimeout(ctx, 20*time.Second)
				var err error
				switch i % 3 {
				case 0:
					var tx pgx.Tx
					if tx, err = p.Begin(octx); err == nil {
						if _, err = tx.Exec(octx, "select $1::int", g); err == nil {
							err = tx.Commit(octx)
						} else {
							tx.Rollback(octx)
						}
					}
				case 1:
					var n int
					err = p.QueryRow(octx, "select $1::int + 1", i).Scan(&n)
				case 2:
					var inRecovery bool
					err = p.QueryRow(octx, "select pg_is_in_recovery()").Scan(&inRecovery)
					if err == nil && inRecovery {
						err = errors.New("a query through the pool's write path ran on a server in recovery")
						c.mu.Lock()
						c.bad = append(c.bad, err)
						c.mu.Unlock()
						err = nil
					}
				}
				cancel()
				c.mu.Lock()
				if !typed(err) {
					c.bad = append(c.bad, err)
				} else if err == nil {
					c.ok++
				}
				c.mu.Unlock()
			}
		})
	}
	return c
}

func (c *churn) check(t *testing.T) {
	t.Helper()
	close(c.stop)
	c.wg.Wait()
	for _, err := range c.bad {
		t.Errorf("churn: %v", err)
	}
	if c.ok == 0 {
		t.Errorf("churn: no operation succeeded")
	}
}

func waitAcked(t *testing.T, w *writer, n int, what string) {
	t.Helper()
	testutil.Eventually(t, 30*time.Second, what, func() error {
		if got := w.ackedCount(); got < n {
			return fmt.Errorf("%d writes acknowledged, want %d", got, n)
		}
		return nil
	})
}

// TestHostListFailover: a writer keeps writing while the primary is killed
// and the standby is promoted by hand; the pool finds the new primary by
// probing the host list, without being recreated.
func TestHostListFailover(t *testing.T) {
	primary, standby := pair(t, "hl")
	cfg := parse(t, connString("pgha_probe_interval=100ms&pgha_failover_timeout=20s", primary, standby))
	p := newPool(t, cfg)
	ctx := testutil.Ctx(t, 2*time.Minute)
	w := startWriter(ctx, p)
	c := startChurn(ctx, p, 3)
	waitAcked(t, w, 50, "writes before the failover")

	kill(t, primary)
	before := w.ackedCount()
	if _, err := standby.Promote(ctx); err != nil {
		t.Fatalf("promote: %v", err)
	}
	waitAcked(t, w, before+50, "writes after the promotion")
	c.check(t)
	w.check(t, standby)

	var port int
	if err := p.QueryRow(ctx, "select inet_server_port()").Scan(&port); err != nil || port != standby.Config().Port {
		t.Errorf("pool writes to port %d (err %v), want the new primary's %d", port, err, standby.Config().Port)
	}
}

// TestEtcdFailover: as TestHostListFailover, with the pool following the
// leader record in etcd, moved the way the HA manager moves it: the old
// leader's term ends, the standby campaigns with Writable=false, promotes,
// then proclaims Writable=true.
func TestEtcdFailover(t *testing.T) {
	primary, standby := pair(t, "ef")
	etcd := testutil.StartEtcd(t, 1)
	ctx := testutil.Ctx(t, 2*time.Minute)
	term1, err := campaignT(ctx, etcd.Endpoints(), "ef", "ef1", primary, true)
	if err != nil {
		t.Fatal(err)
	}
	defer term1.Close()

	cfg := parse(t, connString("pgha_cluster=ef&pgha_failover_timeout=20s&pgha_etcd="+etcd.Endpoints()[0]))
	p := newPool(t, cfg)
	w := startWriter(ctx, p)
	c := startChurn(ctx, p, 3)
	waitAcked(t, w, 50, "writes before the failover")

	kill(t, primary)
	if err := term1.Resign(ctx); err != nil {
		t.Fatalf("resign: %v", err)
	}
	term2, err := campaignT(ctx, etcd.Endpoints(), "ef", "ef2", standby, false)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { term2.Resign(context.Background()); term2.Close() }()
	before := w.ackedCount()
	if _, err := standby.Promote(ctx); err != nil {
		t.Fatalf("promote: %v", err)
	}
	if err := term2.Proclaim(ctx, leaderRecord("ef2", standby, true)); err != nil {
		t.Fatalf("proclaim: %v", err)
	}
	waitAcked(t, w, before+50, "writes after the promotion")
	c.check(t)
	w.check(t, standby)
}

// TestEtcdUnreachable: with etcd cut off from the pool, it keeps writing to
// the last known primary while that stays writable, and stops once the
// primary is fenced (here: made read-only, as a fenced primary refuses
// writes).
func TestEtcdUnreachable(t *testing.T) {
	primary := testutil.StartPostgres(t, testutil.PostgresOptions{Name: "eu1"})
	ctx := testutil.Ctx(t, 2*time.Minute)
	if err := testutil.PostgresExec(ctx, primary, "create table w(v int primary key)"); err != nil {
		t.Fatal(err)
	}
	etcd := testutil.StartEtcd(t, 1)
	term, err := campaignT(ctx, etcd.Endpoints(), "eu", "eu1", primary, true)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { term.Resign(context.Background()); term.Close() }()
	proxy := testutil.StartProxy(t, "etcd", etcd.Members()[0].ClientURL[len("http://"):])

	cfg := parse(t, connString("pgha_failover_timeout=1s", primary))
	cfg.Hosts = nil
	cfg.Etcd = testutil.NewEtcdClient(t, proxy.URL())
	cfg.Cluster = "eu"
	p := newPool(t, cfg)
	if _, err := p.Exec(ctx, "insert into w values (0)"); err != nil {
		t.Fatalf("first write: %v", err)
	}
	probes := func(what string, open func(int32) bool) {
		t.Helper()
		testutil.Eventually(t, 15*time.Second, what, func() error {
			if st := p.ProbeStat(); !open(st.OpenConns) {
				return fmt.Errorf("ProbeStat %+v (%s)", st, p.DebugState())
			}
			return nil
		})
	}
	probes("no probe connection while etcd answers", func(n int32) bool { return n == 0 })

	proxy.Blackhole()
	defer proxy.Pass()
	for i := 1; i <= 30; i++ {
		if _, err := p.Exec(ctx, "insert into w values ($1)", i); err != nil {
			t.Fatalf("write %d with etcd unreachable: %v; want the last known primary to keep serving", i, err)
		}
	}
	// The member watch goes silent: the pool probes the node itself.
	probes("the node probed while etcd does not answer", func(n int32) bool { return n == 1 })

	// Fence: the primary stops accepting writes.
	if err := testutil.PostgresExec(ctx, primary, "alter system set default_transaction_read_only = on"); err != nil {
		t.Fatal(err)
	}
	if err := testutil.PostgresExec(ctx, primary, "select pg_reload_conf()"); err != nil {
		t.Fatal(err)
	}
	i := 100
	testutil.Eventually(t, 10*time.Second, "writes fail once the primary is fenced", func() error {
		i++
		_, err := p.Exec(ctx, "insert into w values ($1)", i)
		if err == nil {
			return errors.New("write succeeded")
		}
		if !errors.Is(err, driver.ErrNoPrimary) {
			t.Fatalf("write to a fenced primary: %v; want ErrNoPrimary", err)
		}
		return nil
	})
	count := func() int64 {
		n, err := testutil.PostgresQueryInt(ctx, primary, "select count(*) from w")
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	before := count()
	for j := 0; j < 3; j++ {
		i++
		if _, err := p.Exec(ctx, "insert into w values ($1)", i); !errors.Is(err, driver.ErrNoPrimary) {
			t.Errorf("write after fencing: %v; want ErrNoPrimary", err)
		}
	}
	if after := count(); after != before {
		t.Errorf("rows went from %d to %d after the primary was fenced", before, after)
	}

	// The node accepts writes again (its manager, still leader, unfenced
	// it): the pool, still cut off from etcd, goes back to it.
	for _, sql := range []string{"alter system reset default_transaction_read_only", "select pg_reload_conf()"} {
		if err := testutil.PostgresExec(ctx, primary, sql); err != nil {
			t.Fatal(err)
		}
	}
	testutil.Eventually(t, 10*time.Second, "writes resume once the last known primary is writable again", func() error {
		i++
		_, err := p.Exec(ctx, "insert into w values ($1)", i)
		return err
	})

	// Fenced for good: the server stops. Writes fail with typed errors,
	// within FailoverTimeout, and do not hang.
	if err := primary.Fence(ctx); err != nil {
		t.Fatal(err)
	}
	for j := 0; j < 3; j++ {
		i++
		start := time.Now()
		_, err := p.Exec(ctx, "insert into w values ($1)", i)
		if !errors.Is(err, driver.ErrNoPrimary) && !errors.Is(err, driver.ErrOutcomeUnknown) {
			t.Errorf("write after the primary stopped: %v; want ErrNoPrimary or ErrOutcomeUnknown", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("write after the primary stopped took %v; FailoverTimeout is 1s", d)
		}
	}
}

// TestTransactionErrors: a transaction whose connection is lost fails with
// ErrFailover (statement and commit); the pgx error stays reachable.
func TestTransactionErrors(t *testing.T) {
	primary := testutil.StartPostgres(t, testutil.PostgresOptions{Name: "te1"})
	ctx := testutil.Ctx(t, time.Minute)
	if err := testutil.PostgresExec(ctx, primary, "create table w(v int primary key)"); err != nil {
		t.Fatal(err)
	}
	p := newPool(t, parse(t, connString("pgha_failover_timeout=5s", primary)))

	tx, err := p.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "insert into w values (1)"); err != nil {
		t.Fatal(err)
	}
	pid := tx.Conn().PgConn().PID()
	if err := testutil.PostgresExec(ctx, primary, "select pg_terminate_backend($1)", pid); err != nil {
		t.Fatal(err)
	}
	_, err = tx.Exec(ctx, "insert into w values (2)")
	if !errors.Is(err, driver.ErrFailover) {
		t.Fatalf("statement in a transaction whose backend was terminated: %v; want ErrFailover", err)
	}
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "57P01" {
		t.Errorf("ErrFailover does not wrap the server's 57P01 error: %v", err)
	}
	if err := tx.Commit(ctx); !errors.Is(err, driver.ErrFailover) {
		t.Errorf("commit of a broken transaction: %v; want ErrFailover", err)
	}
	// The pool recovers at once: the node is still the primary.
	if _, err := p.Exec(ctx, "insert into w values (3)"); err != nil {
		t.Errorf("write after a broken transaction: %v", err)
	}
}

// TestCommitOutcomeUnknown: the server ends the session while it runs the
// COMMIT (here in a deferred trigger): ErrOutcomeUnknown, wrapping the
// server's error, and not ErrFailover.
func TestCommitOutcomeUnknown(t *testing.T) {
	primary := testutil.StartPostgres(t, testutil.PostgresOptions{Name: "cu1"})
	ctx := testutil.Ctx(t, time.Minute)
	slowCommits(t, ctx, primary)
	p := newPool(t, parse(t, connString("pgha_failover_timeout=2s", primary)))
	err := terminatedCommit(t, ctx, p, primary, ctx)
	if !errors.Is(err, driver.ErrOutcomeUnknown) {
		t.Fatalf("commit whose session was ended while committing: %v; want ErrOutcomeUnknown", err)
	}
	if errors.Is(err, driver.ErrFailover) {
		t.Errorf("commit error matches both ErrOutcomeUnknown and ErrFailover: %v", err)
	}
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "57P01" {
		t.Errorf("ErrOutcomeUnknown does not wrap the server's 57P01 error: %v", err)
	}
}

// TestIdempotentRetry: a statement outside a transaction whose connection
// was lost after sending fails with ErrOutcomeUnknown; marked idempotent it
// is retried and succeeds.
func TestIdempotentRetry(t *testing.T) {
	primary := testutil.StartPostgres(t, testutil.PostgresOptions{Name: "ir1"})
	ctx := testutil.Ctx(t, time.Minute)
	p := newPool(t, parse(t, connString("pool_max_conns=1&pgha_failover_timeout=5s", primary)))

	terminate := func() {
		var pid int
		if err := p.QueryRow(ctx, "select pg_backend_pid()").Scan(&pid); err != nil {
			t.Fatal(err)
		}
		if err := testutil.PostgresExec(ctx, primary, "select pg_terminate_backend($1)", pid); err != nil {
			t.Fatal(err)
		}
		// Wait for the backend to be gone so the pool's connection is dead.
		testutil.Eventually(t, 5*time.Second, "backend gone", func() error {
			n, err := testutil.PostgresQueryInt(ctx, primary, "select count(*) from pg_stat_activity where pid = $1", pid)
			if err == nil && n > 0 {
				err = errors.New("still there")
			}
			return err
		})
	}

	terminate()
	_, err := p.Exec(ctx, "select 1")
	if err != nil && !errors.Is(err, driver.ErrOutcomeUnknown) {
		t.Errorf("statement on a terminated connection: %v; want success (nothing sent) or ErrOutcomeUnknown", err)
	}
	terminate()
	if _, err := p.Exec(driver.WithIdempotent(ctx), "select 1"); err != nil {
		t.Errorf("idempotent statement on a terminated connection: %v; want it retried", err)
	}
}

// TestCallerCancel: a caller's cancelled context is returned as is and does
// not make the pool drop its primary.
func TestCallerCancel(t *testing.T) {
	primary := testutil.StartPostgres(t, testutil.PostgresOptions{Name: "cc1"})
	ctx := testutil.Ctx(t, time.Minute)
	p := newPool(t, parse(t, connString("pgha_failover_timeout=5s", primary)))
	if err := p.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	_, err := p.Exec(sctx, "select pg_sleep(10)")
	var de *driver.Error
	if !errors.Is(err, context.DeadlineExceeded) && !pgconn.Timeout(err) || errors.As(err, &de) {
		t.Fatalf("cancelled statement: %v; want the context's error, not a driver.Error", err)
	}
	// Still the primary: the next statement needs no wait.
	qctx, qcancel := context.WithTimeout(ctx, 2*time.Second)
	defer qcancel()
	if _, err := p.Exec(qctx, "select 1"); err != nil {
		t.Errorf("statement after a caller's cancel: %v", err)
	}
	if p.Stat().TotalConns() == 0 {
		t.Errorf("pool has no primary connections after a caller's cancel")
	}
}

// TestSwitchAwayFromLivePrimary: the leader record moves to a promoted
// standby while the old primary keeps running and accepting writes (its
// manager froze, say). Once the pool has seen the new record it sends no
// more writes to the old primary, and a connection that was in use during
// the switch is closed when released.
func TestSwitchAwayFromLivePrimary(t *testing.T) {
	primary, standby := pair(t, "sw")
	ctx := testutil.Ctx(t, 2*time.Minute)
	// Asynchronous, so the old primary keeps committing on its own.
	if _, err := primary.SetSynchronousStandbys(ctx, replicate.SyncSpec{}); err != nil {
		t.Fatal(err)
	}
	etcd := testutil.StartEtcd(t, 1)
	term1, err := campaignT(ctx, etcd.Endpoints(), "sw", "sw1", primary, true)
	if err != nil {
		t.Fatal(err)
	}
	defer term1.Close()
	p := newPool(t, parse(t, connString("application_name=swapp&pgha_cluster=sw&pgha_failover_timeout=20s&pgha_etcd="+etcd.Endpoints()[0])))
	held, err := p.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	w := startWriter(ctx, p)
	waitAcked(t, w, 30, "writes before the switch")

	if err := term1.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	term2, err := campaignT(ctx, etcd.Endpoints(), "sw", "sw2", standby, false)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { term2.Resign(context.Background()); term2.Close() }()
	if _, err := standby.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	if err := term2.Proclaim(ctx, leaderRecord("sw2", standby, true)); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "pool switched to sw2", func() error {
		if st := p.DebugState(); !strings.HasPrefix(st, "primary=sw2") {
			return errors.New(st)
		}
		return nil
	})
	onOld := func() int64 {
		n, err := testutil.PostgresQueryInt(ctx, primary, "select count(*) from w")
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	before := onOld()
	n := w.ackedCount()
	waitAcked(t, w, n+50, "writes after the switch")
	if after := onOld(); after != before {
		t.Errorf("the old primary got %d more rows after the pool switched away from it", after-before)
	}
	// Replication was asynchronous: writes acknowledged by the old primary
	// just before the switch may be missing on the new one. Every write
	// acknowledged after the switch must be there.
	w.halt()
	for _, err := range w.bad {
		t.Error(err)
	}
	w.mu.Lock()
	after := append([]int(nil), w.acked[n:]...)
	w.mu.Unlock()
	for _, v := range after {
		if c, err := testutil.PostgresQueryInt(ctx, standby, "select count(*) from w where v = $1", v); err != nil || c != 1 {
			t.Errorf("write %d acknowledged after the switch: %d rows on the new primary (err %v)", v, c, err)
		}
	}

	held.Release()
	testutil.Eventually(t, 10*time.Second, "no application session left on the old primary", func() error {
		n, err := testutil.PostgresQueryInt(ctx, primary, "select count(*) from pg_stat_activity where application_name = 'swapp'")
		if err == nil && n > 0 {
			err = fmt.Errorf("%d sessions", n)
		}
		return err
	})
}
