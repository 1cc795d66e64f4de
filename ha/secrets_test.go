package ha

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgha/pgha/driver"
	"github.com/pgha/pgha/internal/keyspace"
	"github.com/pgha/pgha/internal/testutil"
	"github.com/pgha/pgha/replicate"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.uber.org/zap"
)

// The test's secrets: distinctive, so that any occurrence is a leak.
const (
	leakSuperPassword = "SuperPw-q7Zr4wLk"
	leakReplPassword  = "ReplPw-k2Vx9mTs"
	leakEtcdPassword  = "EtcdPw-m4Ty8pNq"
)

// syncBuffer is a bytes.Buffer safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// capture is everything the test saw, by source.
type capture struct {
	mu      sync.Mutex
	sources map[string]*bytes.Buffer
}

func (c *capture) add(source, text string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	b := c.sources[source]
	if b == nil {
		b = &bytes.Buffer{}
		c.sources[source] = b
	}
	b.WriteString(text)
	b.WriteByte('\n')
}

// secretForms are the passwords and cheap encodings of them.
func secretForms() map[string]string {
	forms := map[string]string{}
	for name, pw := range map[string]string{"superuser": leakSuperPassword, "replication": leakReplPassword, "etcd": leakEtcdPassword} {
		forms[name] = pw
		forms[name+" (base64)"] = base64.StdEncoding.EncodeToString([]byte(pw))
		forms[name+" (base64url)"] = base64.RawURLEncoding.EncodeToString([]byte(pw))
		forms[name+" (hex)"] = hex.EncodeToString([]byte(pw))
		forms[name+" (url path)"] = url.PathEscape(pw)
		forms[name+" (url query)"] = url.QueryEscape(pw)
	}
	return forms
}

// leaks returns "<source>: <form>" for every secret form found in text.
func leaks(source string, text []byte) []string {
	var out []string
	for form, s := range secretForms() {
		if bytes.Contains(text, []byte(s)) {
			out = append(out, fmt.Sprintf("%s: the %s password", source, form))
		}
	}
	return out
}

// enableEtcdRoot turns authentication on in etcd with a root user.
func enableEtcdRoot(t *testing.T, etcd *testutil.EtcdCluster, password string) {
	t.Helper()
	cli := etcd.Client(t)
	ctx := testutil.Ctx(t, 10*time.Second)
	if _, err := cli.UserAdd(ctx, "root", password); err != nil {
		t.Fatalf("etcd user add root: %v", err)
	}
	if _, err := cli.UserGrantRole(ctx, "root", "root"); err != nil {
		t.Fatalf("etcd grant root: %v", err)
	}
	if _, err := cli.AuthEnable(ctx); err != nil {
		t.Fatalf("etcd auth enable: %v", err)
	}
}

// rootClient is an etcd client that authenticates as root.
func rootClient(t *testing.T, endpoint string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{endpoint},
		DialTimeout: 30 * time.Second, // bcrypt under -race on a loaded machine
		Username:    "root",
		Password:    leakEtcdPassword,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		t.Fatalf("etcd client as root for %s: %v", endpoint, err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// pghactlBinary builds the CLI into a temp dir.
func pghactlBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "pghactl")
	out, err := exec.Command("go", "build", "-o", bin, "../examples/pghactl").CombinedOutput()
	if err != nil {
		t.Fatalf("go build pghactl: %v\n%s", err, out)
	}
	return bin
}

