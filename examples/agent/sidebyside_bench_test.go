package main

import (
	"cmp"
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
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgha/pgha/driver"
	"github.com/pgha/pgha/ha"
	"github.com/pgha/pgha/internal/testutil"
	"github.com/pgha/pgha/replicate"
)

// BenchmarkSideBySide measures pgha the way
// ../shared/measurements/patroni-side-by-side.md measured Patroni 3.0.2, so
// that the two can be compared: three pgha-agent processes, one embedded
// etcd member (each agent reaches it through its own fault proxy),
// asynchronous mode, loop 500 ms, lease TTL PGHA_SBS_TTL (default 5s),
// PGHA_SBS_RUNS runs per scenario (default 5). Run it once:
//
//	PGHA_SBS_TTL=5s go test -run '^$' -bench SideBySide -benchtime 1x -timeout 60m ./examples/agent
//
// Two writers run throughout: the probe, one pgx v5 connection opened with
// the multi-host string
// postgres://h1,h2,h3/postgres?target_session_attrs=read-write&connect_timeout=1
// that INSERTs one row every 20 ms with a 1 s timeout per INSERT and
// reconnects after any error; and the same through a driver.Pool in etcd
// mode (pgha_cluster, pgha_etcd). Each INSERT returns the answering
// server's port and postmaster start time, so the window of a fault is
// exact: from the last write acknowledged by the server that served before
// the fault to the first write acknowledged by another server (another
// node, or the same node's restarted postmaster). Scenarios:
//
//   - bootstrap: start of three agents on empty directories → a writable
//     primary and two streaming standbys (a fresh cluster each run);
//   - A: kill -9 of the primary's postmaster, its agent alive;
//   - B: node loss: the primary's agent gets SIGKILL, then its postmaster
//     kill -9; then the agent is restarted and the time until three healthy
//     nodes is measured;
//   - C: planned switchover (ha.Switchover to the best standby): window and
//     duration of the call;
//   - D: the primary's agent cut off from etcd (its proxy drops every byte;
//     clients still reach its PostgreSQL); then the link is restored and the
//     old primary must rejoin. PGHA_SBS_SKIP_D=1 skips it.
//
// After each fault the cluster must heal (a writable leader, two streaming
// standbys) and every acknowledged row of both writers is looked up on the
// primary: the rows missing are reported per scenario. A window that never
// closes, or a cluster that does not heal, fails the benchmark.
//
// The killed agent's postmaster and the postgres processes of a killed
// postmaster are orphans: this process makes itself their subreaper
// (PR_SET_CHILD_SUBREAPER) and reaps them, because PID 1 on our machines
// does not, and a zombie postmaster blocks its own restart.
func BenchmarkSideBySide(b *testing.B) {
	ttl := envDuration(b, "PGHA_SBS_TTL", 5*time.Second)
	runs := 5
	if v := os.Getenv("PGHA_SBS_RUNS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			b.Fatalf("PGHA_SBS_RUNS=%q: want a whole number ≥ 1", v)
		}
		runs = n
	}
	skipD := os.Getenv("PGHA_SBS_SKIP_D") != ""
	const loop = 500 * time.Millisecond
	setSubreaper(b)
	bin := filepath.Join(b.TempDir(), "pgha-agent")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		b.Fatalf("go build: %v\n%s", err, out)
	}
	etcd := testutil.StartEtcd(b, 1)
	cli := etcd.Client(b)
	etcdURL, err := url.Parse(etcd.Endpoints()[0])
	if err != nil {
		b.Fatal(err)
	}
	r := &reaper{}
	b.Cleanup(func() { r.reap(b, 10*time.Second) })

	for b.Loop() {
		res := map[string][]time.Duration{}
		lost := map[string]int{}
		add := func(k string, d time.Duration) { res[k] = append(res[k], d) }

		// Bootstrap: a fresh cluster per run; the last one stays for the
		// fault scenarios.
		var c *sbsCluster
		var rss []mem
		for i := range runs {
			if c != nil {
				c.stop(b)
			}
			c = startSBSCluster(b, bin, fmt.Sprintf("sbs%d", i+1), etcdURL.Host, ttl, loop)
			waitClusterHealthy(b, cli, c.name, 3, 120*time.Second)
			add("boot", time.Since(c.started))
			if i == 0 {
				rss = c.rss(b)
			}
		}
		ctx, cancel := context.WithCancel(b.Context())
		probe, pool := c.startWriters(b, ctx, etcd.Endpoints()[0])
		writers := []*sbsWriter{probe, pool}
		stopWriters := func() {
			cancel()
			probe.wait()
			pool.wait()
		}
		b.Cleanup(stopWriters)
		// ready waits for a healthy cluster with both writers acknowledging
		// writes on its primary.
		ready := func(what string) ha.ClusterState {
			b.Helper()
			r.reap(b, 0)
			st := waitClusterHealthy(b, cli, c.name, 3, 120*time.Second)
			t0 := time.Now()
			for _, w := range writers {
				testutil.Eventually(b, 60*time.Second, what+": "+w.name+" writing on the healthy cluster", func() error {
					if n := w.acksSince(t0); n < 5 {
						return fmt.Errorf("%d writes acknowledged since the cluster was healthy; last error: %v", n, w.lastError())
					}
					return nil
				})
			}
			return st
		}
		// windows waits for each writer's window around fault to close
		// and records it.
		windows := func(key, what string, fault time.Time, timeout time.Duration) {
			b.Helper()
			for _, w := range writers {
				var d time.Duration
				err := testutil.Poll(timeout, func() error {
					var err error
					d, err = w.window(fault)
					return err
				})
				if err != nil {
					b.Fatalf("%s: %s's write window never closed: %v", what, w.name, err)
				}
				add(key+"/"+w.name, d)
			}
		}
		lostRuns := map[string]int{} // runs of a scenario that lost rows
		// checkLost counts the acknowledged rows missing on the primary,
		// and says when each was acknowledged relative to the kill -9 of
		// the postmaster (A, B) or the fault (C, D).
		checkLost := func(key, what string, fault time.Time) {
			b.Helper()
			ready(what + ", before counting lost rows")
			hit := false
			for _, w := range writers {
				gone := w.newlyLost(c.missing(b, ctx, w))
				if len(gone) == 0 {
					continue
				}
				hit = true
				lost[key+"/"+w.name] += len(gone)
				var after []string
				for _, a := range gone {
					after = append(after, a.at.Sub(fault).Round(time.Millisecond).String())
				}
				ref := "the fault"
				if key == "A" || key == "B" {
					ref = "the postmaster's kill -9"
				}
				fmt.Printf("%s: %s lost %d acknowledged rows, acknowledged at %s + %s\n", what, w.name, len(gone), ref, strings.Join(after, ", "))
			}
			if hit {
				lostRuns[key]++
			}
		}

		ready("start")
		for i := range runs {
			// A: kill -9 of the primary's postmaster; its agent lives.
			what := fmt.Sprintf("A run %d", i+1)
			st := ready(what)
			n := c.node(st.Leader.Node)
			pm := n.postmaster(b)
			r.add(testutil.PostgresChildren(pm)...)
			fault := time.Now()
			if err := syscall.Kill(pm, syscall.SIGKILL); err != nil {
				b.Fatalf("%s: kill -9 %s's postmaster %d: %v", what, n.proc.name, pm, err)
			}
			windows("A", what, fault, 90*time.Second)
			checkLost("A", what, fault)

			// B: node loss: SIGKILL the agent, then kill -9 its postmaster;
			// restart the node.
			what = fmt.Sprintf("B run %d", i+1)
			st = ready(what)
			n = c.node(st.Leader.Node)
			pm = n.postmaster(b)
			r.add(pm)
			r.add(testutil.PostgresChildren(pm)...)
			fault = time.Now()
			n.kill(b)
			pmKill := time.Now()
			if err := syscall.Kill(pm, syscall.SIGKILL); err != nil {
				b.Fatalf("%s: kill -9 %s's postmaster %d: %v", what, n.proc.name, pm, err)
			}
			windows("B", what, fault, 90*time.Second)
			// The postmaster must be gone (reaped) before its node restarts.
			r.waitGone(b, what, pm, 30*time.Second)
			restart := time.Now()
			n.proc.restart(b)
			waitClusterHealthy(b, cli, c.name, 3, 120*time.Second)
			add("B/rejoin", time.Since(restart))
			checkLost("B", what, pmKill)

			// C: planned switchover to the best standby.
			what = fmt.Sprintf("C run %d", i+1)
			st = ready(what)
			fault = time.Now()
			sctx, scancel := context.WithTimeout(ctx, 60*time.Second)
			to, err := ha.Switchover(sctx, cli, c.name, "")
			scancel()
			if err != nil || to == st.Leader.Node {
				b.Fatalf("%s: switchover from %s: got %q, %v", what, st.Leader.Node, to, err)
			}
			add("C/command", time.Since(fault))
			windows("C", what, fault, 90*time.Second)
			checkLost("C", what, fault)

			if skipD {
				continue
			}
			// D: the primary's agent cut off from etcd; clients still
			// reach its PostgreSQL.
			what = fmt.Sprintf("D run %d", i+1)
			st = ready(what)
			n = c.node(st.Leader.Node)
			fault = time.Now()
			n.etcd.Blackhole()
			windows("D", what, fault, 90*time.Second)
			testutil.Eventually(b, 60*time.Second, what+": a new leader", func() error {
				ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				defer cancel()
				st, err := ha.ClusterStatus(ctx, cli, c.name)
				if err != nil {
					return err
				}
				if st.Leader == nil || st.Leader.Node == n.proc.name || !st.Leader.Writable {
					return fmt.Errorf("leader %+v", st.Leader)
				}
				return nil
			})
			n.etcd.Pass()
			heal := time.Now()
			waitClusterHealthy(b, cli, c.name, 3, 120*time.Second)
			add("D/rejoin", time.Since(heal))
			checkLost("D", what, fault)
		}
		stopWriters()

		fmt.Printf("\npgha side by side (pgha-agent processes, 1 etcd member, async, loop %v, TTL %v), seconds, min / median / max, n = %d unless noted\n", loop, ttl, runs)
		fmt.Printf("| scenario | pgha TTL %v |\n|---|---|\n", ttl)
		row := func(label, key string) {
			if d := res[key]; len(d) > 0 {
				fmt.Printf("| %s | %s |\n", label, sbsCell(d, runs))
			}
		}
		row("A: kill -9 of the primary's postmaster (agent alive), window", "A/probe")
		row("A: `driver.Pool` window", "A/pool")
		row("B: node loss (agent and postmaster killed), window", "B/probe")
		row("B: `driver.Pool` window", "B/pool")
		row("B: killed node restarted → 3 healthy nodes", "B/rejoin")
		row("C: planned switchover, window", "C/probe")
		row("C: `driver.Pool` window", "C/pool")
		row("C: switchover command duration (ha.Switchover)", "C/command")
		row("D: primary cut off from etcd (clients still reach it), window", "D/probe")
		row("D: `driver.Pool` window", "D/pool")
		row("D: link restored → 3 healthy nodes", "D/rejoin")
		row("bootstrap: start → primary writable + 2 streaming", "boot")
		var parts []string
		total := 0
		for _, sc := range []string{"A", "B", "C", "D"} {
			if lostRuns[sc] == 0 {
				continue
			}
			p := lost[sc+"/probe"]
			q := lost[sc+"/pool"]
			total += p + q
			parts = append(parts, fmt.Sprintf("%s: %d + %d in %d of %d runs", sc, p, q, lostRuns[sc], runs))
		}
		fmt.Printf("| acknowledged rows lost, probe + `driver.Pool` | %d (%s) |\n", total, strings.Join(parts, "; "))
		var rs []string
		for _, m := range rss {
			rs = append(rs, fmt.Sprintf("%.1f", mib(m.rss)))
		}
		fmt.Printf("| agent RSS after bootstrap, MiB | %s |\n", strings.Join(rs, ", "))
		fmt.Printf("writes acknowledged: probe %d, driver.Pool %d\n", probe.count(), pool.count())
		fmt.Println("samples, seconds, in run order:")
		keys := make([]string, 0, len(res))
		for k := range res {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			fmt.Printf("  %-10s", k)
			for _, d := range res[k] {
				fmt.Printf(" %.3f", d.Seconds())
			}
			fmt.Println()
		}
		b.ReportMetric(ms(median(res["B/probe"])), "B-window-ms")
		b.ReportMetric(ms(median(res["A/probe"])), "A-window-ms")
		b.ReportMetric(ms(median(res["C/probe"])), "C-window-ms")
		b.ReportMetric(float64(total), "rows-lost")
	}
}

