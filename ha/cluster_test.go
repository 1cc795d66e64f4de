package ha

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgha/pgha/internal/keyspace"
	"github.com/pgha/pgha/internal/testutil"
	"github.com/pgha/pgha/replicate"
	clientv3 "go.etcd.io/etcd/client/v3"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// testNode is one node of a test cluster: PostgreSQL, its manager and the
// manager's own etcd client (through a fault proxy).
type testNode struct {
	spans  *tracetest.SpanRecorder
	reader *sdkmetric.ManualReader
	name   string
	inst   *replicate.Instance
	proxy  *testutil.Proxy
	cli    *clientv3.Client
	mgr    *Manager
	cancel context.CancelFunc
	done   chan error
}

type testCluster struct {
	t     testing.TB
	etcd  *testutil.EtcdCluster
	cli   *clientv3.Client // the test's own client, direct
	nodes []*testNode
	opts  clusterOpts
	// writable counts samples in which more than one node accepted writes.
	splitBrain atomic.Int64
	sampleErr  atomic.Value
	stopSample func()
}

type clusterOpts struct {
	n        int
	ttl      time.Duration
	syncMode SyncMode
	maxLag   int64
	// telemetry gives each manager an SDK tracer and meter provider.
	telemetry bool
	// configure, when set, edits each node's Config before New.
	configure func(node string, c *Config)
	// pgConfig, when set, edits each node's replicate.Config before New.
	pgConfig func(node string, c *replicate.Config)
	// etcdMembers is the etcd cluster's size (default 1); the nodes'
	// proxies reach its first member.
	etcdMembers int
	// started, when set, is called after each manager is created.
	started func(n *testNode)
}

func startCluster(t testing.TB, opts clusterOpts) *testCluster {
	t.Helper()
	if opts.n == 0 {
		opts.n = 3
	}
	if opts.ttl == 0 {
		opts.ttl = 2 * time.Second
	}
	etcd := testutil.StartEtcd(t, max(opts.etcdMembers, 1))
	c := &testCluster{t: t, etcd: etcd, cli: etcd.Client(t), opts: opts}
	for i := 1; i <= opts.n; i++ {
		name := fmt.Sprintf("n%d", i)
		cfg := testutil.PostgresConfig(t, name)
		if opts.pgConfig != nil {
			opts.pgConfig(name, &cfg)
		}
		inst, err := replicate.New(cfg)
		if err != nil {
			t.Fatalf("replicate.New(%s): %v", name, err)
		}
		testutil.StopPostgresAtCleanup(t, inst)
		px := testutil.StartProxy(t, name+"-etcd", strings.TrimPrefix(etcd.Endpoints()[0], "http://"))
		c.nodes = append(c.nodes, &testNode{name: name, inst: inst, proxy: px})
	}
	for _, n := range c.nodes {
		c.startManager(n)
	}
	t.Cleanup(c.stop)
	return c
}

