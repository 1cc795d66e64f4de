package e2e

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgha/pgha/driver"
	"github.com/pgha/pgha/ha"
	"github.com/pgha/pgha/internal/etcdclient"
	"github.com/pgha/pgha/internal/testutil"
	"github.com/pgha/pgha/replicate"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
)

// The partition tests run a three-node cluster as it is deployed: each
// node in a network namespace of its own (testutil.Netbed) with its own
// address, running an etcd member, a PostgreSQL and a pgha-agent, and the
// clients in a fourth namespace. Faults drop packets (no resets), as a real
// partition does. Run them with -run 'TestPartition'.

const (
	partCluster = "netns"
	partTTL     = 2 * time.Second
	etcdClient  = 2379
	etcdPeer    = 2380
	agentPort   = 8008
)

// nsProc is a server process running in a namespace.
type nsProc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	log  string
}

// startNSProc starts bin in ns with its output appended to logPath, and
// registers its stop (SIGTERM, SIGKILL after 30 s) with t.Cleanup.
func startNSProc(t *testing.T, ns *testutil.Netns, name, logPath string, env []string, bin string, args ...string) *nsProc {
	t.Helper()
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	p := &nsProc{name: name, cmd: ns.Command(bin, args...), done: make(chan struct{}), log: logPath}
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("start %s in %s: %v", name, ns.Name, err)
	}
	go func() { p.cmd.Wait(); logf.Close(); close(p.done) }()
	t.Cleanup(func() {
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(30 * time.Second):
			t.Errorf("%s did not stop within 30 s of SIGTERM; killing it", name)
			p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			testutil.DumpTail(t, name, logPath, 80)
		}
	})
	return p
}

// nsNode is one node of the bed: its namespace and what runs in it.
type nsNode struct {
	name string
	ns   *testutil.Netns
	pg   replicate.Config
}

// connect opens a superuser connection over the node's unix socket: the
// test observes every node whatever the network faults.
func (n *nsNode) connect(ctx context.Context) (*pgx.Conn, error) {
	return testutil.ConnectSuperuser(ctx, n.pg)
}

// nsCluster is three nodes, each running an etcd member, a PostgreSQL and
// a pgha-agent in its namespace, and an etcd client in the client
// namespace.
type nsCluster struct {
	t     *testing.T
	bed   *testutil.Netbed
	nodes []*nsNode
	eps   []string
	cli   *clientv3.Client // from the client namespace
}

