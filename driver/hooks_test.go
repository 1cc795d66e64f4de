package driver_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgha/pgha/driver"
	"github.com/pgha/pgha/internal/testutil"
)

// The contract suite: each test runs one script against a pgxpool.Pool
// and a driver.Pool built from the same connection string and the same
// changes to the parsed config (the driver's Config embeds the
// *pgxpool.Config, so the same function sets both), and expects the same
// results.

// contractPool returns a pgxpool.Pool (name "pgxpool") or a driver.Pool
// (name "driver", also returned as such) made by ParseConfig(connStr),
// then mod on the parsed *pgxpool.Config, then NewWithConfig(ctx, ...).
// It is closed at the end of the test unless the script closes it.
func contractPool(t *testing.T, ctx context.Context, name, connStr string, mod func(*pgxpool.Config)) (poolAPI, *driver.Pool) {
	t.Helper()
	if name == "pgxpool" {
		pc, err := pgxpool.ParseConfig(connStr)
		if err != nil {
			t.Fatal(err)
		}
		if mod != nil {
			mod(pc)
		}
		raw, err := pgxpool.NewWithConfig(ctx, pc)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(raw.Close)
		return raw, nil
	}
	dc := parse(t, connStr)
	dc.Logger = testLogger(t)
	if mod != nil {
		mod(dc.Config)
	}
	ours, err := driver.NewWithConfig(ctx, dc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ours.Close)
	return ours, ours
}

// sameResults fails the test unless the script gave the same result
// through both pools.
func sameResults[R any](t *testing.T, raw, ours R) {
	t.Helper()
	if !reflect.DeepEqual(raw, ours) {
		t.Errorf("results differ:\npgxpool: %+v\ndriver:  %+v", raw, ours)
	}
}

// hookCounts counts the calls of every pgxpool hook.
type hookCounts struct {
	beforeConnect, afterConnect, prepareConn, afterRelease, beforeClose, shouldPing atomic.Int32
}

