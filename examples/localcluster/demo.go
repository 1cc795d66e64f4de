package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgha/pgha/driver"
	"github.com/pgha/pgha/ha"
	"github.com/pgha/pgha/internal/etcdclient"
	"github.com/pgha/pgha/replicate"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
)

const cluster = "demo"

// demo is the running local cluster.
type demo struct {
	o     options
	out   io.Writer
	base  string
	etcd  *embed.Etcd
	ep    string // etcd client URL
	cli   *clientv3.Client
	nodes []*node
	pool  *driver.Pool
	w     *writer
	// lostBefore is how many acknowledged rows were missing after the
	// previous failure.
	lostBefore int

	logF *os.File // the managers' log, in base

	mu     sync.Mutex
	live_  bool     // a live table is being drawn
	notes  []string // narration, newest last
	closed bool
}

// node is one PostgreSQL server and its manager. The manager reaches etcd
// through a fault proxy, so the demo can cut it off.
type node struct {
	mu     sync.Mutex // guards mgr, cli, cancel, done
	name   string
	inst   *replicate.Instance
	proxy  *toxiproxy.Proxy
	cli    *clientv3.Client
	mgr    *ha.Manager
	cancel context.CancelFunc
	done   chan struct{} // closed when the manager's Run returns
	// stopped is closed when a stop started by a scenario has finished.
	stopped chan struct{}
}

func startDemo(ctx context.Context, o options, out io.Writer) (*demo, error) {
	d := &demo{o: o, out: out}
	d.say(fmt.Sprintf("pgha demo: %d PostgreSQL nodes, synchronous mode %s, lease TTL %v", o.nodes, o.sync, o.ttl))
	bin, err := replicate.FindBinDir(o.pgbin)
	if err != nil {
		return d, fmt.Errorf("%w\n  Install the PostgreSQL server binaries (Debian/Ubuntu: apt-get install postgresql), or run `make demo`, which installs them", err)
	}
	base, err := os.MkdirTemp("", "pgha-demo-")
	if err != nil {
		return d, err
	}
	d.base = base
	if err := d.startEtcd(); err != nil {
		return d, err
	}
	d.say("etcd: one embedded member at " + d.ep)
	for i := 1; i <= o.nodes; i++ {
		n, err := d.newNode(fmt.Sprintf("n%d", i), bin)
		if err != nil {
			return d, err
		}
		d.nodes = append(d.nodes, n)
	}
	for _, n := range d.nodes {
		if err := d.startManager(n); err != nil {
			return d, err
		}
	}
	d.say("managers started: the first to win the election runs initdb, the others clone from it")
	start := time.Now()
	lead, err := d.waitHealthy(ctx, 2*time.Minute)
	if err != nil {
		return d, fmt.Errorf("cluster did not come up: %w", err)
	}
	d.say(fmt.Sprintf("bootstrap: %s is primary, %d standbys streaming, in %v", lead, o.nodes-1, time.Since(start).Round(10*time.Millisecond)))

	pcfg, err := pgxpool.ParseConfig(fmt.Sprintf("postgres://postgres:%s@127.0.0.1/postgres?sslmode=disable", url.QueryEscape(replicate.LocalPassword)))
	if err != nil {
		return d, err
	}
	pcfg.MaxConns = 4
	dcfg := driver.DefaultConfig()
	dcfg.Config = pcfg
	dcfg.Etcd = d.cli
	dcfg.Cluster = cluster
	dcfg.FailoverTimeout = 30 * time.Second
	dcfg.Logger = slog.New(slog.DiscardHandler)
	if d.pool, err = driver.NewWithConfig(ctx, dcfg); err != nil {
		return d, err
	}
	if _, err := d.pool.Exec(ctx, "CREATE TABLE IF NOT EXISTS demo_writes (id bigint PRIMARY KEY, at timestamptz DEFAULT now())"); err != nil {
		return d, fmt.Errorf("create table: %w", err)
	}
	d.w = startWriter(d.pool)
	d.say("writer: inserting rows through driver.Pool, which follows the leader record in etcd")
	return d, nil
}

func (d *demo) startEtcd() error {
	cfg := embed.NewConfig()
	cfg.Name = "demo-etcd"
	cfg.Dir = filepath.Join(d.base, "etcd")
	cport, err := freePort()
	if err != nil {
		return err
	}
	pport, err := freePort()
	if err != nil {
		return err
	}
	cu, _ := url.Parse("http://127.0.0.1:" + strconv.Itoa(cport))
	pu, _ := url.Parse("http://127.0.0.1:" + strconv.Itoa(pport))
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	cfg.InitialCluster = cfg.Name + "=" + pu.String()
	cfg.LogLevel = "error"
	cfg.LogOutputs = []string{filepath.Join(d.base, "etcd.log")}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return fmt.Errorf("start embedded etcd: %w", err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		e.Close()
		return errors.New("embedded etcd not ready after 30s")
	}
	d.etcd, d.ep = e, cu.String()
	d.cli, err = etcdclient.New(clientv3.Config{Endpoints: []string{d.ep}, DialTimeout: 2 * time.Second})
	return err
}