func startNSCluster(t *testing.T, syncMode string) *nsCluster {
	t.Helper()
	testutil.PostgresBinDir(t)
	etcdBin := testutil.GoBinary(t, "github.com/pgha/pgha/internal/testutil/cmd/etcdmember")
	agentBin := agentBinary(t)
	bed := testutil.StartNetbed(t, 3)
	c := &nsCluster{t: t, bed: bed}
	dir := t.TempDir()
	var initial []string
	for i, ns := range bed.Nodes {
		name := fmt.Sprintf("n%d", i+1)
		c.nodes = append(c.nodes, &nsNode{name: name, ns: ns, pg: testutil.PostgresConfig(t, name)})
		initial = append(initial, fmt.Sprintf("%s=http://%s:%d", name, ns.Addr, etcdPeer))
		c.eps = append(c.eps, fmt.Sprintf("http://%s:%d", ns.Addr, etcdClient))
	}
	for _, n := range c.nodes {
		startNSProc(t, n.ns, "etcd "+n.name, filepath.Join(dir, "etcd-"+n.name+".log"), nil, etcdBin,
			"--name", n.name, "--data-dir", filepath.Join(dir, "etcd-"+n.name),
			"--client-url", fmt.Sprintf("http://%s:%d", n.ns.Addr, etcdClient),
			"--peer-url", fmt.Sprintf("http://%s:%d", n.ns.Addr, etcdPeer),
			"--initial-cluster", strings.Join(initial, ","))
	}
	cli, err := etcdclient.New(clientv3.Config{
		Endpoints: c.eps, DialTimeout: 2 * time.Second,
		DialKeepAliveTime: time.Second, DialKeepAliveTimeout: time.Second,
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(bed.Client.GRPCDialer)},
	})
	if err != nil {
		t.Fatalf("etcd client from %s: %v", bed.Client.Name, err)
	}
	t.Cleanup(func() { cli.Close() })
	c.cli = cli
	for _, n := range c.nodes {
		// Registered before the agent's stop, so it runs after it.
		t.Cleanup(func() {
			if procs, _ := testutil.PostgresProcesses(n.pg.DataDir); len(procs) > 0 {
				t.Errorf("agent %s left PostgreSQL running: %v", n.name, procs)
			}
			if t.Failed() {
				testutil.DumpTail(t, "PostgreSQL "+n.name, n.pg.DataDir+".log", 40)
			}
		})
		startNSProc(t, n.ns, "agent "+n.name, filepath.Join(dir, "agent-"+n.name+".log"),
			[]string{"PGHA_PG_SUPERUSER_PASSWORD=" + testutil.PostgresSuperuserPassword,
				"PGHA_PG_REPLICATION_PASSWORD=" + testutil.PostgresReplicationPassword},
			agentBin,
			"--cluster", partCluster, "--node", n.name, "--etcd-endpoints", strings.Join(c.eps, ","),
			"--listen", fmt.Sprintf("%s:%d", n.ns.Addr, agentPort),
			"--lease-ttl", partTTL.String(), "--loop-interval", "200ms", "--sync-mode", syncMode,
			"--pg-data-dir", n.pg.DataDir, "--pg-bin-dir", n.pg.BinDir, "--pg-port", strconv.Itoa(n.pg.Port),
			"--pg-socket-dir", n.pg.SocketDir, "--pg-listen-addresses", n.ns.Addr, "--pg-advertise-host", n.ns.Addr,
			"--pg-replication-networks", "198.18.0.0/15", "--pg-client-networks", "198.18.0.0/15",
			"--etcd-dial-timeout", "2s", "--pg-replace-data-dir",
			// After a second failover (which the test reports) the
			// other nodes' rewinds fail while their source restarts,
			// and three failed rewinds in a row wait for an operator's
			// reinit (seen once): clone afresh instead, so that such a
			// run still converges and shows its logs quickly.
			"--reclone-on-rewind-failure")
	}
	// Faults end before the processes are stopped, so that the agents
	// can stop cleanly (cleanups run last-registered first).
	t.Cleanup(bed.Heal)
	return c
}

func (c *nsCluster) node(name string) *nsNode {
	for _, n := range c.nodes {
		if n.name == name {
			return n
		}
	}
	return nil
}

// etcdLeader is the node whose etcd member leads, "" if none answers.
func (c *nsCluster) etcdLeader(ctx context.Context) string {
	for i, ep := range c.eps {
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		resp, err := c.cli.Status(sctx, ep)
		cancel()
		if err == nil && resp.Leader != 0 && resp.Header.MemberId == resp.Leader {
			return c.nodes[i].name
		}
	}
	return ""
}

// etcdLeaderOff moves the etcd leadership to a standby's member other
// than the current leader (so that the move is exercised on every run),
// off primary's node.
func (c *nsCluster) etcdLeaderOff(t *testing.T, ctx context.Context, primary *nsNode) {
	t.Helper()
	lead := c.etcdLeader(ctx)
	if lead == "" {
		t.Fatal("no etcd leader answers")
	}
	var leaderEP, targetName string
	var target uint64
	for i, n := range c.nodes {
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		st, err := c.cli.Status(sctx, c.eps[i])
		cancel()
		if err != nil {
			t.Fatalf("etcd member %s: %v", n.name, err)
		}
		switch {
		case n.name == lead:
			leaderEP = c.eps[i]
		case n != primary && target == 0:
			target, targetName = st.Header.MemberId, n.name
		}
	}
	// MoveLeader must reach the leader: a client of its endpoint alone.
	cli, err := etcdclient.New(clientv3.Config{Endpoints: []string{leaderEP}, DialTimeout: 2 * time.Second,
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(c.bed.Client.GRPCDialer)}})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	mctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := cli.MoveLeader(mctx, target); err != nil {
		t.Fatalf("move the etcd leadership from %s to %s: %v", lead, targetName, err)
	}
	testutil.Eventually(t, 10*time.Second, "the etcd leader on "+targetName, func() error {
		if l := c.etcdLeader(ctx); l != targetName {
			return fmt.Errorf("etcd leader %q", l)
		}
		return nil
	})
}