func median(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[(len(s)-1)/2]
}

// sbsCell is "min / median / max" in seconds, with n when it differs from
// runs.
func sbsCell(d []time.Duration, runs int) string {
	s := slices.Clone(d)
	slices.Sort(s)
	cell := fmt.Sprintf("%.2f / %.2f / %.2f", s[0].Seconds(), median(s).Seconds(), s[len(s)-1].Seconds())
	if len(s) != runs {
		cell += fmt.Sprintf(" (n=%d)", len(s))
	}
	return cell
}

type sbsNode struct {
	proc *agentProc
	pg   replicate.Config
	etcd *testutil.Proxy // this agent's link to etcd
}

// postmaster is the PID in the node's postmaster.pid.
func (n *sbsNode) postmaster(b *testing.B) int {
	b.Helper()
	raw, err := os.ReadFile(filepath.Join(n.pg.DataDir, "postmaster.pid"))
	if err != nil {
		b.Fatalf("%s: postmaster.pid: %v", n.proc.name, err)
	}
	line, _, _ := strings.Cut(string(raw), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil || pid <= 0 {
		b.Fatalf("%s: postmaster.pid: first line %q", n.proc.name, line)
	}
	return pid
}

// kill sends SIGKILL to the agent and waits for it to exit.
func (n *sbsNode) kill(b *testing.B) {
	b.Helper()
	if err := n.proc.cmd.Process.Kill(); err != nil {
		b.Fatalf("kill -9 agent %s: %v", n.proc.name, err)
	}
	<-n.proc.done
	n.proc.running = false
}

type sbsCluster struct {
	name    string
	nodes   []*sbsNode
	started time.Time
}

func startSBSCluster(b *testing.B, bin, name, etcdHostPort string, ttl, loop time.Duration) *sbsCluster {
	b.Helper()
	c := &sbsCluster{name: name}
	var proxies []*testutil.Proxy
	for i := 1; i <= 3; i++ {
		proxies = append(proxies, testutil.StartProxy(b, fmt.Sprintf("%s-n%d-etcd", name, i), etcdHostPort))
	}
	c.started = time.Now()
	for i := 1; i <= 3; i++ {
		a := startIdleAgent(b, bin, fmt.Sprintf("%s-n%d", name, i), name, proxies[i-1].URL(), ttl, loop)
		c.nodes = append(c.nodes, &sbsNode{proc: a.proc, pg: a.pg, etcd: proxies[i-1]})
	}
	b.Cleanup(func() {
		c.stop(b)
		if !b.Failed() {
			return
		}
		for _, n := range c.nodes {
			for _, f := range []string{n.proc.logFile.Name(), n.pg.DataDir + ".log"} {
				log, _ := os.ReadFile(f)
				if len(log) > 6000 {
					log = log[len(log)-6000:]
				}
				b.Logf("--- %s (tail) ---\n%s", f, log)
			}
		}
	})
	return c
}

func (c *sbsCluster) node(name string) *sbsNode {
	for _, n := range c.nodes {
		if n.proc.name == name {
			return n
		}
	}
	panic("sbs: no node " + name)
}

// stop stops every agent (SIGTERM: each stops its PostgreSQL).
func (c *sbsCluster) stop(b *testing.B) {
	for _, n := range c.nodes {
		n.etcd.Pass()
		n.proc.stop(b)
	}
}

func (c *sbsCluster) rss(b *testing.B) []mem {
	var ps []*agentProc
	for _, n := range c.nodes {
		ps = append(ps, n.proc)
	}
	return rssAll(b, ps)
}

// multiHost is the probe's connection string: the three nodes, read-write.
func (c *sbsCluster) multiHost() string {
	var hosts []string
	for _, n := range c.nodes {
		hosts = append(hosts, fmt.Sprintf("127.0.0.1:%d", n.pg.Port))
	}
	u := url.URL{Scheme: "postgres", User: url.UserPassword(replicate.DefaultConfig().Superuser, testutil.PostgresSuperuserPassword),
		Host: strings.Join(hosts, ","), Path: "/postgres", RawQuery: "target_session_attrs=read-write&connect_timeout=1"}
	return u.String()
}

const sbsInsert = `INSERT INTO sbs (w, id) VALUES ($1, $2)
	RETURNING inet_server_port(), (extract(epoch FROM pg_postmaster_start_time()) * 1e6)::bigint`

// startWriters creates the table and starts the probe and the
// driver.Pool writer.
func (c *sbsCluster) startWriters(b *testing.B, ctx context.Context, etcdURL string) (probe, pool *sbsWriter) {
	b.Helper()
	dsn := c.multiHost()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		b.Fatalf("probe: connect: %v", err)
	}
	_, err = conn.Exec(ctx, "CREATE TABLE IF NOT EXISTS sbs (w text, id bigint, at timestamptz DEFAULT clock_timestamp(), PRIMARY KEY (w, id))")
	conn.Close(context.Background())
	if err != nil {
		b.Fatalf("probe: create table: %v", err)
	}
	u := url.URL{Scheme: "postgres", User: url.UserPassword(replicate.DefaultConfig().Superuser, testutil.PostgresSuperuserPassword),
		Path: "/postgres", RawQuery: url.Values{"pgha_cluster": {c.name}, "pgha_etcd": {etcdURL}}.Encode()}
	cfg, err := driver.ParseConfig(u.String())
	if err != nil {
		b.Fatalf("driver.ParseConfig: %v", err)
	}
	cfg.Logger = slog.New(slog.DiscardHandler) // its failover lines would fill the table's output
	p, err := driver.NewWithConfig(ctx, cfg)
	if err != nil {
		b.Fatalf("driver.NewWithConfig: %v", err)
	}
	var pc *pgx.Conn
	probe = startSBSWriter(ctx, "probe", func(ctx context.Context, id int64) (srv, error) {
		if pc == nil {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			c, err := pgx.Connect(cctx, dsn)
			cancel()
			if err != nil {
				return srv{}, err
			}
			pc = c
		}
		ictx, cancel := context.WithTimeout(ctx, time.Second)
		var s srv
		err := pc.QueryRow(ictx, sbsInsert, "probe", id).Scan(&s.port, &s.start)
		cancel()
		if err != nil {
			cctx, cancel := context.WithTimeout(context.Background(), time.Second)
			pc.Close(cctx)
			cancel()
			pc = nil
		}
		return s, err
	}, func() {
		if pc != nil {
			pc.Close(context.Background())
		}
	})
	pool = startSBSWriter(ctx, "pool", func(ctx context.Context, id int64) (srv, error) {
		ictx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		var s srv
		err := p.QueryRow(ictx, sbsInsert, "pool", id).Scan(&s.port, &s.start)
		return s, err
	}, p.Close)
	return probe, pool
}