func (d *demo) newNode(name, bin string) (*node, error) {
	dir := filepath.Join(d.base, name)
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	cfg := replicate.LocalConfig(name, filepath.Join(dir, "data"), port)
	cfg.BinDir = bin
	cfg.Logger = slog.New(slog.DiscardHandler)
	if os.Geteuid() == 0 {
		// PostgreSQL refuses to run as root: it runs as cfg.OSUser, which
		// needs the node's directory (it holds the socket) and a way
		// through the demo's base directory.
		if err := giveTo(cfg.OSUser, d.base, dir); err != nil {
			return nil, err
		}
	}
	inst, err := replicate.New(cfg)
	if err != nil {
		return nil, err
	}
	px := toxiproxy.NewProxy(toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop()),
		name+"-etcd", "127.0.0.1:0", strings.TrimPrefix(d.ep, "http://"))
	if err := px.Start(); err != nil {
		return nil, fmt.Errorf("start %s's etcd proxy: %w", name, err)
	}
	return &node{name: name, inst: inst, proxy: px}, nil
}

// giveTo lets OS user u through base and gives it dir.
func giveTo(u, base, dir string) error {
	usr, err := user.Lookup(u)
	if err != nil {
		return fmt.Errorf("look up OS user %q, which PostgreSQL runs as when the demo runs as root: %w (install the postgresql package, which creates it)", u, err)
	}
	uid, _ := strconv.Atoi(usr.Uid)
	gid, _ := strconv.Atoi(usr.Gid)
	if err := os.Chmod(base, 0o711); err != nil {
		return err
	}
	return os.Chown(dir, uid, gid)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func (d *demo) startManager(n *node) error {
	cli, err := etcdclient.New(clientv3.Config{Endpoints: []string{"http://" + n.proxy.Listen}, DialTimeout: 2 * time.Second,
		DialKeepAliveTime: time.Second, DialKeepAliveTimeout: time.Second})
	if err != nil {
		return err
	}
	mgr, err := ha.New(ha.Config{
		Cluster: cluster, Node: n.name, Client: cli, Instance: n.inst,
		LeaseTTL: d.o.ttl, LoopInterval: 200 * time.Millisecond, SyncMode: ha.SyncMode(d.o.sync),
		Logger: slog.New(slog.NewTextHandler(d.logFile(), &slog.HandlerOptions{Level: slog.LevelInfo})),
	})
	if err != nil {
		cli.Close()
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	n.mu.Lock()
	n.cli, n.mgr, n.cancel, n.done = cli, mgr, cancel, done
	n.mu.Unlock()
	go func() {
		defer close(done)
		if err := mgr.Run(ctx); err != nil {
			d.say(n.name + "'s manager stopped: " + err.Error())
		}
	}()
	return nil
}

// stopManager stops n's manager (it leaves the cluster as cleanly as etcd
// lets it) and closes its etcd client. Safe to call concurrently.
func (d *demo) stopManager(n *node) {
	n.mu.Lock()
	mgr, cli, cancel, done := n.mgr, n.cli, n.cancel, n.done
	n.mu.Unlock()
	if mgr == nil {
		return
	}
	cancel()
	<-done
	n.mu.Lock()
	if n.mgr == mgr {
		cli.Close()
		n.mgr = nil
	}
	n.mu.Unlock()
}

// logFile is where the managers' logs go: the demo's own output is the
// narration. Managers start from one goroutine, so no lock is needed.
func (d *demo) logFile() io.Writer {
	if d.logF == nil {
		f, err := os.Create(filepath.Join(d.base, "managers.log"))
		if err != nil {
			return io.Discard
		}
		d.logF = f
	}
	return d.logF
}

func (d *demo) close() {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return
	}
	d.closed = true
	d.mu.Unlock()
	fmt.Fprintln(d.out, "stopping the cluster and removing its temporary directory...")
	if d.w != nil {
		d.w.stop()
	}
	if d.pool != nil {
		d.pool.Close()
	}
	var wg sync.WaitGroup
	for _, n := range d.nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d.stopManager(n)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			n.inst.Stop(ctx, replicate.Immediate)
			cancel()
			n.proxy.Stop()
		}()
	}
	wg.Wait()
	if d.cli != nil {
		d.cli.Close()
	}
	if d.etcd != nil {
		d.etcd.Close()
	}
	if d.logF != nil {
		d.logF.Close()
	}
	if d.base != "" {
		os.RemoveAll(d.base)
	}
}

