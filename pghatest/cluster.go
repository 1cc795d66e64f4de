package pghatest

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pgha/pgha/ha"
	"github.com/pgha/pgha/internal/testutil"
	"github.com/pgha/pgha/replicate"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// opTimeout bounds one fault or query the kit runs for the test.
const opTimeout = time.Minute

// Cluster is a running pgha cluster for one test: an embedded etcd and
// Options.Nodes PostgreSQL servers, each with an ha.Manager running in the
// test process. [Start] returns it healthy; its methods inject faults and
// wait for the cluster to recover. Everything stops at the end of the test.
//
// The accessors DSN, EtcdEndpoints, EtcdClient, Nodes and Name are safe for
// concurrent use, and so are NodeDSN and Instance for a node that exists;
// the fault and wait methods must be called from the test's goroutine,
// since they fail the test with t.Fatalf.
type Cluster struct {
	t     testing.TB
	opts  Options
	etcd  *testutil.EtcdCluster
	cli   *clientv3.Client
	nodes []*node
}

// node is one PostgreSQL server and its manager.
type node struct {
	name string
	inst *replicate.Instance
	cli  *clientv3.Client

	mu     sync.Mutex
	cancel context.CancelFunc // nil while the manager is stopped
	done   chan error
}

// Start brings up an embedded etcd and a cluster of opts.Nodes nodes (see
// [Options]), waits until it has a writable primary and every standby
// streams (in synchronous mode, also a synchronous standby), and returns
// it. Everything it starts (managers, PostgreSQL servers, etcd, their
// ports and directories) is stopped and removed by t.Cleanup.
//
// PostgreSQL comes from the machine: the directory named by the
// PGHA_TEST_PGBIN environment variable, else the OS packages'
// (/usr/lib/postgresql/*/bin and the like). When none is found the test is
// skipped with the install command, or fails when CI=true. When the test
// runs as root, the servers run as the postgres OS user.
//
// Invalid opts fail the test with the *[OptionsError] naming the field.
func Start(t testing.TB, opts Options) *Cluster {
	t.Helper()
	if err := opts.Validate(); err != nil {
		t.Fatal(err)
	}
	opts = opts.withDefaults()
	testutil.PostgresBinDir(t) // skip or fail with the fix before starting anything
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	etcd := testutil.StartEtcd(t, 1)
	c := &Cluster{t: t, opts: opts, etcd: etcd, cli: etcd.Client(t)}
	for i := 1; i <= opts.Nodes; i++ {
		name := fmt.Sprintf("n%d", i)
		cfg := testutil.PostgresConfig(t, name)
		cfg.Parameters = maps.Clone(opts.Parameters)
		inst, err := replicate.New(cfg)
		if err != nil {
			t.Fatalf("pghatest: PostgreSQL of node %s: %v", name, err)
		}
		testutil.StopPostgresAtCleanup(t, inst)
		c.nodes = append(c.nodes, &node{name: name, inst: inst, cli: testutil.NewEtcdClient(t, etcd.Endpoints()...)})
	}
	// Registered after the servers' and clients' cleanups, so it runs
	// first: the managers stop before their PostgreSQL and etcd do.
	t.Cleanup(c.stop)
	for _, n := range c.nodes {
		c.startManager(n)
	}
	c.WaitHealthy(opts.StartTimeout)
	return c
}

func (c *Cluster) startManager(n *node) {
	c.t.Helper()
	mode := ha.SyncOff
	if c.opts.Sync {
		mode = ha.SyncOn
	}
	mgr, err := ha.New(ha.Config{
		Cluster:      c.opts.Cluster,
		Node:         n.name,
		Client:       n.cli,
		Instance:     n.inst,
		LeaseTTL:     c.opts.LeaseTTL,
		LoopInterval: c.opts.LoopInterval,
		SyncMode:     mode,
		Logger:       c.opts.Logger,
	})
	if err != nil {
		c.t.Fatalf("pghatest: manager of node %s: %v", n.name, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	n.mu.Lock()
	n.cancel, n.done = cancel, done
	n.mu.Unlock()
	go func() { done <- mgr.Run(ctx) }()
}

// stopManager stops n's manager and waits for Run to return; a no-op when
// it is stopped.
func (c *Cluster) stopManager(n *node) {
	n.mu.Lock()
	cancel, done := n.cancel, n.done
	n.cancel = nil
	n.mu.Unlock()
	if cancel == nil {
		return
	}
	cancel()
	if err := <-done; err != nil {
		c.t.Errorf("pghatest: manager of node %s: Run returned %v", n.name, err)
	}
}

func (n *node) running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cancel != nil
}

func (c *Cluster) stop() {
	var wg sync.WaitGroup
	for _, n := range c.nodes {
		wg.Go(func() { c.stopManager(n) })
	}
	wg.Wait()
}

func (c *Cluster) node(name string) *node {
	c.t.Helper()
	for _, n := range c.nodes {
		if n.name == name {
			return n
		}
	}
	c.t.Fatalf("pghatest: no node %q in cluster %s (nodes: %s)", name, c.opts.Cluster, strings.Join(c.Nodes(), ", "))
	return nil
}

// Name returns the cluster name (Options.Cluster).
func (c *Cluster) Name() string { return c.opts.Cluster }

// Nodes returns the node names, n1 to nN.
func (c *Cluster) Nodes() []string {
	names := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		names[i] = n.name
	}
	return names
}