// TestContractConfigFields sets every field of the parsed config and
// checks that both pools honour each: Config() echoes them, the hooks are
// called, the runtime parameters and the AfterConnect session setting
// reach the server, MaxConns bounds the pool, BeforeClose runs on Close.
func TestContractConfigFields(t *testing.T) {
	primary := testutil.StartPostgres(t, testutil.PostgresOptions{Name: "cf1"})
	ctx := testutil.Ctx(t, time.Minute)
	type result struct {
		Config                                                   string
		AppName, Setting                                         string
		MaxConns                                                 int32
		BeforeConnect, AfterConnect, PrepareConn, ShouldPing     bool
		AfterRelease, BeforeClose, AcquireWithinMaxConnsTimesOut bool
	}
	script := func(t *testing.T, name string) result {
		var hc hookCounts
		mod := func(c *pgxpool.Config) {
			c.MaxConns = 2
			c.MinConns = 1
			c.MinIdleConns = 1
			c.MaxConnLifetime = 7 * time.Minute
			c.MaxConnLifetimeJitter = 3 * time.Second
			c.MaxConnIdleTime = 5 * time.Minute
			c.HealthCheckPeriod = 11 * time.Second
			c.PingTimeout = 4 * time.Second
			c.ConnConfig.RuntimeParams["application_name"] = "contract-" + name
			c.BeforeConnect = func(context.Context, *pgx.ConnConfig) error { hc.beforeConnect.Add(1); return nil }
			c.AfterConnect = func(ctx context.Context, conn *pgx.Conn) error {
				hc.afterConnect.Add(1)
				_, err := conn.Exec(ctx, "set pgha.contract = 'after-connect'")
				return err
			}
			c.PrepareConn = func(context.Context, *pgx.Conn) (bool, error) { hc.prepareConn.Add(1); return true, nil }
			c.AfterRelease = func(*pgx.Conn) bool { hc.afterRelease.Add(1); return true }
			c.BeforeClose = func(*pgx.Conn) { hc.beforeClose.Add(1) }
			c.ShouldPing = func(context.Context, pgxpool.ShouldPingParams) bool { hc.shouldPing.Add(1); return true }
		}
		p, _ := contractPool(t, ctx, name, connString("", primary), mod)
		var r result
		c := p.Config()
		r.Config = fmt.Sprint(c.MaxConns, c.MinConns, c.MinIdleConns, c.MaxConnLifetime, c.MaxConnLifetimeJitter,
			c.MaxConnIdleTime, c.HealthCheckPeriod, c.PingTimeout, c.ConnConfig.RuntimeParams["application_name"])
		for range 3 {
			if err := p.QueryRow(ctx, "select current_setting('application_name'), current_setting('pgha.contract')").Scan(&r.AppName, &r.Setting); err != nil {
				t.Fatal(err)
			}
		}
		// Hold MaxConns connections: a third acquire must wait.
		c1, err := p.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		c2, err := p.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		r.MaxConns = p.Stat().MaxConns()
		short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		_, err = p.Acquire(short)
		cancel()
		r.AcquireWithinMaxConnsTimesOut = err != nil
		c1.Release()
		c2.Release()
		testutil.Eventually(t, 10*time.Second, "AfterRelease called", func() error {
			if hc.afterRelease.Load() == 0 {
				return fmt.Errorf("no AfterRelease call")
			}
			return nil
		})
		p.Close()
		r.BeforeConnect, r.AfterConnect = hc.beforeConnect.Load() > 0, hc.afterConnect.Load() > 0
		r.PrepareConn, r.ShouldPing = hc.prepareConn.Load() >= 3, hc.shouldPing.Load() > 0
		r.AfterRelease, r.BeforeClose = hc.afterRelease.Load() > 0, hc.beforeClose.Load() > 0
		return r
	}
	raw := script(t, "pgxpool")
	ours := script(t, "driver")
	ours.AppName, ours.Config = raw.AppName, raw.Config // the names differ on purpose
	if raw.AppName != "contract-pgxpool" || raw.Setting != "after-connect" {
		t.Errorf("pgxpool script: %+v", raw)
	}
	sameResults(t, raw, ours)
}

// TestContractContextValues: the values of the ctx given to NewWithConfig
// reach the background connects (MinConns), and those of an operation's
// ctx reach the connects it causes, in BeforeConnect and AfterConnect.
func TestContractContextValues(t *testing.T) {
	primary := testutil.StartPostgres(t, testutil.PostgresOptions{Name: "cv1"})
	type key struct{}
	type result struct{ BeforeConnect, AfterConnect []string }
	script := func(t *testing.T, name string) result {
		var mu sync.Mutex
		seen := map[string]map[string]bool{"before": {}, "after": {}}
		note := func(hook string, ctx context.Context) {
			v, _ := ctx.Value(key{}).(string)
			mu.Lock()
			seen[hook][v] = true
			mu.Unlock()
		}
		mod := func(c *pgxpool.Config) {
			c.MaxConns, c.MinConns = 2, 1
			c.BeforeConnect = func(ctx context.Context, _ *pgx.ConnConfig) error { note("before", ctx); return nil }
			c.AfterConnect = func(ctx context.Context, _ *pgx.Conn) error { note("after", ctx); return nil }
		}
		newCtx := context.WithValue(testutil.Ctx(t, time.Minute), key{}, "new")
		p, ours := contractPool(t, newCtx, name, connString("", primary), mod)
		if ours != nil {
			// The driver creates a node's pool once it knows the primary.
			testutil.Eventually(t, 10*time.Second, "primary found", func() error {
				if ours.Stat().MaxConns() == 0 {
					return fmt.Errorf("no primary yet: %s", ours.DebugState())
				}
				return nil
			})
		}
		testutil.Eventually(t, 10*time.Second, "MinConns connection made", func() error {
			if n := p.Stat().TotalConns(); n < 1 {
				return fmt.Errorf("%d connections", n)
			}
			return nil
		})
		// Both connections in use: the second acquire connects under opCtx.
		opCtx := context.WithValue(testutil.Ctx(t, time.Minute), key{}, "op")
		err := p.AcquireFunc(opCtx, func(*pgxpool.Conn) error {
			return p.AcquireFunc(opCtx, func(*pgxpool.Conn) error { return nil })
		})
		if err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		defer mu.Unlock()
		var r result
		for _, v := range []string{"new", "op", ""} {
			if seen["before"][v] {
				r.BeforeConnect = append(r.BeforeConnect, v)
			}
			if seen["after"][v] {
				r.AfterConnect = append(r.AfterConnect, v)
			}
		}
		return r
	}
	raw := script(t, "pgxpool")
	if want := []string{"new", "op"}; !reflect.DeepEqual(raw.BeforeConnect, want) {
		t.Errorf("pgxpool: BeforeConnect saw %v, want %v", raw.BeforeConnect, want)
	}
	sameResults(t, raw, script(t, "driver"))
}

