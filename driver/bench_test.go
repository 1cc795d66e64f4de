package driver_test

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgha/pgha/driver"
	"github.com/pgha/pgha/election"
	"github.com/pgha/pgha/internal/keyspace"
	"github.com/pgha/pgha/internal/testutil"
)

// BenchmarkQuery runs the same statements through pgxpool.Pool and
// driver.Pool (etcd mode) on the same server, side by side:
//
//	simple:   Exec("select 1") with the simple protocol
//	prepared: QueryRow("select $1::int + 1", i).Scan (cached prepared statement)
//	tx:       Begin; Exec("select 1"); Commit
func BenchmarkQuery(b *testing.B) {
	if shared == nil {
		b.Skip("no shared cluster")
	}
	ctx := context.Background()
	raw, ours := benchPools(b)
	for _, tc := range []struct {
		name string
		run  func(b *testing.B, exec func(context.Context, string, ...any) error, row func(context.Context, string, ...any) pgx.Row, begin func(context.Context) (pgx.Tx, error))
	}{
		{"simple", func(b *testing.B, exec func(context.Context, string, ...any) error, _ func(context.Context, string, ...any) pgx.Row, _ func(context.Context) (pgx.Tx, error)) {
			for b.Loop() {
				if err := exec(ctx, "select 1", pgx.QueryExecModeSimpleProtocol); err != nil {
					b.Fatal(err)
				}
			}
		}},
		{"prepared", func(b *testing.B, _ func(context.Context, string, ...any) error, row func(context.Context, string, ...any) pgx.Row, _ func(context.Context) (pgx.Tx, error)) {
			var n, i int
			for b.Loop() {
				i++
				if err := row(ctx, "select $1::int + 1", i).Scan(&n); err != nil {
					b.Fatal(err)
				}
			}
		}},
		{"tx", func(b *testing.B, _ func(context.Context, string, ...any) error, _ func(context.Context, string, ...any) pgx.Row, begin func(context.Context) (pgx.Tx, error)) {
			for b.Loop() {
				tx, err := begin(ctx)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := tx.Exec(ctx, "select 1"); err != nil {
					b.Fatal(err)
				}
				if err := tx.Commit(ctx); err != nil {
					b.Fatal(err)
				}
			}
		}},
	} {
		b.Run(tc.name+"/pgxpool", func(b *testing.B) {
			b.ReportAllocs()
			tc.run(b, func(ctx context.Context, s string, a ...any) error { _, err := raw.Exec(ctx, s, a...); return err }, raw.QueryRow, raw.Begin)
		})
		b.Run(tc.name+"/driver", func(b *testing.B) {
			b.ReportAllocs()
			tc.run(b, func(ctx context.Context, s string, a ...any) error { _, err := ours.Exec(ctx, s, a...); return err }, ours.QueryRow, ours.Begin)
		})
	}
}

// BenchmarkQueryPaired runs each operation through pgxpool.Pool and
// driver.Pool alternately in the same loop (the order flips every
// iteration), timing each call, so that load from other processes on the
// machine hits both alike. It reports the median time of a call through
// each (pgxpool-ns/op, driver-ns/op) and driver-overhead-% (their ratio,
// minus 100); medians, so that a stall of the machine does not decide the
// result. Use BenchmarkQuery for allocations.
func BenchmarkQueryPaired(b *testing.B) {
	if shared == nil {
		b.Skip("no shared cluster")
	}
	ctx := context.Background()
	raw, ours := benchPools(b)
	ops := []struct {
		name string
		op   func(p poolAPI, i int) error
	}{
		{"simple", func(p poolAPI, _ int) error {
			_, err := p.Exec(ctx, "select 1", pgx.QueryExecModeSimpleProtocol)
			return err
		}},
		{"prepared", func(p poolAPI, i int) error {
			var n int
			return p.QueryRow(ctx, "select $1::int + 1", i).Scan(&n)
		}},
		{"tx", func(p poolAPI, _ int) error {
			tx, err := p.Begin(ctx)
			if err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, "select 1"); err != nil {
				return err
			}
			return tx.Commit(ctx)
		}},
	}
	for _, o := range ops {
		b.Run(o.name, func(b *testing.B) {
			mr, mo := pairedMedians(b,
				func(i int) error { return o.op(raw, i) },
				func(i int) error { return o.op(ours, i) })
			b.ReportMetric(mr, "pgxpool-ns/op")
			b.ReportMetric(mo, "driver-ns/op")
			b.ReportMetric(100*mo/mr-100, "driver-overhead-%")
		})
	}
}

