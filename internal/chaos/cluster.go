package chaos

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgha/pgha/election"
	"github.com/pgha/pgha/ha"
	"github.com/pgha/pgha/internal/keyspace"
	"github.com/pgha/pgha/internal/testutil"
	"github.com/pgha/pgha/replicate"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// clusterName is the pgha cluster the harness runs.
const clusterName = "chaos"

// httpToken authenticates the agents' failsafe calls to one another (the
// same on every node); the agents get it with failsafe on only.
const httpToken = "chaos-failsafe-token-0123456789abcdef"

var (
	buildOnce sync.Once
	buildDir  string
	agentBin  string
	buildErr  error
)

// agentBinary builds examples/agent once per test binary. Cleanup removes
// the directory.
func agentBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		if buildDir, buildErr = os.MkdirTemp("", "pgha-chaos-"); buildErr != nil {
			return
		}
		agentBin = filepath.Join(buildDir, "pgha-agent")
		out, err := exec.Command("go", "build", "-o", agentBin, "github.com/pgha/pgha/examples/agent").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("%v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatalf("go build examples/agent: %v", buildErr)
	}
	return agentBin
}

// Cleanup removes the agent binary built by the harness; call it from
// TestMain after m.Run.
func Cleanup() {
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
}

// node is one node: an agent process supervising a PostgreSQL, the proxies
// in front of it and its proxies to etcd.
type node struct {
	name string
	pg   replicate.Config
	// repl is the address the node advertises: standbys stream through it.
	repl *testutil.Proxy
	// client is the clients' way to the node.
	client *testutil.Proxy
	// etcd are the agent's proxies to each etcd member.
	etcd    []*testutil.Proxy
	logPath string
	// api is the agent's HTTP address (--listen) with failsafe on: fixed,
	// since the agent publishes it in its member record for the other
	// nodes' failsafe calls; "" with failsafe off (any free port).
	api string

	mu    sync.Mutex
	agent *agentProc // nil while killed
	gen   int        // agent starts, for the log
}

type agentProc struct {
	cmd  *exec.Cmd
	done chan struct{}
	logf *os.File
}

type cluster struct {
	t    testing.TB
	dir  string
	opts Options
	etcd *testutil.EtcdCluster
	cli  *clientv3.Client // the harness's own client, straight to etcd
	// nodes in name order.
	nodes []*node
	tl    *timeline
}

func startCluster(t testing.TB, opts Options, tl *timeline) *cluster {
	t.Helper()
	bin := agentBinary(t)
	c := &cluster{t: t, dir: opts.Dir, opts: opts, tl: tl}
	c.etcd = testutil.StartEtcd(t, 3)
	c.cli = c.etcd.Client(t)
	for i := 1; i <= 3; i++ {
		name := fmt.Sprintf("c%d", i)
		n := &node{name: name, pg: testutil.PostgresConfig(t, name), logPath: filepath.Join(c.dir, name+".log")}
		up := fmt.Sprintf("127.0.0.1:%d", n.pg.Port)
		if opts.Failsafe {
			n.api = testutil.FreeAddr(t)
		}
		n.repl = testutil.StartProxy(t, name+"-repl", up)
		n.client = testutil.StartProxy(t, name+"-client", up)
		for j, m := range c.etcd.Members() {
			n.etcd = append(n.etcd, testutil.StartProxy(t, fmt.Sprintf("%s-etcd%d", name, j), strings.TrimPrefix(m.ClientURL, "http://")))
		}
		c.nodes = append(c.nodes, n)
	}
	for _, n := range c.nodes {
		if err := c.startAgent(n, bin); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(c.stop)
	return c
}

// startAgent starts n's agent (again): it adopts a PostgreSQL still
// running for its data directory.
func (c *cluster) startAgent(n *node, bin string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.agent != nil {
		return nil
	}
	var eps []string
	for _, p := range n.etcd {
		eps = append(eps, p.URL())
	}
	_, advPort, _ := strings.Cut(n.repl.Addr(), ":")
	logf, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("open agent log %s: %w", n.logPath, err)
	}
	n.gen++
	fmt.Fprintf(logf, "\n===== agent %s start #%d at %s =====\n", n.name, n.gen, c.tl.now())
	listen := "127.0.0.1:0"
	if n.api != "" {
		listen = n.api
	}
	args := []string{
		"--cluster", clusterName, "--node", n.name, "--etcd-endpoints", strings.Join(eps, ","),
		"--listen", listen, "--lease-ttl", c.opts.TTL.String(), "--loop-interval", "200ms",
		"--sync-mode", c.opts.Sync, "--max-lag-on-failover", strconv.FormatInt(c.opts.MaxLag, 10),
		"--pg-data-dir", n.pg.DataDir, "--pg-bin-dir", n.pg.BinDir, "--pg-port", strconv.Itoa(n.pg.Port),
		"--pg-advertise-port", advPort, "--pg-socket-dir", n.pg.SocketDir, "--etcd-dial-timeout", "2s",
		"--pg-replace-data-dir"}
	env := append(os.Environ(),
		"PGHA_PG_SUPERUSER_PASSWORD="+testutil.PostgresSuperuserPassword,
		"PGHA_PG_REPLICATION_PASSWORD="+testutil.PostgresReplicationPassword)
	if c.opts.Failsafe {
		// --api-url defaults to http://<pg-advertise-host>:<listen port>,
		// i.e. http://127.0.0.1:<port of n.api>.
		args = append(args, "--failsafe")
		env = append(env, "PGHA_HTTP_TOKEN="+httpToken)
	}
	if c.opts.NoFenceGuard {
		args = append(args, "--fence-guard=false")
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group: signals to the test do not reach it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start agent %s: %w", n.name, err)
	}
	a := &agentProc{cmd: cmd, done: make(chan struct{}), logf: logf}
	go func() { cmd.Wait(); logf.Close(); close(a.done) }()
	n.agent = a
	return nil
}

