package driver_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgha/pgha/driver"
	"github.com/pgha/pgha/internal/keyspace"
	"github.com/pgha/pgha/internal/testutil"
	"github.com/pgha/pgha/replicate"
)

// TestGarbageRecords: a leader record that does not parse is treated as no
// leader (ErrNoPrimary naming the record), garbage member records are
// ignored, and a valid record brings the pool back; nothing panics.
func TestGarbageRecords(t *testing.T) {
	primary := testutil.StartPostgres(t, testutil.PostgresOptions{Name: "gr1"})
	etcd := testutil.StartEtcd(t, 1)
	cli := etcd.Client(t)
	ctx := testutil.Ctx(t, time.Minute)
	layout, _ := keyspace.NewLayout("", "gr")
	for k, v := range map[string]string{
		layout.Member("bad"):   "{not json",
		layout.Member("gr9"):   `{"v":1,"node":"gr9","role":"replica","host":"127.0.0.1","port":0}`,
		layout.Member("gr8"):   `{"v":99,"node":"gr8"}`,
		layout.Member("a/b/c"): `{"v":1}`,
		layout.Prefix() + "x":  "stray",
	} {
		if _, err := cli.Put(ctx, k, v); err != nil {
			t.Fatal(err)
		}
	}
	term, err := campaignT(ctx, etcd.Endpoints(), "gr", "gr1", primary, true)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { term.Resign(ctx); term.Close() }()
	if err := term.Proclaim(ctx, []byte(`{"v":1,"node":"gr1","host":"127.0.0.1","port":"five"}`)); err != nil {
		t.Fatal(err)
	}
	cfg := parse(t, connString("pgha_cluster=gr&pgha_failover_timeout=300ms&pgha_etcd="+etcd.Endpoints()[0]))
	logs := &lockedBuffer{}
	cfg.Logger = slog.New(slog.NewTextHandler(io.MultiWriter(logs, t.Output()), nil))
	p := newPool(t, cfg)
	_, err = p.Exec(ctx, "select 1")
	if !errors.Is(err, driver.ErrNoPrimary) || !strings.Contains(err.Error(), "leader record") {
		t.Fatalf("exec with a garbage leader record: %v; want ErrNoPrimary naming the leader record", err)
	}
	for _, v := range []string{"", "null", "[]", `{"v":1}`, `{"v":2,"node":"gr1","host":"h","port":1}`} {
		if err := term.Proclaim(ctx, []byte(v)); err != nil {
			t.Fatal(err)
		}
		if _, err := p.Exec(ctx, "select 1"); !errors.Is(err, driver.ErrNoPrimary) {
			t.Errorf("exec with leader record %q: %v; want ErrNoPrimary", v, err)
		}
	}
	if err := term.Proclaim(ctx, leaderRecord("gr1", primary, true)); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "writes once the leader record is valid", func() error {
		_, err := p.Exec(ctx, "select 1")
		return err
	})
	// More member updates must not repeat the warnings about the same
	// bad records.
	for i := range 5 {
		rec := fmt.Sprintf(`{"v":1,"node":"gr1","role":"primary","host":"127.0.0.1","port":%d,"lag_bytes":%d}`, primary.Config().Port, i)
		if _, err := cli.Put(ctx, layout.Member("gr1"), rec); err != nil {
			t.Fatal(err)
		}
	}
	testutil.Eventually(t, 10*time.Second, "member updates applied", func() error {
		if !strings.Contains(p.DebugState(), "gr1") {
			return errors.New(p.DebugState())
		}
		return nil
	})
	if n := strings.Count(logs.String(), "member record does not parse"); n != 3 {
		t.Errorf("%d warnings about bad member records, want 3 (one per bad record)", n)
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestCloseLeaksNothing: after Close no connection of the pool (pools,
// probes, reads) remains on the server. Goroutines are checked by goleak in
// TestMain.
func TestCloseLeaksNothing(t *testing.T) {
	primary, standby := asyncPair(t, "lk")
	ctx := testutil.Ctx(t, time.Minute)
	cfg := parse(t, connString("application_name=leakcheck&pgha_read_mode=replicas&pgha_max_replica_lag=-1&pgha_probe_interval=20ms", primary, standby))
	cfg.Logger = testLogger(t)
	p, err := driver.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	count := func() (int64, error) {
		var total int64
		for _, srv := range []*replicate.Instance{primary, standby} {
			n, err := testutil.PostgresQueryInt(ctx, srv, "select count(*) from pg_stat_activity where application_name in ('leakcheck', 'pgha-driver-probe')")
			if err != nil {
				return 0, err
			}
			total += n
		}
		return total, nil
	}
	for i := 0; i < 20; i++ {
		if _, err := p.Exec(ctx, "select 1"); err != nil {
			t.Fatal(err)
		}
		rows, err := p.Reader().Query(ctx, "select 1")
		if err != nil {
			t.Fatal(err)
		}
		rows.Close()
	}
	testutil.Eventually(t, 10*time.Second, "read served", func() error {
		var one int
		return p.Reader().QueryRow(ctx, "select 1").Scan(&one)
	})
	if n, err := count(); err != nil || n == 0 {
		t.Fatalf("pool connections on the servers before Close: %d (err %v); want some", n, err)
	}
	p.Close()
	p.Close() // idempotent
	testutil.Eventually(t, 10*time.Second, "no pool connection left after Close", func() error {
		n, err := count()
		if err == nil && n > 0 {
			err = fmt.Errorf("%d pool or probe connections", n)
		}
		return err
	})
	if _, err := p.Exec(ctx, "select 1"); !errors.Is(err, driver.ErrClosed) {
		t.Errorf("Exec after Close: %v; want ErrClosed", err)
	}
}

// TestNeverWritesToStandby: a leader record that names a standby as
// writable (a lie, or a stale record) must not make the pool use it: the
// write path's new connections are checked out of recovery, so even a
// statement the standby could run fails with ErrNoPrimary.
func TestNeverWritesToStandby(t *testing.T) {
	primary, standby := asyncPair(t, "ns")
	etcd := testutil.StartEtcd(t, 1)
	ctx := testutil.Ctx(t, time.Minute)
	term, err := campaignT(ctx, etcd.Endpoints(), "ns", "ns2", standby, true)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { term.Resign(ctx); term.Close() }()
	p := newPool(t, parse(t, connString("pgha_cluster=ns&pgha_failover_timeout=500ms&pgha_etcd="+etcd.Endpoints()[0])))
	var inRecovery bool
	err = p.QueryRow(ctx, "select pg_is_in_recovery()").Scan(&inRecovery)
	if !errors.Is(err, driver.ErrNoPrimary) {
		t.Fatalf("query through a pool whose leader record names a standby: in recovery %v, err %v; want ErrNoPrimary", inRecovery, err)
	}
	if _, err := p.Acquire(ctx); !errors.Is(err, driver.ErrNoPrimary) {
		t.Errorf("Acquire with the leader record naming a standby: %v; want ErrNoPrimary", err)
	}
	// The real primary takes the record: writes flow.
	if err := term.Proclaim(ctx, leaderRecord("ns1", primary, true)); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "writes once the record names the primary", func() error {
		if err := p.QueryRow(ctx, "select pg_is_in_recovery()").Scan(&inRecovery); err != nil {
			return err
		}
		if inRecovery {
			t.Fatalf("write path reached a server in recovery")
		}
		return nil
	})
}

// TestEtcdNeverAnswers: with etcd unreachable from the start and no host
// list, operations wait FailoverTimeout and fail with ErrNoPrimary saying
// why. No server is needed.
func TestEtcdNeverAnswers(t *testing.T) {
	addr := testutil.FreeAddr(t) // nothing listens there
	p := newPool(t, parse(t, "postgres://u@/db?pgha_cluster=none&pgha_failover_timeout=300ms&pgha_etcd=http://"+addr))
	start := time.Now()
	_, err := p.Exec(t.Context(), "select 1")
	if !errors.Is(err, driver.ErrNoPrimary) || !strings.Contains(err.Error(), "etcd has not answered") {
		t.Fatalf("Exec with etcd unreachable: %v; want ErrNoPrimary saying etcd has not answered", err)
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Errorf("Exec failed after %v, before FailoverTimeout (300ms)", d)
	}
	var e *driver.Error
	if !errors.As(err, &e) || e.Kind != driver.ErrNoPrimary {
		t.Errorf("error is not a *driver.Error of kind ErrNoPrimary: %#v", err)
	}
}

// TestHostListTwoPrimaries: when two hosts of the list accept writes, the
// pool refuses to choose (ErrNoPrimary, one warning) until only one does.
func TestHostListTwoPrimaries(t *testing.T) {
	a := testutil.StartPostgres(t, testutil.PostgresOptions{Name: "tp1"})
	b := testutil.StartPostgres(t, testutil.PostgresOptions{Name: "tp2"})
	ctx := testutil.Ctx(t, time.Minute)
	cfg := parse(t, connString("pgha_failover_timeout=500ms&pgha_probe_interval=50ms", a, b))
	logs := &lockedBuffer{}
	cfg.Logger = slog.New(slog.NewTextHandler(io.MultiWriter(logs, t.Output()), nil))
	p := newPool(t, cfg)
	for range 3 {
		if _, err := p.Exec(ctx, "select 1"); !errors.Is(err, driver.ErrNoPrimary) {
			t.Fatalf("Exec with two writable hosts: %v; want ErrNoPrimary", err)
		}
	}
	if n := strings.Count(logs.String(), "several hosts accept writes"); n != 1 {
		t.Errorf("%d warnings about several writable hosts, want 1", n)
	}
	// b turns read-only: a is the one primary.
	for _, sql := range []string{"alter system set default_transaction_read_only = on", "select pg_reload_conf()"} {
		if err := testutil.PostgresExec(ctx, b, sql); err != nil {
			t.Fatal(err)
		}
	}
	testutil.Eventually(t, 10*time.Second, "writes go to the one writable host", func() error {
		var port int
		if err := p.QueryRow(ctx, "select inet_server_port()").Scan(&port); err != nil {
			return err
		}
		if port != a.Config().Port {
			t.Fatalf("write path reached port %d, want %d", port, a.Config().Port)
		}
		return nil
	})
}
