package main

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
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
	"github.com/pgha/pgha/internal/testutil"
	"github.com/pgha/pgha/replicate"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// BenchmarkIdle measures what a healthy three-node cluster costs the
// machine, with real pgha-agent processes (one etcd member, defaults: TTL
// 5 s, loop 500 ms unless PGHA_IDLE_TTL / PGHA_IDLE_LOOP say otherwise),
// in three phases of PGHA_IDLE_WINDOW (default 20 s) each:
//
//  1. idle: no client at all;
//  2. writer: one plain pgx connection to the primary INSERTs a row every
//     10 ms (100/s) and times each INSERT;
//  3. stopped: the same writer with the three agents stopped (SIGSTOP of
//     each agent and its fence guard, as a frozen container would be),
//     the baseline that the agents' cost is read against.
//
// Per node and phase it prints loop iterations/s (the agent's own loop
// metric), member-record writes/s and all etcd writes/s (counted from etcd
// revisions and a watch on the cluster's keys), new PostgreSQL logins/s
// (pg_stat_database.sessions, read over one connection opened before the
// window), the agent's CPU (process CPU seconds per second, /proc) and
// RSS, and for the writer phases INSERT latency p50/p99. Run it once:
//
//	go test -run '^$' -bench Idle -benchtime 1x ./examples/agent
//
// After the stopped phase the agents are resumed; the leader finds its
// lease lost and fences (expected: its manager was frozen past the TTL),
// so the cluster is not reused afterwards.
func BenchmarkIdle(b *testing.B) {
	window := envDuration(b, "PGHA_IDLE_WINDOW", 20*time.Second)
	ttl := envDuration(b, "PGHA_IDLE_TTL", 5*time.Second)
	loop := envDuration(b, "PGHA_IDLE_LOOP", 500*time.Millisecond)
	bin := filepath.Join(b.TempDir(), "pgha-agent")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		b.Fatalf("go build: %v\n%s", err, out)
	}
	etcd := testutil.StartEtcd(b, 1)
	cli := etcd.Client(b)
	const cluster = "idle"
	var agents []*idleAgent
	for i := 1; i <= 3; i++ {
		agents = append(agents, startIdleAgent(b, bin, fmt.Sprintf("i%d", i), cluster, etcd.Endpoints()[0], ttl, loop))
	}
	b.Cleanup(func() {
		for _, a := range agents {
			signalAgent(a, syscall.SIGCONT)
			a.proc.stop(b)
		}
	})
	for b.Loop() {
		st := waitClusterHealthy(b, cli, cluster, 3, 120*time.Second)
		// Let the start-up settle (slots, sync set, first heartbeats).
		settle := time.NewTimer(2 * loop)
		<-settle.C
		var primary *idleAgent
		for _, a := range agents {
			if a.proc.name == st.Leader.Node {
				primary = a
			}
		}
		ctx := b.Context()
		idle := measureIdle(b, ctx, cli, cluster, agents, window, nil, false)
		w, err := newIdleWriter(ctx, primary.pg)
		if err != nil {
			b.Fatal(err)
		}
		writer := measureIdle(b, ctx, cli, cluster, agents, window, w, false)
		for _, a := range agents {
			signalAgent(a, syscall.SIGSTOP)
		}
		stopped := measureIdle(b, ctx, cli, cluster, agents, window, w, true)
		for _, a := range agents {
			signalAgent(a, syscall.SIGCONT)
		}
		w.close()

		fmt.Printf("\nA healthy 3-node cluster (pgha-agent processes, 1 etcd member, TTL %v, loop %v), %v per phase\n", ttl, loop, window)
		fmt.Printf("%-8s %-5s %-8s %9s %16s %10s %13s %9s\n", "phase", "node", "role", "loops/s", "member writes/s", "logins/s", "agent CPU %", "RSS MiB")
		for _, ph := range []struct {
			name string
			r    idleResult
		}{{"idle", idle}, {"writer", writer}, {"stopped", stopped}} {
			for i, a := range agents {
				role := "standby"
				if a == primary {
					role = "primary"
				}
				n := ph.r.nodes[i]
				fmt.Printf("%-8s %-5s %-8s %9.2f %16.2f %10.2f %13.2f %9.1f\n", ph.name, a.proc.name, role,
					n.loops, n.memberWrites, n.logins, 100*n.cpu, mib(n.rss))
			}
			fmt.Printf("%-8s all etcd writes/s %.2f, machine busy %.1f %%", ph.name, ph.r.etcdWrites, 100*ph.r.busy)
			if len(ph.r.lat) > 0 {
				fmt.Printf(", INSERT latency p50 %.2f ms, p99 %.2f ms (%d inserts)", ms(percentile(ph.r.lat, 50)), ms(percentile(ph.r.lat, 99)), len(ph.r.lat))
			}
			fmt.Println()
		}
		var maxCPU, maxLoops float64
		for _, n := range idle.nodes {
			maxCPU, maxLoops = max(maxCPU, n.cpu), max(maxLoops, n.loops)
		}
		b.ReportMetric(100*maxCPU, "idle-agent-cpu-%")
		b.ReportMetric(maxLoops, "idle-loops/s")
		b.ReportMetric(idle.etcdWrites, "idle-etcd-writes/s")
		if len(writer.lat) > 0 && len(stopped.lat) > 0 {
			b.ReportMetric(ms(percentile(writer.lat, 99)), "p99-ms-agents")
			b.ReportMetric(ms(percentile(stopped.lat, 99)), "p99-ms-stopped")
		}
	}
}