// killAgent kills n's agent with SIGKILL, as a crash would: its
// PostgreSQL keeps running. It reports whether an agent was running.
func (n *node) killAgent() bool {
	n.mu.Lock()
	a := n.agent
	n.agent = nil
	n.mu.Unlock()
	if a == nil {
		return false
	}
	a.cmd.Process.Signal(syscall.SIGKILL)
	<-a.done
	return true
}

// signalAgent sends sig to n's agent, if it runs.
func (n *node) signalAgent(sig syscall.Signal) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.agent == nil {
		return errors.New("no agent running")
	}
	return n.agent.cmd.Process.Signal(sig)
}

// agentRunning reports whether n's agent process is alive.
func (n *node) agentRunning() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.agent == nil {
		return false
	}
	select {
	case <-n.agent.done:
		return false
	default:
		return true
	}
}

// stopAgent stops n's agent cleanly (SIGTERM), killing it after 30 s.
func (n *node) stopAgent() error {
	n.mu.Lock()
	a := n.agent
	n.agent = nil
	n.mu.Unlock()
	if a == nil {
		return nil
	}
	a.cmd.Process.Signal(syscall.SIGCONT)
	a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.done:
		return nil
	case <-time.After(30 * time.Second):
		a.cmd.Process.Kill()
		<-a.done
		return fmt.Errorf("agent %s did not stop within 30 s of SIGTERM; killed", n.name)
	}
}

// postmasterPID is the pid in n's postmaster.pid when that process lives.
func (n *node) postmasterPID() int {
	b, err := os.ReadFile(filepath.Join(n.pg.DataDir, "postmaster.pid"))
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil || pid <= 0 || !testutil.ProcessAlive(pid) {
		return 0
	}
	return pid
}

// postgresPIDs are n's postmaster and its children.
func (n *node) postgresPIDs() []int {
	pm := n.postmasterPID()
	if pm == 0 {
		return nil
	}
	return append([]int{pm}, testutil.PostgresChildren(pm)...)
}

// walReceiverPID is the pid of n's WAL receiver process, 0 if none.
func (n *node) walReceiverPID() int {
	pm := n.postmasterPID()
	if pm == 0 {
		return 0
	}
	for _, pid := range testutil.PostgresChildren(pm) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err == nil && strings.Contains(string(b), "walreceiver") {
			return pid
		}
	}
	return 0
}

// connect opens a superuser connection to n's PostgreSQL over its unix
// socket (no proxy).
func (n *node) connect(ctx context.Context) (*pgx.Conn, error) {
	return testutil.ConnectSuperuser(ctx, n.pg)
}

func (c *cluster) node(name string) *node {
	for _, n := range c.nodes {
		if n.name == name {
			return n
		}
	}
	return nil
}

// state reads the cluster state from etcd (bounded).
func (c *cluster) state(ctx context.Context) (ha.ClusterState, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return ha.ClusterStatus(ctx, c.cli, clusterName)
}

// leader is the node in the leader record, nil when there is none or etcd
// does not answer.
func (c *cluster) leader(ctx context.Context) *node {
	st, err := c.state(ctx)
	if err != nil || st.Leader == nil {
		return nil
	}
	return c.node(st.Leader.Node)
}

// snapLeader identifies the current leader's term (nil when there is no
// writable leader or etcd or its PostgreSQL does not answer).
func (c *cluster) snapLeader(ctx context.Context) *leaderSnap {
	st, err := c.state(ctx)
	if err != nil || st.Leader == nil || !st.Leader.Writable {
		return nil
	}
	layout, err := keyspace.NewLayout("", clusterName)
	if err != nil {
		return nil
	}
	gctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	resp, err := c.cli.Get(gctx, layout.Leader()+"/", clientv3.WithPrefix())
	cancel()
	if err != nil {
		return nil
	}
	kv := election.LeaderKV(layout.Leader(), slices.Values(resp.Kvs))
	n := c.node(st.Leader.Node)
	if kv == nil || n == nil {
		return nil
	}
	s, err := n.pgState(ctx)
	if err != nil || s.recovery {
		return nil
	}
	return &leaderSnap{node: n.name, token: kv.CreateRevision, timeline: s.timeline}
}