// missing lists w's acknowledged rows absent from the current primary.
func (c *sbsCluster) missing(b *testing.B, ctx context.Context, w *sbsWriter) []int64 {
	b.Helper()
	ids := w.ackedIDs()
	var gone []int64
	err := testutil.Poll(30*time.Second, func() error {
		qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		conn, err := pgx.Connect(qctx, c.multiHost())
		if err != nil {
			return err
		}
		defer conn.Close(context.Background())
		rows, err := conn.Query(qctx, "SELECT a.id FROM unnest($2::bigint[]) AS a(id) WHERE NOT EXISTS (SELECT 1 FROM sbs WHERE w = $1 AND id = a.id) ORDER BY 1", w.name, ids)
		if err != nil {
			return err
		}
		gone, err = pgx.CollectRows(rows, pgx.RowTo[int64])
		return err
	})
	if err != nil {
		b.Fatalf("count %s's rows on the primary: %v", w.name, err)
	}
	return gone
}

// srv identifies the server that acknowledged a write: its port and its
// postmaster's start time (a restarted postmaster is another server).
type srv struct{ port, start int64 }

type sbsAck struct {
	id  int64
	at  time.Time
	srv srv
}

// sbsWriter INSERTs a row every 20 ms and keeps every acknowledgement.
type sbsWriter struct {
	name string
	done chan struct{}
	lost map[int64]bool // acknowledged rows found missing so far

	mu      sync.Mutex
	acks    []sbsAck
	lastErr error
}