type idleAgent struct {
	proc *agentProc
	pg   replicate.Config
	api  string // the agent's HTTP address
	db   *pgx.Conn
}

func startIdleAgent(b *testing.B, bin, name, cluster, etcdURL string, ttl, loop time.Duration) *idleAgent {
	b.Helper()
	pg := testutil.PostgresConfig(b, name)
	logFile, err := os.Create(filepath.Join(b.TempDir(), name+".log"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { logFile.Close() })
	api := testutil.FreeAddr(b)
	a := &agentProc{name: name, logFile: logFile}
	a.args = []string{bin,
		"--cluster", cluster, "--node", name, "--etcd-endpoints", etcdURL, "--listen", api,
		"--pg-data-dir", pg.DataDir, "--pg-bin-dir", pg.BinDir, "--pg-port", strconv.Itoa(pg.Port),
		"--pg-socket-dir", pg.SocketDir, "--lease-ttl", ttl.String(), "--loop-interval", loop.String()}
	a.env = append(os.Environ(), "PGHA_PG_SUPERUSER_PASSWORD="+testutil.PostgresSuperuserPassword,
		"PGHA_PG_REPLICATION_PASSWORD="+testutil.PostgresReplicationPassword)
	a.restart(b)
	return &idleAgent{proc: a, pg: pg, api: api}
}

// idleNode is one node's figures over a window, per second.
type idleNode struct {
	loops, memberWrites, logins, cpu float64
	rss                              int64 // KiB, at the end
}

type idleResult struct {
	nodes      []idleNode
	etcdWrites float64 // per second, all keys
	busy       float64 // share of the machine's CPU time not idle
	lat        []time.Duration
}

// measureIdle samples the counters, runs w (if any) for window, and
// samples again. With stopped, the agents are frozen: their metrics are
// not scraped.
func measureIdle(b *testing.B, ctx context.Context, cli *clientv3.Client, cluster string, agents []*idleAgent, window time.Duration, w *idleWriter, stopped bool) idleResult {
	b.Helper()
	type sample struct {
		loops    float64
		sessions int64
		cpu      float64
	}
	// Open the counting connections before the window: their own
	// logins are not counted.
	for _, a := range agents {
		if a.db == nil || a.db.IsClosed() {
			c, err := connectPG(ctx, a.pg)
			if err != nil {
				b.Fatalf("connect to %s: %v", a.proc.name, err)
			}
			a.db = c
			b.Cleanup(func() { c.Close(context.Background()) })
		}
	}
	take := func() []sample {
		var out []sample
		for _, a := range agents {
			var s sample
			if !stopped {
				s.loops = scrapeLoops(b, a.api)
			}
			if err := a.db.QueryRow(ctx, "SELECT sum(sessions)::bigint FROM pg_stat_database").Scan(&s.sessions); err != nil {
				b.Fatalf("%s: pg_stat_database: %v", a.proc.name, err)
			}
			s.cpu = procCPU(b, a.proc.cmd.Process.Pid)
			out = append(out, s)
		}
		return out
	}
	prefix := "/pgha/" + cluster + "/"
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	rev0 := etcdRev(b, ctx, cli)
	type write struct {
		key string
		rev int64
	}
	var writes []write
	var mu sync.Mutex
	var seen int64 // highest revision the watch has reported
	done := make(chan struct{})
	wch := cli.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(rev0+1))
	go func() {
		defer close(done)
		for wr := range wch {
			mu.Lock()
			for _, ev := range wr.Events {
				writes = append(writes, write{string(ev.Kv.Key), ev.Kv.ModRevision})
			}
			seen = max(seen, wr.Header.Revision)
			mu.Unlock()
		}
	}()
	before := take()
	busy0, total0 := machineCPU(b)
	start := time.Now()
	var lat []time.Duration
	if w != nil {
		lat = w.run(ctx, window)
	} else {
		t := time.NewTimer(window)
		<-t.C
	}
	after := take()
	busy1, total1 := machineCPU(b)
	rev1 := etcdRev(b, ctx, cli)
	secs := time.Since(start).Seconds()
	// The watch has delivered every write up to rev1 once it reports a
	// revision at or past it (a progress notification says so when no
	// write of the prefix follows).
	testutil.Eventually(b, 10*time.Second, "the watch to reach the closing revision", func() error {
		mu.Lock()
		s := seen
		mu.Unlock()
		if s >= rev1 {
			return nil
		}
		cli.RequestProgress(wctx)
		return fmt.Errorf("watch at revision %d, want %d", s, rev1)
	})
	cancel()
	<-done
	perKey := map[string]int{}
	for _, w := range writes {
		if w.rev <= rev1 {
			perKey[w.key]++
		}
	}
	r := idleResult{etcdWrites: float64(rev1-rev0) / secs, lat: lat}
	if total1 > total0 {
		r.busy = float64(busy1-busy0) / float64(total1-total0)
	}
	for i, a := range agents {
		m, _ := readMem(a.proc.cmd.Process.Pid)
		r.nodes = append(r.nodes, idleNode{
			loops:        (after[i].loops - before[i].loops) / secs,
			memberWrites: float64(perKey[prefix+"members/"+a.proc.name]) / secs,
			logins:       float64(after[i].sessions-before[i].sessions) / secs,
			cpu:          (after[i].cpu - before[i].cpu) / secs,
			rss:          m.rss,
		})
	}
	return r
}

