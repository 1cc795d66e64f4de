package driver_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/pgha/pgha/driver"
	"github.com/pgha/pgha/ha"
	"github.com/pgha/pgha/internal/keyspace"
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
// replication, LeaseTTL 2 s in tests and the default 5 s in benchmarks,
// whose load would starve a tighter lease; loop 200 ms) and waits for a writable leader
// whose standbys all publish healthy, streaming replica records. params are
// extra PostgreSQL settings of every node.
func startHACluster(t testing.TB, cluster string, nodes int, params map[string]string) *haCluster {
	t.Helper()
	c := &haCluster{name: cluster, etcd: testutil.StartEtcd(t, 1), insts: map[string]*replicate.Instance{}}
	c.cli = c.etcd.Client(t)
	log, ttl := discardLogger, 5*time.Second
	if _, bench := t.(*testing.B); !bench {
		log, ttl = testLogger(t), 2*time.Second
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
			LeaseTTL:     ttl,
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

// BenchmarkFleet measures what N pools in etcd mode cost one three-node
// cluster run by ha managers, and how fast they all follow a switchover.
// All N pools run in the benchmark process, each with its own etcd client
// (as N application processes would have), beside the embedded etcd, the
// three ha managers and the PostgreSQL servers (child processes). Run it
// alone, once:
//
//	PGHA_TEST_PGBIN=$(scripts/ensure-postgres.sh) go test -run '^$' -bench BenchmarkFleet -benchtime 1x -timeout 30m ./driver/
//
// Per N it prints, after the pools settled (each wrote once, so each
// holds one application connection to the primary):
//
//   - backends per node: client backends in pg_stat_activity, without the
//     benchmark's counting session, split into the pools' application
//     sessions (application_name fleet), probe sessions
//     (pgha-driver-probe) and the rest (the managers' sessions); and the
//     extra backends per pool: (all − application − the rest at N = 0) / N;
//   - background queries per second per node: the calls counted by
//     pg_stat_statements (loaded for the benchmark) over a window in which
//     the application runs nothing, so none of them is the application's,
//     less the benchmark's own reads of pg_stat_statements; and, among them,
//     the pools' probe queries. The N = 0 row is the managers alone (their
//     status query every loop round). pg_stat_database's xact_commit was
//     tried first and is blind here: PostgreSQL 15 does not flush the
//     commit count of a session whose transactions touch no table, which
//     is the case of both the probe and the managers' status query;
//   - etcd watchers and watch streams: etcd's own gauges
//     (etcd_debugging_mvcc_watcher_total, _watch_stream_total) from its
//     /metrics endpoint, the managers' and this benchmark's included;
//   - CPU per second and RSS of the benchmark process over the window, and
//     per pool ((value − value at N = 0) / N): the process also runs etcd
//     (which serves the pools' watches: that share is counted as the
//     pools') and the managers;
//   - then a switchover (ha.Switchover). T0 is when the benchmark's own
//     watch sees the leader record name the new node (not yet writable),
//     T1 when it sees that record say writable. Each pool starts writing
//     at T0 (an insert that returns inet_server_port(), retried every
//     millisecond after an error) and its first write is the first that
//     succeeds on the new primary; the median and max over the pools of
//     first write − T1 (and − T0) are printed.
func BenchmarkFleet(b *testing.B) {
	c := startHACluster(b, "fl", 3, map[string]string{"max_connections": "600", "shared_preload_libraries": "pg_stat_statements"})
	ctx := context.Background()
	leader, err := c.settled(ctx)
	if err != nil {
		b.Fatal(err)
	}
	for _, sql := range []string{"create extension pg_stat_statements", "create table fleet(pool int, v int)"} {
		if err := testutil.PostgresExec(ctx, c.insts[leader], sql); err != nil {
			b.Fatal(err)
		}
	}
	// Let the managers' bootstrap settle before the baseline.
	time.Sleep(3 * time.Second)
	base := measureFleet(b, c)
	for _, n := range []int{1, 50, 200} {
		b.Run(fmt.Sprintf("pools=%d", n), func(b *testing.B) {
			runFleet(b, c, n, base, true)
		})
	}
	// For comparison: host mode (no etcd), where every pool probes every
	// node on its own probe connection.
	b.Run("hosts/pools=50", func(b *testing.B) {
		runFleet(b, c, 50, base, false)
	})
}

// fleetSample is one measurement window.
type fleetSample struct {
	app, probe, other map[string]int64 // client backends per node, by kind
	qps, probeQPS     map[string]float64
	watchers, streams float64
	cpuPerSec         float64 // CPU seconds per second of the process
	rssMiB            float64
}

func (s fleetSample) String() string {
	var b strings.Builder
	for _, name := range slices.Sorted(maps.Keys(s.app)) {
		fmt.Fprintf(&b, "%s: backends app %d probe %d other %d, background q/s %.1f (probes %.1f); ", name, s.app[name], s.probe[name], s.other[name], s.qps[name], s.probeQPS[name])
	}
	fmt.Fprintf(&b, "etcd watchers %.0f streams %.0f; process CPU %.3f s/s, RSS %.1f MiB", s.watchers, s.streams, s.cpuPerSec, s.rssMiB)
	return b.String()
}

const fleetWindow = 10 * time.Second

// measureFleet measures one window while the pools are idle.
func measureFleet(b *testing.B, c *haCluster) fleetSample {
	ctx := context.Background()
	s := fleetSample{app: map[string]int64{}, probe: map[string]int64{}, other: map[string]int64{}, qps: map[string]float64{}, probeQPS: map[string]float64{}}
	conns := map[string]*pgx.Conn{}
	for name, inst := range c.insts {
		conn, err := inst.Connect(ctx)
		if err != nil {
			b.Fatal(err)
		}
		defer conn.Close(ctx)
		conns[name] = conn
	}
	// calls returns, per node, the calls pg_stat_statements counted: all
	// but the benchmark's own reads, and the probes'.
	calls := func() (all, probes map[string]int64) {
		all, probes = map[string]int64{}, map[string]int64{}
		for name, conn := range conns {
			var a, p int64
			err := conn.QueryRow(ctx, `select coalesce(sum(calls) filter (where query not like '%pg_stat_statements%'), 0)::int8,
				coalesce(sum(calls) filter (where query like '%then pg_last_wal_replay_lsn() else pg_current_wal_lsn()%'), 0)::int8
				from pg_stat_statements`).Scan(&a, &p)
			if err != nil {
				b.Fatal(err)
			}
			all[name], probes[name] = a, p
		}
		return all, probes
	}
	var ru0 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	a0, p0 := calls()
	t0 := time.Now()
	time.Sleep(fleetWindow) // the measurement window
	a1, p1 := calls()
	el := time.Since(t0)
	var ru1 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	cpu := func(r syscall.Rusage) float64 {
		return float64(r.Utime.Nano()+r.Stime.Nano()) / 1e9
	}
	s.cpuPerSec = (cpu(ru1) - cpu(ru0)) / el.Seconds()
	for name := range conns {
		s.qps[name] = float64(a1[name]-a0[name]) / el.Seconds()
		s.probeQPS[name] = float64(p1[name]-p0[name]) / el.Seconds()
	}
	for name, conn := range conns {
		s.app[name], s.probe[name], s.other[name] = 0, 0, 0
		rows, err := conn.Query(ctx, "select application_name, count(*) from pg_stat_activity where backend_type = 'client backend' and pid <> pg_backend_pid() group by 1")
		if err != nil {
			b.Fatal(err)
		}
		for rows.Next() {
			var app string
			var n int64
			if err := rows.Scan(&app, &n); err != nil {
				b.Fatal(err)
			}
			switch app {
			case "fleet":
				s.app[name] += n
			case "pgha-driver-probe":
				s.probe[name] += n
			default:
				s.other[name] += n
			}
		}
		if err := rows.Err(); err != nil {
			b.Fatal(err)
		}
	}
	s.watchers, s.streams = etcdWatchers(b, c)
	s.rssMiB = float64(rssBytes(b)) / (1 << 20)
	return s
}

// etcdWatchers reads etcd's watcher and watch stream gauges from its
// /metrics endpoint.
func etcdWatchers(b *testing.B, c *haCluster) (watchers, streams float64) {
	resp, err := http.Get(c.etcd.Members()[0].ClientURL + "/metrics")
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(body), "\n") {
		name, val, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		v, _ := strconv.ParseFloat(strings.TrimSpace(val), 64)
		switch name {
		case "etcd_debugging_mvcc_watcher_total":
			watchers = v
		case "etcd_debugging_mvcc_watch_stream_total":
			streams = v
		}
	}
	return watchers, streams
}

// rssBytes is the process's resident set size (VmRSS).
func rssBytes(b *testing.B) int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

func runFleet(b *testing.B, c *haCluster, n int, base fleetSample, etcd bool) {
	ctx := testutil.Ctx(b, 10*time.Minute)
	pools := make([]*driver.Pool, n)
	for i := range pools {
		var cfg *driver.Config
		if etcd {
			cfg = parse(b, connString("application_name=fleet&pool_max_conns=2&pgha_cluster=fl&pgha_failover_timeout=30s&pgha_etcd="+c.etcd.Endpoints()[0], c.insts[c.names[0]]))
			cfg.Hosts = nil // etcd alone: no host list probed before it answers
		} else {
			var insts []*replicate.Instance
			for _, name := range c.names {
				insts = append(insts, c.insts[name])
			}
			cfg = parse(b, connString("application_name=fleet&pool_max_conns=2&pgha_failover_timeout=30s", insts...))
		}
		cfg.Logger = discardLogger
		pools[i] = newPool(b, cfg)
	}
	for i, p := range pools {
		if _, err := p.Exec(ctx, "insert into fleet values ($1, 0)", i); err != nil {
			b.Fatalf("pool %d: first write: %v", i, err)
		}
	}
	testutil.Eventually(b, time.Minute, "every pool settled (no probe connection in etcd mode)", func() error {
		for i, p := range pools {
			if st := p.ProbeStat(); etcd && st.OpenConns != 0 {
				return fmt.Errorf("pool %d: %+v", i, st)
			}
		}
		return nil
	})
	var connects0 int64
	for _, p := range pools {
		connects0 += p.ProbeStat().Connects
	}
	s := measureFleet(b, c)
	var connects1 int64
	for _, p := range pools {
		connects1 += p.ProbeStat().Connects
	}
	b.Logf("N=0 (managers only): %s", base)
	b.Logf("N=%d: %s; probe connects in the window %d", n, s, connects1-connects0)
	var all, app, otherBase int64
	for name := range s.app {
		all += s.app[name] + s.probe[name] + s.other[name]
		app += s.app[name]
		otherBase += base.other[name]
	}
	extra := float64(all-app-otherBase) / float64(n)
	var qps, qps0 float64
	for name := range s.qps {
		qps += s.qps[name]
		qps0 += base.qps[name]
	}
	b.ReportMetric(extra, "extra-backends/pool")
	b.ReportMetric(qps/3, "bg-q/s/node")
	b.ReportMetric((qps-qps0)/float64(n), "bg-q/s/pool")
	b.ReportMetric(s.watchers, "etcd-watchers")
	b.ReportMetric((s.watchers-base.watchers)/float64(n), "etcd-watchers/pool")
	b.ReportMetric((s.cpuPerSec-base.cpuPerSec)/float64(n)*1e3, "cpu-ms/s/pool")
	b.ReportMetric((s.rssMiB-base.rssMiB)/float64(n)*1024, "rss-KiB/pool")

	// The switchover.
	old, err := c.settled(ctx)
	if err != nil {
		b.Fatal(err)
	}
	to := c.names[0]
	if to == old {
		to = c.names[1]
	}
	newPort := c.insts[to].Config().Port
	t0, t1 := watchLeader(b, c, to)
	firsts := make([]time.Time, n)
	var wg sync.WaitGroup
	var errMu sync.Mutex
	errs := map[string]int{}
	for i, p := range pools {
		wg.Go(func() {
			<-t0.seen
			for ctx.Err() == nil {
				var port int
				err := p.QueryRow(ctx, "insert into fleet values ($1, 1) returning inet_server_port()", i).Scan(&port)
				if err == nil && port == newPort {
					firsts[i] = time.Now()
					return
				}
				if err != nil {
					msg := err.Error()
					if len(msg) > 120 {
						msg = msg[:120]
					}
					errMu.Lock()
					errs[msg]++
					errMu.Unlock()
				}
				time.Sleep(time.Millisecond)
			}
		})
	}
	swStart := time.Now()
	if _, err := ha.Switchover(ctx, c.cli, c.name, to); err != nil {
		b.Fatalf("switchover to %s: %v", to, err)
	}
	wg.Wait()
	<-t1.seen
	var d1, d0 []time.Duration
	for _, f := range firsts {
		d1 = append(d1, f.Sub(t1.at))
		d0 = append(d0, f.Sub(t0.at))
	}
	slices.Sort(d1)
	slices.Sort(d0)
	b.Logf("N=%d: switchover %s → %s: leader record named %s %v after the request, writable %v later; first write of every pool after the writable record: median %v, max %v (min %v); after the first record naming it: median %v, max %v",
		n, old, to, to, t0.at.Sub(swStart).Round(time.Millisecond), t1.at.Sub(t0.at).Round(time.Millisecond),
		d1[len(d1)/2].Round(time.Millisecond), d1[len(d1)-1].Round(time.Millisecond), d1[0].Round(time.Millisecond),
		d0[len(d0)/2].Round(time.Millisecond), d0[len(d0)-1].Round(time.Millisecond))
	for msg, k := range errs {
		b.Logf("N=%d: %d writes failed during the switchover: %s", n, k, msg)
	}
	b.ReportMetric(float64(d1[len(d1)/2].Microseconds())/1e3, "first-write-median-ms")
	b.ReportMetric(float64(d1[len(d1)-1].Microseconds())/1e3, "first-write-max-ms")
	for _, p := range pools {
		p.Close()
	}
	// The floor on this machine: N plain pgx connections (TCP, SCRAM, one
	// query) opened at once to the new primary from this process, as the
	// N pools must open their first write connection at once.
	var cwg sync.WaitGroup
	took := make([]time.Duration, n)
	start := time.Now()
	for i := range n {
		cwg.Go(func() {
			cc, err := pgx.ParseConfig(connString("application_name=fleet-calibration", c.insts[to]))
			if err != nil {
				b.Error(err)
				return
			}
			conn, err := pgx.ConnectConfig(ctx, cc)
			if err != nil {
				b.Error(err)
				return
			}
			var ro bool
			err = conn.QueryRow(ctx, "select pg_is_in_recovery()").Scan(&ro)
			took[i] = time.Since(start)
			conn.Close(ctx)
			if err != nil {
				b.Error(err)
			}
		})
	}
	cwg.Wait()
	slices.Sort(took)
	b.Logf("N=%d: %d plain connections opened at once to the new primary (TCP, SCRAM, one query): median %v, max %v",
		n, n, took[n/2].Round(time.Millisecond), took[n-1].Round(time.Millisecond))
	b.ReportMetric(float64(took[n-1].Microseconds())/1e3, "connect-herd-max-ms")
	testutil.Eventually(b, 2*time.Minute, "cluster settled after the switchover", func() error {
		_, err := c.settled(ctx)
		return err
	})
}

// leaderSeen is when the benchmark's watch saw a leader record.
type leaderSeen struct {
	seen chan struct{} // closed when seen
	at   time.Time
}

// watchLeader watches the leader records of c and reports when one first
// names node (t0) and when one first names it writable (t1).
func watchLeader(b *testing.B, c *haCluster, node string) (t0, t1 *leaderSeen) {
	t0 = &leaderSeen{seen: make(chan struct{})}
	t1 = &leaderSeen{seen: make(chan struct{})}
	layout, _ := keyspace.NewLayout("", c.name)
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	// From the revision after the current one: no event is missed while
	// the watch is being created.
	resp, err := c.cli.Get(ctx, layout.Leader()+"/", clientv3.WithPrefix())
	if err != nil {
		b.Fatal(err)
	}
	wch := c.cli.Watch(ctx, layout.Leader()+"/", clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1))
	go func() {
		for wr := range wch {
			for _, ev := range wr.Events {
				if ev.Type != clientv3.EventTypePut {
					continue
				}
				rec, err := keyspace.Decode[keyspace.LeaderRecord](ev.Kv.Value)
				if err != nil || rec.Node != node {
					continue
				}
				now := time.Now()
				if t0.at.IsZero() {
					t0.at = now
					close(t0.seen)
				}
				if rec.Writable && t1.at.IsZero() {
					t1.at = now
					close(t1.seen)
					cancel()
					return
				}
			}
		}
	}()
	return t0, t1
}

