package replicate_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgha/pgha/internal/testutil"
	"github.com/pgha/pgha/replicate"
)

// TestInterruptedRewind: a rewind cut short (here its context, as a
// source dying mid-copy would) leaves a marker; Start refuses the data
// directory, Status reports it, and only a Clone (ReplaceDataDir: the old
// directory moved aside with its marker) makes the node usable again.
// Found by the chaos harness: a standby whose rewind source was fenced
// mid-rewind was then restarted on a half-rewound directory.
func TestInterruptedRewind(t *testing.T) {
	t.Parallel()
	ctx := testutil.Ctx(t, 3*time.Minute)
	a := testutil.StartPostgres(t, testutil.PostgresOptions{Name: "ra"})
	b := testutil.StartPostgres(t, testutil.PostgresOptions{Name: "rb", CloneFrom: a})
	mustExec(t, ctx, a, "CREATE TABLE t (v text PRIMARY KEY); INSERT INTO t VALUES ('1')")
	waitRows(t, ctx, b, "t", "1")
	if _, err := b.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	mustExec(t, ctx, b, "INSERT INTO t VALUES ('2-new')")
	// a diverges; the new primary gets enough new data that pg_rewind has
	// a lot to copy, so that it can be interrupted while it copies.
	mustExec(t, ctx, a, "INSERT INTO t VALUES ('3-stray')")
	mustExec(t, ctx, b, "CREATE TABLE big AS SELECT g, repeat('x', 200) AS pad FROM generate_series(1, 400000) g")
	if err := a.Stop(ctx, replicate.Fast); err != nil {
		t.Fatal(err)
	}
	marker := a.Config().DataDir + ".rewind-incomplete"

	// Cancel the rewind once pg_rewind has written a megabyte into the
	// target: it is past its point of no return, copying.
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- a.Rewind(rctx, testutil.SourceOf(b, "ra")) }()
	err := testutil.Poll(60*time.Second, func() error {
		select {
		case err := <-done:
			t.Fatalf("Rewind returned before the cancel: %v", err)
		default:
		}
		if _, err := os.Stat(marker); err != nil {
			return err
		}
		if w := rewindWrites(a.Config().DataDir); w < 1<<20 {
			return fmt.Errorf("pg_rewind wrote %d bytes", w)
		}
		return nil
	})
	cancel()
	if err != nil {
		t.Fatalf("pg_rewind did not start copying: %v", err)
	}
	rerr := <-done
	if rerr == nil {
		t.Fatal("the cancelled Rewind succeeded")
	}
	t.Logf("cancelled Rewind: %v", rerr)
	if _, err := os.Stat(marker); err != nil {
		t.Fatalf("marker after an interrupted rewind: %v", err)
	}
	if st := mustStatus(t, ctx, a); !st.RewindIncomplete || st.Running {
		t.Fatalf("Status after an interrupted rewind: RewindIncomplete %v, running %v", st.RewindIncomplete, st.Running)
	}
	if err := a.Start(ctx); !errors.Is(err, replicate.ErrRewindIncomplete) {
		t.Fatalf("Start of a half-rewound directory = %v, want ErrRewindIncomplete", err)
	}
	if procs, _ := testutil.PostgresProcesses(a.Config().DataDir); len(procs) > 0 {
		t.Fatalf("a postmaster runs on the half-rewound directory: %v", procs)
	}

	// Clone with ReplaceDataDir moves the directory aside with its marker.
	cfg := a.Config()
	cfg.ReplaceDataDir = true
	a2, err := replicate.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	testutil.StopPostgresAtCleanup(t, a2)
	if err := a2.Clone(ctx, testutil.SourceOf(b, "ra")); err != nil {
		t.Fatalf("Clone over the half-rewound directory: %v", err)
	}
	if _, err := os.Stat(marker); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("marker after Clone: %v, want gone", err)
	}
	aside, _ := filepath.Glob(cfg.DataDir + ".replaced-*.rewind-incomplete")
	if len(aside) != 1 {
		t.Fatalf("marker moved aside: %v, want one", aside)
	}
	if err := a2.Start(ctx); err != nil && !errors.Is(err, replicate.ErrRunning) {
		t.Fatal(err)
	}
	waitRows(t, ctx, a2, "t", "1", "2-new")
}

