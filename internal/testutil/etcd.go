package testutil

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pgha/pgha/internal/etcdclient"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
)

// EtcdCluster is a real etcd cluster embedded in the test process: one member
// or three. Members can be stopped and restarted one at a time, so tests can
// lose the etcd leader, a member or the quorum. Its methods are safe for
// concurrent use.
type EtcdCluster struct {
	t       TB
	mu      sync.Mutex
	members []*EtcdMember
	opts    EtcdOptions

	authMu       sync.Mutex
	rootPassword string // set by EnableAuth
	serverCert   CertFiles
}

// EtcdMember is one member of an [EtcdCluster].
type EtcdMember struct {
	Name string
	// ClientURL is the member's client endpoint, e.g. http://127.0.0.1:40123.
	ClientURL string
	peerURL   string
	dir       string
	logPath   string
	initial   string // initial-cluster string shared by all members
	tls       transport.TLSInfo

	mu   sync.Mutex
	etcd *embed.Etcd // nil while stopped
}

// EtcdOptions tune the embedded cluster. The zero value is what most tests
// want.
type EtcdOptions struct {
	// Members is 1 (default) or 3.
	Members int
	// TickMs and ElectionMs are the Raft heartbeat and election timeouts.
	// Defaults: 50 ms and 500 ms, so that an etcd leader change takes well
	// under a second.
	TickMs, ElectionMs uint
	// TLS, when set, makes the members serve clients over https only, with
	// a server certificate from this CA (for 127.0.0.1 and localhost), and
	// require a client certificate signed by it (etcd's
	// --client-cert-auth). With authentication enabled, etcd takes the
	// user name from the client certificate's CN when a request carries no
	// password token. Peers still talk plain http among themselves.
	TLS *CA
}

// StartEtcd starts an etcd cluster of n members (1 or 3) on free loopback
// ports in temp dirs, waits until it serves requests and registers its stop
// with t.Cleanup. Server logs go to a file that is printed if the test fails.
func StartEtcd(t TB, n int) *EtcdCluster {
	t.Helper()
	return StartEtcdWith(t, EtcdOptions{Members: n})
}

// StartEtcdWith is [StartEtcd] with options.
func StartEtcdWith(t TB, opts EtcdOptions) *EtcdCluster {
	t.Helper()
	c, err := startEtcd(t.TempDir(), opts)
	if c != nil {
		t.Cleanup(func() {
			c.Close()
			if t.Failed() {
				for _, m := range c.members {
					DumpTail(t, "etcd member "+m.Name+" log", m.logPath, 60)
				}
			}
		})
	}
	if err != nil {
		t.Fatalf("testutil.StartEtcd(%d members): %v", opts.Members, err)
	}
	c.t = t
	return c
}

// StartEtcdMain starts an etcd cluster for a whole test binary, from
// TestMain, where there is no testing.TB: runnable Examples use it. Call
// [EtcdCluster.Close] and remove dir when m.Run returns.
func StartEtcdMain(dir string, n int) (*EtcdCluster, error) {
	return startEtcd(dir, EtcdOptions{Members: n})
}

// startEtcd starts the cluster, and starts it again on new ports (in a new
// directory) when a port it chose was taken before etcd bound it: a port
// free when chosen can become an outgoing connection's local port.
func startEtcd(base string, opts EtcdOptions) (*EtcdCluster, error) {
	var c *EtcdCluster
	var err error
	for try := 1; try <= 3; try++ {
		dir := filepath.Join(base, fmt.Sprintf("try%d", try))
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("etcd test directory: %w", err)
		}
		c, err = startEtcdOnce(dir, opts)
		if err == nil || !errors.Is(err, syscall.EADDRINUSE) {
			return c, err
		}
		if c != nil {
			c.Close()
		}
	}
	return c, err
}

