package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgha/pgha/driver"
	"github.com/pgha/pgha/ha"
	"github.com/pgha/pgha/internal/testutil"
	"github.com/pgha/pgha/replicate"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testutil.RemoveBinaries()
	if code == 0 {
		if err := testutil.CheckLeaks(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}

// agentBinary builds examples/agent once per test binary.
func agentBinary(t *testing.T) string {
	t.Helper()
	return testutil.GoBinary(t, "github.com/pgha/pgha/examples/agent")
}

// agent is one pgha-agent process and its PostgreSQL.
type agent struct {
	name    string
	cmd     *exec.Cmd
	done    chan struct{}
	out     bytes.Buffer
	dataDir string
	sock    string
	port    int
}

const cluster = "frozen"

func startAgent(t *testing.T, name, etcdURL, syncMode string, extra ...string) *agent {
	t.Helper()
	pg := testutil.PostgresConfig(t, name)
	a := &agent{name: name, done: make(chan struct{}), dataDir: pg.DataDir, sock: pg.SocketDir, port: pg.Port}
	a.cmd = exec.Command(agentBinary(t),
		"--cluster", cluster, "--node", name, "--etcd-endpoints", etcdURL, "--listen", testutil.FreeAddr(t),
		"--lease-ttl", "2s", "--loop-interval", "200ms", "--sync-mode", syncMode,
		"--pg-data-dir", pg.DataDir, "--pg-bin-dir", pg.BinDir, "--pg-port", fmt.Sprint(pg.Port),
		"--pg-socket-dir", pg.SocketDir)
	a.cmd.Args = append(a.cmd.Args, extra...)
	a.cmd.Env = append(os.Environ(),
		"PGHA_PG_SUPERUSER_PASSWORD="+testutil.PostgresSuperuserPassword,
		"PGHA_PG_REPLICATION_PASSWORD="+testutil.PostgresReplicationPassword)
	a.cmd.Stdout, a.cmd.Stderr = &syncWriter{w: &a.out}, &syncWriter{w: &a.out}
	if err := a.cmd.Start(); err != nil {
		t.Fatalf("start agent %s: %v", name, err)
	}
	go func() { a.cmd.Wait(); close(a.done) }()
	t.Cleanup(func() {
		a.cmd.Process.Signal(syscall.SIGCONT)
		a.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-a.done:
		case <-time.After(30 * time.Second):
			a.cmd.Process.Kill()
			<-a.done
		}
		// A postmaster left behind by a killed agent is stopped here.
		if procs, _ := testutil.PostgresProcesses(a.dataDir); len(procs) > 0 {
			t.Errorf("agent %s left PostgreSQL running: %v", name, procs)
			exec.Command("pkill", "-KILL", "-f", "postgres -D "+a.dataDir).Run()
		}
		if t.Failed() {
			t.Logf("--- agent %s output ---\n%s", name, a.out.String())
		}
	})
	return a
}

type syncWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func (a *agent) connect(ctx context.Context) (*pgx.Conn, error) {
	return testutil.ConnectSuperuser(ctx, replicate.Config{SocketDir: a.sock, Port: a.port})
}

// ids returns the ids in table w on a's PostgreSQL.
func (a *agent) ids(t *testing.T) map[int64]bool {
	t.Helper()
	ids, err := tableIDs(testutil.Ctx(t, 10*time.Second), replicate.Config{SocketDir: a.sock, Port: a.port})
	if err != nil {
		t.Fatalf("read %s: %v", a.name, err)
	}
	return ids
}

func leader(ctx context.Context, cli *clientv3.Client) (string, bool) {
	st, err := ha.ClusterStatus(ctx, cli, cluster)
	if err != nil || st.Leader == nil {
		return "", false
	}
	return st.Leader.Node, st.Leader.Writable
}

// poolWriter inserts ids through a driver.Pool and records when each was
// sent and whether it was acknowledged.
type poolWriter struct {
	mu     sync.Mutex
	sentAt map[int64]time.Time
	acked  map[int64]bool
	stop   func()
}

func startPoolWriter(t *testing.T, pool *driver.Pool) *poolWriter {
	w := &poolWriter{sentAt: map[int64]time.Time{}, acked: map[int64]bool{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for id := int64(1); ctx.Err() == nil; id++ {
			w.mu.Lock()
			w.sentAt[id] = time.Now()
			w.mu.Unlock()
			ectx, ecancel := context.WithTimeout(ctx, 10*time.Second)
			_, err := pool.Exec(ectx, "INSERT INTO w VALUES ($1)", id)
			ecancel()
			if err == nil {
				w.mu.Lock()
				w.acked[id] = true
				w.mu.Unlock()
			}
		}
	}()
	w.stop = func() { cancel(); <-done }
	return w
}

func (w *poolWriter) ackedCount() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.acked)
}