// rewindWrites returns the bytes written so far by a pg_rewind process
// whose target is dataDir (wchar in /proc/<pid>/io), 0 if none runs.
func rewindWrites(dataDir string) int64 {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !strings.Contains(string(cmdline), "pg_rewind") || !strings.Contains(string(cmdline), "--target-pgdata="+dataDir) {
			continue
		}
		io, err := os.ReadFile(filepath.Join("/proc", e.Name(), "io"))
		if err != nil {
			return 0
		}
		for _, line := range strings.Split(string(io), "\n") {
			if v, ok := strings.CutPrefix(line, "wchar: "); ok {
				n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
				return n
			}
		}
	}
	return 0
}

// TestRewindStartedModifying: a pg_rewind that fails before its point
// of no return leaves no marker (the directory is unchanged and a retry
// may run), and one that fails after it does. The outputs are pg_rewind's
// own (PostgreSQL 15, --progress).
func TestRewindStartedModifying(t *testing.T) {
	for _, tc := range []struct {
		out  string
		want bool
	}{
		{"pg_rewind: servers diverged at WAL location 0/3000100 on timeline 1\npg_rewind: rewinding from last common checkpoint at 0/2000060 on timeline 1\npg_rewind: reading source file list\npg_rewind: error: could not fetch file list: server closed the connection unexpectedly", false},
		{"pg_rewind: executing \"/usr/lib/postgresql/15/bin/postgres\" for target server to complete crash recovery\nFATAL:  standby mode is not supported by single-user servers", false},
		{"pg_rewind: error: could not connect to server: connection refused", false},
		{"pg_rewind: reading WAL in target\npg_rewind: need to copy 98 MB (total source directory size is 120 MB)\n12034/100352 kB (11%) copied", true},
		{"pg_rewind: need to copy 0 MB (total source directory size is 22 MB)\npg_rewind: error: could not fetch remote file \"global/pg_control\"", true},
		{"pg_rewind: creating backup label and updating control file\npg_rewind: syncing target data directory", true},
	} {
		if got := replicate.RewindStartedModifying(tc.out); got != tc.want {
			t.Errorf("rewindStartedModifying(%q) = %v, want %v", tc.out, got, tc.want)
		}
	}
}