func (c *testCluster) startManager(n *testNode) {
	t := c.t
	n.cli = testutil.NewEtcdClient(t, n.proxy.URL())
	var tp *sdktrace.TracerProvider
	var mp *sdkmetric.MeterProvider
	if c.opts.telemetry {
		n.spans = tracetest.NewSpanRecorder()
		tp = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(n.spans))
		n.reader = sdkmetric.NewManualReader()
		mp = sdkmetric.NewMeterProvider(sdkmetric.WithReader(n.reader))
	}
	cfg := Config{
		Cluster:          "test",
		Node:             n.name,
		Client:           n.cli,
		Instance:         n.inst,
		LeaseTTL:         c.opts.ttl,
		LoopInterval:     200 * time.Millisecond,
		SyncMode:         c.opts.syncMode,
		MaxLagOnFailover: c.opts.maxLag,
		Logger:           slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo})),
	}
	if tp != nil {
		cfg.TracerProvider, cfg.MeterProvider = tp, mp
	}
	if c.opts.configure != nil {
		c.opts.configure(n.name, &cfg)
	}
	mgr, err := New(cfg)
	if err != nil {
		t.Fatalf("ha.New(%s): %v", n.name, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n.mgr, n.cancel, n.done = mgr, cancel, make(chan error, 1)
	if c.opts.started != nil {
		c.opts.started(n)
	}
	go func() { n.done <- mgr.Run(ctx) }()
}

// stopManager stops n's manager; abandon simulates a crash (no clean
// leave): the term is left to expire, and is joined at cleanup.
func (c *testCluster) stopManager(n *testNode, abandon bool) {
	if n.mgr == nil {
		return
	}
	n.mgr.abandon = abandon
	n.cancel()
	if err := <-n.done; err != nil {
		c.t.Errorf("manager %s: Run returned %v", n.name, err)
	}
	if abandon {
		// Like a dead process, the abandoned client renews nothing more.
		n.cli.Close()
		if term := n.mgr.currentTerm(); term != nil {
			c.t.Cleanup(func() {
				<-term.Done()
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				term.Resign(ctx)
				cancel()
			})
		}
	}
	n.mgr = nil
}

func (c *testCluster) stop() {
	if c.stopSample != nil {
		c.stopSample()
	}
	var wg sync.WaitGroup
	for _, n := range c.nodes {
		wg.Add(1)
		go func() { defer wg.Done(); c.stopManager(n, false) }()
	}
	wg.Wait()
}

func (c *testCluster) node(name string) *testNode {
	for _, n := range c.nodes {
		if n.name == name {
			return n
		}
	}
	c.t.Fatalf("no node %s", name)
	return nil
}

// leaderRecord reads the leader record from etcd.
func (c *testCluster) leaderRecord() (*keyspace.LeaderRecord, error) {
	layout, _ := keyspace.NewLayout("", "test")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	resp, err := c.cli.Get(ctx, layout.Leader()+"/", clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend))
	if err != nil {
		return nil, err
	}
	if len(resp.Kvs) == 0 {
		return nil, errors.New("no leader key")
	}
	r, err := keyspace.Decode[keyspace.LeaderRecord](resp.Kvs[0].Value)
	return &r, err
}

// writable reports whether n's PostgreSQL accepts writes now.
func writable(n *testNode) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	conn, err := n.inst.Connect(ctx)
	if err != nil {
		return false
	}
	defer conn.Close(context.Background())
	var rec bool
	if err := conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&rec); err != nil {
		return false
	}
	return !rec
}

// sample checks every 50 ms that at most one node is writable, until the
// test ends. Violations fail the test at cleanup.
func (c *testCluster) sample() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			var w []string
			for _, n := range c.nodes {
				if writable(n) {
					w = append(w, n.name)
				}
			}
			if len(w) > 1 {
				c.splitBrain.Add(1)
				c.sampleErr.Store(fmt.Sprintf("%v writable at %v", w, time.Now().Format(time.StampMilli)))
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	c.stopSample = func() {
		cancel()
		<-done
		if n := c.splitBrain.Load(); n > 0 {
			c.t.Errorf("one-writer invariant broken in %d samples; last: %v", n, c.sampleErr.Load())
		}
	}
}

// waitHealthy waits for a writable leader and n-1 streaming standbys, and
// returns the leader's node.
func (c *testCluster) waitHealthy(timeout time.Duration, exclude ...string) *testNode {
	c.t.Helper()
	var lead *testNode
	testutil.Eventually(c.t, timeout, "a writable leader and streaming standbys", func() error {
		lr, err := c.leaderRecord()
		if err != nil {
			return err
		}
		if !lr.Writable {
			return fmt.Errorf("leader %s not writable yet", lr.Node)
		}
		lead = c.node(lr.Node)
		if !writable(lead) {
			return fmt.Errorf("leader %s's PostgreSQL does not accept writes", lr.Node)
		}
		lst, err := lead.inst.Status(context.Background())
		if err != nil {
			return fmt.Errorf("leader %s: %v", lead.name, err)
		}
		for _, n := range c.nodes {
			if n == lead || contains(exclude, n.name) {
				continue
			}
			st, err := n.inst.Status(context.Background())
			if err != nil {
				return fmt.Errorf("%s: %v", n.name, err)
			}
			// A WAL receiver reports "streaming" before it has switched
			// to the leader's new timeline: require that too.
			if !st.InRecovery || st.WALReceiver == nil || st.WALReceiver.Status != "streaming" || st.WALReceiver.SenderPort != lead.inst.Config().Port || st.WALReceiver.Timeline != lst.Timeline {
				return fmt.Errorf("%s not streaming from %s (running %v, recovery %v, receiver %+v, last action %q)", n.name, lead.name, st.Running, st.InRecovery, st.WALReceiver, n.mgr.Status().LastAction)
			}
		}
		return nil
	})
	return lead
}