// TestContractBeforeConnectPassword: a password supplied only by
// BeforeConnect (secret rotation, cloud IAM tokens) serves every
// connection, the driver's probes included (two hosts: the driver probes
// both to find the primary), and a rotated one is used by the next
// connection.
func TestContractBeforeConnectPassword(t *testing.T) {
	primary, standby := asyncPair(t, "bp")
	ctx := testutil.Ctx(t, time.Minute)
	admin := newPool(t, parse(t, connString("", primary)))
	if _, err := admin.Exec(ctx, "create role app login password 'first'"); err != nil {
		t.Fatal(err)
	}
	connStr := fmt.Sprintf("postgres://app@%s,%s/postgres?sslmode=disable&connect_timeout=5", addrOf(primary), addrOf(standby))
	type result struct{ First, AfterRotation, Connects string }
	script := func(t *testing.T, name string) result {
		var secret atomic.Value
		secret.Store("first")
		var connects atomic.Int32
		mod := func(c *pgxpool.Config) {
			c.BeforeConnect = func(_ context.Context, cc *pgx.ConnConfig) error {
				connects.Add(1)
				cc.Password = secret.Load().(string)
				return nil
			}
		}
		p, ours := contractPool(t, ctx, name, connStr, mod)
		var r result
		var who string
		octx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := p.QueryRow(octx, "select current_user").Scan(&who); err != nil {
			r.First = "error: " + err.Error()
		} else {
			r.First = who
		}
		if _, err := admin.Exec(ctx, "alter role app password 'second'"); err != nil {
			t.Fatal(err)
		}
		secret.Store("second")
		p.Reset() // the next operation opens a new connection
		if err := p.QueryRow(octx, "select current_user").Scan(&who); err != nil {
			r.AfterRotation = "error: " + err.Error()
		} else {
			r.AfterRotation = who
		}
		if _, err := admin.Exec(ctx, "alter role app password 'first'"); err != nil {
			t.Fatal(err)
		}
		if connects.Load() >= 2 {
			r.Connects = "at least 2"
		}
		if ours != nil {
			// The standby may refuse app until the role has replayed there.
			testutil.Eventually(t, 10*time.Second, "one probe connection per host", func() error {
				if ps := ours.ProbeStat(); ps.OpenConns != 2 {
					return fmt.Errorf("ProbeStat = %+v", ps)
				}
				return nil
			})
		}
		return r
	}
	raw := script(t, "pgxpool")
	if raw.First != "app" || raw.AfterRotation != "app" {
		t.Errorf("pgxpool: %+v", raw)
	}
	sameResults(t, raw, script(t, "driver"))
}

