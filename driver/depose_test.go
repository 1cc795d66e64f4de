package driver_test

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgha/pgha/internal/keyspace"
	"github.com/pgha/pgha/internal/testutil"
	"github.com/pgha/pgha/replicate"
)

// acquireSignal is a pgx tracer that closes started when an Acquire with
// a context marked waitingKey begins.
type acquireSignal struct {
	once    sync.Once
	started chan struct{}
}

type waitingKey struct{}

func (*acquireSignal) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	return ctx
}
func (*acquireSignal) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}
func (s *acquireSignal) TraceAcquireStart(ctx context.Context, _ *pgxpool.Pool, _ pgxpool.TraceAcquireStartData) context.Context {
	if ctx.Value(waitingKey{}) != nil {
		s.once.Do(func() { close(s.started) })
	}
	return ctx
}
func (*acquireSignal) TraceAcquireEnd(context.Context, *pgxpool.Pool, pgxpool.TraceAcquireEndData) {}

// TestDeposedPrimaryWaitersRerouted: a call waiting in Acquire for a
// connection to the primary when the leader record moves away (and the
// old primary black-holes every packet) is sent to the new primary as soon
// as a connection is released, instead of opening a connection to the
// deposed node and hanging on it until connect_timeout.
func TestDeposedPrimaryWaitersRerouted(t *testing.T) {
	testDeposedWaiters(t, "dw", true)
}

// TestDeposedPrimaryWaitersReroutedWhileHeld: as
// TestDeposedPrimaryWaitersRerouted, but the application keeps the only
// connection to the old primary acquired: the waiting call goes to the new
// primary without any release (its acquire is cancelled when the node is
// deposed), and the held connection is cut.
func TestDeposedPrimaryWaitersReroutedWhileHeld(t *testing.T) {
	testDeposedWaiters(t, "dh", false)
}

func testDeposedWaiters(t *testing.T, prefix string, release bool) {
	primary, standby := pair(t, prefix)
	ctx := testutil.Ctx(t, 2*time.Minute)
	if _, err := primary.SetSynchronousStandbys(ctx, replicate.SyncSpec{}); err != nil {
		t.Fatal(err)
	}
	proxy := testutil.StartProxy(t, prefix+"1", addrOf(primary))
	_, ps, _ := net.SplitHostPort(proxy.Addr())
	proxyPort, _ := strconv.Atoi(ps)
	etcd := testutil.StartEtcd(t, 1)
	term1, err := campaignT(ctx, etcd.Endpoints(), prefix, prefix+"1", primary, true)
	if err != nil {
		t.Fatal(err)
	}
	defer term1.Close()
	// The pool reaches the primary through the proxy only.
	rec, err := keyspace.Encode(keyspace.LeaderRecord{Node: prefix + "1", Host: "127.0.0.1", Port: proxyPort, Writable: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := term1.Proclaim(ctx, rec); err != nil {
		t.Fatal(err)
	}
	sig := &acquireSignal{started: make(chan struct{})}
	cfg := parse(t, connString("pool_max_conns=1&connect_timeout=30&pgha_cluster="+prefix+"&pgha_failover_timeout=30s&pgha_etcd="+etcd.Endpoints()[0]))
	cfg.ConnConfig.Tracer = sig
	p := newPool(t, cfg)
	held, err := p.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := held.Conn().PgConn().Conn().RemoteAddr().String(); got != proxy.Addr() {
		t.Fatalf("connection to %s, want the proxy %s", got, proxy.Addr())
	}
	waiting := make(chan error, 1)
	go func() {
		var inRecovery bool
		waiting <- p.QueryRow(context.WithValue(ctx, waitingKey{}, true), "select pg_is_in_recovery()").Scan(&inRecovery)
	}()
	<-sig.started // the call is in the only connection's Acquire
	proxy.Blackhole()

	if err := term1.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	term2, err := campaignT(ctx, etcd.Endpoints(), prefix, prefix+"2", standby, false)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { term2.Resign(context.Background()); term2.Close() }()
	if _, err := standby.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	if err := term2.Proclaim(ctx, leaderRecord(prefix+"2", standby, true)); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "pool switched to the new primary", func() error {
		if st := p.DebugState(); !strings.HasPrefix(st, "primary="+prefix+"2") {
			return errors.New(st)
		}
		return nil
	})
	if release {
		held.Release()
	} else {
		defer held.Release()
	}
	const bound = 5 * time.Second // connect_timeout is 30 s
	select {
	case err := <-waiting:
		if err != nil {
			t.Errorf("call waiting in Acquire on the deposed primary: %v; want it served by the new primary", err)
		}
	case <-time.After(bound):
		t.Errorf("call waiting in Acquire on the deposed primary still waiting %v after the switch (connection released: %v)", bound, release)
		proxy.Pass()
		held.Release() // idempotent: let the waiting call through
		<-waiting
	}
	if !release {
		// The held connection was cut: using it fails at once.
		if _, err := held.Exec(ctx, "select 1"); err == nil {
			t.Errorf("a connection to the deposed primary held across the switch still works")
		}
	}
}