// waitSyncSet waits, in synchronous mode, until the leader has named a
// streaming synchronous standby: before that no standby may be promoted
// automatically (the sync key is empty), by design.
func (c *testCluster) waitSyncSet() {
	c.t.Helper()
	testutil.Eventually(c.t, 30*time.Second, "a streaming synchronous standby", func() error {
		st, err := ClusterStatus(context.Background(), c.cli, "test")
		if err != nil {
			return err
		}
		for _, m := range st.Members {
			if m.Sync && m.Streaming && (st.Leader == nil || m.Node != st.Leader.Node) {
				return nil
			}
		}
		return fmt.Errorf("sync set %v has no streaming standby", st.SyncSet)
	})
}

// waitNewLeader waits until a writable leader other than old exists.
func (c *testCluster) waitNewLeader(old string, timeout time.Duration, what string) {
	c.t.Helper()
	testutil.Eventually(c.t, timeout, what, func() error {
		lr, err := c.leaderRecord()
		if err != nil {
			return err
		}
		if lr.Node == old || !lr.Writable {
			return fmt.Errorf("leader %s writable %v", lr.Node, lr.Writable)
		}
		return nil
	})
}

func contains(s []string, x string) bool {
	for _, y := range s {
		if y == x {
			return true
		}
	}
	return false
}

// writer inserts rows into the current leader until stopped, and records
// every acknowledged id.
type writer struct {
	mu      sync.Mutex
	acked   []int64
	ackedAt []time.Time
	ackedBy []string
	stop    func()
}

// describe says which node acknowledged id, and when.
func (w *writer) describe(id int64) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	for i, a := range w.acked {
		if a == id {
			return fmt.Sprintf("%d acked by %s at %s", id, w.ackedBy[i], w.ackedAt[i].Format("15:04:05.000"))
		}
	}
	return fmt.Sprintf("%d not acked", id)
}

// maxPause is the longest gap between two acknowledged writes after since.
func (w *writer) maxPause(since time.Time) time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	var worst time.Duration
	for i := 1; i < len(w.ackedAt); i++ {
		if w.ackedAt[i].After(since) {
			worst = max(worst, w.ackedAt[i].Sub(w.ackedAt[i-1]))
		}
	}
	return worst
}

func (c *testCluster) startWriter() *writer {
	lead := c.waitHealthy(60 * time.Second)
	ctx := context.Background()
	conn, err := lead.inst.Connect(ctx)
	if err != nil {
		c.t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "CREATE TABLE IF NOT EXISTS w (id bigint PRIMARY KEY)"); err != nil {
		c.t.Fatal(err)
	}
	conn.Close(ctx)
	w := &writer{}
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		var conn *pgx.Conn
		var connNode string
		var syncCanceled atomic.Bool
		defer func() {
			if conn != nil {
				conn.Close(context.Background())
			}
		}()
		for id := int64(1); wctx.Err() == nil; id++ {
			lr, err := c.leaderRecord()
			if err != nil || !lr.Writable {
				sleepCtx(wctx, 20*time.Millisecond)
				id--
				continue
			}
			if conn == nil || connNode != lr.Node {
				if conn != nil {
					conn.Close(context.Background())
				}
				cctx, ccancel := context.WithTimeout(wctx, time.Second)
				conn, err = connectWriter(cctx, c.node(lr.Node).inst, &syncCanceled)
				ccancel()
				if err != nil {
					conn = nil
					id--
					continue
				}
				connNode = lr.Node
			}
			ectx, ecancel := context.WithTimeout(wctx, 2*time.Second)
			syncCanceled.Store(false)
			_, err = conn.Exec(ectx, "INSERT INTO w VALUES ($1)", id)
			ecancel()
			if err == nil && syncCanceled.Load() {
				// The wait for the synchronous standby was cancelled (our
				// timeout): PostgreSQL committed locally and reported
				// success, but the commit may not be on any standby. It
				// is not an acknowledged durable write.
				err = errors.New("synchronous replication wait cancelled")
			}
			if err != nil {
				conn.Close(context.Background())
				conn = nil
				// The outcome of this insert is unknown: use a new id.
				continue
			}
			w.mu.Lock()
			w.acked = append(w.acked, id)
			w.ackedAt = append(w.ackedAt, time.Now())
			w.ackedBy = append(w.ackedBy, connNode)
			w.mu.Unlock()
		}
	}()
	w.stop = func() { cancel(); <-done }
	return w
}