func (c *nsCluster) status(ctx context.Context) (ha.ClusterState, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return ha.ClusterStatus(ctx, c.cli, partCluster)
}

// converged returns the leader when its record is writable, its PostgreSQL
// is out of recovery and every other node streams from it, with a
// streaming standby in the sync set in synchronous mode.
func (c *nsCluster) converged(ctx context.Context) (*nsNode, error) {
	st, err := c.status(ctx)
	if err != nil {
		return nil, err
	}
	if st.Leader == nil || !st.Leader.Writable {
		return nil, errors.New("no writable leader record")
	}
	lead := c.node(st.Leader.Node)
	if lead == nil {
		return nil, fmt.Errorf("leader record names unknown node %q", st.Leader.Node)
	}
	streaming, inSync := 0, false
	for _, m := range st.Members {
		if m.Node != lead.name && m.Role == "replica" && m.Streaming {
			streaming++
			inSync = inSync || m.Sync
		}
	}
	if streaming != len(c.nodes)-1 || !inSync {
		return nil, fmt.Errorf("%d of %d standbys streaming from %s, sync set %v", streaming, len(c.nodes)-1, lead.name, st.SyncSet)
	}
	return lead, nil
}

// startSampler starts the one-writer sampler on every node, over its
// unix socket.
func startSampler(c *nsCluster) *testutil.WriterSampler {
	var nodes []testutil.SampledNode
	for _, n := range c.nodes {
		nodes = append(nodes, testutil.SampledNode{Name: n.name, Connect: n.connect})
	}
	return testutil.StartWriterSampler(nodes, true, nil)
}

// writers insert unique ids through one driver.Pool: half of them with a
// per-call deadline, half without one (the pool's own bounds only).
type writers struct {
	next    atomic.Int64
	mu      sync.Mutex
	acked   map[int64]ack
	sent    map[int64]time.Time
	longest time.Duration
	longID  int64
	errs    int
	stop    func()
}

func startWriters(pool *driver.Pool, n int, deadline time.Duration) *writers {
	w := &writers{acked: map[int64]ack{}, sent: map[int64]time.Time{}}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := range n {
		withDeadline := i%2 == 0
		wg.Go(func() {
			for ctx.Err() == nil {
				id := w.next.Add(1)
				cctx, ccancel := ctx, context.CancelFunc(func() {})
				if withDeadline {
					cctx, ccancel = context.WithTimeout(ctx, deadline)
				}
				start := time.Now()
				w.mu.Lock()
				w.sent[id] = start
				w.mu.Unlock()
				// The server's address says which node committed it.
				var addr string
				err := pool.QueryRow(cctx, "INSERT INTO w VALUES ($1) RETURNING host(inet_server_addr())", id).Scan(&addr)
				ccancel()
				end := time.Now()
				w.mu.Lock()
				if d := end.Sub(start); d > w.longest && ctx.Err() == nil {
					w.longest, w.longID = d, id
				}
				if err == nil {
					w.acked[id] = ack{at: end, addr: addr}
				} else if ctx.Err() == nil {
					w.errs++
				}
				w.mu.Unlock()
			}
		})
	}
	w.stop = func() { cancel(); wg.Wait() }
	return w
}

// resetLongest forgets the longest call so far.
func (w *writers) resetLongest() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.longest, w.longID = 0, 0
}

// longestCall is the longest call since resetLongest, and its id.
func (w *writers) longestCall() (time.Duration, int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.longest, w.longID
}

func (w *writers) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.acked)
}

// ack is an acknowledged write: when, and by which node's address.
type ack struct {
	at   time.Time
	addr string
}

// firstAckAfter is the first acknowledgement of a call sent after t by a
// node other than the one at notAddr ("": any node).
// countBetween is how many writes were acknowledged between from and to.
func (w *writers) countBetween(from, to time.Time) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, a := range w.acked {
		if a.at.After(from) && a.at.Before(to) {
			n++
		}
	}
	return n
}

func (w *writers) firstAckAfter(t time.Time, notAddr string) (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	var first time.Time
	for id, a := range w.acked {
		if w.sent[id].After(t) && a.addr != notAddr && (first.IsZero() || a.at.Before(first)) {
			first = a.at
		}
	}
	return first, !first.IsZero()
}

