package pghatest_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgha/pgha/ha"
	"github.com/pgha/pgha/pghatest"
)

func ExampleOptions_Validate() {
	err := pghatest.Options{Nodes: 1, Sync: true}.Validate()
	fmt.Println(err)
	// Output: pghatest: Options.Sync true needs a standby to confirm commits: set Nodes to 2 or more (it is 1)
}

func TestOptionsValidate(t *testing.T) {
	for _, tc := range []struct {
		opts  pghatest.Options
		field string // "" when valid
	}{
		{pghatest.Options{}, ""},
		{pghatest.Options{Nodes: 1}, ""},
		{pghatest.Options{Nodes: 2, Sync: true, LeaseTTL: 5 * time.Second, LoopInterval: time.Second}, ""},
		{pghatest.Options{Nodes: -1}, "Nodes"},
		{pghatest.Options{Nodes: pghatest.MaxNodes + 1}, "Nodes"},
		{pghatest.Options{Nodes: 1, Sync: true}, "Sync"},
		{pghatest.Options{LeaseTTL: time.Second}, "LeaseTTL"},
		{pghatest.Options{LeaseTTL: 2500 * time.Millisecond}, "LeaseTTL"},
		{pghatest.Options{LoopInterval: time.Second}, "LoopInterval"},
		{pghatest.Options{LoopInterval: -time.Millisecond}, "LoopInterval"},
		{pghatest.Options{StartTimeout: -time.Second}, "StartTimeout"},
		{pghatest.Options{Cluster: "a/b"}, "Cluster"},
	} {
		err := tc.opts.Validate()
		var oe *pghatest.OptionsError
		switch {
		case tc.field == "" && err != nil:
			t.Errorf("%+v: %v; want valid", tc.opts, err)
		case tc.field != "" && (!errors.As(err, &oe) || oe.Field != tc.field):
			t.Errorf("%+v: %v; want an *OptionsError on %s", tc.opts, err, tc.field)
		case tc.field != "" && !strings.Contains(err.Error(), "Options."+tc.field):
			t.Errorf("%+v: %q does not name Options.%s", tc.opts, err, tc.field)
		}
	}
}

// fatalRecorder is a testing.TB whose Fatal records the message and ends
// the goroutine, as testing.T's does.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (f *fatalRecorder) Fatal(args ...any) { f.msg = fmt.Sprint(args...); runtime.Goexit() }

func (f *fatalRecorder) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// TestStartRejectsBadOptions: Start fails the test with the field to fix,
// before it starts anything.
func TestStartRejectsBadOptions(t *testing.T) {
	rec := &fatalRecorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		pghatest.Start(rec, pghatest.Options{Nodes: 3, LeaseTTL: 1500 * time.Millisecond})
		rec.msg = "Start returned"
	}()
	<-done
	if !strings.Contains(rec.msg, "Options.LeaseTTL 1.5s must be whole seconds") {
		t.Fatalf("Start with LeaseTTL 1.5s: %q; want a fatal error naming Options.LeaseTTL", rec.msg)
	}
}

// write inserts v into table kv through a plain connection to dsn.
func write(t *testing.T, dsn string, v int) {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(t.Context(), "CREATE TABLE IF NOT EXISTS kv (v int PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(t.Context(), "INSERT INTO kv VALUES ($1)", v); err != nil {
		t.Fatal(err)
	}
}

