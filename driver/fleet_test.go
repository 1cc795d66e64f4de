package driver_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/pgha/pgha/ha"
	"github.com/pgha/pgha/internal/testutil"
	"github.com/pgha/pgha/replicate"
)

// haCluster is a cluster run by ha managers, one per node, on one etcd
// member: what a fleet of pools sees in production.
type haCluster struct {
	name  string
	etcd  *testutil.EtcdCluster
	cli   *clientv3.Client
	insts map[string]*replicate.Instance
	names []string
}

// startHACluster starts etcd and one ha manager per node (asynchronous
// replication, LeaseTTL 2 s, loop 200 ms) and waits for a writable leader
// whose standbys all publish healthy, streaming replica records. params are
// extra PostgreSQL settings of every node.
func startHACluster(t testing.TB, cluster string, nodes int, params map[string]string) *haCluster {
	t.Helper()
	c := &haCluster{name: cluster, etcd: testutil.StartEtcd(t, 1), insts: map[string]*replicate.Instance{}}
	c.cli = c.etcd.Client(t)
	log := discardLogger
	if _, bench := t.(*testing.B); !bench {
		log = testLogger(t)
	}
	for i := 1; i <= nodes; i++ {
		name := fmt.Sprintf("%s%d", cluster, i)
		c.names = append(c.names, name)
		pcfg := testutil.PostgresConfig(t, name)
		if len(params) > 0 {
			if pcfg.Parameters == nil {
				pcfg.Parameters = map[string]string{}
			}
			for k, v := range params {
				pcfg.Parameters[k] = v
			}
		}
		inst, err := replicate.New(pcfg)
		if err != nil {
			t.Fatal(err)
		}
		testutil.StopPostgresAtCleanup(t, inst)
		c.insts[name] = inst
		mgr, err := ha.New(ha.Config{
			Cluster:      cluster,
			Node:         name,
			Client:       c.etcd.Client(t),
			Instance:     inst,
			LeaseTTL:     2 * time.Second,
			LoopInterval: 200 * time.Millisecond,
			Logger:       log.With("node", name),
		})
		if err != nil {
			t.Fatalf("ha.New(%s): %v", name, err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- mgr.Run(ctx) }()
		t.Cleanup(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("manager %s: %v", name, err)
			}
		})
	}
	testutil.Eventually(t, 3*time.Minute, "cluster bootstrapped, every standby streaming", func() error {
		_, err := c.settled(context.Background())
		return err
	})
	return c
}

// settled returns the writable leader once every other node publishes a
// healthy, streaming replica record with a known lag.
func (c *haCluster) settled(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st, err := ha.ClusterStatus(ctx, c.cli, c.name)
	if err != nil {
		return "", err
	}
	if st.Leader == nil || !st.Leader.Writable {
		return "", errors.New("no writable leader yet")
	}
	if len(st.Members) != len(c.names) {
		return "", fmt.Errorf("%d member records, want %d", len(st.Members), len(c.names))
	}
	for _, m := range st.Members {
		if m.Node == st.Leader.Node {
			continue
		}
		if m.Role != ha.RoleReplica || !m.Healthy || !m.Streaming || m.LagBytes < 0 {
			return "", fmt.Errorf("standby %s: role %s, healthy %v, streaming %v, lag %d", m.Node, m.Role, m.Healthy, m.Streaming, m.LagBytes)
		}
	}
	return st.Leader.Node, nil
}

// backends counts the sessions on inst whose application_name is app.
func backends(ctx context.Context, inst *replicate.Instance, app string) (int64, error) {
	return testutil.PostgresQueryInt(ctx, inst, "select count(*) from pg_stat_activity where application_name = $1", app)
}

