package driver_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgha/pgha/driver"
	"github.com/pgha/pgha/ha"
	"github.com/pgha/pgha/internal/keyspace"
	"github.com/pgha/pgha/internal/testutil"
)

// switchoverLoad is clients writing through one pool during switchovers:
// half autocommit INSERTs, half explicit transactions of two INSERTs
// (lasting at least txLen). It records every error, the longest
// operation and the acknowledged ids.
type switchoverLoad struct {
	next    atomic.Int64
	mu      sync.Mutex
	errs    []error
	longest time.Duration
	acked   []int64
	stop    context.CancelFunc
	wg      sync.WaitGroup
}

func startSwitchoverLoad(p *driver.Pool, clients int, txLen time.Duration) *switchoverLoad {
	ctx, cancel := context.WithCancel(context.Background())
	l := &switchoverLoad{stop: cancel}
	for i := range clients {
		l.wg.Go(func() {
			for ctx.Err() == nil {
				id := l.next.Add(1)
				start := time.Now()
				var err error
				if i%2 == 0 {
					_, err = p.Exec(ctx, "INSERT INTO sw VALUES ($1)", id)
				} else {
					err = pgxTx(ctx, p, id, txLen)
				}
				took := time.Since(start)
				if ctx.Err() != nil {
					return
				}
				l.mu.Lock()
				l.longest = max(l.longest, took)
				if err != nil {
					l.errs = append(l.errs, fmt.Errorf("id %d after %v: %w", id, took.Round(time.Millisecond), err))
				} else {
					l.acked = append(l.acked, id)
				}
				l.mu.Unlock()
			}
		})
	}
	return l
}

// pgxTx inserts id and -id in one explicit transaction lasting at least
// txLen.
func pgxTx(ctx context.Context, p *driver.Pool, id int64, txLen time.Duration) error {
	tx, err := p.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.Background())
	if _, err := tx.Exec(ctx, "INSERT INTO sw VALUES ($1)", id); err != nil {
		return err
	}
	if txLen > 0 {
		if _, err := tx.Exec(ctx, "SELECT pg_sleep($1)", txLen.Seconds()); err != nil {
			return err
		}
	}
	if _, err := tx.Exec(ctx, "INSERT INTO sw VALUES ($1)", -id); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

func (l *switchoverLoad) finish() (errs []error, longest time.Duration, acked []int64) {
	l.stop()
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.errs, l.longest, l.acked
}

// switchover hands over from the leader and waits until the new one is
// settled; it returns the new leader.
func (c *haCluster) switchover(t testing.TB) string {
	t.Helper()
	ctx := testutil.Ctx(t, time.Minute)
	old, err := c.settled(ctx)
	if err != nil {
		t.Fatal(err)
	}
	to, err := ha.Switchover(ctx, c.cli, c.name, "")
	if err != nil {
		t.Fatalf("switchover from %s: %v", old, err)
	}
	testutil.Eventually(t, time.Minute, "the cluster settled after the switchover", func() error {
		l, err := c.settled(ctx)
		if err == nil && l != to {
			err = fmt.Errorf("leader %s, want %s", l, to)
		}
		return err
	})
	return to
}

// checkAcked fails t unless every acknowledged id is on the leader.
func (c *haCluster) checkAcked(t testing.TB, leader string, acked []int64) {
	t.Helper()
	ctx := testutil.Ctx(t, 30*time.Second)
	n, err := testutil.PostgresQueryInt(ctx, c.insts[leader], "SELECT count(*) FROM sw WHERE id = ANY($1)", acked)
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(len(acked)) {
		t.Fatalf("%d of %d acknowledged ids on the new primary %s", n, len(acked), leader)
	}
}