func startSBSWriter(ctx context.Context, name string, insert func(context.Context, int64) (srv, error), closeFn func()) *sbsWriter {
	w := &sbsWriter{name: name, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		defer closeFn()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for id := int64(1); ; id++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			s, err := insert(ctx, id)
			now := time.Now()
			w.mu.Lock()
			if err == nil {
				w.acks = append(w.acks, sbsAck{id: id, at: now, srv: s})
			} else if ctx.Err() == nil {
				w.lastErr = err
			}
			w.mu.Unlock()
		}
	}()
	return w
}

func (w *sbsWriter) wait() { <-w.done }

// newlyLost returns the acknowledgements of the ids in gone not reported
// before.
func (w *sbsWriter) newlyLost(gone []int64) []sbsAck {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.lost == nil {
		w.lost = map[int64]bool{}
	}
	var out []sbsAck
	for _, id := range gone {
		if w.lost[id] {
			continue
		}
		w.lost[id] = true
		if i, ok := slices.BinarySearchFunc(w.acks, id, func(a sbsAck, id int64) int { return cmp.Compare(a.id, id) }); ok {
			out = append(out, w.acks[i])
		}
	}
	return out
}

func (w *sbsWriter) lastError() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.lastErr
}

func (w *sbsWriter) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.acks)
}