// TestPrewarmedConnChecked: the connection a pool opens ahead to a new
// leader that is not writable yet is checked before its first use. The
// leader record moves to a standby (not writable), the pool opens its
// connection to it, then the record claims the standby writable although
// it was never promoted (a record that lies, or a promotion undone): no
// write connection the pool hands out may be to a server in recovery.
func TestPrewarmedConnChecked(t *testing.T) {
	primary, standby := pair(t, "pw")
	etcd := testutil.StartEtcd(t, 1)
	ctx := testutil.Ctx(t, 2*time.Minute)
	term1, err := campaignT(ctx, etcd.Endpoints(), "pw", "pw1", primary, true)
	if err != nil {
		t.Fatal(err)
	}
	defer term1.Close()
	p := newPool(t, parse(t, connString("application_name=pwapp&pgha_cluster=pw&pgha_failover_timeout=1s&pgha_etcd="+etcd.Endpoints()[0])))
	if _, err := p.Exec(ctx, "insert into w values (0)"); err != nil {
		t.Fatal(err)
	}
	if err := term1.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	term2, err := campaignT(ctx, etcd.Endpoints(), "pw", "pw2", standby, false)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { term2.Resign(context.Background()); term2.Close() }()
	testutil.Eventually(t, 10*time.Second, "a connection opened ahead to the new leader", func() error {
		n, err := backends(ctx, standby, "pwapp")
		if err == nil && n != 1 {
			err = fmt.Errorf("%d sessions of the pool on the standby", n)
		}
		return err
	})
	if err := term2.Proclaim(ctx, leaderRecord("pw2", standby, true)); err != nil {
		t.Fatal(err)
	}
	ok := 0
	for i := range 10 {
		var inRecovery bool
		actx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := p.AcquireFunc(actx, func(conn *pgxpool.Conn) error {
			return conn.QueryRow(actx, "select pg_is_in_recovery()").Scan(&inRecovery)
		})
		cancel()
		if err == nil {
			ok++
			if inRecovery {
				t.Fatalf("acquire %d: a write connection to a server in recovery (%s)", i, p.DebugState())
			}
		}
	}
	t.Logf("10 acquires with a lying leader record: %d handed out a connection (all out of recovery)", ok)
}
