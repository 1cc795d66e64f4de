package testutil

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Netbed is a network test bed: N node namespaces and one client
// namespace, each with one address in 198.18.0.0/15 (the range reserved for
// benchmarking, RFC 2544) on a veth whose other end is a port of a bridge
// that lives in a switch namespace of its own. Nothing is created in, or
// routed through, the host's own network namespace: a namespace has its
// loopback and its bridge link, and no route anywhere else.
//
// Faults drop packets with iptables rules in the receiving namespaces'
// INPUT chains (this kernel has no netem): a cut link loses every packet
// both ways, so TCP connections and connects time out instead of being
// reset, as on a real partition. Every fault is undone by [Netbed.Heal].
//
// Servers run in a namespace as processes ([Netns.Command]); the test
// process's own clients create their sockets in a namespace with
// [Netns.DialContext]. Its methods are safe for concurrent use.
type Netbed struct {
	t TB
	// Nodes are the node namespaces, addresses 198.18.0.1, .2, ...
	Nodes []*Netns
	// Client is the client namespace, address 198.18.0.100.
	Client *Netns
	sw     string // the switch namespace's name

	mu sync.Mutex // serialises fault changes
}

// Netns is one network namespace of a [Netbed].
type Netns struct {
	// Name is the namespace's name (ip netns), unique per test process.
	Name string
	// Addr is its IPv4 address, e.g. 198.18.0.1.
	Addr string
	bed  *Netbed
}

// netbedChain is the iptables chain every fault rule goes to; INPUT jumps
// to it in each namespace.
const netbedChain = "PGHA-FAULT"

// netbedSeq makes namespace names unique within the test process; the pid
// makes them unique between test processes (packages run in parallel).
var netbedSeq atomic.Int64

// netbedSkip fails the test under CI=true and skips it otherwise, with why
// and how to fix it.
func netbedSkip(t TB, why string) {
	t.Helper()
	msg := "testutil.StartNetbed: " + why + "; the network-namespace tests need root with CAP_NET_ADMIN, ip (iproute2) and iptables: run scripts/ensure-iptables.sh as root"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + " (CI=true: failing instead of skipping)")
	}
	t.Skip(msg)
}

// netbedAvailable says why the bed cannot be built here, "" when it can.
func netbedAvailable() string {
	if os.Geteuid() != 0 {
		return "not running as root"
	}
	var hdr unix.CapUserHeader
	hdr.Version = unix.LINUX_CAPABILITY_VERSION_3
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return "capget: " + err.Error()
	}
	if data[0].Effective&(1<<unix.CAP_NET_ADMIN) == 0 || data[0].Effective&(1<<unix.CAP_SYS_ADMIN) == 0 {
		return "CAP_NET_ADMIN or CAP_SYS_ADMIN missing from the effective capabilities"
	}
	for _, tool := range []string{"ip", "iptables"} {
		if _, err := exec.LookPath(tool); err != nil {
			return tool + " not found on PATH"
		}
	}
	return ""
}