// TestSwitchoverWithoutErrors: 32 clients (autocommit writes and explicit
// transactions of 300 ms) through one new pool see no error across two
// planned switchovers: the pool holds new work (and work queued for a
// connection, or waiting for a primary) when it sees the request, the
// leader waits for the open transactions before it stops, and the held
// work runs on the new primary. No acknowledged write is lost, and no
// operation waits longer than the drain time plus the switchover.
func TestSwitchoverWithoutErrors(t *testing.T) {
	c := startHACluster(t, "sw", 3, nil)
	ctx := testutil.Ctx(t, 3*time.Minute)
	lead, err := c.settled(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := testutil.PostgresExec(ctx, c.insts[lead], "CREATE TABLE sw (id bigint PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	p := newPool(t, parse(t, connString("pgha_cluster=sw&pgha_failover_timeout=20s&pgha_etcd="+c.etcd.Endpoints()[0])))
	// Transactions of 300 ms on the pool's 4 connections: most calls
	// queue for a connection when the switchover starts (a pool's very
	// first calls, still waiting for a primary: TestSwitchoverHold).
	l := startSwitchoverLoad(p, 32, 300*time.Millisecond)
	testutil.Eventually(t, 30*time.Second, "writes before the switchover", func() error {
		if l.next.Load() < 100 {
			return errors.New("fewer than 100 operations")
		}
		return nil
	})
	var leaders []string
	for range 2 {
		leaders = append(leaders, c.switchover(t))
		before := l.next.Load()
		testutil.Eventually(t, 30*time.Second, "writes after the switchover", func() error {
			if l.next.Load() < before+100 {
				return errors.New("fewer than 100 more operations")
			}
			return nil
		})
	}
	errs, longest, acked := l.finish()
	t.Logf("2 switchovers (%s → %s → %s) under 32 clients: %d operations acknowledged, %d errors, longest operation %v",
		lead, leaders[0], leaders[1], len(acked), len(errs), longest.Round(time.Millisecond))
	for _, err := range errs[:min(len(errs), 10)] {
		t.Errorf("client error: %v", err)
	}
	if bound := driver.DefaultSwitchoverDrain + 3*time.Second; longest > bound {
		t.Errorf("longest operation %v; want under the drain time plus the switchover, %v", longest, bound)
	}
	c.checkAcked(t, leaders[1], slices.DeleteFunc(acked, func(id int64) bool { return id < 0 }))
}

// BenchmarkSwitchover measures what clients see across planned
// switchovers: 32 clients through one pool, short transactions, and a
// mix where the explicit transactions last 1 s (longer than the drain
// time: those open at the bound are terminated, the rest finish). It
// reports the client-visible errors per switchover and the longest
// operation; compare with pgha_switchover_drain=off (PGHA_BENCH_DRAIN).
//
//	go test -run '^$' -bench Switchover -benchtime 3x ./driver/
func BenchmarkSwitchover(b *testing.B) {
	for _, tc := range []struct {
		name  string
		txLen time.Duration
	}{{"short", 0}, {"1s-transactions", time.Second}} {
		for _, drain := range []string{"2s", "off"} {
			b.Run(tc.name+"/drain="+drain, func(b *testing.B) {
				c := startHACluster(b, "swb", 3, nil)
				ctx := testutil.Ctx(b, 10*time.Minute)
				lead, err := c.settled(ctx)
				if err != nil {
					b.Fatal(err)
				}
				if err := testutil.PostgresExec(ctx, c.insts[lead], "CREATE TABLE sw (id bigint PRIMARY KEY)"); err != nil {
					b.Fatal(err)
				}
				cfg := parse(b, connString("pgha_cluster=swb&pgha_failover_timeout=20s&pgha_switchover_drain="+drain+"&pgha_etcd="+c.etcd.Endpoints()[0]))
				cfg.Logger = discardLogger
				p := newPool(b, cfg)
				l := startSwitchoverLoad(p, 32, tc.txLen)
				b.ResetTimer()
				for range b.N {
					c.switchover(b)
				}
				b.StopTimer()
				errs, longest, _ := l.finish()
				for _, err := range errs[:min(len(errs), 12)] {
					b.Logf("N=%d: client error: %v", b.N, err)
				}
				b.ReportMetric(float64(len(errs))/float64(b.N), "errors/switchover")
				b.ReportMetric(longest.Seconds()*1000, "longest-ms")
			})
		}
	}
}

// TestSwitchoverHold pins down what the pool holds while a planned
// switchover of its primary is requested (a hand-written request to a
// leader that never hands over, so the hold runs to its end): a call
// made while the pool waits for its first primary, and a call queued for
// the primary's only connection, both wait out the drain time instead of
// running on the old primary; a scheduled request (At set) holds nothing.
func TestSwitchoverHold(t *testing.T) {
	inst := testutil.StartPostgres(t, testutil.PostgresOptions{Name: "sh1"})
	etcd := testutil.StartEtcd(t, 1)
	ctx := testutil.Ctx(t, 2*time.Minute)
	term, err := campaignT(ctx, etcd.Endpoints(), "sh", "sh1", inst, true)
	if err != nil {
		t.Fatal(err)
	}
	defer term.Close()
	defer term.Resign(context.Background())
	cli := etcd.Client(t)
	layout, _ := keyspace.NewLayout("", "sh")
	request := func(at time.Time) {
		t.Helper()
		b, err := keyspace.Encode(keyspace.SwitchoverRecord{From: "sh1", To: "sh2", At: at})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cli.Put(ctx, layout.Switchover(), string(b)); err != nil {
			t.Fatal(err)
		}
	}
	const drain = 700 * time.Millisecond
	dsn := connString("pgha_cluster=sh&pgha_switchover_drain=700ms&pgha_etcd=" + etcd.Endpoints()[0])

	// 1. The request is there before the pool's first primary.
	request(time.Time{})
	start := time.Now()
	cfg := parse(t, dsn)
	cfg.MaxConns = 1
	p := newPool(t, cfg)
	if err := p.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < drain-50*time.Millisecond {
		t.Errorf("a pool's first call with a switchover requested ran after %v; want it held for the drain time (%v)", took, drain)
	}

	// 2. A call queued for the only connection when the request comes.
	if _, err := cli.Delete(ctx, layout.Switchover()); err != nil {
		t.Fatal(err)
	}
	pingsAtOnce(t, p, "calls run at once without a request")
	tx, err := p.Begin(ctx) // holds the only connection
	if err != nil {
		t.Fatal(err)
	}
	queued := make(chan time.Time, 1)
	go func() {
		p.Exec(ctx, "SELECT 1")
		queued <- time.Now()
	}()
	testutil.Eventually(t, 5*time.Second, "the call queued for the connection", func() error {
		if p.Stat().EmptyAcquireCount() == 0 {
			return errors.New("no acquire waiting")
		}
		return nil
	})
	requested := time.Now()
	request(time.Time{})
	time.AfterFunc(100*time.Millisecond, func() { tx.Commit(context.Background()) }) // the connection comes free well before the drain time
	if ran := (<-queued).Sub(requested); ran < drain-100*time.Millisecond {
		t.Errorf("a call queued for the connection ran %v after the request; want it held for the drain time (%v)", ran, drain)
	}

	// 3. A scheduled request holds nothing.
	request(time.Now().Add(time.Hour))
	pingsAtOnce(t, p, "a scheduled request holds nothing")
}

// pingsAtOnce waits until a Ping through p answers within 200 ms.
func pingsAtOnce(t *testing.T, p *driver.Pool, what string) {
	t.Helper()
	testutil.Eventually(t, 10*time.Second, what, func() error {
		s := time.Now()
		if err := p.Ping(testutil.Ctx(t, 5*time.Second)); err != nil {
			return err
		}
		if d := time.Since(s); d > 200*time.Millisecond {
			return fmt.Errorf("ping took %v", d)
		}
		return nil
	})
}