// connectWriter connects to inst as the superuser with a notice handler
// that flags PostgreSQL's "canceling wait for synchronous replication"
// warning: a commit whose wait was cancelled is reported as a success
// although it may exist only on the primary.
func connectWriter(ctx context.Context, inst *replicate.Instance, flag *atomic.Bool) (*pgx.Conn, error) {
	cfg := inst.Config()
	cc, err := pgx.ParseConfig("")
	if err != nil {
		return nil, err
	}
	cc.Host, cc.Port, cc.Database = cfg.SocketDir, uint16(cfg.Port), "postgres"
	cc.User, cc.Password = cfg.Superuser, cfg.SuperuserPassword
	cc.Fallbacks = nil
	cc.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) {
		if strings.Contains(n.Message, "canceling wait for synchronous replication") {
			flag.Store(true)
		}
	}
	return pgx.ConnectConfig(ctx, cc)
}

func (w *writer) ackedCount() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.acked)
}

// waitAcked waits until n more writes are acknowledged.
func (w *writer) waitMore(t testing.TB, n int, timeout time.Duration, what string) {
	t.Helper()
	start := w.ackedCount()
	testutil.Eventually(t, timeout, what, func() error {
		if got := w.ackedCount() - start; got < n {
			return fmt.Errorf("%d of %d writes acknowledged", got, n)
		}
		return nil
	})
}

// lost returns acknowledged ids missing on node n. The acknowledged ids are
// taken before the table is read: a write acknowledged after the read
// (the writer may still run) is not a loss.
func (w *writer) lost(t testing.TB, n *testNode) []int64 {
	t.Helper()
	w.mu.Lock()
	acked := slices.Clone(w.acked)
	w.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := n.inst.Connect(ctx)
	if err != nil {
		t.Fatalf("connect %s: %v", n.name, err)
	}
	defer conn.Close(context.Background())
	have := map[int64]bool{}
	rows, err := conn.Query(ctx, "SELECT id FROM w")
	if err != nil {
		t.Fatalf("read rows on %s: %v", n.name, err)
	}
	for rows.Next() {
		var id int64
		rows.Scan(&id)
		have[id] = true
	}
	rows.Close()
	var lost []int64
	for _, id := range acked {
		if !have[id] {
			lost = append(lost, id)
		}
	}
	return lost
}

func kill9(t testing.TB, n *testNode) {
	t.Helper()
	pid := n.inst.PID()
	if pid <= 0 {
		t.Fatalf("%s: no postmaster to kill", n.name)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill -9 %s's postmaster %d: %v", n.name, pid, err)
	}
}

func TestBootstrapThreeNodes(t *testing.T) {
	c := startCluster(t, clusterOpts{})
	c.sample()
	lead := c.waitHealthy(90 * time.Second)
	ctx := testutil.Ctx(t, 10*time.Second)
	// Every node holds the cluster's system identifier.
	layout, _ := keyspace.NewLayout("", "test")
	resp, err := c.cli.Get(ctx, layout.Initialize())
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("initialize key: %v, %v", resp, err)
	}
	ir, err := keyspace.Decode[keyspace.InitializeRecord](resp.Kvs[0].Value)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range c.nodes {
		st, err := n.inst.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(st.SystemID) != ir.SystemID {
			t.Fatalf("%s system id %d; cluster's %s", n.name, st.SystemID, ir.SystemID)
		}
	}
	if s := lead.mgr.Status(); !s.Leading || s.Role != RolePrimary {
		t.Fatalf("leader status %+v", s)
	}
}