// TestFrozenManager: the primary's agent is frozen with SIGSTOP while its
// PostgreSQL keeps running (it cannot fence itself, and its fence guard is
// off: see TestFrozenManagerPlainClient for the guard). A new primary is
// elected after the lease; writers through driver.Pool lose no
// acknowledged write (synchronous mode) and send nothing to the old
// primary once the new leader record is there. After SIGCONT the old agent
// fences its PostgreSQL and rejoins as a standby; it never takes the
// leadership back.
func TestFrozenManager(t *testing.T) {
	testutil.PostgresBinDir(t)
	etcd := testutil.StartEtcd(t, 1)
	ep := etcd.Endpoints()[0]
	cli := etcd.Client(t)
	agents := map[string]*agent{}
	for _, n := range []string{"f1", "f2", "f3"} {
		// Without the fence guard: this test shows what driver.Pool
		// protects by itself when nothing fences the frozen primary.
		agents[n] = startAgent(t, n, ep, "on", "--fence-guard=false")
	}
	ctx := testutil.Ctx(t, 5*time.Minute)

	var old *agent
	testutil.Eventually(t, 120*time.Second, "a writable leader and two streaming standbys", func() error {
		st, err := ha.ClusterStatus(ctx, cli, cluster)
		if err != nil {
			return err
		}
		if st.Leader == nil || !st.Leader.Writable {
			return errors.New("no writable leader")
		}
		streaming := 0
		for _, m := range st.Members {
			if m.Node != st.Leader.Node && m.Streaming {
				streaming++
			}
		}
		if streaming < 2 || len(st.SyncSet) == 0 {
			return fmt.Errorf("%d standbys streaming, sync set %v", streaming, st.SyncSet)
		}
		old = agents[st.Leader.Node]
		return nil
	})

	pcfg, err := pgxpool.ParseConfig(fmt.Sprintf("postgres://postgres:%s@127.0.0.1/postgres?sslmode=disable", url.QueryEscape(testutil.PostgresSuperuserPassword)))
	if err != nil {
		t.Fatal(err)
	}
	dcfg := driver.DefaultConfig()
	dcfg.Config, dcfg.Etcd, dcfg.Cluster = pcfg, cli, cluster
	dcfg.FailoverTimeout = 30 * time.Second
	dcfg.Logger = slog.New(slog.NewTextHandler(t.Output(), nil))
	pool, err := driver.NewWithConfig(ctx, dcfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if _, err := pool.Exec(ctx, "CREATE TABLE w (id bigint PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	w := startPoolWriter(t, pool)
	defer w.stop()
	testutil.Eventually(t, 30*time.Second, "writes before the freeze", func() error {
		if n := w.ackedCount(); n < 50 {
			return fmt.Errorf("%d acknowledged", n)
		}
		return nil
	})

	// Freeze the primary's manager; its PostgreSQL keeps running.
	if err := old.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	frozen := true
	defer func() {
		if frozen {
			old.cmd.Process.Signal(syscall.SIGCONT)
		}
	}()
	var newLeader string
	var switched time.Time
	testutil.Eventually(t, 30*time.Second, "a new leader record", func() error {
		n, _ := leader(ctx, cli)
		if n == "" || n == old.name {
			return fmt.Errorf("leader %q", n)
		}
		newLeader, switched = n, time.Now()
		return nil
	})
	before := w.ackedCount()
	testutil.Eventually(t, 30*time.Second, "writes through the pool on the new primary", func() error {
		if n := w.ackedCount() - before; n < 50 {
			return fmt.Errorf("%d new writes acknowledged", n)
		}
		return nil
	})

	// Before the old manager wakes (and fences and rewinds its data
	// directory), check what reached the old primary: nothing sent after
	// the new leader record appeared (with a margin for a write sent just
	// before we saw it).
	oldIDs := old.ids(t)
	w.mu.Lock()
	var late []int64
	for id := range oldIDs {
		if at, ok := w.sentAt[id]; ok && at.After(switched.Add(100*time.Millisecond)) {
			late = append(late, id)
		}
	}
	w.mu.Unlock()
	if len(late) > 0 {
		t.Errorf("the pool wrote %d rows to the old primary %s after the new leader record of %s appeared: %v", len(late), old.name, newLeader, late)
	}

	// Wake the old manager: it must fence, rejoin and never lead again.
	if err := old.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	frozen = false
	testutil.Eventually(t, 90*time.Second, "the old primary rejoins as a streaming standby", func() error {
		if n, _ := leader(ctx, cli); n == old.name {
			t.Fatalf("the woken manager %s took the leadership back", old.name)
		}
		st, err := ha.ClusterStatus(ctx, cli, cluster)
		if err != nil {
			return err
		}
		for _, m := range st.Members {
			if m.Node == old.name {
				if m.Role != "replica" || !m.Streaming {
					return fmt.Errorf("%s is %s (streaming %v)", m.Node, m.Role, m.Streaming)
				}
				return nil
			}
		}
		return fmt.Errorf("no member record for %s", old.name)
	})
	w.stop()

	// Synchronous mode: every acknowledged write is on the new primary.
	have := agents[newLeader].ids(t)
	w.mu.Lock()
	var lost []int64
	for id := range w.acked {
		if !have[id] {
			lost = append(lost, id)
		}
	}
	w.mu.Unlock()
	if len(lost) > 0 {
		t.Errorf("synchronous mode lost %d acknowledged writes: %v", len(lost), lost)
	}
	if n, _ := leader(ctx, cli); n == old.name {
		t.Errorf("the woken manager %s leads", old.name)
	}
}

// TestFrozenManagerPlainClient: the same freeze in asynchronous mode with
// a client that does not follow the leader record: a plain pgx
// connection with a multi-host string and target_session_attrs=read-write,
// the way most applications connect. The agents' fence guards (on by
// default) fence the frozen agent's PostgreSQL before another node can be
// elected: a sampler never sees two nodes out of recovery, and every
// acknowledged row is on the final primary. PGHA_E2E_FENCE_GUARD=false
// runs it without the guard (it then fails: two primaries, rows lost).
func TestFrozenManagerPlainClient(t *testing.T) {
	testutil.PostgresBinDir(t)
	guard := "true"
	if v := os.Getenv("PGHA_E2E_FENCE_GUARD"); v != "" {
		guard = v
	}
	etcd := testutil.StartEtcd(t, 1)
	ep := etcd.Endpoints()[0]
	cli := etcd.Client(t)
	names := []string{"p1", "p2", "p3"}
	agents := map[string]*agent{}
	for _, n := range names {
		agents[n] = startAgent(t, n, ep, "off", "--fence-guard="+guard)
	}
	ctx := testutil.Ctx(t, 5*time.Minute)
	var old *agent
	testutil.Eventually(t, 120*time.Second, "a writable leader and two streaming standbys", func() error {
		st, err := ha.ClusterStatus(ctx, cli, cluster)
		if err != nil {
			return err
		}
		if st.Leader == nil || !st.Leader.Writable {
			return errors.New("no writable leader")
		}
		streaming := 0
		for _, m := range st.Members {
			if m.Node != st.Leader.Node && m.Streaming {
				streaming++
			}
		}
		if streaming < 2 {
			return fmt.Errorf("%d standbys streaming", streaming)
		}
		old = agents[st.Leader.Node]
		return nil
	})
	first, err := old.connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := first.Exec(ctx, "CREATE TABLE w (id bigint PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	first.Close(ctx)

	// The one-writer sampler: every 20 ms, how many nodes are out of
	// recovery (a fenced node does not answer).
	sctx, stopSampler := context.WithCancel(ctx)
	var twoWriters, samples int
	var sampleMu sync.Mutex
	samplerDone := make(chan struct{})
	go func() {
		defer close(samplerDone)
		conns := map[string]*pgx.Conn{}
		defer func() {
			for _, c := range conns {
				c.Close(context.Background())
			}
		}()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for sctx.Err() == nil {
			writable := 0
			for _, n := range names {
				c := conns[n]
				if c == nil || c.IsClosed() {
					cctx, cancel := context.WithTimeout(sctx, 200*time.Millisecond)
					c, _ = agents[n].connect(cctx)
					cancel()
					if c == nil {
						continue
					}
					conns[n] = c
				}
				qctx, cancel := context.WithTimeout(sctx, 200*time.Millisecond)
				var inRecovery bool
				err := c.QueryRow(qctx, "SELECT pg_is_in_recovery()").Scan(&inRecovery)
				cancel()
				if err == nil && !inRecovery {
					writable++
				}
			}
			sampleMu.Lock()
			samples++
			if writable > 1 {
				twoWriters++
			}
			sampleMu.Unlock()
			select {
			case <-sctx.Done():
			case <-tick.C:
			}
		}
	}()

	// The plain client: one INSERT every 20 ms, 1 s timeout each,
	// reconnecting after any error.
	var hosts []string
	for _, n := range names {
		hosts = append(hosts, fmt.Sprintf("127.0.0.1:%d", agents[n].port))
	}
	dsn := fmt.Sprintf("postgres://postgres:%s@%s/postgres?target_session_attrs=read-write&connect_timeout=1&sslmode=disable",
		url.QueryEscape(testutil.PostgresSuperuserPassword), strings.Join(hosts, ","))
	wctx, stopWriter := context.WithCancel(ctx)
	var ackMu sync.Mutex
	acked := map[int64]bool{}
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		var conn *pgx.Conn
		defer func() {
			if conn != nil {
				conn.Close(context.Background())
			}
		}()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for id := int64(1); wctx.Err() == nil; id++ {
			select {
			case <-wctx.Done():
				return
			case <-tick.C:
			}
			if conn == nil {
				cctx, cancel := context.WithTimeout(wctx, time.Second)
				conn, _ = pgx.Connect(cctx, dsn)
				cancel()
				if conn == nil {
					continue
				}
			}
			ectx, cancel := context.WithTimeout(wctx, time.Second)
			_, err := conn.Exec(ectx, "INSERT INTO w VALUES ($1)", id)
			cancel()
			if err != nil {
				conn.Close(context.Background())
				conn = nil
				continue
			}
			ackMu.Lock()
			acked[id] = true
			ackMu.Unlock()
		}
	}()
	ackedCount := func() int {
		ackMu.Lock()
		defer ackMu.Unlock()
		return len(acked)
	}
	testutil.Eventually(t, 30*time.Second, "writes before the freeze", func() error {
		if n := ackedCount(); n < 50 {
			return fmt.Errorf("%d acknowledged", n)
		}
		return nil
	})

	stoppedAt := time.Now()
	if err := old.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	frozen := true
	defer func() {
		if frozen {
			old.cmd.Process.Signal(syscall.SIGCONT)
		}
	}()
	var newLeader string
	testutil.Eventually(t, 30*time.Second, "a new writable leader", func() error {
		n, w := leader(ctx, cli)
		if n == "" || n == old.name || !w {
			return fmt.Errorf("leader %q writable %v", n, w)
		}
		newLeader = n
		return nil
	})
	promotedAfter := time.Since(stoppedAt)
	before := ackedCount()
	testutil.Eventually(t, 30*time.Second, "the plain client writing on the new primary", func() error {
		if n := ackedCount() - before; n < 100 {
			return fmt.Errorf("%d new writes acknowledged", n)
		}
		return nil
	})
	if err := old.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	frozen = false
	testutil.Eventually(t, 90*time.Second, "the old primary rejoins as a streaming standby", func() error {
		st, err := ha.ClusterStatus(ctx, cli, cluster)
		if err != nil {
			return err
		}
		for _, m := range st.Members {
			if m.Node == old.name {
				if m.Role != ha.RoleReplica || !m.Streaming {
					return fmt.Errorf("%s is %s (streaming %v)", m.Node, m.Role, m.Streaming)
				}
				return nil
			}
		}
		return fmt.Errorf("no member record for %s", old.name)
	})
	stopWriter()
	<-writerDone
	stopSampler()
	<-samplerDone

	final, _ := leader(ctx, cli)
	have := agents[final].ids(t)
	ackMu.Lock()
	var lost []int64
	for id := range acked {
		if !have[id] {
			lost = append(lost, id)
		}
	}
	total := len(acked)
	ackMu.Unlock()
	sampleMu.Lock()
	defer sampleMu.Unlock()
	t.Logf("fence guard %s: %d writes acknowledged, %d sampler rounds, %d with two nodes out of recovery, new leader %s writable %v after the freeze (TTL 2 s)",
		guard, total, samples, twoWriters, newLeader, promotedAfter.Round(10*time.Millisecond))
	if twoWriters > 0 {
		t.Errorf("%d of %d sampler rounds saw two nodes out of recovery while %s's agent was frozen", twoWriters, samples, old.name)
	}
	if len(lost) > 0 {
		slices.Sort(lost)
		t.Errorf("%d acknowledged writes of the plain client are missing on the final primary %s: %v", len(lost), final, lost)
	}
}