// EtcdEndpoints returns the embedded etcd's client URLs.
func (c *Cluster) EtcdEndpoints() []string { return c.etcd.Endpoints() }

// EtcdClient returns a client of the cluster's etcd (for ha.ClusterStatus
// and the other ha operations), closed at the end of the test.
func (c *Cluster) EtcdClient() *clientv3.Client { return c.cli }

// DSN returns a connection string for driver.New or driver.ParseConfig:
// the superuser, database postgres, and the pgha_etcd and pgha_cluster keys
// that make the pool find the primary through etcd and follow failovers.
// Append further keys (e.g. " pgha_failover_timeout=30s") as needed.
func (c *Cluster) DSN() string {
	cfg := c.nodes[0].inst.Config()
	return fmt.Sprintf("user=%s password=%s dbname=postgres pgha_cluster=%s pgha_etcd=%s",
		cfg.Superuser, cfg.SuperuserPassword, c.opts.Cluster, strings.Join(c.etcd.Endpoints(), ","))
}

// NodeDSN returns a plain libpq connection string to one node's
// PostgreSQL over loopback TCP (superuser, database postgres), for pgx,
// database/sql or psql: whatever role the node has now.
func (c *Cluster) NodeDSN(name string) string {
	cfg := c.node(name).inst.Config()
	return fmt.Sprintf("host=127.0.0.1 port=%d user=%s password=%s dbname=postgres",
		cfg.Port, cfg.Superuser, cfg.SuperuserPassword)
}

// Instance returns the replicate.Instance that runs node name's
// PostgreSQL, for tests that inspect the server (settings, status, data
// directory). Do not start or stop it behind the manager's back.
func (c *Cluster) Instance(name string) *replicate.Instance { return c.node(name).inst }

// Status returns the cluster as recorded in etcd (ha.ClusterStatus).
func (c *Cluster) Status() ha.ClusterState {
	c.t.Helper()
	st, err := c.status()
	if err != nil {
		c.t.Fatalf("pghatest: status of cluster %s: %v", c.opts.Cluster, err)
	}
	return st
}

func (c *Cluster) status() (ha.ClusterState, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return ha.ClusterStatus(ctx, c.cli, c.opts.Cluster)
}

// Primary returns the name of the node whose leader record says it
// accepts writes, or "" when there is none (for example during a
// failover).
func (c *Cluster) Primary() string {
	c.t.Helper()
	if st := c.Status(); st.Leader != nil && st.Leader.Writable {
		return st.Leader.Node
	}
	return ""
}

// WaitHealthy waits up to timeout until the cluster has a writable primary
// whose PostgreSQL is out of recovery, and every other node whose manager
// runs is a healthy standby streaming on the primary's timeline (in
// synchronous mode, one of them in the synchronous set), and returns the
// primary's name. It fails the test with the last thing that was wrong.
func (c *Cluster) WaitHealthy(timeout time.Duration) string {
	c.t.Helper()
	var primary string
	testutil.Eventually(c.t, timeout, "pghatest: waiting for a writable primary and every running standby streaming", func() error {
		var err error
		primary, err = c.healthy()
		return err
	})
	return primary
}

func (c *Cluster) healthy() (string, error) {
	st, err := c.status()
	if err != nil {
		return "", err
	}
	if st.Leader == nil || !st.Leader.Writable {
		return "", fmt.Errorf("no writable leader (leader record %+v)", st.Leader)
	}
	lead := st.Leader
	if err := c.writable(lead.Node); err != nil {
		return "", err
	}
	syncOK := !c.opts.Sync
	for _, n := range c.nodes {
		if n.name == lead.Node || !n.running() {
			continue
		}
		i := slices.IndexFunc(st.Members, func(m ha.Member) bool { return m.Node == n.name })
		if i < 0 {
			return "", fmt.Errorf("%s: no member record", n.name)
		}
		m := st.Members[i]
		if m.Role != ha.RoleReplica || !m.Healthy || !m.Streaming || m.Timeline != lead.Timeline {
			return "", fmt.Errorf("%s: role %s, healthy %v, streaming %v, timeline %d (leader %s on %d); problem %q",
				m.Node, m.Role, m.Healthy, m.Streaming, m.Timeline, lead.Node, lead.Timeline, m.Problem)
		}
		syncOK = syncOK || m.Sync
	}
	if !syncOK && c.runningStandbys(lead.Node) > 0 {
		return "", fmt.Errorf("no streaming standby in the synchronous set %v", st.SyncSet)
	}
	return lead.Node, nil
}

