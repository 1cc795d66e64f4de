package testutil

import (
	"fmt"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// VerifyNoLeaks runs the package's tests and then fails the run if any
// goroutine started by them is still running (see [FindLeaks]). Call it
// from TestMain. Goroutines that libraries start once per process and never
// stop are ignored by name.
func VerifyNoLeaks(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if err := FindLeaks(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak: errors on successful test run:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// VerifyNoLeaksOrServers is [VerifyNoLeaks] for packages whose tests start
// PostgreSQL: after a successful run it also fails the run when a postgres
// server is still running as a child of this process (see [CheckLeaks]).
func VerifyNoLeaksOrServers(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if err := CheckLeaks(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}

// LeakWindow is how long [FindLeaks] waits for goroutines to end before it
// calls them leaked. An embedded etcd member's peer HTTP connections
// outlive its Close by up to the peer listener's read timeout (rafthttp's
// ConnReadTimeout, 5 s): a request that was in flight when a peer shut down
// (a forwarded lease renewal, a version check) leaves a client connection
// whose reader ends only when the far side's read deadline closes it.
// goleak's own retries give up after about a second, which a loaded
// machine can outrun (CI saw net/http.(*persistConn).readLoop reported).
const LeakWindow = 15 * time.Second

// FindLeaks reports goroutines still running (see [LeakOptions]) after
// waiting up to [LeakWindow] for them to end.
func FindLeaks() error {
	deadline := time.Now().Add(LeakWindow)
	for {
		err := goleak.Find(LeakOptions()...)
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(250 * time.Millisecond) // the goroutines end on their own; nothing to poll but them
	}
}

// LeakOptions are the goleak options every package's leak check uses.
func LeakOptions() []goleak.Option {
	return []goleak.Option{
		// Process-wide singletons in etcd's and gRPC's dependencies.
		goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"),
		goleak.IgnoreTopFunction("github.com/golang/glog.(*fileSink).flushDaemon"),
		goleak.IgnoreTopFunction("github.com/golang/glog.(*loggingT).flushDaemon"),
		goleak.IgnoreAnyFunction("google.golang.org/grpc/internal/grpcsync.(*CallbackSerializer).run"),
		// toxiproxy v2.5.0 (the fault proxy): when a toxic is added to or
		// removed from a link whose far end has gone, the stubs of that
		// link block for good handing a chunk on, with no way to stop
		// them: NoopToxic.Pipe sends on its output without watching its
		// interrupt (toxics/noop.go), and the latency toxic does the same
		// in its Interrupt case (toxics/latency.go). A leak inside the
		// proxy library, seen after long chaos runs, not in pgha.
		goleak.IgnoreTopFunction("github.com/Shopify/toxiproxy/v2/toxics.(*NoopToxic).Pipe"),
		goleak.IgnoreTopFunction("github.com/Shopify/toxiproxy/v2/toxics.(*LatencyToxic).Pipe"),
		// An etcd member stopped like a crash (EtcdCluster.Kill: HardStop
		// in this process) can leave a peer's /version request blocked
		// for good on the member's storage lock, which the stopped
		// server never releases. A real crash takes the process with
		// it; seen once after a 10-minute chaos run.
		goleak.IgnoreAnyFunction("go.etcd.io/etcd/server/v3/etcdserver/api/etcdhttp.newPeerHandler.versionHandler.func1"),
	}
}

// CheckLeaks reports goroutines still running (see [LeakOptions]) and
// postgres processes still running as children of this process. Call it
// from TestMain after m.Run succeeded; a non-nil error should fail the run.
func CheckLeaks() error {
	if err := FindLeaks(); err != nil {
		return err
	}
	if procs, err := ChildPostgresProcesses(); err == nil && len(procs) > 0 {
		return fmt.Errorf("leaked postgres processes:\n%v", procs)
	}
	return nil
}