// pairedMedians runs x and y once per benchmark iteration, in alternating
// order so that a stall of the machine hits both alike, and returns the
// median time of each call, in ns.
func pairedMedians(b *testing.B, x, y func(i int) error) (mx, my float64) {
	var tx, ty []float64
	i := 0
	for b.Loop() {
		i++
		fs := [2]func(int) error{x, y}
		ts := [2]*[]float64{&tx, &ty}
		if i%2 == 1 {
			fs[0], fs[1] = y, x
			ts[0], ts[1] = &ty, &tx
		}
		for k, f := range fs {
			start := time.Now()
			if err := f(i); err != nil {
				b.Fatal(err)
			}
			*ts[k] = append(*ts[k], float64(time.Since(start).Nanoseconds()))
		}
	}
	return median(tx), median(ty)
}

// benchPools returns a pgxpool.Pool and a driver.Pool (etcd mode) on the
// shared primary, both warmed up, closed at the end of the benchmark.
func benchPools(b *testing.B) (*pgxpool.Pool, *driver.Pool) {
	b.Helper()
	ctx := context.Background()
	raw, err := pgxpool.New(ctx, connString("", shared.primary))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(raw.Close)
	cfg, err := driver.ParseConfig(exampleEtcdConnString())
	if err != nil {
		b.Fatal(err)
	}
	cfg.Logger = discardLogger
	ours, err := driver.NewWithConfig(ctx, cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(ours.Close)
	if err := ours.Ping(ctx); err != nil {
		b.Fatal(err)
	}
	if err := raw.Ping(ctx); err != nil {
		b.Fatal(err)
	}
	return raw, ours
}

// BenchmarkFailoverWrite measures, on one failover, the time from the
// promotion of the standby (and, for driver.Pool, the new leader record
// appearing in etcd right after it) to the first successful write through
// driver.Pool (etcd mode) and through pgxpool with pgx's multi-host string
// and target_session_attrs=read-write. Both write in a loop throughout.
// Each iteration builds a fresh primary/standby pair (so ns/op is the
// whole cycle, a few seconds: use -benchtime 5x or 10x). Reported: the
// median over iterations of each time, in ms.
func BenchmarkFailoverWrite(b *testing.B) {
	if shared == nil {
		b.Skip("no shared cluster")
	}
	var ours, fromRecord, theirs []float64
	i := 0
	for b.Loop() {
		i++
		r := failoverOnce(b, fmt.Sprintf("fb%d", i))
		ours = append(ours, r.driver)
		fromRecord = append(fromRecord, r.driverFromRecord)
		theirs = append(theirs, r.pgx)
	}
	b.ReportMetric(median(ours), "driver-ms")
	b.ReportMetric(median(fromRecord), "driver-after-record-ms")
	b.ReportMetric(median(theirs), "pgx-multihost-ms")
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	return s[len(s)/2]
}

// failoverTimes are one failover's times to the first successful write,
// in ms: from the end of the promotion (driver, pgx) and from the moment
// an etcd watcher sees the new leader record (driverFromRecord).
type failoverTimes struct{ driver, driverFromRecord, pgx float64 }

func failoverOnce(b *testing.B, name string) failoverTimes {
	primary := testutil.StartPostgres(b, testutil.PostgresOptions{Name: name + "a"})
	standby := testutil.StartPostgres(b, testutil.PostgresOptions{Name: name + "b", CloneFrom: primary})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := standby.WaitStreaming(ctx); err != nil {
		b.Fatal(err)
	}
	if err := testutil.PostgresExec(ctx, primary, "create table f(v int)"); err != nil {
		b.Fatal(err)
	}
	// Replication is asynchronous: make sure the table reached the standby.
	if err := testutil.Poll(30*time.Second, func() error {
		n, err := testutil.PostgresQueryInt(ctx, standby, "select count(*) from pg_class where relname = 'f'")
		if err == nil && n == 0 {
			err = fmt.Errorf("table f not replayed on the standby yet")
		}
		return err
	}); err != nil {
		b.Fatal(err)
	}
	cluster := "c" + name
	eps := shared.etcd.Endpoints()
	term1, err := campaignT(ctx, eps, cluster, name+"a", primary, true)
	if err != nil {
		b.Fatal(err)
	}
	defer term1.Close()

	cfg, err := driver.ParseConfig(connString("pgha_failover_timeout=30s&pgha_cluster=" + cluster + "&pgha_etcd=" + eps[0]))
	if err != nil {
		b.Fatal(err)
	}
	cfg.Logger = discardLogger
	ours, err := driver.NewWithConfig(ctx, cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer ours.Close()
	theirs, err := pgxpool.New(ctx, connString("target_session_attrs=read-write&connect_timeout=1", primary, standby))
	if err != nil {
		b.Fatal(err)
	}
	defer theirs.Close()

	// Writers: each records the time of its first success after armed.
	var armed atomic.Bool
	var oursAt, theirsAt atomic.Int64
	wctx, wcancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	write := func(exec func(context.Context, string) error, at *atomic.Int64) {
		defer wg.Done()
		for wctx.Err() == nil {
			octx, ocancel := context.WithTimeout(wctx, 2*time.Second)
			err := exec(octx, "insert into f values (1)")
			ocancel()
			if err == nil && armed.Load() && at.Load() == 0 {
				at.Store(time.Now().UnixNano())
			}
		}
	}
	wg.Add(2)
	go write(func(ctx context.Context, s string) error { _, err := ours.Exec(ctx, s); return err }, &oursAt)
	go write(func(ctx context.Context, s string) error { _, err := theirs.Exec(ctx, s); return err }, &theirsAt)
	defer func() { wcancel(); wg.Wait() }()
	if err := testutil.Poll(10*time.Second, func() error {
		if err := ours.Ping(ctx); err != nil {
			return err
		}
		return theirs.Ping(ctx)
	}); err != nil {
		b.Fatal(err)
	}

	// Failover: the primary dies with its manager (its term ends), the
	// standby is promoted, then its leader record appears.
	// A watcher timestamps the new leader record's arrival, as any client
	// following etcd would see it.
	var recordAt atomic.Int64
	layout, _ := keyspace.NewLayout("", cluster)
	obsCli, err := clientv3New(eps)
	if err != nil {
		b.Fatal(err)
	}
	defer obsCli.Close()
	el, err := election.New(election.Config{Client: obsCli, Prefix: layout.Leader(), Logger: discardLogger})
	if err != nil {
		b.Fatal(err)
	}
	octx, ocancel := context.WithCancel(ctx)
	obs := el.Observe(octx)
	defer ocancel()
	wg.Add(1)
	go func() {
		defer wg.Done()
		for l := range obs {
			if rec, err := keyspace.Decode[keyspace.LeaderRecord](l.Value); err == nil && rec.Node == name+"b" && recordAt.Load() == 0 {
				recordAt.Store(time.Now().UnixNano())
			}
		}
	}()

	kill(b, primary)
	if err := term1.Resign(ctx); err != nil {
		b.Fatal(err)
	}
	if _, err := standby.Promote(ctx); err != nil {
		b.Fatal(err)
	}
	t0 := time.Now()
	armed.Store(true)
	term2, err := campaignT(ctx, eps, cluster, name+"b", standby, true)
	if err != nil {
		b.Fatal(err)
	}
	defer func() { term2.Resign(context.Background()); term2.Close() }()
	if err := testutil.Poll(30*time.Second, func() error {
		if oursAt.Load() == 0 || theirsAt.Load() == 0 || recordAt.Load() == 0 {
			return fmt.Errorf("first write after the failover: driver %v, pgx %v; record seen %v", oursAt.Load() != 0, theirsAt.Load() != 0, recordAt.Load() != 0)
		}
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	ms := func(at int64, from time.Time) float64 {
		return float64(time.Unix(0, at).Sub(from).Microseconds()) / 1000
	}
	return failoverTimes{
		driver:           ms(oursAt.Load(), t0),
		driverFromRecord: ms(oursAt.Load(), time.Unix(0, recordAt.Load())),
		pgx:              ms(theirsAt.Load(), t0),
	}
}

// BenchmarkResolveOverhead measures what outcome resolution costs a call
// that does not fail: on one driver.Pool (etcd mode, the shared primary),
// each iteration runs the operation with resolution off (the default) and
// on (WithResolveOutcome), in alternating order, and reports the median of
// each and the overhead in % (resolve-overhead-%). Operations: an
// autocommit insert (Exec with one argument) and a transaction (BEGIN,
// insert, COMMIT).
func BenchmarkResolveOverhead(b *testing.B) {
	if shared == nil {
		b.Skip("no shared cluster")
	}
	ctx := context.Background()
	_, p := benchPools(b)
	if _, err := p.Exec(ctx, "create table if not exists bench_resolve(v int)"); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { p.Exec(context.Background(), "drop table if exists bench_resolve") })
	ops := []struct {
		name string
		op   func(ctx context.Context, i int) error
	}{
		{"exec", func(ctx context.Context, i int) error {
			_, err := p.Exec(ctx, "insert into bench_resolve values ($1)", i)
			return err
		}},
		{"tx", func(ctx context.Context, i int) error {
			tx, err := p.Begin(ctx)
			if err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, "insert into bench_resolve values ($1)", i); err != nil {
				tx.Rollback(ctx)
				return err
			}
			return tx.Commit(ctx)
		}},
	}
	resolving := driver.WithResolveOutcome(ctx)
	for _, o := range ops {
		b.Run(o.name, func(b *testing.B) {
			mOff, mOn := pairedMedians(b,
				func(i int) error { return o.op(ctx, i) },
				func(i int) error { return o.op(resolving, i) })
			b.ReportMetric(mOff, "off-ns/op")
			b.ReportMetric(mOn, "resolve-ns/op")
			b.ReportMetric(100*mOn/mOff-100, "resolve-overhead-%")
		})
	}
}