// TestContractStat: after the same sequence of operations, Stat() reports
// the same counters through both pools, and the driver's probe connection
// is counted in ProbeStat, not in Stat.
func TestContractStat(t *testing.T) {
	primary := testutil.StartPostgres(t, testutil.PostgresOptions{Name: "st1"})
	ctx := testutil.Ctx(t, time.Minute)
	type result struct {
		AcquireCount, EmptyAcquireCount, CanceledAcquireCount, NewConnsCount int64
		AcquiredConns, IdleConns, TotalConns, MaxConns                       int32
	}
	mod := func(c *pgxpool.Config) { c.MaxConns = 3 }
	raw, _ := contractPool(t, ctx, "pgxpool", connString("", primary), mod)
	_, ours := contractPool(t, ctx, "driver", connString("", primary), mod)
	stat := func(p poolAPI) result {
		for i := range 4 {
			if _, err := p.Exec(ctx, "select $1::int", i); err != nil {
				t.Fatal(err)
			}
		}
		c, err := p.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.Exec(ctx, "select 1"); err != nil { // a second connection
			t.Fatal(err)
		}
		canceled, cancel := context.WithCancel(ctx)
		cancel()
		p.Acquire(canceled)
		s := p.Stat()
		r := result{s.AcquireCount(), s.EmptyAcquireCount(), s.CanceledAcquireCount(), s.NewConnsCount(),
			s.AcquiredConns(), s.IdleConns(), s.TotalConns(), s.MaxConns()}
		c.Release()
		return r
	}
	sameResults(t, stat(raw), stat(ours))
	// One host, serving: the driver opens no probe connection.
	if ps := ours.ProbeStat(); ps != (driver.ProbeStat{}) {
		t.Errorf("ProbeStat = %+v, want no probe connection for a single host that serves", ps)
	}
}

// TestContractDialOnce: with a DialFunc that allows exactly one connection
// and MaxConns 1, every operation succeeds through both pools on that one
// connection: the driver opens nothing of its own for a single host that
// serves.
func TestContractDialOnce(t *testing.T) {
	primary := testutil.StartPostgres(t, testutil.PostgresOptions{Name: "do1"})
	ctx := testutil.Ctx(t, time.Minute)
	type result struct {
		Errs       []string
		Dials      int32
		TotalConns int32
	}
	script := func(name string) result {
		var dials atomic.Int32
		var d net.Dialer
		p, _ := contractPool(t, ctx, name, connString("", primary), func(c *pgxpool.Config) {
			c.MaxConns = 1
			c.ConnConfig.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
				if dials.Add(1) > 1 {
					return nil, errors.New("no additional connections")
				}
				return d.DialContext(ctx, network, addr)
			}
		})
		var r result
		note := func(err error) {
			s := ""
			if err != nil {
				s = err.Error()
			}
			r.Errs = append(r.Errs, s)
		}
		_, err := p.Exec(ctx, "select 1")
		note(err)
		var n int
		note(p.QueryRow(ctx, "select 2").Scan(&n))
		note(p.Ping(ctx))
		tx, err := p.Begin(ctx)
		if err == nil {
			_, err = tx.Exec(ctx, "select 3")
			if err == nil {
				err = tx.Commit(ctx)
			}
		}
		note(err)
		note(p.AcquireFunc(ctx, func(c *pgxpool.Conn) error { return c.Ping(ctx) }))
		b := &pgx.Batch{}
		b.Queue("select 4")
		note(p.SendBatch(ctx, b).Close())
		rows, err := p.Query(ctx, "select 5")
		if err == nil {
			rows.Close()
			err = rows.Err()
		}
		note(err)
		r.Dials, r.TotalConns = dials.Load(), p.Stat().TotalConns()
		return r
	}
	raw := script("pgxpool")
	if raw.Dials != 1 {
		t.Errorf("pgxpool dialled %d times", raw.Dials)
	}
	sameResults(t, raw, script("driver"))
}
