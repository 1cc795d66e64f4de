package driver_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/pgha/pgha/internal/testutil"
)

// TestContract runs the same operations through pgxpool.Pool and
// driver.Pool against one server and expects the same results.
func TestContract(t *testing.T) {
	primary := testutil.StartPostgres(t, testutil.PostgresOptions{Name: "ct1"})
	ctx := testutil.Ctx(t, time.Minute)
	raw, err := pgxpool.New(ctx, connString("", primary))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(raw.Close)
	ours := newPool(t, parse(t, connString("", primary)))
	for _, tc := range []struct {
		name string
		p    poolAPI
	}{{"pgxpool", raw}, {"driver", ours}} {
		t.Run(tc.name, func(t *testing.T) {
			p := tc.p
			tbl := "c_" + tc.name
			mustExec := func(sql string, args ...any) {
				t.Helper()
				if _, err := p.Exec(ctx, sql, args...); err != nil {
					t.Fatalf("%s: %v", sql, err)
				}
			}
			mustExec("create table " + tbl + "(id int primary key, s text)")
			if err := p.Ping(ctx); err != nil {
				t.Fatal(err)
			}
			n, err := p.CopyFrom(ctx, pgx.Identifier{tbl}, []string{"id", "s"}, pgx.CopyFromRows([][]any{{1, "a"}, {2, "b"}}))
			if err != nil || n != 2 {
				t.Fatalf("CopyFrom = %d, %v", n, err)
			}
			b := &pgx.Batch{}
			b.Queue("insert into "+tbl+" values ($1, $2)", 3, "c")
			b.Queue("select count(*) from " + tbl)
			br := p.SendBatch(ctx, b)
			if _, err := br.Exec(); err != nil {
				t.Fatal(err)
			}
			var cnt int
			if err := br.QueryRow().Scan(&cnt); err != nil || cnt != 3 {
				t.Fatalf("batch count = %d, %v", cnt, err)
			}
			br.Close()
			rows, err := p.Query(ctx, "select s from "+tbl+" order by id")
			if err != nil {
				t.Fatal(err)
			}
			ss, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil || len(ss) != 3 || ss[2] != "c" {
				t.Fatalf("Query = %v, %v", ss, err)
			}
			var s string
			if err := p.QueryRow(ctx, "select s from "+tbl+" where id = $1", 99).Scan(&s); !errors.Is(err, pgx.ErrNoRows) {
				t.Errorf("QueryRow of no row: %v; want pgx.ErrNoRows", err)
			}
			_, err = p.Exec(ctx, "insert into "+tbl+" values (1, 'dup')")
			var pe interface{ SQLState() string }
			if !errors.As(err, &pe) || pe.SQLState() != "23505" {
				t.Errorf("duplicate key: %v; want SQLSTATE 23505 as is", err)
			}
			tx, err := p.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.Serializable})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tx.Exec(ctx, "insert into "+tbl+" values (4, 'd')"); err != nil {
				t.Fatal(err)
			}
			sp, err := tx.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			sp.Exec(ctx, "insert into "+tbl+" values (5, 'e')")
			if err := sp.Rollback(ctx); err != nil {
				t.Fatal(err)
			}
			if err := tx.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			if err := p.QueryRow(ctx, "select count(*) from "+tbl).Scan(&cnt); err != nil || cnt != 4 {
				t.Errorf("count after tx = %d, %v; want 4", cnt, err)
			}
			err = p.AcquireFunc(ctx, func(c *pgxpool.Conn) error {
				return c.QueryRow(ctx, "select 1").Scan(&cnt)
			})
			if err != nil {
				t.Fatal(err)
			}
			idle := p.AcquireAllIdle(ctx)
			for _, c := range idle {
				c.Release()
			}
			if len(idle) == 0 {
				t.Errorf("AcquireAllIdle returned no connection")
			}
			if st := p.Stat(); st.TotalConns() == 0 {
				t.Errorf("Stat().TotalConns() = 0")
			}
			if p.Config().MaxConns < 1 {
				t.Errorf("Config().MaxConns = %d", p.Config().MaxConns)
			}
			p.Reset()
			if err := p.Ping(ctx); err != nil {
				t.Errorf("Ping after Reset: %v", err)
			}
		})
	}
}

// TestEtcdWithHostsBootstrap: with etcd unreachable at start and a host
// list configured too, the pool writes to the one writable host; once etcd
// answers, the leader record decides.
func TestEtcdWithHostsBootstrap(t *testing.T) {
	primary := testutil.StartPostgres(t, testutil.PostgresOptions{Name: "bs1"})
	etcd := testutil.StartEtcd(t, 1)
	ctx := testutil.Ctx(t, time.Minute)
	term, err := campaignT(ctx, etcd.Endpoints(), "bs", "bs1", primary, true)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { term.Resign(context.Background()); term.Close() }()
	proxy := testutil.StartProxy(t, "etcd", etcd.Members()[0].ClientURL[len("http://"):])
	proxy.Blackhole()
	defer proxy.Pass()

	cfg := parse(t, connString("pgha_failover_timeout=10s", primary))
	cfg.Etcd = testutil.NewEtcdClient(t, proxy.URL())
	cfg.Cluster = "bs"
	p := newPool(t, cfg)
	if _, err := p.Exec(ctx, "select 1"); err != nil {
		t.Fatalf("write with etcd unreachable from the start and a host list: %v", err)
	}
	proxy.Pass()
	// The leader record now names bs1 under its node name.
	testutil.Eventually(t, 15*time.Second, "pool follows etcd", func() error {
		st := p.DebugState()
		if want := "primary=bs1"; len(st) < len(want) || st[:len(want)] != want {
			return errors.New(st)
		}
		return nil
	})
	if _, err := p.Exec(ctx, "select 1"); err != nil {
		t.Fatal(err)
	}
}

// TestTelemetry: with providers set, queries are traced (otelpgx) and the
// pool's metrics are reported. Two hosts, so that the first operation
// waits for the probes to find the primary.
func TestTelemetry(t *testing.T) {
	primary, standby := asyncPair(t, "tm")
	ctx := testutil.Ctx(t, time.Minute)
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { tp.Shutdown(context.Background()); mp.Shutdown(context.Background()) })

	cfg := parse(t, connString("", primary, standby))
	cfg.TracerProvider = tp
	cfg.MeterProvider = mp
	p := newPool(t, cfg)
	// otelpgx makes query spans only under a recording parent span.
	sctx, parent := tp.Tracer("test").Start(ctx, "parent")
	for range 3 {
		if _, err := p.Exec(sctx, "select 1"); err != nil {
			t.Fatal(err)
		}
	}
	parent.End()
	if n := len(spans.Ended()); n < 4 {
		t.Errorf("%d spans recorded, want the parent and 3 query spans", n)
	}
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(ctx, &rm); err != nil {
		t.Fatal(err)
	}
	found := map[string]bool{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			found[m.Name] = true
			if m.Name == "pgha.driver.operations" {
				sum := m.Data.(metricdata.Sum[int64])
				var total int64
				for _, dp := range sum.DataPoints {
					total += dp.Value
				}
				if total < 3 {
					t.Errorf("pgha.driver.operations = %d, want ≥ 3", total)
				}
			}
		}
	}
	for _, name := range []string{"pgha.driver.operations", "pgha.driver.primary_wait.duration"} {
		if !found[name] {
			t.Errorf("metric %s not reported (got %v)", name, found)
		}
	}
}