func (c *Cluster) runningStandbys(primary string) int {
	k := 0
	for _, n := range c.nodes {
		if n.name != primary && n.running() {
			k++
		}
	}
	return k
}

// writable checks that name's PostgreSQL is out of recovery.
func (c *Cluster) writable(name string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	conn, err := c.node(name).inst.Connect(ctx)
	if err != nil {
		return fmt.Errorf("leader %s: %w", name, err)
	}
	defer conn.Close(context.Background())
	var rec bool
	if err := conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&rec); err != nil {
		return fmt.Errorf("leader %s: %w", name, err)
	}
	if rec {
		return fmt.Errorf("leader %s: PostgreSQL still in recovery", name)
	}
	return nil
}

// KillPrimary sends SIGKILL to the current primary's postmaster (a crash:
// no shutdown, no last WAL sent), waits until the process is gone, and
// returns the node's name. Its manager keeps running: in synchronous mode
// a synchronous standby takes over at once; in asynchronous mode the
// manager first restarts PostgreSQL in place (ha.Config.PrimaryStartTimeout)
// and fails over if that does not succeed. The killed node rejoins as a
// standby after pg_rewind. It fails the test when there is no writable
// primary (call [Cluster.WaitHealthy] first).
func (c *Cluster) KillPrimary() string {
	c.t.Helper()
	name := c.Primary()
	if name == "" {
		c.t.Fatalf("pghatest: KillPrimary: cluster %s has no writable primary now (call WaitHealthy first)", c.opts.Cluster)
	}
	inst := c.node(name).inst
	// Take the exit channel first: once the postmaster is gone, Exited
	// returns nil.
	exited, pid := inst.Exited(), inst.PID()
	if pid == 0 || exited == nil {
		c.t.Fatalf("pghatest: KillPrimary: the PostgreSQL of %s is not running", name)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		c.t.Fatalf("pghatest: KillPrimary: kill -9 %d (postmaster of %s): %v", pid, name, err)
	}
	select {
	case <-exited:
	case <-time.After(opTimeout):
		c.t.Fatalf("pghatest: KillPrimary: postmaster %d of %s still running %v after SIGKILL", pid, name, opTimeout)
	}
	return name
}

// StopManager stops node name's manager as a clean shutdown of its agent
// would, and waits until it has stopped. A primary's manager stops its
// PostgreSQL (fast shutdown, which sends the last WAL to the standbys) and
// resigns, so a standby takes over at once; a standby's manager leaves its
// PostgreSQL running, no longer managed. [Cluster.RestartNode] starts it
// again. Stopping a stopped manager does nothing.
func (c *Cluster) StopManager(name string) {
	c.t.Helper()
	c.stopManager(c.node(name))
}

// RestartNode restarts node name: it stops its manager (see
// [Cluster.StopManager]) and its PostgreSQL (fast shutdown) if they run,
// then starts a new manager, which starts PostgreSQL again and rejoins the
// cluster (as a standby, unless no other node leads). It returns at once;
// use [Cluster.WaitHealthy] to wait for the node to stream.
func (c *Cluster) RestartNode(name string) {
	c.t.Helper()
	n := c.node(name)
	c.stopManager(n)
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	if err := n.inst.Stop(ctx, replicate.Fast); err != nil {
		c.t.Fatalf("pghatest: RestartNode %s: stop PostgreSQL: %v", name, err)
	}
	c.startManager(n)
}

// Switchover asks the primary to hand over to node to (or, with to empty,
// to the most advanced healthy standby), waits until the new primary is
// writable, and returns its name. No acknowledged commit is lost. It fails
// the test when the switchover does not complete within a minute.
func (c *Cluster) Switchover(to string) string {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	got, err := ha.Switchover(ctx, c.cli, c.opts.Cluster, to)
	if err != nil {
		c.t.Fatalf("pghatest: Switchover to %q: %v", to, err)
	}
	return got
}

// Eventually calls cond every 20 ms until it returns nil, and fails the
// test with msg and cond's last error when timeout passes first. Tests use
// it to wait for a condition instead of sleeping. Call it from the test's
// goroutine.
func Eventually(t testing.TB, timeout time.Duration, msg string, cond func() error) {
	t.Helper()
	testutil.Eventually(t, timeout, msg, cond)
}