func startEtcdOnce(base string, opts EtcdOptions) (*EtcdCluster, error) {
	if opts.Members == 0 {
		opts.Members = 1
	}
	if opts.Members != 1 && opts.Members != 3 {
		return nil, fmt.Errorf("Members=%d, want 1 or 3", opts.Members)
	}
	if opts.TickMs == 0 {
		opts.TickMs = 50
	}
	if opts.ElectionMs == 0 {
		opts.ElectionMs = 500
	}
	c := &EtcdCluster{opts: opts}
	scheme := "http://"
	if opts.TLS != nil {
		scheme = "https://"
		srv, err := opts.TLS.issue("etcd-server", &x509.Certificate{
			Subject:     pkix.Name{CommonName: "etcd-server"},
			KeyUsage:    x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
			IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
			DNSNames:    []string{"localhost"},
		})
		if err != nil {
			return nil, fmt.Errorf("issue the etcd server certificate: %w", err)
		}
		c.serverCert = srv
	}
	var initial []string
	for i := 0; i < opts.Members; i++ {
		cu, err := freeAddr()
		if err != nil {
			return nil, err
		}
		pu, err := freeAddr()
		if err != nil {
			return nil, err
		}
		m := &EtcdMember{
			Name:      fmt.Sprintf("etcd%d", i),
			ClientURL: scheme + cu,
			peerURL:   "http://" + pu,
			dir:       filepath.Join(base, fmt.Sprintf("etcd%d", i)),
		}
		m.logPath = m.dir + ".log"
		initial = append(initial, m.Name+"="+m.peerURL)
		c.members = append(c.members, m)
	}
	for _, m := range c.members {
		m.initial = strings.Join(initial, ",")
	}
	// Members of a multi-member cluster must start concurrently: each waits
	// for the others before it reports ready.
	errs := make(chan error, len(c.members))
	for _, m := range c.members {
		m.tls = c.tlsInfo()
		go func() { errs <- m.start(opts) }()
	}
	var firstErr error
	for range c.members {
		if err := <-errs; err != nil && firstErr == nil {
			firstErr = err
		}
	}
	return c, firstErr
}

// Close stops every member. It is called by the test cleanup of
// [StartEtcd]; call it yourself after [StartEtcdMain].
func (c *EtcdCluster) Close() { c.stopAll() }

func (m *EtcdMember) start(opts EtcdOptions) error {
	cfg := embed.NewConfig()
	cfg.Name = m.Name
	cfg.Dir = m.dir
	cu, _ := url.Parse(m.ClientURL)
	pu, _ := url.Parse(m.peerURL)
	cfg.ClientTLSInfo = m.tls
	// Authentication hashes passwords with bcrypt: the minimum cost keeps
	// tests with auth on fast (the default cost takes seconds under -race).
	cfg.BcryptCost = 4 // bcrypt.MinCost
	cfg.ListenClientUrls = []url.URL{*cu}
	cfg.AdvertiseClientUrls = []url.URL{*cu}
	cfg.ListenPeerUrls = []url.URL{*pu}
	cfg.AdvertisePeerUrls = []url.URL{*pu}
	cfg.InitialCluster = m.initial
	cfg.InitialClusterToken = "pgha-test"
	cfg.ClusterState = embed.ClusterStateFlagNew
	cfg.TickMs = opts.TickMs
	cfg.ElectionMs = opts.ElectionMs
	cfg.UnsafeNoFsync = true // test data only; makes the cluster fast on slow disks
	cfg.LogLevel = "warn"
	cfg.LogOutputs = []string{m.logPath}
	cfg.Metrics = "basic"
	// Serve only what the listeners need: no metrics or pprof listeners.
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return fmt.Errorf("start member %s (client %s, peer %s, dir %s): %w", m.Name, m.ClientURL, m.peerURL, m.dir, err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return fmt.Errorf("member %s stopped while starting: %w", m.Name, err)
	case <-time.After(30 * time.Second):
		e.Server.Stop()
		e.Close()
		return fmt.Errorf("member %s not ready after 30s (log: %s)", m.Name, m.logPath)
	}
	m.mu.Lock()
	m.etcd = e
	m.mu.Unlock()
	return nil
}

// Members returns the cluster's members in order.
func (c *EtcdCluster) Members() []*EtcdMember { return c.members }

// Endpoints returns the client URLs of every member, stopped or not.
func (c *EtcdCluster) Endpoints() []string {
	var eps []string
	for _, m := range c.members {
		eps = append(eps, m.ClientURL)
	}
	return eps
}

// Client returns a new client connected to all members, closed at the end
// of the test. On a cluster with TLS it presents a client certificate with
// CN "root"; after [EtcdCluster.EnableAuth] it acts as root.
func (c *EtcdCluster) Client(t TB) *clientv3.Client {
	t.Helper()
	if c.opts.TLS == nil && c.RootPassword() == "" {
		return NewEtcdClient(t, c.Endpoints()...)
	}
	pw := ""
	if c.opts.TLS == nil {
		pw = c.RootPassword()
	}
	return c.ClientAs(t, "root", pw)
}