// StartNetbed builds a test bed of n node namespaces and a client
// namespace, checks that a cut link times out without a reset and that a
// healed one works, and registers its removal (every namespace, and with
// them every veth and rule) with t.Cleanup. Register the cleanups of the
// processes that run in it after calling StartNetbed, so that they run
// first. Without root, CAP_NET_ADMIN, ip or iptables the test is skipped
// with what is missing, and fails under CI=true.
func StartNetbed(t TB, n int) *Netbed {
	t.Helper()
	if n < 1 || n > 99 {
		t.Fatalf("testutil.StartNetbed: %d nodes, want 1..99", n)
	}
	if why := netbedAvailable(); why != "" {
		netbedSkip(t, why)
	}
	sweepNetbeds()
	prefix := fmt.Sprintf("pgha%d-%d-", os.Getpid(), netbedSeq.Add(1))
	b := &Netbed{t: t, sw: prefix + "sw"}
	var all []*Netns
	for i := 1; i <= n; i++ {
		ns := &Netns{Name: fmt.Sprintf("%sn%d", prefix, i), Addr: fmt.Sprintf("198.18.0.%d", i), bed: b}
		b.Nodes = append(b.Nodes, ns)
		all = append(all, ns)
	}
	b.Client = &Netns{Name: prefix + "c", Addr: "198.18.0.100", bed: b}
	all = append(all, b.Client)
	created := []string{}
	t.Cleanup(func() { removeNetns(t, created) })
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("testutil.StartNetbed: ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	run("netns", "add", b.sw)
	created = append(created, b.sw)
	run("-n", b.sw, "link", "add", "br0", "type", "bridge")
	run("-n", b.sw, "link", "set", "br0", "up")
	run("-n", b.sw, "link", "set", "lo", "up")
	for i, ns := range all {
		run("netns", "add", ns.Name)
		created = append(created, ns.Name)
		port := fmt.Sprintf("p%d", i)
		// Created inside the node's namespace with its peer moved straight
		// into the switch's: neither end ever exists in the host's.
		run("-n", ns.Name, "link", "add", "eth0", "type", "veth", "peer", "name", port, "netns", b.sw)
		run("-n", b.sw, "link", "set", port, "master", "br0")
		run("-n", b.sw, "link", "set", port, "up")
		run("-n", ns.Name, "addr", "add", ns.Addr+"/15", "dev", "eth0")
		run("-n", ns.Name, "link", "set", "eth0", "up")
		run("-n", ns.Name, "link", "set", "lo", "up")
		for _, args := range [][]string{{"-N", netbedChain}, {"-A", "INPUT", "-j", netbedChain}} {
			if err := ns.iptables(args...); err != nil {
				t.Fatalf("testutil.StartNetbed: %v", err)
			}
		}
	}
	if err := b.selfTest(); err != nil {
		t.Fatalf("testutil.StartNetbed: self-test: %v", err)
	}
	return b
}

// removeNetns deletes the namespaces (their veths go with them). A process
// still running in one is reported and killed: it was started by this
// test, in a namespace this test made.
func removeNetns(t TB, names []string) {
	for _, name := range names {
		if out, _ := exec.Command("ip", "netns", "pids", name).Output(); len(strings.TrimSpace(string(out))) > 0 {
			pids := strings.Fields(string(out))
			t.Errorf("testutil: processes %v still running in network namespace %s at cleanup; killing them", pids, name)
			for _, p := range pids {
				if pid, err := strconv.Atoi(p); err == nil {
					syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("testutil: ip netns del %s: %v: %s", name, err, out)
		}
	}
}

// sweepNetbeds removes the namespaces of test processes that are gone (a
// test binary killed before its cleanups ran).
func sweepNetbeds() {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(out), "\n") {
		name, _, _ := strings.Cut(strings.TrimSpace(line), " ")
		rest, ok := strings.CutPrefix(name, "pgha")
		if !ok {
			continue
		}
		pidStr, _, ok := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidStr)
		if !ok || err != nil || pid == os.Getpid() || ProcessAlive(pid) {
			continue
		}
		exec.Command("ip", "netns", "del", name).Run()
	}
}

// iptables runs iptables in the namespace (-w: wait for the xtables lock
// that every namespace shares).
func (ns *Netns) iptables(args ...string) error {
	full := append([]string{"netns", "exec", ns.Name, "iptables", "-w"}, args...)
	if out, err := exec.Command("ip", full...).CombinedOutput(); err != nil {
		return fmt.Errorf("iptables %s in %s: %v: %s", strings.Join(args, " "), ns.Name, err, out)
	}
	return nil
}

// do runs f on an OS thread switched into the namespace, so that every
// socket f creates belongs to it. The thread is switched back afterwards;
// if that fails it is left locked and ends with the goroutine.
func (ns *Netns) do(f func()) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open this thread's network namespace: %w", err)
			return
		}
		defer orig.Close()
		target, err := os.Open("/run/netns/" + ns.Name)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open network namespace %s: %w", ns.Name, err)
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("setns %s: %w", ns.Name, err)
			return
		}
		f()
		if unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		errc <- nil
	}()
	return <-errc
}

// DialContext dials address from inside the namespace: the socket belongs
// to it, wherever it is used afterwards. Its signature fits pgx's
// pgconn.DialFunc (pgxpool.Config.ConnConfig.DialFunc, which driver.Pool's
// per-node pools copy) and, with network "tcp", grpc.WithContextDialer for
// etcd's clientv3.Config.DialOptions (see [Netns.GRPCDialer]).
func (ns *Netns) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	var conn net.Conn
	var derr error
	if err := ns.do(func() {
		var d net.Dialer
		conn, derr = d.DialContext(ctx, network, address)
	}); err != nil {
		return nil, err
	}
	return conn, derr
}

// GRPCDialer is DialContext for grpc.WithContextDialer: etcd clients in
// the namespace use
// DialOptions: []grpc.DialOption{grpc.WithContextDialer(ns.GRPCDialer)}.
func (ns *Netns) GRPCDialer(ctx context.Context, address string) (net.Conn, error) {
	return ns.DialContext(ctx, "tcp", address)
}

// Listen listens on address inside the namespace.
func (ns *Netns) Listen(network, address string) (net.Listener, error) {
	var l net.Listener
	var lerr error
	if err := ns.do(func() { l, lerr = net.Listen(network, address) }); err != nil {
		return nil, err
	}
	return l, lerr
}