// TestRewindAfterCrashAsStandby: a former primary killed with kill -9 (not
// shut down cleanly) whose directory already holds standby.signal (a
// follow that had begun) is rewound all the same: pg_rewind's single-user
// crash recovery refuses standby.signal, so Rewind moves it out of the way
// first. Before, every pg_rewind of such a directory failed with
// "standby mode is not supported by single-user servers".
func TestRewindAfterCrashAsStandby(t *testing.T) {
	t.Parallel()
	ctx := testutil.Ctx(t, 3*time.Minute)
	a := testutil.StartPostgres(t, testutil.PostgresOptions{Name: "ca"})
	b := testutil.StartPostgres(t, testutil.PostgresOptions{Name: "cb", CloneFrom: a})
	mustExec(t, ctx, a, "CREATE TABLE t (v text PRIMARY KEY); INSERT INTO t VALUES ('1')")
	waitRows(t, ctx, b, "t", "1")
	if _, err := b.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	mustExec(t, ctx, b, "INSERT INTO t VALUES ('2-new')")
	mustExec(t, ctx, a, "INSERT INTO t VALUES ('3-stray')")
	exited := a.Exited()
	if err := killPID(a.PID()); err != nil {
		t.Fatal(err)
	}
	<-exited
	signal := filepath.Join(a.Config().DataDir, "standby.signal")
	if err := os.WriteFile(signal, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	// The killed postmaster's backends may hold its shared memory for a
	// moment: a rewind that fails on that changed nothing, so retry.
	var last error
	testutil.Eventually(t, 60*time.Second, "a rewind of the crashed former primary", func() error {
		last = a.Rewind(ctx, testutil.SourceOf(b, "ca"))
		if last != nil && strings.Contains(last.Error(), "single-user") {
			t.Fatalf("Rewind: %v", last)
		}
		return last
	})
	waitRows(t, ctx, a, "t", "1", "2-new")
	if st := mustStatus(t, ctx, a); !st.InRecovery || st.RewindIncomplete {
		t.Fatalf("a after the rewind: in recovery %v, rewind incomplete %v", st.InRecovery, st.RewindIncomplete)
	}
}

// TestStartKillsOrphanBackends: after the postmaster is killed (kill -9)
// a backend busy in a long query keeps running and holds the dead
// server's shared memory; PostgreSQL then refuses to start ("pre-existing
// shared memory block is still in use") until the query ends. Start kills
// such leftovers of a dead postmaster first, so one Start succeeds at once.
func TestStartKillsOrphanBackends(t *testing.T) {
	t.Parallel()
	ctx := testutil.Ctx(t, 2*time.Minute)
	p := testutil.StartPostgres(t, testutil.PostgresOptions{Name: "orph"})
	busy, err := p.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var pid int
	if err := busy.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL); busy.Close(context.Background()) })
	qctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go busy.Exec(qctx, "SELECT count(*) FROM generate_series(1, 50000000000)") // minutes of CPU, no wait point
	testutil.Eventually(t, 10*time.Second, "the busy query to run", func() error {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil || !strings.Contains(string(b), ") R ") {
			return fmt.Errorf("backend %d not running yet", pid)
		}
		return nil
	})
	exited := p.Exited()
	if err := killPID(p.PID()); err != nil {
		t.Fatal(err)
	}
	<-exited
	if err := syscall.Kill(pid, 0); err != nil {
		t.Fatalf("the busy backend died with its postmaster (%v): nothing to test", err)
	}
	sctx, scancel := context.WithTimeout(ctx, 20*time.Second)
	defer scancel()
	if err := p.Start(sctx); err != nil {
		t.Fatalf("Start after kill -9 with a busy backend left: %v", err)
	}
	if err := syscall.Kill(pid, 0); err == nil {
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil && !strings.Contains(string(b), ") Z ") {
			t.Fatalf("the dead postmaster's backend %d still runs after Start", pid)
		}
	}
}

// TestFenceBeforeDeadline: a fast shutdown that cannot finish (here a
// frozen checkpointer; in production a partitioned primary whose WAL
// senders wait for unreachable standbys) must not make a fence outlive its
// context's deadline (a lease-loss fence's deadline is the lease's): the
// waits shrink to fit, and the postmaster is gone when Fence returns nil,
// before the deadline, even with FenceTimeout longer than the budget.
func TestFenceBeforeDeadline(t *testing.T) {
	t.Parallel()
	ctx := testutil.Ctx(t, 2*time.Minute)
	p := testutil.StartPostgres(t, testutil.PostgresOptions{Name: "fdl", Configure: func(c *replicate.Config) { c.FenceTimeout = 5 * time.Second }})
	ckpt, err := testutil.PostgresQueryInt(ctx, p, "SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'")
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(int(ckpt), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(int(ckpt), syscall.SIGKILL) })
	exited := p.Exited()
	fctx, cancel := context.WithTimeout(ctx, 600*time.Millisecond)
	defer cancel()
	if err := p.Fence(fctx); err != nil {
		t.Fatalf("Fence with a 600 ms budget and a 5 s FenceTimeout: %v (it must finish before its deadline)", err)
	}
	select {
	case <-exited:
	default:
		t.Fatal("Fence returned nil but the postmaster has not exited")
	}
}