// openPool opens a driver.Pool whose sockets are made in the client
// namespace; bound is the longest a call may take by the driver's
// documented rule (driver/doc.go, "How long a call can wait").
func (c *nsCluster) openPool(ctx context.Context) (*driver.Pool, time.Duration) {
	c.t.Helper()
	pcfg, err := pgxpool.ParseConfig(fmt.Sprintf("postgres://postgres:%s@%s:%d/postgres?sslmode=disable",
		url.QueryEscape(testutil.PostgresSuperuserPassword), c.nodes[0].ns.Addr, c.nodes[0].pg.Port))
	if err != nil {
		c.t.Fatal(err)
	}
	pcfg.ConnConfig.DialFunc = c.bed.Client.DialContext
	pcfg.ConnConfig.ConnectTimeout = 2 * time.Second
	dcfg := driver.LocalConfig()
	dcfg.Config, dcfg.Etcd, dcfg.Cluster = pcfg, c.cli, partCluster
	dcfg.WriteKeepAlive, dcfg.WriteTCPUserTimeout = 500*time.Millisecond, 2*time.Second
	dcfg.Logger = slog.New(slog.NewTextHandler(c.t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	pool, err := driver.NewWithConfig(ctx, dcfg)
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(pool.Close)
	return pool, dcfg.FailoverTimeout + 2*(max(dcfg.WriteTCPUserTimeout, 4*dcfg.WriteKeepAlive)+dcfg.ProbeTimeout)
}

// ids are the ids in table w on n's PostgreSQL.
func (n *nsNode) ids(ctx context.Context) (map[int64]bool, error) {
	return tableIDs(ctx, n.pg)
}

// tableIDs reads the ids in table w on pg's server, over its unix socket.
func tableIDs(ctx context.Context, pg replicate.Config) (map[int64]bool, error) {
	conn, err := testutil.ConnectSuperuser(ctx, pg)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, "SELECT id FROM w")
	if err != nil {
		return nil, err
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	m := map[int64]bool{}
	for _, id := range ids {
		m[id] = true
	}
	return m, err
}

// partitionCase is one fault on the bed.
type partitionCase struct {
	name string
	// cut applies the fault around the primary.
	cut func(c *nsCluster, primary *nsNode)
	// failover: a standby must take over; otherwise the primary must keep
	// its leadership and writes resume on it after the heal.
	failover bool
	// hold is how long a fault without failover lasts.
	hold time.Duration
	// mayFailover: without failover set, a failover is allowed but not
	// required (logged either way).
	mayFailover bool
	// prepare, when set, runs on the converged cluster before the fault.
	prepare func(t *testing.T, ctx context.Context, c *nsCluster, primary *nsNode)
}

// TestPartition runs each fault on one three-node cluster in turn, every
// case starting from a converged cluster:
//
//   - primary-node: the primary's whole node is partitioned (every packet
//     to and from it dropped: its etcd member, PostgreSQL and agent are cut
//     off from the other nodes and from the clients). A standby takes over.
//   - clients-primary: only the clients' link to the primary's node is
//     black-holed, for longer than the driver's bound. No failover: the
//     primary holds its lease; pool calls fail within the bound and writes
//     resume after the heal.
//   - replication: only the primary's PostgreSQL port between its node
//     and the standbys' is black-holed, for 6 s. No failover; writes
//     resume after the heal.
//   - primary-etcd: only etcd traffic (2379-2380) between the primary's
//     node and the others is dropped: its etcd member is in the minority,
//     its agent cannot renew, replication and clients still reach it. A
//     standby takes over.
//   - etcd-leader-node: the node of the etcd leader, a standby's (moved
//     there first if need be), is partitioned whole for 8 s. etcd elects a
//     new leader; a failover is allowed, not required.
//
// In every case: no sampler round sees two nodes able to acknowledge
// writes, no acknowledged write is lost (synchronous mode), no pool call
// (with or without a caller deadline) takes longer than the driver's
// documented bound, and the cluster converges after the heal with the old
// primary streaming as a standby. The failover times are logged.
func TestPartition(t *testing.T) {
	c := startNSCluster(t, "on")
	ctx := testutil.Ctx(t, 6*time.Minute)
	testutil.Eventually(t, 120*time.Second, "a writable leader and two streaming standbys", func() error {
		_, err := c.converged(ctx)
		return err
	})
	pool, bound := c.openPool(ctx)
	if _, err := pool.Exec(ctx, "CREATE TABLE w (id bigint PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	w := startWriters(pool, 4, 5*time.Second)
	defer w.stop()
	cases := []partitionCase{
		{name: "primary-node", failover: true, cut: func(c *nsCluster, p *nsNode) { c.bed.Isolate(p.ns) }},
		// Longer than the bound: a call that hangs until the heal fails.
		{name: "clients-primary", hold: bound + 3*time.Second, cut: func(c *nsCluster, p *nsNode) { c.bed.Cut(c.bed.Client, p.ns) }},
		// Synchronous mode: commits wait for the cut standby, so writes
		// stall for the whole cut (server time, outside the driver's
		// bound); a short cut keeps the longest call inside the bound.
		{name: "replication", hold: 6 * time.Second, cut: func(c *nsCluster, p *nsNode) {
			for _, o := range c.nodes {
				if o != p {
					c.bed.CutPorts(p.ns, o.ns, p.pg.Port, p.pg.Port)
				}
			}
		}},
		{name: "primary-etcd", failover: true, cut: func(c *nsCluster, p *nsNode) {
			for _, o := range c.nodes {
				if o != p {
					c.bed.CutPorts(p.ns, o.ns, etcdClient, etcdPeer)
				}
			}
		}},
		// The etcd leader's node, a standby's, partitioned whole for 8 s:
		// etcd elects a new leader among the other two members (which
		// extends every lease) while the primary's renewals wait. A
		// failover is allowed (a renewal that waits out the etcd election
		// can cost the primary its term at TTL 2 s) but not required.
		{name: "etcd-leader-node", hold: 8 * time.Second, mayFailover: true,
			prepare: func(t *testing.T, ctx context.Context, c *nsCluster, p *nsNode) { c.etcdLeaderOff(t, ctx, p) },
			cut:     func(c *nsCluster, p *nsNode) { c.bed.Isolate(c.node(c.etcdLeader(context.Background())).ns) }},
	}
	for _, tc := range cases {
		if !t.Run(tc.name, func(t *testing.T) { runPartition(t, ctx, c, w, bound, tc) }) {
			break // the next case needs the cluster this one left converged
		}
	}
	w.stop()
	c.checkAcked(t, ctx, w)
}

// runPartition applies one fault to a converged cluster under the writers,
// checks the failover (or its absence), heals and waits for convergence.
func runPartition(t *testing.T, ctx context.Context, c *nsCluster, w *writers, bound time.Duration, tc partitionCase) {
	var old *nsNode
	testutil.Eventually(t, 90*time.Second, "a converged cluster", func() error {
		lead, err := c.converged(ctx)
		old = lead
		return err
	})
	before := w.count()
	testutil.Eventually(t, 30*time.Second, "writes before the fault", func() error {
		if n := w.count() - before; n < 50 {
			return fmt.Errorf("%d acknowledged", n)
		}
		return nil
	})
	if tc.prepare != nil {
		tc.prepare(t, ctx, c, old)
	}
	s := startSampler(c)
	w.resetLongest()
	// Checked also when a later step fails the test: a second writer
	// may be why the cluster did not converge.
	defer func() {
		s.Stop()
		longest, id := w.longestCall()
		rounds, multi, primaries := s.Counts()
		t.Logf("%s: longest call %v (bound %v); sampler: %d rounds, %d with two nodes out of recovery", tc.name, longest.Round(time.Millisecond), bound, rounds, primaries)
		if longest > bound {
			t.Errorf("%s: a pool call (id %d) took %v, past the driver's documented bound %v", tc.name, id, longest, bound)
		}
		if multi > 0 {
			t.Errorf("%s: %d of %d sampler rounds saw two nodes able to acknowledge writes, first: %s", tc.name, multi, rounds, s.FirstMulti())
		}
		if rounds < 50 {
			t.Errorf("%s: the sampler ran only %d rounds", tc.name, rounds)
		}
	}()
	etcdLead := c.etcdLeader(ctx)
	cut := time.Now()
	tc.cut(c, old)
	applied := time.Now()
	t.Logf("%s: fault on %s (the primary, %s; etcd leader on %s) applied in %v", tc.name, old.name, old.ns.Addr, etcdLead, applied.Sub(cut).Round(time.Millisecond))
	var newLead string
	if tc.failover {
		testutil.Eventually(t, 60*time.Second, "a new leader record", func() error {
			st, err := c.status(ctx)
			if err != nil {
				return err
			}
			if st.Leader == nil || st.Leader.Node == old.name || !st.Leader.Writable {
				return fmt.Errorf("leader %+v", st.Leader)
			}
			newLead = st.Leader.Node
			return nil
		})
		var firstAck time.Time
		testutil.Eventually(t, 60*time.Second, "a write acknowledged after the fault", func() error {
			var ok bool
			if firstAck, ok = w.firstAckAfter(cut, old.ns.Addr); !ok {
				return errors.New("none yet")
			}
			return nil
		})
		t.Logf("%s at TTL %v: first write acknowledged by the new primary %s %v after the cut", tc.name, partTTL, newLead, firstAck.Sub(cut).Round(time.Millisecond))
		before := w.count()
		testutil.Eventually(t, 30*time.Second, "writes on the new primary", func() error {
			if n := w.count() - before; n < 50 {
				return fmt.Errorf("%d new writes acknowledged", n)
			}
			return nil
		})
	} else {
		// No failover: the fault lasts hold; the leader must not change.
		end := time.Now().Add(tc.hold)
		testutil.Eventually(t, tc.hold+10*time.Second, "the fault held with the leader unchanged", func() error {
			st, err := c.status(ctx)
			if err == nil && st.Leader != nil && st.Leader.Node != old.name && !tc.mayFailover {
				t.Fatalf("%s: leader moved to %s: no failover may happen", tc.name, st.Leader.Node)
			}
			if time.Now().Before(end) {
				return errors.New("fault still held")
			}
			return nil
		})
	}
	healed := time.Now()
	c.bed.Heal()
	if !tc.failover {
		testutil.Eventually(t, bound, "a write acknowledged after the heal", func() error {
			if _, ok := w.firstAckAfter(healed, ""); !ok {
				return errors.New("none yet")
			}
			return nil
		})
		at, _ := w.firstAckAfter(healed, "")
		t.Logf("%s: writes resumed %v after the heal (%v after the cut); %d writes acknowledged during the fault", tc.name, at.Sub(healed).Round(time.Millisecond), at.Sub(cut).Round(time.Millisecond), w.countBetween(cut, healed))
	}
	var final *nsNode
	testutil.Eventually(t, 90*time.Second, "the cluster converges after the heal", func() error {
		lead, err := c.converged(ctx)
		final = lead
		return err
	})
	t.Logf("%s: converged %v after the heal, leader %s", tc.name, time.Since(healed).Round(time.Millisecond), final.name)
	if tc.mayFailover {
		t.Logf("%s: PostgreSQL primary %s before, %s after (failover allowed)", tc.name, old.name, final.name)
	}
	if tc.failover && final.name != newLead {
		// The etcd members run with pre-vote, and lease renewals require
		// an etcd leader: the heal must not cost the new primary its term.
		t.Errorf("%s: a second failover followed the heal (%s -> %s)", tc.name, newLead, final.name)
	}
}

// checkAcked fails t if an acknowledged write is missing from the
// converged cluster's primary.
func (c *nsCluster) checkAcked(t *testing.T, ctx context.Context, w *writers) {
	var final *nsNode
	testutil.Eventually(t, 90*time.Second, "a converged cluster", func() error {
		lead, err := c.converged(ctx)
		final = lead
		return err
	})
	have, err := final.ids(ctx)
	if err != nil {
		t.Fatalf("read the final primary %s: %v", final.name, err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	var lost []int64
	for id := range w.acked {
		if !have[id] {
			lost = append(lost, id)
		}
	}
	slices.Sort(lost)
	t.Logf("%d writes acknowledged, %d failed, all checked on the final primary %s", len(w.acked), w.errs, final.name)
	if len(lost) > 0 {
		t.Errorf("synchronous mode lost %d acknowledged writes: %v", len(lost), lost)
	}
}