// Command is exec.Command for a program that runs in the namespace (through
// `ip netns exec`, which execs it: the process's pid is the program's). Its
// children stay in the namespace. The caller starts, stops and waits for
// it, before the bed's cleanup runs.
func (ns *Netns) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", ns.Name, name}, args...)...)
}

// Cut drops every packet between a and b, both ways.
func (b *Netbed) Cut(a, c *Netns) {
	b.t.Helper()
	b.drop(a, c, "")
}

// CutPorts drops the TCP packets between a and c, both ways, whose source
// or destination port is in lo..hi: for example only etcd (2379-2380),
// only one PostgreSQL port, only the agents' HTTP port.
func (b *Netbed) CutPorts(a, c *Netns, lo, hi int) {
	b.t.Helper()
	if lo < 1 || hi > 65535 || lo > hi {
		b.t.Fatalf("testutil: Netbed.CutPorts(%d, %d): want 1 <= lo <= hi <= 65535", lo, hi)
	}
	b.drop(a, c, fmt.Sprintf("%d:%d", lo, hi))
}

// Isolate cuts ns from every other namespace of the bed (the client's
// included): the node keeps its loopback and its own address.
func (b *Netbed) Isolate(ns *Netns) {
	b.t.Helper()
	for _, o := range append(append([]*Netns{}, b.Nodes...), b.Client) {
		if o != ns {
			b.drop(ns, o, "")
		}
	}
}

// Heal removes every fault: every link passes again.
func (b *Netbed) Heal() {
	b.t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, ns := range append(append([]*Netns{}, b.Nodes...), b.Client) {
		if err := ns.iptables("-F", netbedChain); err != nil {
			b.t.Fatalf("testutil: Netbed.Heal: %v", err)
		}
	}
}

// drop adds the rules for one cut link: in each namespace, packets from the
// other are dropped on arrival (INPUT), so the sender sees no error and no
// reply.
func (b *Netbed) drop(a, c *Netns, ports string) {
	b.t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, pair := range [][2]*Netns{{a, c}, {c, a}} {
		in, from := pair[0], pair[1]
		var rules [][]string
		if ports == "" {
			rules = [][]string{{"-A", netbedChain, "-s", from.Addr, "-j", "DROP"}}
		} else {
			rules = [][]string{
				{"-A", netbedChain, "-s", from.Addr, "-p", "tcp", "--dport", ports, "-j", "DROP"},
				{"-A", netbedChain, "-s", from.Addr, "-p", "tcp", "--sport", ports, "-j", "DROP"},
			}
		}
		for _, r := range rules {
			if err := in.iptables(r...); err != nil {
				b.t.Fatalf("testutil: Netbed: cut %s-%s: %v", a.Name, c.Name, err)
			}
		}
	}
}

// selfTest checks the faults do what they claim on this kernel: a cut link
// times out without a reset (also to a closed port, which would answer with
// a reset if any packet passed), a port cut leaves other ports alone, and a
// healed link works.
func (b *Netbed) selfTest() error {
	a, c := b.Client, b.Nodes[0]
	l, err := c.Listen("tcp", c.Addr+":0")
	if err != nil {
		return err
	}
	defer l.Close()
	accepted := make(chan struct{})
	go func() {
		defer close(accepted)
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			conn.Close()
		}
	}()
	defer func() { l.Close(); <-accepted }()
	open := l.Addr().String()
	closed := c.Addr + ":1" // nothing listens: a reset when packets pass
	dial := func(addr string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		conn, err := a.DialContext(ctx, "tcp", addr)
		if err == nil {
			conn.Close()
		}
		return err
	}
	if err := dial(open); err != nil {
		return fmt.Errorf("dial %s from %s before any fault: %w", open, a.Name, err)
	}
	if err := dial(closed); !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("dial closed port %s from %s: got %v, want connection refused", closed, a.Name, err)
	}
	b.Cut(a, c)
	for _, addr := range []string{open, closed} {
		if err := dial(addr); !TimedOut(err) {
			return fmt.Errorf("dial %s over a cut link: got %v, want a timeout (no reset, no error)", addr, err)
		}
	}
	b.Heal()
	_, port, _ := net.SplitHostPort(open)
	p, _ := strconv.Atoi(port)
	b.CutPorts(a, c, p, p)
	if err := dial(open); !TimedOut(err) {
		return fmt.Errorf("dial %s with its port cut: got %v, want a timeout", open, err)
	}
	if err := dial(closed); !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("dial %s with only port %d cut: got %v, want connection refused", closed, p, err)
	}
	b.Heal()
	if err := dial(open); err != nil {
		return fmt.Errorf("dial %s after the heal: %w", open, err)
	}
	return nil
}

// TimedOut reports whether err is a timeout (a deadline passed with no
// answer), as opposed to a refusal or a reset: what a dial over a cut link
// of a [Netbed] returns.
func TimedOut(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}
