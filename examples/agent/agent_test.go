package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgha/pgha/internal/testutil"
)

// syncBuffer is an io.Writer safe for the agent's concurrent logging.
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

// agent is a pgha-agent running in the test process.
type agent struct {
	addr    string
	log     *syncBuffer
	dataDir string
	cancel  context.CancelFunc
	done    chan error
	stopped bool
	err     error
}

// startAgent runs the agent with args and env until the test ends or
// stop is called.
func startAgent(t *testing.T, args, env []string) *agent {
	t.Helper()
	a := &agent{log: &syncBuffer{}, done: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	go func() { a.done <- run(ctx, args, env, a.log) }()
	t.Cleanup(func() {
		a.stop(t)
		if t.Failed() {
			t.Logf("agent log:\n%s", a.log.String())
		}
	})
	return a
}

// stop cancels the agent's context, like SIGTERM, and waits for run to
// return.
func (a *agent) stop(t *testing.T) error {
	t.Helper()
	if a.stopped {
		return a.err
	}
	a.stopped = true
	a.cancel()
	select {
	case a.err = <-a.done:
	case <-time.After(60 * time.Second):
		t.Fatalf("the agent did not stop within 60s of its context's end")
	}
	return a.err
}

var httpClient = &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

func get(addr, path string) (int, string, error) {
	resp, err := httpClient.Get("http://" + addr + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestAgent starts the agent for one node against an etcd with
// authentication on: it bootstraps a one-node cluster, serves its
// endpoints and metrics, never logs a password, and shuts down cleanly on
// cancel, stopping its PostgreSQL.
func TestAgent(t *testing.T) {
	etcd := testutil.StartEtcd(t, 1)
	const etcdPassword = "etcd-root-Zq81xv"
	const superPassword = "super-secret-Hf73kd"
	const replPassword = "repl-secret-Pw29mc"
	const httpToken = "http-token-Km55aq-0123456789"
	enableEtcdAuth(t, etcd, etcdPassword)

	pg := testutil.PostgresConfig(t, "a1")
	secrets := t.TempDir()
	addr := testutil.FreeAddr(t)
	// The config file gives some settings, the environment others (and
	// overrides the file's log level), flags the rest.
	cfgFile := writeFile(t, secrets, "agent.yaml", fmt.Sprintf(`
cluster: agenttest
node: a1
lease_ttl: 5s
log_level: info
etcd_endpoints: [%s]
etcd_username: root
etcd_dial_timeout: 30s # authentication is a bcrypt hash: slow under -race
pg_parameters:
  shared_buffers: 16MB
  max_connections: 30
`, etcd.Endpoints()[0]))
	args := []string{
		"--config", cfgFile,
		"--listen", addr,
		"--pg-data-dir", pg.DataDir,
		"--pg-bin-dir", pg.BinDir,
		"--pg-port", fmt.Sprint(pg.Port),
		"--pg-socket-dir", pg.SocketDir,
		"--pg-replication-password-file", writeFile(t, secrets, "repl", replPassword+"\n"),
	}
	env := []string{
		"PGHA_LOG_LEVEL=debug",
		"PGHA_PG_SUPERUSER_PASSWORD=" + superPassword,
		"PGHA_ETCD_PASSWORD=" + etcdPassword,
		"PGHA_HTTP_TOKEN=" + httpToken,
	}
	a := startAgent(t, args, env)

	testutil.Eventually(t, 90*time.Second, "the agent's /primary answers 200 (bootstrap done)", func() error {
		code, body, err := get(addr, "/primary")
		if err != nil {
			return err
		}
		if code != http.StatusOK {
			return fmt.Errorf("/primary: %d %s", code, body)
		}
		return nil
	})
	if code, body, err := get(addr, "/health"); err != nil || code != http.StatusOK || !strings.Contains(body, `"role":"primary"`) {
		t.Errorf("/health: %d %s %v; want 200 and role primary", code, body, err)
	}
	if code, body, err := get(addr, "/replica"); err != nil || code != http.StatusServiceUnavailable {
		t.Errorf("/replica on the primary: %d %s %v; want 503", code, body, err)
	}
	code, body, err := get(addr, "/metrics")
	if err != nil || code != http.StatusOK {
		t.Fatalf("/metrics: %d %v", code, err)
	}
	for _, want := range []string{"pgha_ha_role", "pgha_ha_loop_duration_seconds_bucket", "go_goroutines", "process_resident_memory_bytes"} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	var names []string
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, "# TYPE pgha_") {
			names = append(names, strings.TrimPrefix(line, "# TYPE "))
		}
	}
	t.Logf("pgha metrics: %s", strings.Join(names, "; "))
	code, cluster, err := get(addr, "/cluster")
	if err != nil || code != http.StatusOK || !strings.Contains(cluster, `"node": "a1"`) && !strings.Contains(cluster, `"node":"a1"`) {
		t.Errorf("/cluster: %d %s %v; want 200 and node a1", code, cluster, err)
	}
	for _, pw := range []string{etcdPassword, superPassword, replPassword} {
		if strings.Contains(cluster, pw) || strings.Contains(body, pw) {
			t.Errorf("a password appears in /cluster or /metrics")
		}
	}

	// State-changing endpoints: 401 without the token (nothing changes),
	// 200 with it; GET on them is 405.
	post := func(path, token string) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, "http://"+addr+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := httpClient.Do(req)
		if err != nil {
			t.Fatalf("POST %s: %v", path, err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := post("/pause", ""); code != http.StatusUnauthorized {
		t.Errorf("POST /pause without a token = %d; want 401", code)
	}
	if code := post("/pause", "wrong-token-0123456789"); code != http.StatusUnauthorized {
		t.Errorf("POST /pause with a wrong token = %d; want 401", code)
	}
	if _, c, _ := get(addr, "/cluster"); strings.Contains(c, `"paused":true`) {
		t.Errorf("the cluster is paused after unauthenticated requests: %s", c)
	}
	if code := post("/pause", httpToken); code != http.StatusOK {
		t.Errorf("POST /pause with the token = %d; want 200", code)
	}
	if _, c, _ := get(addr, "/cluster"); !strings.Contains(c, `"paused":true`) {
		t.Errorf("/cluster after POST /pause: %s; want paused", c)
	}
	if code := post("/resume", httpToken); code != http.StatusOK {
		t.Errorf("POST /resume with the token = %d; want 200", code)
	}
	if code, _, _ := get(addr, "/pause"); code != http.StatusMethodNotAllowed {
		t.Errorf("GET /pause = %d; want 405", code)
	}

	if err := a.stop(t); err != nil {
		t.Fatalf("run after cancel: %v; want nil", err)
	}
	if procs, err := testutil.PostgresProcesses(filepath.Dir(pg.DataDir)); err != nil || len(procs) > 0 {
		t.Errorf("postgres processes left after the agent stopped: %v %v", procs, err)
	}
	if _, _, err := get(addr, "/health"); err == nil {
		t.Errorf("the HTTP server still answers after the agent stopped")
	}
	log := a.log.String()
	for _, want := range []string{"pgha-agent starting", "shutting down", "pgha-agent stopped"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q", want)
		}
	}
	for name, pw := range map[string]string{"etcd": etcdPassword, "superuser": superPassword, "replication": replPassword, "HTTP token": httpToken} {
		if strings.Contains(log, pw) {
			t.Errorf("the %s password appears in the agent's log", name)
		}
	}
	if t.Failed() || testing.Verbose() {
		t.Logf("agent log:\n%s", log)
	}
}

// agentArgs are the flags for a node of an agent test cluster.
func agentArgs(t *testing.T, name, cluster, etcdURL string) (args []string, addr, dataDir string) {
	pg := testutil.PostgresConfig(t, name)
	addr = testutil.FreeAddr(t)
	return []string{
		"--cluster", cluster, "--node", name, "--etcd-endpoints", etcdURL, "--listen", addr,
		"--lease-ttl", "2s", "--loop-interval", "200ms",
		"--pg-data-dir", pg.DataDir, "--pg-bin-dir", pg.BinDir, "--pg-port", fmt.Sprint(pg.Port),
		"--pg-socket-dir", pg.SocketDir,
	}, addr, pg.DataDir
}

func waitStatus(t *testing.T, addr, path string, want int) {
	t.Helper()
	testutil.Eventually(t, 90*time.Second, fmt.Sprintf("%s on %s answers %d", path, addr, want), func() error {
		code, body, err := get(addr, path)
		if err != nil {
			return err
		}
		if code != want {
			return fmt.Errorf("%s: %d %s", path, code, body)
		}
		return nil
	})
}

// TestAgentStandby: a second agent clones from the first and streams;
// stopped, it stops its PostgreSQL, and the primary keeps leading.
func TestAgentStandby(t *testing.T) {
	etcd := testutil.StartEtcd(t, 1)
	env := []string{"PGHA_PG_SUPERUSER_PASSWORD=" + testutil.PostgresSuperuserPassword,
		"PGHA_PG_REPLICATION_PASSWORD=" + testutil.PostgresReplicationPassword}
	args1, addr1, dir1 := agentArgs(t, "s1", "standbytest", etcd.Endpoints()[0])
	a1 := startAgent(t, args1, env)
	waitStatus(t, addr1, "/primary", http.StatusOK)
	args2, addr2, dir2 := agentArgs(t, "s2", "standbytest", etcd.Endpoints()[0])
	a2 := startAgent(t, args2, env)
	waitStatus(t, addr2, "/readiness", http.StatusOK)
	waitStatus(t, addr2, "/replica?lag=1048576", http.StatusOK)
	if code, body, err := get(addr2, "/primary"); err != nil || code != http.StatusServiceUnavailable {
		t.Errorf("/primary on the standby: %d %s %v; want 503", code, body, err)
	}
	if err := a2.stop(t); err != nil {
		t.Fatalf("standby agent: run after cancel: %v", err)
	}
	if procs, err := testutil.PostgresProcesses(filepath.Dir(dir2)); err != nil || len(procs) > 0 {
		t.Errorf("the standby's postgres still runs after its agent stopped: %v %v", procs, err)
	}
	if code, body, err := get(addr1, "/primary"); err != nil || code != http.StatusOK {
		t.Errorf("/primary on s1 after the standby left: %d %s %v", code, body, err)
	}
	if err := a1.stop(t); err != nil {
		t.Fatalf("primary agent: run after cancel: %v", err)
	}
	if procs, err := testutil.PostgresProcesses(filepath.Dir(dir1)); err != nil || len(procs) > 0 {
		t.Errorf("the primary's postgres still runs after its agent stopped: %v %v", procs, err)
	}
}