func (w *sbsWriter) acksSince(t time.Time) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	i, _ := slices.BinarySearchFunc(w.acks, t, func(a sbsAck, t time.Time) int { return a.at.Compare(t) })
	return len(w.acks) - i
}

func (w *sbsWriter) ackedIDs() []int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	ids := make([]int64, len(w.acks))
	for i, a := range w.acks {
		ids[i] = a.id
	}
	return ids
}

// window is the write gap around fault: from the last write acknowledged
// by the server that served before fault to the first write acknowledged
// by another server. It is an error until that first write exists.
func (w *sbsWriter) window(fault time.Time) (time.Duration, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	i, _ := slices.BinarySearchFunc(w.acks, fault, func(a sbsAck, t time.Time) int { return a.at.Compare(t) })
	if i == 0 {
		return 0, errors.New("no write acknowledged before the fault")
	}
	old := w.acks[i-1].srv
	for j := i; j < len(w.acks); j++ {
		if w.acks[j].srv != old {
			return w.acks[j].at.Sub(w.acks[j-1].at), nil
		}
	}
	return 0, fmt.Errorf("no write acknowledged by another server than port %d (postmaster started %d µs) since the fault: %d acknowledged by it since; last error: %v",
		old.port, old.start, len(w.acks)-i, w.lastErr)
}