// TestNoSecretLeaks runs a three-node cluster with distinctive passwords
// for the PostgreSQL superuser, the replication role and the etcd user
// (authentication on), and a driver.Pool with the superuser password in
// its connection string, through bootstrap, a failover (node loss: the
// primary's manager abandoned and its postmaster killed with -9, then the
// node rejoins) and a switchover through pghactl. It captures every log
// record of every manager, instance and the pool, every span (attributes,
// events, status) and metric data point, every error the managers report,
// every HTTP endpoint's answer on every node (sampled every 200 ms),
// pghactl's output, the PostgreSQL server logs and every other file under
// the nodes' directories except the replication passfile, every key and
// value under the cluster's etcd prefix, and the command line of every
// process on the machine (sampled every 200 ms). No password appears in
// any of it, plain or base64, hex or URL encoded. It also checks that
// every pg_hba.conf rule uses scram-sha-256.
func TestNoSecretLeaks(t *testing.T) {
	cap := &capture{sources: map[string]*bytes.Buffer{}}
	logs := &syncBuffer{}
	logger := slog.New(slog.NewTextHandler(io.MultiWriter(logs, t.Output()), &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctl := pghactlBinary(t)

	etcd := testutil.StartEtcd(t, 1)
	enableEtcdRoot(t, etcd, leakEtcdPassword)
	endpoint := etcd.Endpoints()[0]
	c := &testCluster{t: t, etcd: etcd, cli: rootClient(t, endpoint)}
	var instSpans []*tracetest.SpanRecorder
	for i := 1; i <= 3; i++ {
		name := fmt.Sprintf("n%d", i)
		cfg := testutil.PostgresConfig(t, name)
		cfg.SuperuserPassword, cfg.ReplicationPassword = leakSuperPassword, leakReplPassword
		cfg.Logger = logger.With("component", "replicate")
		rec := tracetest.NewSpanRecorder()
		instSpans = append(instSpans, rec)
		cfg.TracerProvider = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
		inst, err := replicate.New(cfg)
		if err != nil {
			t.Fatalf("replicate.New(%s): %v", name, err)
		}
		testutil.StopPostgresAtCleanup(t, inst)
		px := testutil.StartProxy(t, name+"-etcd", strings.TrimPrefix(endpoint, "http://"))
		c.nodes = append(c.nodes, &testNode{name: name, inst: inst, proxy: px})
	}
	// The production default TTL: bootstrap under -race on a shared
	// machine outlasts a 2 s lease.
	c.opts = clusterOpts{n: 3, ttl: 5 * time.Second, telemetry: true, configure: func(node string, cfg *Config) {
		// The manager's client authenticates; stopManager closes it.
		n := c.node(node)
		n.cli = rootClient(t, n.proxy.URL())
		cfg.Client = n.cli
		cfg.Logger = logger.With("component", "ha")
	}}
	// mgrMu orders the sampler's reads of n.mgr with the test's manager
	// stops and starts.
	var mgrMu sync.Mutex
	for _, n := range c.nodes {
		c.startManager(n)
	}
	t.Cleanup(func() {
		mgrMu.Lock()
		defer mgrMu.Unlock()
		c.stop()
	})

	// Sample endpoints, manager errors and process command lines until
	// the end of the test.
	sctx, stopSampling := context.WithCancel(context.Background())
	sampled := make(chan struct{})
	var samples int
	go func() {
		defer close(sampled)
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			mgrMu.Lock()
			for _, n := range c.nodes {
				c.sampleNode(n, cap)
			}
			mgrMu.Unlock()
			cap.add("process command lines", cmdlines())
			samples++
			select {
			case <-sctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	sampling := true
	stopSample := func() {
		if sampling {
			sampling = false
			stopSampling()
			<-sampled
		}
	}
	t.Cleanup(stopSample)

	// A pool with the superuser password in its connection string and
	// etcd credentials, querying throughout.
	pcfg, err := driver.ParseConfig(fmt.Sprintf("user=postgres password=%s dbname=postgres pgha_etcd=%s pgha_cluster=test pgha_failover_timeout=20s connect_timeout=2",
		leakSuperPassword, endpoint))
	if err != nil {
		t.Fatalf("driver.ParseConfig: %v", err)
	}
	pcfg.EtcdUsername, pcfg.EtcdPassword = "root", leakEtcdPassword
	pcfg.Logger = logger.With("component", "driver")
	poolSpans := tracetest.NewSpanRecorder()
	pcfg.TracerProvider = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(poolSpans))
	pool, err := driver.NewWithConfig(testutil.Ctx(t, 30*time.Second), pcfg)
	if err != nil {
		t.Fatalf("driver.NewWithConfig: %v", err)
	}
	qctx, stopQueries := context.WithCancel(context.Background())
	queried := make(chan struct{})
	var queries, queryErrs int
	go func() {
		defer close(queried)
		for qctx.Err() == nil {
			ctx, cancel := context.WithTimeout(qctx, 5*time.Second)
			_, err := pool.Exec(ctx, "SELECT 1")
			cancel()
			queries++
			if err != nil && qctx.Err() == nil {
				queryErrs++
				cap.add("pool errors", err.Error())
			}
			sleepCtx(qctx, 50*time.Millisecond) // the load's pace
		}
	}()
	stopPool := func() {
		stopQueries()
		<-queried
		pool.Close()
	}
	t.Cleanup(func() {
		if qctx.Err() == nil {
			stopPool()
		}
	})

	ctlRun := func(args ...string) {
		t.Helper()
		passFile := filepath.Join(t.TempDir(), "etcd-pass")
		if err := os.WriteFile(passFile, []byte(leakEtcdPassword+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		full := append([]string{"--etcd", endpoint, "--cluster", "test", "--etcd-username", "root", "--etcd-password-file", passFile, "--timeout", "30s"}, args...)
		cmd := exec.Command(ctl, full...)
		cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
		out, err := cmd.CombinedOutput()
		cap.add("pghactl "+strings.Join(args, " "), fmt.Sprintf("%s\nexit: %v", out, err))
		t.Logf("pghactl %s: %v\n%s", strings.Join(args, " "), err, out)
		if err != nil && args[0] != "failover" {
			t.Fatalf("pghactl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}

	// Bootstrap.
	lead := c.waitHealthy(120 * time.Second)
	ctlRun("list")
	ctlRun("list", "--json")
	ctlRun("failover", "--to", lead.name) // refused: a leader lives

	// Failover: the primary's node is lost, then comes back and rejoins.
	mgrMu.Lock()
	c.stopManager(lead, true)
	mgrMu.Unlock()
	// The postmaster may already be down: a loaded machine can delay a
	// renewal past ValidUntil, and the manager then fences it.
	if pid := lead.inst.PID(); pid > 0 {
		kill9(t, lead)
	}
	c.waitNewLeader(lead.name, 60*time.Second, "a new leader after the node loss")
	mgrMu.Lock()
	c.startManager(lead)
	mgrMu.Unlock()
	lead = c.waitHealthy(120 * time.Second)

	// Switchover through the CLI to a standby.
	var to string
	for _, n := range c.nodes {
		if n != lead {
			to = n.name
			break
		}
	}
	ctlRun("switchover", "--to", to, "--wait", "60s")
	lead = c.waitHealthy(120 * time.Second)
	if lead.name != to {
		t.Fatalf("leader after the switchover to %s is %s", to, lead.name)
	}
	ctlRun("history")
	ctlRun("history", "--json")
	ctlRun("list")
	testutil.Eventually(t, 30*time.Second, "the pool answers on the new primary", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := pool.Exec(ctx, "SELECT 1")
		return err
	})
	stopPool()
	stopSample()

	// etcd: every key and value under the cluster's prefix.
	layout, _ := keyspace.NewLayout("", "test")
	resp, err := c.cli.Get(testutil.Ctx(t, 10*time.Second), layout.Prefix(), clientv3.WithPrefix())
	if err != nil {
		t.Fatalf("read the cluster's etcd keys: %v", err)
	}
	for _, kv := range resp.Kvs {
		cap.add("etcd", string(kv.Key)+" = "+string(kv.Value))
	}
	// Telemetry: spans (name, attributes, events, status) and metrics.
	recs := append([]*tracetest.SpanRecorder{poolSpans}, instSpans...)
	for _, n := range c.nodes {
		recs = append(recs, n.spans)
		var rm metricdata.ResourceMetrics
		if err := n.reader.Collect(context.Background(), &rm); err != nil {
			t.Fatal(err)
		}
		cap.add("metrics", fmt.Sprintf("%+v", rm))
	}
	var spans int
	for _, r := range recs {
		for _, s := range r.Ended() {
			spans++
			cap.add("spans", fmt.Sprintf("%s %v %v %+v", s.Name(), s.Attributes(), s.Status(), s.Events()))
		}
	}
	cap.add("logs", logs.String())

	// Files: the server logs and everything else under each node's
	// directory (data directory included), except the passfile.
	var files int
	var fileBytes int64
	for _, n := range c.nodes {
		root := filepath.Dir(n.inst.Config().DataDir)
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || !d.Type().IsRegular() {
				return nil // a file removed while walking, a socket
			}
			if d.Name() == "pgha.pgpass" {
				return nil // the one place the replication password belongs
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return nil
			}
			files++
			fileBytes += int64(len(b))
			for _, l := range leaks("file "+p, b) {
				t.Error(l)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		checkHBA(t, n)
	}

	var all []string
	var total int
	for src, b := range cap.sources {
		total += b.Len()
		all = append(all, leaks(src, b.Bytes())...)
	}
	for _, l := range all {
		t.Error(l)
	}
	// The capture must have seen what it claims to check: a leak test
	// that captured nothing passes for the wrong reason.
	for _, want := range []struct{ source, text string }{
		{"logs", "decision"},
		{"logs", "component=replicate"},
		{"logs", "component=driver"},
		{"spans", "promote"},
		{"metrics", "pgha.ha"},
		{"endpoint /cluster", `"members"`},
		{"endpoint /primary", `"role":"primary"`},
		{"etcd", "/pgha/test/leader/"},
		{"pghactl list", "n1"},
		{"pghactl switchover --to " + to + " --wait 60s", to},
		{"pghactl failover --to n1", ""},
		{"process command lines", "postgres"},
	} {
		b := cap.sources[want.source]
		if b == nil {
			if !strings.HasPrefix(want.source, "pghactl failover") {
				t.Errorf("captured nothing from %s", want.source)
			}
			continue
		}
		if !strings.Contains(b.String(), want.text) {
			t.Errorf("capture from %s lacks %q: the capture is broken", want.source, want.text)
		}
	}
	t.Logf("checked %d bytes from %d sources (%d endpoint/status/process samples, %d spans, %d pool queries of which %d failed) and %d files (%d bytes): %d leaks",
		total, len(cap.sources), samples, spans, queries, queryErrs, files, fileBytes, len(all))
}

// sampleNode records every endpoint's answer and the manager's last error.
func (c *testCluster) sampleNode(n *testNode, cap *capture) {
	m := n.mgr
	if m == nil {
		return
	}
	h := m.Handler()
	for _, path := range []string{"/health", "/primary", "/replica", "/replica?lag=0", "/readiness", "/liveness", "/cluster"} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		src := "endpoint " + path
		if i := strings.IndexByte(path, '?'); i > 0 {
			src = "endpoint " + path[:i]
		}
		cap.add(src, strconv.Itoa(rec.Code)+" "+rec.Body.String())
	}
	st := m.Status()
	cap.add("manager status", fmt.Sprintf("%+v", st))
	if st.LastError != "" {
		cap.add("manager errors", st.LastError)
	}
}

// cmdlines returns the command line of every process on the machine.
func cmdlines() string {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return ""
	}
	var b strings.Builder
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		cl, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(cl) == 0 {
			continue
		}
		b.Write(bytes.ReplaceAll(cl, []byte{0}, []byte{' '}))
		b.WriteByte('\n')
	}
	return b.String()
}

// checkHBA checks that every rule of n's pg_hba.conf authenticates with
// scram-sha-256. That includes the local (unix socket) rule: the socket
// directory is shared with any local user in the postgres group, so peer
// or trust there would let them in without a password.
func checkHBA(t *testing.T, n *testNode) {
	t.Helper()
	p := filepath.Join(n.inst.Config().DataDir, "pg_hba.conf")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("%s: %v", n.name, err)
	}
	rules := 0
	for _, line := range strings.Split(string(b), "\n") {
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		rules++
		// local DB USER METHOD; host* DB USER ADDRESS METHOD (an address
		// with a separate mask has one more field).
		method := ""
		switch {
		case f[0] == "local" && len(f) >= 4:
			method = f[3]
		case strings.HasPrefix(f[0], "host") && len(f) >= 5:
			method = f[4]
			if !strings.Contains(f[3], "/") && len(f) >= 6 {
				method = f[5]
			}
		}
		if method != "scram-sha-256" {
			t.Errorf("%s %s: rule %q authenticates with %q; want scram-sha-256", n.name, p, line, method)
		}
	}
	if rules == 0 {
		t.Errorf("%s %s has no rules", n.name, p)
	}
	t.Logf("%s pg_hba.conf: %d rules, all scram-sha-256:\n%s", n.name, rules, b)
}