// TestKillPrimaryAsync: in asynchronous mode a crashed primary is restarted
// in place by its manager; it stays the leader.
func TestKillPrimaryAsync(t *testing.T) {
	c := startCluster(t, clusterOpts{})
	c.sample()
	lead := c.waitHealthy(90 * time.Second)
	w := c.startWriter()
	defer w.stop()
	w.waitMore(t, 20, 30*time.Second, "writes before the crash")
	kill9(t, lead)
	w.waitMore(t, 20, 30*time.Second, "writes after the crash")
	if lr, _ := c.leaderRecord(); lr == nil || lr.Node != lead.name {
		t.Fatalf("leader after restart in place = %+v; want %s", lr, lead.name)
	}
	w.stop()
	if lost := w.lost(t, lead); len(lost) > 0 {
		t.Fatalf("%d acknowledged writes lost after a restart in place: %v", len(lost), lost)
	}
}

// TestKillPrimarySync: in synchronous mode a crashed primary fails over at
// once to its synchronous standby; no acknowledged write is lost, and the
// old primary rejoins as a standby.
// promotions returns the pgha.ha.promotions sum and the names of the ended
// spans recorded by n.
func (n *testNode) telemetry(t testing.TB) (int64, []string) {
	var rm metricdata.ResourceMetrics
	if err := n.reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	var promotions int64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if sum, ok := m.Data.(metricdata.Sum[int64]); ok && m.Name == "pgha.ha.promotions" {
				for _, dp := range sum.DataPoints {
					promotions += dp.Value
				}
			}
		}
	}
	var names []string
	for _, s := range n.spans.Ended() {
		names = append(names, s.Name())
	}
	return promotions, names
}

func TestKillPrimarySync(t *testing.T) {
	c := startCluster(t, clusterOpts{syncMode: SyncOn, telemetry: true})
	c.sample()
	old := c.waitHealthy(90 * time.Second)
	w := c.startWriter()
	defer w.stop()
	c.waitSyncSet()
	w.waitMore(t, 50, 30*time.Second, "writes before the crash")
	start := time.Now()
	kill9(t, old)
	c.waitNewLeader(old.name, 30*time.Second, "a new leader")
	w.waitMore(t, 20, 30*time.Second, "writes on the new primary")
	t.Logf("kill -9 → writes resumed on the new primary in %v", time.Since(start).Round(time.Millisecond))
	lead := c.waitHealthy(90 * time.Second)
	w.stop()
	if lost := w.lost(t, lead); len(lost) > 0 {
		t.Fatalf("synchronous mode lost %d acknowledged writes: %v", len(lost), lost)
	}
	if p, spans := lead.telemetry(t); p != 1 || !contains(spans, "ha.promote") {
		t.Fatalf("new leader's telemetry: promotions %d, spans %v; want 1 promotion and a ha.promote span", p, spans)
	}
	for _, n := range c.nodes {
		if lost := w.lost(t, n); n != lead && len(lost) > 0 {
			// Standbys replay asynchronously: wait for them to catch up.
			testutil.Eventually(t, 30*time.Second, n.name+" catches up", func() error {
				if lost := w.lost(t, n); len(lost) > 0 {
					return fmt.Errorf("%d rows missing", len(lost))
				}
				return nil
			})
		}
	}
}

// TestPrimaryNodeLost: the primary's manager dies without cleanup and its
// postmaster is killed; a standby is promoted within about TTL.
func TestPrimaryNodeLost(t *testing.T) {
	c := startCluster(t, clusterOpts{})
	c.sample()
	old := c.waitHealthy(90 * time.Second)
	w := c.startWriter()
	defer w.stop()
	w.waitMore(t, 20, 30*time.Second, "writes before the loss")
	start := time.Now()
	c.stopManager(old, true)
	kill9(t, old)
	// The killed postmaster's backends can still commit for a moment (the
	// writer's session outlives its postmaster): only writes after a new
	// leader count.
	c.waitNewLeader(old.name, 30*time.Second, "a new leader")
	w.waitMore(t, 20, 30*time.Second, "writes on the new primary")
	t.Logf("node loss → writes resumed in %v", time.Since(start).Round(time.Millisecond))
	lr, err := c.leaderRecord()
	if err != nil || lr.Node == old.name {
		t.Fatalf("leader after node loss = %+v, %v", lr, err)
	}
	c.waitHealthy(60*time.Second, old.name)
}