// reaper reaps postgres processes orphaned to this process (a subreaper).
type reaper struct{ pids []int }

func (r *reaper) add(pids ...int) { r.pids = append(r.pids, pids...) }

// reap reaps the processes that have exited, waiting up to timeout for
// all of them; it only logs those left.
func (r *reaper) reap(b *testing.B, timeout time.Duration) {
	err := testutil.Poll(timeout, func() error {
		r.pids = slices.DeleteFunc(r.pids, reaped)
		if len(r.pids) > 0 {
			return fmt.Errorf("processes %v not reaped", r.pids)
		}
		return nil
	})
	if err != nil && timeout > 0 {
		b.Logf("reaper: %v", err)
	}
}

// waitGone waits until pid has exited and is reaped.
func (r *reaper) waitGone(b *testing.B, what string, pid int, timeout time.Duration) {
	b.Helper()
	testutil.Eventually(b, timeout, what+": killed postmaster reaped", func() error {
		if reaped(pid) {
			return nil
		}
		return fmt.Errorf("postmaster %d still present", pid)
	})
}

// reaped reports whether pid is gone: reaped here now, or already gone.
func reaped(pid int) bool {
	var ws syscall.WaitStatus
	got, err := syscall.Wait4(pid, &ws, syscall.WNOHANG, nil)
	if got == pid {
		return true
	}
	if errors.Is(err, syscall.ECHILD) {
		// Not (yet) our child: gone if /proc no longer has it.
		_, serr := os.Stat(fmt.Sprintf("/proc/%d", pid))
		return os.IsNotExist(serr)
	}
	return false
}

// setSubreaper makes this process the reaper of orphaned descendants
// (prctl PR_SET_CHILD_SUBREAPER) until the benchmark ends.
func setSubreaper(b *testing.B) {
	const prSetChildSubreaper = 36
	if _, _, e := syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0); e != 0 {
		b.Fatalf("prctl(PR_SET_CHILD_SUBREAPER): %v", e)
	}
	b.Cleanup(func() { syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 0, 0) })
}