// count returns how many rows of kv the server at dsn has.
func count(t *testing.T, dsn string) int {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var n int
	if err := conn.QueryRow(t.Context(), "SELECT count(*) FROM kv").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestSwitchover: a switchover to a named standby and one to any standby
// each make that node the primary, reachable through its NodeDSN, with
// the writes made before.
func TestSwitchover(t *testing.T) {
	c := pghatest.Start(t, pghatest.Options{Nodes: 3})
	old := c.Primary()
	write(t, c.NodeDSN(old), 1)
	to := c.Nodes()[0]
	if to == old {
		to = c.Nodes()[1]
	}
	if got := c.Switchover(to); got != to {
		t.Fatalf("Switchover(%s) returned %s", to, got)
	}
	if p := c.WaitHealthy(time.Minute); p != to {
		t.Fatalf("primary after Switchover(%s): %s", to, p)
	}
	write(t, c.NodeDSN(to), 2)
	next := c.Switchover("")
	if next == to || next == "" {
		t.Fatalf("Switchover(\"\") from %s returned %q", to, next)
	}
	if p := c.WaitHealthy(time.Minute); p != next {
		t.Fatalf("primary after Switchover(\"\"): %s; Switchover said %s", p, next)
	}
	if n := count(t, c.NodeDSN(next)); n != 2 {
		t.Fatalf("the new primary %s has %d rows; want 2", next, n)
	}
	h := c.Status().History
	if len(h) < 2 || h[len(h)-2].Leader != to || h[len(h)-1].Leader != next || h[len(h)-1].Reason != "switchover" || h[len(h)-2].Reason != "switchover" {
		t.Fatalf("history after switchovers to %s then %s: %+v", to, next, h)
	}
}

// TestKillPrimaryAsync: in asynchronous mode the killed primary's manager
// restarts PostgreSQL in place, so the same node is the primary again (see
// TestOrdersSurviveFailover for synchronous mode, where a standby takes
// over).
func TestKillPrimaryAsync(t *testing.T) {
	c := pghatest.Start(t, pghatest.Options{Nodes: 2})
	killed := c.KillPrimary()
	pid := c.Instance(killed).PID()
	if pid != 0 {
		t.Fatalf("postmaster of %s still running (pid %d) after KillPrimary", killed, pid)
	}
	if p := c.WaitHealthy(time.Minute); p != killed {
		t.Fatalf("primary after the kill in asynchronous mode: %s; want %s restarted in place", p, killed)
	}
	write(t, c.NodeDSN(killed), 1)
}

// TestStopManagerAndRestartNode: a stopped standby manager leaves its
// server running and the cluster healthy; a stopped primary manager stops
// its server and a standby takes over; RestartNode brings both back as
// streaming standbys.
func TestStopManagerAndRestartNode(t *testing.T) {
	c := pghatest.Start(t, pghatest.Options{Nodes: 3})
	primary := c.Primary()
	var standby string
	for _, n := range c.Nodes() {
		if n != primary {
			standby = n
			break
		}
	}
	c.StopManager(standby)
	if c.Instance(standby).PID() == 0 {
		t.Fatalf("StopManager(%s) stopped the standby's PostgreSQL", standby)
	}
	if p := c.WaitHealthy(time.Minute); p != primary {
		t.Fatalf("primary after stopping standby %s's manager: %s; want %s", standby, p, primary)
	}

	c.StopManager(primary)
	if pid := c.Instance(primary).PID(); pid != 0 {
		t.Fatalf("StopManager(%s) left the primary's PostgreSQL running (pid %d)", primary, pid)
	}
	next := c.WaitHealthy(time.Minute)
	if next == primary || next == standby {
		t.Fatalf("primary after stopping %s's manager: %s; want the one standby still managed", primary, next)
	}

	c.RestartNode(primary)
	c.RestartNode(standby)
	if p := c.WaitHealthy(2 * time.Minute); p != next {
		t.Fatalf("primary after RestartNode: %s; want %s", p, next)
	}
	st := c.Status()
	if len(st.Members) != 3 {
		t.Fatalf("members after RestartNode: %+v", st.Members)
	}
	for _, m := range st.Members {
		if m.Node != next && (m.Role != ha.RoleReplica || !m.Streaming) {
			t.Fatalf("%s after RestartNode: role %s streaming %v", m.Node, m.Role, m.Streaming)
		}
	}
}

// TestCleanup: when the test that started a cluster ends, no postgres
// process, etcd port or directory of it is left.
func TestCleanup(t *testing.T) {
	var pids []int
	var dirs []string
	var etcdAddr string
	t.Run("cluster", func(t *testing.T) {
		c := pghatest.Start(t, pghatest.Options{Nodes: 2})
		for _, n := range c.Nodes() {
			pids = append(pids, c.Instance(n).PID())
			dirs = append(dirs, c.Instance(n).Config().DataDir)
		}
		etcdAddr = strings.TrimPrefix(c.EtcdEndpoints()[0], "http://")
	})
	if len(pids) != 2 {
		t.Fatalf("the cluster subtest did not run: %v", pids)
	}
	for i, pid := range pids {
		if pid == 0 {
			t.Errorf("node %d had no postmaster while the cluster ran", i+1)
		} else if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			t.Errorf("postmaster %d (%s) still exists after the test", pid, strings.ReplaceAll(string(b), "\x00", " "))
		}
		if _, err := os.Stat(dirs[i]); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("data directory %s still there after the test (stat: %v)", dirs[i], err)
		}
	}
	if conn, err := net.DialTimeout("tcp", etcdAddr, time.Second); err == nil {
		conn.Close()
		t.Errorf("etcd still listening on %s after the test", etcdAddr)
	}
}