// TestPrimaryCutOffFromEtcd: the primary's manager loses etcd. It fences
// its PostgreSQL before its lease can expire, exactly one new primary
// appears, and after the heal the old primary rejoins through rewind.
func TestPrimaryCutOffFromEtcd(t *testing.T) {
	c := startCluster(t, clusterOpts{})
	c.sample()
	old := c.waitHealthy(90 * time.Second)
	w := c.startWriter()
	defer w.stop()
	w.waitMore(t, 20, 30*time.Second, "writes before the cut")
	// The old primary writes a row of its own that the others may never
	// get, as an isolated primary would.
	old.proxy.Blackhole()
	testutil.Eventually(t, 3*c.opts.ttl, "the cut-off primary fences itself", func() error {
		if writable(old) {
			return errors.New("still writable")
		}
		return nil
	})
	c.waitNewLeader(old.name, 30*time.Second, "a new leader")
	w.waitMore(t, 20, 30*time.Second, "writes on the new primary")
	old.proxy.Pass()
	lead := c.waitHealthy(90 * time.Second)
	if lead == old {
		t.Fatalf("the cut-off primary took leadership back")
	}
	st, err := old.inst.Status(context.Background())
	if err != nil || !st.InRecovery {
		t.Fatalf("old primary after heal: %+v, %v; want a standby", st, err)
	}
	lst, _ := lead.inst.Status(context.Background())
	if st.Timeline != lst.Timeline {
		t.Fatalf("old primary on timeline %d, leader on %d", st.Timeline, lst.Timeline)
	}
}

// TestSyncRepeatedFailovers: in synchronous mode, three failovers in a row
// (kill -9 of each new primary) under a continuous writer lose no
// acknowledged write; every old primary rejoins before the next fault.
func TestSyncRepeatedFailovers(t *testing.T) {
	c := startCluster(t, clusterOpts{syncMode: SyncOn})
	c.sample()
	lead := c.waitHealthy(90 * time.Second)
	w := c.startWriter()
	defer w.stop()
	for round := 1; round <= 3; round++ {
		c.waitSyncSet()
		w.waitMore(t, 30, 30*time.Second, fmt.Sprintf("round %d: writes before the crash", round))
		old := lead
		kill9(t, old)
		c.waitNewLeader(old.name, 30*time.Second, fmt.Sprintf("round %d: a new leader", round))
		w.waitMore(t, 30, 30*time.Second, fmt.Sprintf("round %d: writes on the new primary", round))
		lead = c.waitHealthy(90 * time.Second)
		if lost := w.lost(t, lead); len(lost) > 0 {
			var why []string
			for _, id := range lost {
				why = append(why, w.describe(id))
			}
			t.Fatalf("round %d: synchronous mode lost %d acknowledged writes on %s (killed %s): %v", round, len(lost), lead.name, old.name, why)
		}
	}
}

// TestWatchdogRequiredWithoutDevice: a node that requires a watchdog but
// has no device never leads, says so in its member record (nofailover),
// and does not keep the others from failing over.
func TestWatchdogRequiredWithoutDevice(t *testing.T) {
	c := startCluster(t, clusterOpts{configure: func(node string, cfg *Config) {
		if node == "n1" {
			cfg.LeaseTTL = 3 * time.Second // the watchdog counts whole seconds
			cfg.Watchdog = WatchdogRequired
			cfg.WatchdogDevice = filepath.Join(t.TempDir(), "no-watchdog")
		}
	}})
	c.sample()
	lead := c.waitHealthy(90 * time.Second)
	if lead.name == "n1" {
		t.Fatalf("n1 leads without its required watchdog")
	}
	testutil.Eventually(t, 10*time.Second, "n1 publishes nofailover", func() error {
		st, err := ClusterStatus(context.Background(), c.cli, "test")
		if err != nil {
			return err
		}
		for _, m := range st.Members {
			if m.Node == "n1" && m.NoFailover {
				return nil
			}
		}
		return errors.New("n1's member record does not say nofailover")
	})
	kill9(t, lead)
	c.stopManager(lead, true)
	c.waitNewLeader(lead.name, 30*time.Second, "the other standby takes over")
	if lr, _ := c.leaderRecord(); lr != nil && lr.Node == "n1" {
		t.Fatalf("n1 was promoted without its required watchdog")
	}
}