// NewEtcdClient returns a client for the given endpoints, closed at the end
// of the test. Its dial and keep-alive timeouts are short so that tests see
// a dead endpoint within a second or two.
func NewEtcdClient(t TB, endpoints ...string) *clientv3.Client {
	t.Helper()
	cli, err := etcdclient.New(clientv3.Config{
		Endpoints:            endpoints,
		DialTimeout:          2 * time.Second,
		DialKeepAliveTime:    time.Second,
		DialKeepAliveTimeout: time.Second,
	})
	if err != nil {
		t.Fatalf("testutil: etcd client for %v: %v", endpoints, err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// Stop stops member i (0-based), keeping its data so that [EtcdCluster.Restart]
// can bring it back. Stopping a stopped member is a no-op.
func (c *EtcdCluster) Stop(i int) {
	c.members[i].stop()
}

// Restart starts a stopped member i again with its data, and waits until it
// is ready (which needs a quorum of members running). It fails the test that
// started the cluster on error; from TestMain use [EtcdCluster.RestartAsync].
func (c *EtcdCluster) Restart(i int) {
	c.t.Helper()
	m := c.members[i]
	m.mu.Lock()
	running := m.etcd != nil
	m.mu.Unlock()
	if running {
		return
	}
	opts := c.opts
	if err := m.restart(opts); err != nil {
		c.t.Fatalf("testutil: restart etcd member %s: %v", m.Name, err)
	}
}

// RestartAsync starts a stopped member i again without waiting for it to be
// ready; it returns a channel that yields the outcome. Use it to restore a
// lost quorum, where a member cannot become ready until another one is back.
func (c *EtcdCluster) RestartAsync(i int) <-chan error {
	ch := make(chan error, 1)
	m := c.members[i]
	go func() { ch <- m.restart(c.opts) }()
	return ch
}

func (m *EtcdMember) restart(opts EtcdOptions) error {
	// A restarted member reads its membership from its data dir; the
	// initial-cluster settings are ignored, so start() works as is.
	return m.start(opts)
}

// Kill stops member i at once, like a crash: its Raft node stops before
// anything else (no leadership transfer, no more lease expiries), then
// its listeners close. Restart it with [EtcdCluster.Restart] or
// [EtcdCluster.RestartAsync].
func (c *EtcdCluster) Kill(i int) {
	m := c.members[i]
	m.mu.Lock()
	e := m.etcd
	m.etcd = nil
	m.mu.Unlock()
	if e != nil {
		e.Server.HardStop()
		e.Close()
	}
}

func (m *EtcdMember) stop() {
	m.mu.Lock()
	e := m.etcd
	m.etcd = nil
	m.mu.Unlock()
	if e != nil {
		e.Close()
	}
}

// Running reports whether member i is running.
func (c *EtcdCluster) Running(i int) bool {
	m := c.members[i]
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.etcd != nil
}

// Leader returns the index of the member that is currently the Raft leader,
// or -1 if no running member knows a leader.
func (c *EtcdCluster) Leader() int {
	for i, m := range c.members {
		m.mu.Lock()
		e := m.etcd
		m.mu.Unlock()
		if e == nil {
			continue
		}
		if uint64(e.Server.MemberID()) == uint64(e.Server.Leader()) {
			return i
		}
	}
	return -1
}

// WaitLeader polls until a running member is the Raft leader and returns its
// index.
func (c *EtcdCluster) WaitLeader(t TB, timeout time.Duration) int {
	t.Helper()
	idx := -1
	Eventually(t, timeout, "etcd cluster has a leader", func() error {
		if idx = c.Leader(); idx < 0 {
			return errors.New("no running member is leader")
		}
		return nil
	})
	return idx
}

func (c *EtcdCluster) stopAll() {
	var wg sync.WaitGroup
	for _, m := range c.members {
		wg.Add(1)
		go func() { defer wg.Done(); m.stop() }()
	}
	wg.Wait()
}

// EtcdMemberCount returns how many members the cluster was started with.
func (c *EtcdCluster) EtcdMemberCount() int { return len(c.members) }

// FreeAddr returns a loopback host:port that was free when it was chosen.
func FreeAddr(t TB) string {
	t.Helper()
	a, err := freeAddr()
	if err != nil {
		t.Fatalf("testutil: %v", err)
	}
	return a
}

func freeAddr() (string, error) {
	p, err := pickPort()
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("127.0.0.1:%d", p), nil
}

// DumpTail logs the last n lines of the file at path, headed by what:
// what a failed test prints of a server's log.
func DumpTail(t TB, what, path string, n int) {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Logf("%s: %v", what, err)
		return
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	t.Logf("--- %s (%s, last %d lines) ---\n%s", what, path, len(lines), strings.Join(lines, "\n"))
}

// Ctx returns a context derived from t.Context() that is cancelled after d.
func Ctx(t TB, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

var _ TB = (*testing.T)(nil)