// pgState is what one node's PostgreSQL says about itself.
type pgState struct {
	recovery bool
	// timeline: the primary's current timeline; a standby's WAL
	// receiver's.
	timeline   int64
	senderPort int
	streaming  bool
	lsn        string
}

func (n *node) pgState(ctx context.Context) (pgState, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	conn, err := n.connect(ctx)
	if err != nil {
		return pgState{}, err
	}
	defer conn.Close(context.Background())
	var s pgState
	if err := conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&s.recovery); err != nil {
		return s, err
	}
	if !s.recovery {
		var tl string
		err := conn.QueryRow(ctx, "SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8), pg_current_wal_lsn()::text").Scan(&tl, &s.lsn)
		if err != nil {
			return s, err
		}
		s.timeline, err = strconv.ParseInt(tl, 16, 64)
		return s, err
	}
	var status *string
	var tli *int64
	var port *int
	err = conn.QueryRow(ctx, `SELECT (SELECT status FROM pg_stat_wal_receiver), (SELECT received_tli::bigint FROM pg_stat_wal_receiver),
		(SELECT sender_port FROM pg_stat_wal_receiver), pg_last_wal_replay_lsn()::text`).Scan(&status, &tli, &port, &s.lsn)
	if err != nil {
		return s, err
	}
	s.streaming = status != nil && *status == "streaming"
	if tli != nil {
		s.timeline = *tli
	}
	if port != nil {
		s.senderPort = *port
	}
	return s, nil
}

// converged returns nil when the leader record is writable, its
// PostgreSQL is a primary, every other node streams from it on its
// timeline, and (synchronous mode) a streaming standby is in the sync set.
func (c *cluster) converged(ctx context.Context) error {
	st, err := c.state(ctx)
	if err != nil {
		return err
	}
	if st.Leader == nil || !st.Leader.Writable {
		return errors.New("no writable leader record")
	}
	lead := c.node(st.Leader.Node)
	if lead == nil {
		return fmt.Errorf("leader record names unknown node %q", st.Leader.Node)
	}
	ls, err := lead.pgState(ctx)
	if err != nil {
		return fmt.Errorf("leader %s: %w", lead.name, err)
	}
	if ls.recovery {
		return fmt.Errorf("leader %s's PostgreSQL is in recovery", lead.name)
	}
	_, advPort, _ := strings.Cut(lead.repl.Addr(), ":")
	for _, n := range c.nodes {
		if n == lead {
			continue
		}
		if !n.agentRunning() {
			return fmt.Errorf("%s: agent not running", n.name)
		}
		s, err := n.pgState(ctx)
		if err != nil {
			return fmt.Errorf("%s: %w", n.name, err)
		}
		if !s.recovery || !s.streaming || strconv.Itoa(s.senderPort) != advPort || s.timeline != ls.timeline {
			return fmt.Errorf("%s not streaming from %s on timeline %d (recovery %v, streaming %v, sender port %d, timeline %d)",
				n.name, lead.name, ls.timeline, s.recovery, s.streaming, s.senderPort, s.timeline)
		}
	}
	if c.opts.Sync != "off" {
		ok := false
		for _, m := range st.Members {
			if m.Sync && m.Streaming && m.Node != lead.name {
				ok = true
			}
		}
		if !ok {
			return fmt.Errorf("sync set %v has no streaming standby", st.SyncSet)
		}
	}
	return nil
}

// stop stops every agent cleanly and reports a PostgreSQL left behind.
func (c *cluster) stop() {
	var wg sync.WaitGroup
	for _, n := range c.nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, pid := range n.postgresPIDs() {
				syscall.Kill(pid, syscall.SIGCONT)
			}
			if err := n.stopAgent(); err != nil {
				c.t.Error(err)
			}
		}()
	}
	wg.Wait()
	for _, n := range c.nodes {
		if pid := n.postmasterPID(); pid != 0 {
			// An agent that stops cleanly stops its PostgreSQL.
			c.t.Errorf("%s: PostgreSQL (pid %d) still running after its agent stopped", n.name, pid)
			syscall.Kill(pid, syscall.SIGKILL)
			testutil.Poll(10*time.Second, func() error {
				if testutil.ProcessAlive(pid) {
					return errors.New("alive")
				}
				return nil
			})
		}
	}
	if c.t.Failed() {
		for _, n := range c.nodes {
			testutil.DumpTail(c.t, "agent "+n.name+" log", n.logPath, 150)
			testutil.DumpTail(c.t, "PostgreSQL "+n.name+" log", n.pg.DataDir+".log", 60)
		}
	}
}