// printLogTail prints the last n lines of the managers' log, to explain a
// failure.
func (d *demo) printLogTail(n int) {
	if d.base == "" {
		return
	}
	b, err := os.ReadFile(filepath.Join(d.base, "managers.log"))
	if err != nil {
		return
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	fmt.Fprintf(d.out, "--- last %d lines of the managers' log ---\n%s\n", min(n, len(lines)), strings.Join(lines[max(0, len(lines)-n):], "\n"))
}

// say narrates one line.
func (d *demo) say(s string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	line := time.Now().Format("15:04:05.000") + "  " + s
	d.notes = append(d.notes, line)
	if !d.live_ {
		fmt.Fprintln(d.out, line)
	}
}

// leader returns the current writable leader's node name, or "".
func (d *demo) leader(ctx context.Context) string {
	st, err := ha.ClusterStatus(ctx, d.cli, cluster)
	if err != nil || st.Leader == nil || !st.Leader.Writable {
		return ""
	}
	return st.Leader.Node
}

func (d *demo) node(name string) *node {
	for _, n := range d.nodes {
		if n.name == name {
			return n
		}
	}
	return nil
}

// waitHealthy waits for a writable leader whose standbys all stream from it.
func (d *demo) waitHealthy(ctx context.Context, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last string
	for {
		st, err := ha.ClusterStatus(ctx, d.cli, cluster)
		if err == nil && st.Leader != nil && st.Leader.Writable && len(st.Members) == len(d.nodes) {
			ok, syncOK := true, d.o.sync == "off"
			for _, m := range st.Members {
				if m.Node != st.Leader.Node && (m.Role != "replica" || !m.Streaming || m.Timeline != st.Leader.Timeline) {
					ok, last = false, fmt.Sprintf("%s is %s (streaming %v, timeline %d)", m.Node, m.Role, m.Streaming, m.Timeline)
				}
				if m.Sync && m.Streaming && m.Node != st.Leader.Node {
					syncOK = true
				}
			}
			if ok && !syncOK {
				// Until the leader names a synchronous standby, none may
				// be promoted automatically.
				ok, last = false, "no synchronous standby named yet"
			}
			if ok {
				return st.Leader.Node, nil
			}
		} else if err != nil {
			last = err.Error()
		} else {
			last = "no writable leader yet"
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("%w (last: %s)", ctx.Err(), last)
		case <-tick.C:
		}
	}
}

// table renders the cluster's status.
func (d *demo) table(ctx context.Context) string {
	var b strings.Builder
	st, err := ha.ClusterStatus(ctx, d.cli, cluster)
	if err != nil {
		return "etcd: " + err.Error() + "\n"
	}
	fmt.Fprintf(&b, "pgha demo: cluster %q, synchronous mode %s, lease TTL %v\n\n", cluster, d.o.sync, d.o.ttl)
	fmt.Fprintf(&b, "%-5s %-9s %-8s %-12s %s\n", "NODE", "ROLE", "TIMELINE", "LAG", "NOTE")
	for _, m := range st.Members {
		lag := "-"
		if m.LagBytes >= 0 && m.Role == "replica" {
			lag = fmt.Sprintf("%d B", m.LagBytes)
		}
		note := ""
		switch {
		case m.Leader:
			note = "leader"
		case m.Streaming:
			note = "streaming"
		}
		if m.Sync {
			note += " (sync)"
		}
		fmt.Fprintf(&b, "%-5s %-9s %-8d %-12s %s\n", m.Node, m.Role, m.Timeline, lag, note)
	}
	for _, n := range d.nodes {
		if !hasMember(st, n.name) {
			fmt.Fprintf(&b, "%-5s %-9s %-8s %-12s %s\n", n.name, "down", "-", "-", "no member record")
		}
	}
	if d.w != nil {
		ok, errs, rate := d.w.stats()
		fmt.Fprintf(&b, "writes: %d acknowledged (%.0f/s), %d errors\n", ok, rate, errs)
	}
	return b.String()
}

func hasMember(st ha.ClusterState, name string) bool {
	for _, m := range st.Members {
		if m.Node == name {
			return true
		}
	}
	return false
}

// live redraws the table and the latest narration in place until stopped.
func (d *demo) live(ctx context.Context) func() {
	d.mu.Lock()
	d.live_ = true
	d.mu.Unlock()
	lctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(500 * time.Millisecond)
		defer tick.Stop()
		for {
			tctx, tcancel := context.WithTimeout(lctx, 400*time.Millisecond)
			t := d.table(tctx)
			tcancel()
			d.mu.Lock()
			notes := d.notes[max(0, len(d.notes)-12):]
			fmt.Fprint(d.out, "\033[H\033[2J"+t+"\n"+strings.Join(notes, "\n")+"\n")
			d.mu.Unlock()
			select {
			case <-lctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return func() {
		cancel()
		<-done
		d.mu.Lock()
		d.live_ = false
		d.mu.Unlock()
	}
}