func etcdRev(b *testing.B, ctx context.Context, cli *clientv3.Client) int64 {
	resp, err := cli.Get(ctx, "/pgha-bench-rev")
	if err != nil {
		b.Fatalf("etcd revision: %v", err)
	}
	return resp.Header.Revision
}

// scrapeLoops reads the agent's loop iteration count from /metrics.
func scrapeLoops(b *testing.B, addr string) float64 {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		b.Fatalf("/metrics: %v", err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "pgha_ha_loop_duration_seconds_count") {
			f := strings.Fields(line)
			v, err := strconv.ParseFloat(f[len(f)-1], 64)
			if err != nil {
				b.Fatalf("/metrics: %q: %v", line, err)
			}
			return v
		}
	}
	b.Fatalf("/metrics of %s has no pgha_ha_loop_duration_seconds_count", addr)
	return 0
}

// procCPU is the process's user+system CPU time in seconds.
func procCPU(b *testing.B, pid int) float64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatalf("cpu of %d: %v", pid, err)
	}
	s := string(raw)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	// After the command: state(0) ppid(1) ... utime(11) stime(12).
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100 // USER_HZ
}

// machineCPU returns busy and total jiffies from /proc/stat.
func machineCPU(b *testing.B) (busy, total int64) {
	raw, err := os.ReadFile("/proc/stat")
	if err != nil {
		b.Fatal(err)
	}
	line, _, _ := strings.Cut(string(raw), "\n")
	for i, f := range strings.Fields(line)[1:] {
		n, _ := strconv.ParseInt(f, 10, 64)
		total += n
		if i != 3 && i != 4 { // idle, iowait
			busy += n
		}
	}
	return busy, total
}

func connectPG(ctx context.Context, pg replicate.Config) (*pgx.Conn, error) {
	cc, err := pgx.ParseConfig("")
	if err != nil {
		return nil, err
	}
	cc.Host, cc.Port = pg.SocketDir, uint16(pg.Port)
	cc.User, cc.Password, cc.Database = replicate.DefaultConfig().Superuser, testutil.PostgresSuperuserPassword, "postgres"
	return pgx.ConnectConfig(ctx, cc)
}

// idleWriter INSERTs a row every 10 ms over one plain pgx connection.
type idleWriter struct{ conn *pgx.Conn }

func newIdleWriter(ctx context.Context, pg replicate.Config) (*idleWriter, error) {
	c, err := connectPG(ctx, pg)
	if err != nil {
		return nil, err
	}
	if _, err := c.Exec(ctx, "CREATE TABLE IF NOT EXISTS idle_bench (id bigserial PRIMARY KEY, at timestamptz DEFAULT now())"); err != nil {
		c.Close(ctx)
		return nil, err
	}
	return &idleWriter{conn: c}, nil
}

func (w *idleWriter) run(ctx context.Context, d time.Duration) []time.Duration {
	var lat []time.Duration
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		<-tick.C
		t := time.Now()
		if _, err := w.conn.Exec(ctx, "INSERT INTO idle_bench DEFAULT VALUES"); err != nil {
			return lat
		}
		lat = append(lat, time.Since(t))
	}
	return lat
}

func (w *idleWriter) close() { w.conn.Close(context.Background()) }

func percentile(d []time.Duration, p int) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, len(s)*p/100)]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func envDuration(b *testing.B, name string, def time.Duration) time.Duration {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		b.Fatalf("%s=%q: %v", name, v, err)
	}
	return d
}

// signalAgent sends sig to the agent and to its child processes (its fence
// guard), but not to PostgreSQL (the postmaster is the agent's child too:
// it keeps serving the writer).
func signalAgent(a *idleAgent, sig syscall.Signal) {
	pid := a.proc.cmd.Process.Pid
	a.proc.cmd.Process.Signal(sig)
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		raw, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		st := string(raw)
		f := strings.Fields(st[strings.LastIndexByte(st, ')')+1:])
		if len(f) > 1 && f[1] == strconv.Itoa(pid) && !strings.Contains(st, "(postgres)") {
			syscall.Kill(child, sig)
		}
	}
}