// TestEtcdSettledNoProbe: a pool in etcd mode, with a healthy cluster run
// by ha managers, holds no probe connection once it settled (ProbeStat,
// and no pgha-driver-probe session on any node), routes reads to replicas
// by their member records' lag, and through a switchover
// (ha.Switchover) never hands out a write connection to a server in
// recovery; afterwards it settles again without probe connections.
func TestEtcdSettledNoProbe(t *testing.T) {
	c := startHACluster(t, "np", 3, nil)
	ctx := testutil.Ctx(t, 3*time.Minute)
	old, err := c.settled(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := testutil.PostgresExec(ctx, c.insts[old], "create table w(v int primary key)"); err != nil {
		t.Fatal(err)
	}
	cfg := parse(t, connString("pgha_cluster=np&pgha_failover_timeout=20s&pgha_read_mode=replicas&pgha_probe_interval=50ms&pgha_etcd="+c.etcd.Endpoints()[0]))
	p := newPool(t, cfg)
	if _, err := p.Exec(ctx, "insert into w values (0)"); err != nil {
		t.Fatal(err)
	}
	noProbes := func(what string) {
		t.Helper()
		testutil.Eventually(t, 10*time.Second, what, func() error {
			if st := p.ProbeStat(); st.OpenConns != 0 {
				return fmt.Errorf("ProbeStat %+v (%s)", st, p.DebugState())
			}
			for name, inst := range c.insts {
				if n, err := backends(ctx, inst, "pgha-driver-probe"); err != nil || n != 0 {
					return fmt.Errorf("%s: %d probe sessions (err %v)", name, n, err)
				}
			}
			return nil
		})
		// Settled: it stays so over many probe intervals.
		before := p.ProbeStat().Connects
		time.Sleep(500 * time.Millisecond) // an observation window, not synchronisation
		if st := p.ProbeStat(); st.OpenConns != 0 || st.Connects != before {
			t.Errorf("%s: probes went on: %+v, %d connects before (%s)", what, st, before, p.DebugState())
		}
	}
	noProbes("no probe connection once settled")
	// Reads go to the standbys, known from the member records alone.
	testutil.Eventually(t, 10*time.Second, "a read served by a standby", func() error {
		var inRecovery bool
		return p.Reader().QueryRow(ctx, "select pg_is_in_recovery()").Scan(&inRecovery)
	})
	if st := p.ProbeStat(); st.OpenConns != 0 {
		t.Errorf("reads opened probe connections: %+v", st)
	}

	// Through a switchover: a writer, and a sampler that checks every
	// write connection the pool hands out.
	w := startWriter(ctx, p)
	waitAcked(t, w, 20, "writes before the switchover")
	var (
		mu      sync.Mutex
		onStby  int
		samples int
	)
	sctx, stopSampler := context.WithCancel(ctx)
	var sampler sync.WaitGroup
	sampler.Go(func() {
		for sctx.Err() == nil {
			var inRecovery bool
			err := p.AcquireFunc(sctx, func(conn *pgxpool.Conn) error {
				return conn.QueryRow(sctx, "select pg_is_in_recovery()").Scan(&inRecovery)
			})
			mu.Lock()
			if err == nil {
				samples++
				if inRecovery {
					onStby++
				}
			}
			mu.Unlock()
		}
	})
	to := c.names[0]
	if to == old {
		to = c.names[1]
	}
	now, err := ha.Switchover(ctx, c.cli, c.name, to)
	if err != nil {
		t.Fatalf("switchover to %s: %v", to, err)
	}
	n := w.ackedCount()
	waitAcked(t, w, n+20, "writes after the switchover")
	stopSampler()
	sampler.Wait()
	w.check(t, c.insts[now])
	mu.Lock()
	t.Logf("switchover %s → %s; %d write connections sampled, %d in recovery", old, now, samples, onStby)
	if onStby > 0 {
		t.Errorf("%d of %d write connections handed out were to a server in recovery", onStby, samples)
	}
	mu.Unlock()
	testutil.Eventually(t, 30*time.Second, "cluster settled after the switchover", func() error {
		_, err := c.settled(ctx)
		return err
	})
	noProbes("no probe connection once settled after the switchover")
	if !strings.HasPrefix(p.DebugState(), "primary="+now) {
		t.Errorf("pool state %s; want primary %s", p.DebugState(), now)
	}
}
