package replicate_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgha/pgha/internal/testutil"
	"github.com/pgha/pgha/replicate"
)

// rows returns the values of table t on inst, ordered.
func rows(ctx context.Context, inst *replicate.Instance, table string) ([]string, error) {
	conn, err := inst.Connect(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	r, err := conn.Query(ctx, "SELECT v FROM "+table+" ORDER BY v")
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(r, pgx.RowTo[string])
}

// waitRows waits until table on inst holds exactly want.
func waitRows(t *testing.T, ctx context.Context, inst *replicate.Instance, table string, want ...string) {
	t.Helper()
	testutil.Eventually(t, 30*time.Second, fmt.Sprintf("%s.%s holds %v", inst.Config().Name, table, want), func() error {
		got, err := rows(ctx, inst, table)
		if err != nil {
			return err
		}
		if !slices.Equal(got, want) {
			return fmt.Errorf("rows are %v", got)
		}
		return nil
	})
}

func mustExec(t *testing.T, ctx context.Context, inst *replicate.Instance, sql string) {
	t.Helper()
	if err := testutil.PostgresExec(ctx, inst, sql); err != nil {
		t.Fatalf("%s: %s: %v", inst.Config().Name, sql, err)
	}
}

func mustStatus(t *testing.T, ctx context.Context, inst *replicate.Instance) replicate.Status {
	t.Helper()
	st, err := inst.Status(ctx)
	if err != nil {
		t.Fatalf("%s: Status: %v", inst.Config().Name, err)
	}
	return st
}

// TestCloneReplicatePromoteRewind walks a pair of servers through a whole
// failover: clone, replicate, promote the standby, let the old primary
// diverge, rewind it, and check it follows the new primary with the new
// primary's rows and without its own stray ones. Status is checked at
// every step.
func TestCloneReplicatePromoteRewind(t *testing.T) {
	t.Parallel()
	ctx := testutil.Ctx(t, 3*time.Minute)
	a := testutil.StartPostgres(t, testutil.PostgresOptions{Name: "a"})
	b := testutil.StartPostgres(t, testutil.PostgresOptions{Name: "b", CloneFrom: a})

	mustExec(t, ctx, a, "CREATE TABLE t (v text PRIMARY KEY); INSERT INTO t VALUES ('1-before')")
	waitRows(t, ctx, b, "t", "1-before")

	// Status before the failover.
	sa, sb := mustStatus(t, ctx, a), mustStatus(t, ctx, b)
	if sa.InRecovery || !sb.InRecovery || !sb.StandbyConfigured || sa.StandbyConfigured {
		t.Fatalf("roles: a in recovery %v (standby.signal %v), b in recovery %v (standby.signal %v); want a primary, b standby",
			sa.InRecovery, sa.StandbyConfigured, sb.InRecovery, sb.StandbyConfigured)
	}
	if sa.SystemID == 0 || sa.SystemID != sb.SystemID {
		t.Fatalf("system ids: a %d, b %d; want equal and not zero", sa.SystemID, sb.SystemID)
	}
	if sa.Timeline != 1 || sb.Timeline != 1 {
		t.Fatalf("timelines: a %d, b %d; want 1 and 1", sa.Timeline, sb.Timeline)
	}
	if sa.WriteLSN == 0 || sa.FlushLSN < sb.ReplayLSN || sb.ReplayLSN == 0 || sb.ReceiveLSN < sb.ReplayLSN {
		t.Fatalf("LSNs: a write %v flush %v, b receive %v replay %v", sa.WriteLSN, sa.FlushLSN, sb.ReceiveLSN, sb.ReplayLSN)
	}
	if sb.ReplayLagBytes != uint64(sb.ReceiveLSN-sb.ReplayLSN) {
		t.Fatalf("b replay lag %d, want receive-replay = %d", sb.ReplayLagBytes, sb.ReceiveLSN-sb.ReplayLSN)
	}
	if len(sa.Replicas) != 1 || sa.Replicas[0].Name != "b" || sa.Replicas[0].State != "streaming" || sa.Replicas[0].SyncState != "async" {
		t.Fatalf("a's replicas = %+v, want b streaming async", sa.Replicas)
	}
	if w := sb.WALReceiver; w == nil || w.Status != "streaming" || w.SenderPort != a.Config().Port || w.SlotName != "b" || w.Timeline != 1 {
		t.Fatalf("b's WAL receiver = %+v, want streaming from port %d through slot b on timeline 1", w, a.Config().Port)
	}
	// LSNs advance with writes.
	mustExec(t, ctx, a, "INSERT INTO t VALUES ('2-before')")
	waitRows(t, ctx, b, "t", "1-before", "2-before")
	if sa2 := mustStatus(t, ctx, a); sa2.WriteLSN <= sa.WriteLSN {
		t.Fatalf("a's write LSN did not advance after an insert: %v then %v", sa.WriteLSN, sa2.WriteLSN)
	}

	// Promote b.
	tli, err := b.Promote(ctx)
	if err != nil {
		t.Fatalf("Promote b: %v", err)
	}
	if tli != 2 {
		t.Fatalf("Promote b: timeline %d, want 2", tli)
	}
	mustExec(t, ctx, b, "INSERT INTO t VALUES ('3-new-primary')")
	sb = mustStatus(t, ctx, b)
	if sb.InRecovery || sb.Timeline != 2 || sb.SystemID != sa.SystemID || sb.WriteLSN == 0 || sb.StandbyConfigured {
		t.Fatalf("b after promotion: in recovery %v, timeline %d, system id %d, write LSN %v, standby.signal %v; want primary on timeline 2 of system %d",
			sb.InRecovery, sb.Timeline, sb.SystemID, sb.WriteLSN, sb.StandbyConfigured, sa.SystemID)
	}
	// Promote is idempotent.
	if tli, err := b.Promote(ctx); err != nil || tli != 2 {
		t.Fatalf("second Promote b = %d, %v; want 2, nil", tli, err)
	}

	// a, still a primary on timeline 1, writes a stray row: it diverges.
	mustExec(t, ctx, a, "INSERT INTO t VALUES ('4-stray')")
	if st := mustStatus(t, ctx, a); st.Timeline != 1 || st.InRecovery {
		t.Fatalf("a before rewind: timeline %d, in recovery %v; want a primary on 1", st.Timeline, st.InRecovery)
	}

	// Rewind needs a stopped server.
	if err := a.Rewind(ctx, testutil.SourceOf(b, "a")); !errors.Is(err, replicate.ErrRunning) {
		t.Fatalf("Rewind of a running a = %v, want ErrRunning", err)
	}
	// Following without a rewind is refused on a running primary.
	if err := a.Follow(ctx, testutil.SourceOf(b, "")); !errors.Is(err, replicate.ErrNotStandby) {
		t.Fatalf("Follow on the running primary a = %v, want ErrNotStandby", err)
	}
	if err := a.Fence(ctx); err != nil {
		t.Fatalf("Fence a: %v", err)
	}
	if st := mustStatus(t, ctx, a); st.Running || st.Timeline != 1 || st.SystemID != sa.SystemID || st.ClusterState == "" {
		t.Fatalf("a stopped: %+v; want not running, timeline 1, system id %d, a cluster state", st, sa.SystemID)
	}
	if err := a.Rewind(ctx, testutil.SourceOf(b, "a")); err != nil {
		t.Fatalf("Rewind a from b: %v", err)
	}
	if err := a.WaitStreaming(ctx); err != nil {
		t.Fatalf("a streaming from b after rewind: %v", err)
	}
	mustExec(t, ctx, b, "INSERT INTO t VALUES ('5-after')")
	waitRows(t, ctx, a, "t", "1-before", "2-before", "3-new-primary", "5-after")

	sa = mustStatus(t, ctx, a)
	if !sa.InRecovery || sa.Timeline != 2 || sa.WALReceiver == nil || sa.WALReceiver.SlotName != "a" {
		t.Fatalf("a after rewind: in recovery %v, timeline %d, receiver %+v; want a standby on timeline 2 streaming through slot a", sa.InRecovery, sa.Timeline, sa.WALReceiver)
	}
	sb = mustStatus(t, ctx, b)
	if len(sb.Replicas) != 1 || sb.Replicas[0].Name != "a" {
		t.Fatalf("b's replicas = %+v, want a", sb.Replicas)
	}
	slots, err := b.Slots(ctx)
	if err != nil || !slices.ContainsFunc(slots, func(s replicate.Slot) bool { return s.Name == "a" && s.Active }) {
		t.Fatalf("b's slots = %+v, %v; want an active slot a", slots, err)
	}
	// A slot in use cannot be dropped.
	err = b.DropSlot(ctx, "a")
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "55006" {
		t.Fatalf("DropSlot of the active slot a = %v, want SQLSTATE 55006 (object in use)", err)
	}

	// No password in any server log or configuration file.
	for _, inst := range []*replicate.Instance{a, b} {
		files := map[string]string{"server log": inst.LogTail(1 << 24)}
		for _, f := range []string{"postgresql.auto.conf", "postgresql.conf", "pgha.conf", "pg_hba.conf"} {
			b, err := os.ReadFile(filepath.Join(inst.Config().DataDir, f))
			if err != nil {
				t.Fatal(err)
			}
			files[f] = string(b)
		}
		for name, content := range files {
			for _, pw := range []string{testutil.PostgresSuperuserPassword, testutil.PostgresReplicationPassword} {
				if strings.Contains(content, pw) {
					t.Errorf("%s of %s contains a password", name, inst.Config().Name)
				}
			}
		}
	}

	// A rewind when nothing diverged is a no-op plus restart: a can always
	// rejoin through Rewind.
	if err := a.Stop(ctx, replicate.Fast); err != nil {
		t.Fatal(err)
	}
	if err := a.Rewind(ctx, testutil.SourceOf(b, "a")); err != nil {
		t.Fatalf("second Rewind a (nothing diverged): %v", err)
	}
	mustExec(t, ctx, b, "INSERT INTO t VALUES ('6-last')")
	waitRows(t, ctx, a, "t", "1-before", "2-before", "3-new-primary", "5-after", "6-last")
}

// TestSynchronousStandbyWaits checks that a commit waits while the only
// synchronous standby is down and completes when it returns.
func TestSynchronousStandbyWaits(t *testing.T) {
	t.Parallel()
	ctx := testutil.Ctx(t, 2*time.Minute)
	p := testutil.StartPostgres(t, testutil.PostgresOptions{Name: "p"})
	s := testutil.StartPostgres(t, testutil.PostgresOptions{Name: "s1", CloneFrom: p})
	mustExec(t, ctx, p, "CREATE TABLE t (v text)")

	got, err := p.SetSynchronousStandbys(ctx, replicate.SyncSpec{Method: replicate.SyncAny, Num: 1, Names: []string{"s1", "absent"}})
	if err != nil {
		t.Fatalf("SetSynchronousStandbys: %v", err)
	}
	if want := `ANY 1 ("s1", "absent")`; got != want {
		t.Fatalf("SetSynchronousStandbys = %q, want %q", got, want)
	}
	testutil.Eventually(t, 30*time.Second, "s1 is a quorum standby of p", func() error {
		st, err := p.Status(ctx)
		if err != nil {
			return err
		}
		if st.SynchronousStandbyNames != got {
			return fmt.Errorf("synchronous_standby_names = %q", st.SynchronousStandbyNames)
		}
		if len(st.Replicas) != 1 || st.Replicas[0].SyncState != "quorum" {
			return fmt.Errorf("replicas %+v", st.Replicas)
		}
		return nil
	})
	mustExec(t, ctx, p, "INSERT INTO t VALUES ('sync-up')")

	if err := s.Stop(ctx, replicate.Fast); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- testutil.PostgresExec(ctx, p, "INSERT INTO t VALUES ('waited')") }()
	// The commit is waiting for the standby: its backend waits on SyncRep.
	testutil.Eventually(t, 30*time.Second, "the insert waits for synchronous replication", func() error {
		n, err := testutil.PostgresQueryInt(ctx, p, "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep' AND query LIKE 'INSERT%'")
		if err != nil {
			return err
		}
		if n != 1 {
			return fmt.Errorf("%d backends wait on SyncRep", n)
		}
		return nil
	})
	select {
	case err := <-done:
		t.Fatalf("the insert completed while the synchronous standby was down: %v", err)
	default:
	}
	if err := s.Start(ctx); err != nil {
		t.Fatalf("restart s1: %v", err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("the waiting insert failed after s1 came back: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("the waiting insert did not complete after s1 came back")
	}
	waitRows(t, ctx, s, "t", "sync-up", "waited")

	got, err = p.SetSynchronousStandbys(ctx, replicate.SyncSpec{Method: replicate.SyncFirst, Num: 1, Names: []string{"s1"}})
	if err != nil || got != `FIRST 1 ("s1")` {
		t.Fatalf("SetSynchronousStandbys(FIRST) = %q, %v", got, err)
	}
	if got, err := p.SetSynchronousStandbys(ctx, replicate.SyncSpec{}); err != nil || got != "" {
		t.Fatalf("SetSynchronousStandbys(async) = %q, %v; want \"\"", got, err)
	}
	if err := s.Stop(ctx, replicate.Fast); err != nil {
		t.Fatal(err)
	}
	mustExec(t, ctx, p, "INSERT INTO t VALUES ('async')") // does not wait
}

func TestSyncSpec(t *testing.T) {
	t.Parallel()
	tests := []struct {
		spec    replicate.SyncSpec
		want    string
		wantErr string
	}{
		{replicate.SyncSpec{}, "", ""},
		{replicate.SyncSpec{Method: replicate.SyncAny, Num: 2, Names: []string{"a", "b", "c"}}, `ANY 2 ("a", "b", "c")`, ""},
		{replicate.SyncSpec{Method: replicate.SyncFirst, Num: 1, Names: []string{`we"ird`}}, `FIRST 1 ("we""ird")`, ""},
		{replicate.SyncSpec{Num: 0, Names: []string{"a"}}, "", "SyncSpec.Num 0 out of range 1..1"},
		{replicate.SyncSpec{Num: 3, Names: []string{"a", "b"}}, "", "SyncSpec.Num 3 out of range 1..2"},
		{replicate.SyncSpec{Num: 1, Names: []string{"a", "a"}}, "", "listed twice"},
		{replicate.SyncSpec{Num: 1, Names: []string{""}}, "", "SyncSpec.Names"},
	}
	for _, tt := range tests {
		err := tt.spec.Validate()
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%+v.Validate() = %v, want an error containing %q", tt.spec, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%+v.Validate() = %v", tt.spec, err)
		}
		if got := tt.spec.String(); got != tt.want {
			t.Errorf("%+v.String() = %q, want %q", tt.spec, got, tt.want)
		}
	}
}

// TestFenceStopsOpenTransaction checks that a transaction open when its
// primary is fenced can never commit.
func TestFenceStopsOpenTransaction(t *testing.T) {
	t.Parallel()
	ctx := testutil.Ctx(t, 2*time.Minute)
	p := testutil.StartPostgres(t, testutil.PostgresOptions{Name: "fenced"})
	mustExec(t, ctx, p, "CREATE TABLE t (v text)")

	conn, err := p.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "INSERT INTO t VALUES ('uncommitted')"); err != nil {
		t.Fatal(err)
	}
	exited := p.Exited()
	if err := p.Fence(ctx); err != nil {
		t.Fatalf("Fence: %v", err)
	}
	select {
	case <-exited:
	default:
		t.Fatal("Fence returned before the postmaster exited")
	}
	if err := p.ExitErr(); err != nil {
		t.Fatalf("ExitErr after Fence = %v, want nil (stopped on purpose)", err)
	}
	if c := p.Exited(); c != nil {
		t.Fatal("Exited() of a stopped server is not nil")
	}
	if err := tx.Commit(ctx); err == nil {
		t.Fatal("the open transaction committed after Fence")
	}
	if err := p.Fence(ctx); err != nil {
		t.Fatalf("Fence of a stopped server = %v, want nil", err)
	}
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if got, err := rows(ctx, p, "t"); err != nil || len(got) != 0 {
		t.Fatalf("rows after fence and restart = %v, %v; want none", got, err)
	}
	pid := p.PID()
	if err := p.Restart(ctx, replicate.Fast); err != nil {
		t.Fatalf("Restart: %v", err)
	}
	if p.PID() == pid || p.PID() == 0 {
		t.Fatalf("Restart kept pid %d (now %d)", pid, p.PID())
	}
}

// TestCrashIsSeenAndReaped kills the postmaster with SIGKILL: Exited fires,
// ExitErr says killed, and Start recovers in place.
func TestCrashIsSeenAndReaped(t *testing.T) {
	t.Parallel()
	ctx := testutil.Ctx(t, 2*time.Minute)
	p := testutil.StartPostgres(t, testutil.PostgresOptions{Name: "crash"})
	mustExec(t, ctx, p, "CREATE TABLE t (v text); INSERT INTO t VALUES ('kept')")
	pid := p.PID()
	exited := p.Exited()
	if err := killPID(pid); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	case <-ctx.Done():
		t.Fatal("Exited did not fire after kill -9 of the postmaster")
	}
	var ee *replicate.ExitError
	if err := p.ExitErr(); !errors.As(err, &ee) || ee.Signal != "killed" || ee.PID != pid {
		t.Fatalf("ExitErr after kill -9 = %#v, want *ExitError with signal killed, pid %d", err, pid)
	}
	// The killed postmaster's backends may linger briefly; Start waits for
	// none of them but postgres refuses while they hold shared memory, so
	// poll.
	testutil.Eventually(t, 30*time.Second, "restart after crash", func() error { return p.Start(ctx) })
	waitRows(t, ctx, p, "t", "kept")
	if p.PID() == pid {
		t.Fatal("the same pid after restart")
	}
}

// TestAdoptRunningPostmaster checks that a new Instance for a data
// directory whose postmaster still runs adopts it instead of starting a
// second one, and that stale postmaster.pid files do not block Start.
func TestAdoptRunningPostmaster(t *testing.T) {
	t.Parallel()
	ctx := testutil.Ctx(t, 2*time.Minute)
	p := testutil.StartPostgres(t, testutil.PostgresOptions{Name: "adopt"})
	q, err := replicate.New(p.Config())
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Start(ctx); err != nil {
		t.Fatalf("Start of a second Instance: %v", err)
	}
	if q.PID() != p.PID() || q.PID() == 0 {
		t.Fatalf("second Instance's PID %d, first's %d: want the same postmaster", q.PID(), p.PID())
	}
	procs, err := testutil.PostgresProcesses(p.Config().DataDir)
	if err != nil || len(procs) != 1 {
		t.Fatalf("postmasters for the data dir: %v, %v; want exactly one", procs, err)
	}
	// It is this process's child (TestMain's leak check relies on that).
	children, err := testutil.ChildPostgresProcesses()
	if err != nil || !slices.ContainsFunc(children, func(s string) bool { return strings.HasPrefix(s, fmt.Sprint(p.PID())+" ") }) {
		t.Fatalf("child postmasters %v, %v; want one with pid %d", children, err, p.PID())
	}
	if st := mustStatus(t, ctx, q); !st.Running || st.PID != p.PID() {
		t.Fatalf("adopted Status: %+v", st)
	}
	pExited := p.Exited()
	if err := q.Stop(ctx, replicate.Fast); err != nil {
		t.Fatalf("Stop through the adopting Instance: %v", err)
	}
	select {
	case <-pExited:
	case <-ctx.Done():
		t.Fatal("the first Instance did not see its postmaster exit")
	}
	if err := q.ExitErr(); err != nil {
		t.Fatalf("adopting Instance's ExitErr = %v, want nil (stopped on purpose)", err)
	}
	// The first Instance did not stop it: to it, the exit was unexpected.
	var ee *replicate.ExitError
	if err := p.ExitErr(); !errors.As(err, &ee) {
		t.Fatalf("first Instance's ExitErr = %v, want *ExitError", err)
	}

	// Stale postmaster.pid: a dead PID, a zombie, a live unrelated process.
	for _, kind := range []string{"dead", "zombie", "other"} {
		t.Run("stale-"+kind, func(t *testing.T) {
			pid, cleanup := stalePID(t, kind)
			defer cleanup()
			writePIDFile(t, p.Config().DataDir, pid)
			if err := p.Start(ctx); err != nil {
				t.Fatalf("Start with a postmaster.pid naming a %s process %d: %v", kind, pid, err)
			}
			if p.PID() == pid {
				t.Fatalf("adopted the %s process %d", kind, pid)
			}
			if err := p.Stop(ctx, replicate.Fast); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestStatusStopped reads Status from pg_controldata.
func TestStatusStopped(t *testing.T) {
	t.Parallel()
	ctx := testutil.Ctx(t, time.Minute)
	p := testutil.StartPostgres(t, testutil.PostgresOptions{Name: "stopped", NoStart: true})
	st := mustStatus(t, ctx, p)
	if !st.Initialized || st.Running || st.SystemID == 0 || st.Timeline != 1 || st.ClusterState != "shut down" || st.CheckpointLSN == 0 {
		t.Fatalf("Status of a stopped fresh cluster = %+v", st)
	}
	if !p.Initialized() {
		t.Fatal("Initialized() = false after Init")
	}
	empty, err := replicate.New(testutil.PostgresConfig(t, "empty"))
	if err != nil {
		t.Fatal(err)
	}
	if st, err := empty.Status(ctx); err != nil || st.Initialized {
		t.Fatalf("Status of an empty data dir = %+v, %v; want not initialized, no error", st, err)
	}
	if err := empty.Start(ctx); !errors.Is(err, replicate.ErrNotInitialized) {
		t.Fatalf("Start of an empty data dir = %v, want ErrNotInitialized", err)
	}
}

// TestSlots checks EnsureSlot and DropSlot are idempotent.
func TestSlots(t *testing.T) {
	t.Parallel()
	ctx := testutil.Ctx(t, time.Minute)
	p := testutil.StartPostgres(t, testutil.PostgresOptions{Name: "slots"})
	for range 2 {
		if err := p.EnsureSlot(ctx, "node_2"); err != nil {
			t.Fatalf("EnsureSlot: %v", err)
		}
	}
	slots, err := p.Slots(ctx)
	if err != nil || len(slots) != 1 || slots[0].Name != "node_2" || slots[0].Active || slots[0].RestartLSN == 0 {
		t.Fatalf("Slots = %+v, %v; want one inactive slot node_2 with WAL reserved", slots, err)
	}
	for range 2 {
		if err := p.DropSlot(ctx, "node_2"); err != nil {
			t.Fatalf("DropSlot: %v", err)
		}
	}
	if slots, err := p.Slots(ctx); err != nil || len(slots) != 0 {
		t.Fatalf("Slots after drop = %+v, %v", slots, err)
	}
	var ce *replicate.ConfigError
	if err := p.EnsureSlot(ctx, "Bad-Name"); !errors.As(err, &ce) {
		t.Fatalf("EnsureSlot(Bad-Name) = %v, want *ConfigError", err)
	}
	if got := replicate.SlotName("Node-2.dc1"); got != "node_2_dc1" {
		t.Fatalf("SlotName(Node-2.dc1) = %q, want node_2_dc1", got)
	}
}

// TestFollowRepoint repoints a running standby between sources by reload,
// and makes a stopped standby follow.
func TestFollowRepoint(t *testing.T) {
	t.Parallel()
	ctx := testutil.Ctx(t, 2*time.Minute)
	p := testutil.StartPostgres(t, testutil.PostgresOptions{Name: "fp"})
	s1 := testutil.StartPostgres(t, testutil.PostgresOptions{Name: "fs1", CloneFrom: p})
	s2 := testutil.StartPostgres(t, testutil.PostgresOptions{Name: "fs2", CloneFrom: p})
	mustExec(t, ctx, p, "CREATE TABLE t (v text); INSERT INTO t VALUES ('1')")
	pid := s2.PID()

	// Cascade: s2 streams from s1, without a restart.
	if err := s2.Follow(ctx, testutil.SourceOf(s1, "")); err != nil {
		t.Fatalf("Follow s1: %v", err)
	}
	if err := s2.WaitStreaming(ctx); err != nil {
		t.Fatalf("s2 streaming from s1: %v", err)
	}
	if s2.PID() != pid {
		t.Fatal("Follow restarted the running standby")
	}
	st := mustStatus(t, ctx, s1)
	if len(st.Replicas) != 1 || st.Replicas[0].Name != "fs2" {
		t.Fatalf("s1's replicas = %+v, want fs2", st.Replicas)
	}
	mustExec(t, ctx, p, "INSERT INTO t VALUES ('2')")
	waitRows(t, ctx, s2, "t", "1", "2")

	// Back to p through its slot.
	if err := s2.Follow(ctx, testutil.SourceOf(p, "fs2")); err != nil {
		t.Fatalf("Follow p: %v", err)
	}
	if err := s2.WaitStreaming(ctx); err != nil {
		t.Fatalf("s2 streaming from p: %v", err)
	}
	// A stopped standby is configured and started.
	if err := s2.Stop(ctx, replicate.Fast); err != nil {
		t.Fatal(err)
	}
	if err := s2.Follow(ctx, testutil.SourceOf(s1, "")); err != nil {
		t.Fatalf("Follow s1 while stopped: %v", err)
	}
	if err := s2.WaitStreaming(ctx); err != nil {
		t.Fatalf("s2 streaming from s1 after start: %v", err)
	}
	mustExec(t, ctx, p, "INSERT INTO t VALUES ('3')")
	waitRows(t, ctx, s2, "t", "1", "2", "3")
}

// TestFenceEscalates: when a fast shutdown cannot finish (the checkpointer
// is frozen with SIGSTOP, so no shutdown checkpoint is written), Fence
// escalates to an immediate shutdown and then SIGKILL of the whole process
// group, within its bound, and leaves no process behind.
func TestFenceEscalates(t *testing.T) {
	t.Parallel()
	ctx := testutil.Ctx(t, 2*time.Minute)
	const bound = 200 * time.Millisecond
	p := testutil.StartPostgres(t, testutil.PostgresOptions{Name: "frozen", Configure: func(c *replicate.Config) { c.FenceTimeout = bound }})
	mustExec(t, ctx, p, "CREATE TABLE t (v text)")
	ckpt, err := testutil.PostgresQueryInt(ctx, p, "SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'")
	if err != nil {
		t.Fatal(err)
	}
	kids := testutil.PostgresChildren(p.PID())
	if len(kids) < 3 {
		t.Fatalf("postmaster %d has children %v, want at least 3", p.PID(), kids)
	}
	if err := syscall.Kill(int(ckpt), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := p.Fence(ctx); err != nil {
		t.Fatalf("Fence: %v", err)
	}
	took := time.Since(start)
	t.Logf("Fence with a frozen checkpointer took %v", took)
	if took < bound {
		t.Fatalf("Fence took %v: the fast shutdown cannot have finished with a frozen checkpointer", took)
	}
	// None of the server's processes survives.
	testutil.Eventually(t, 10*time.Second, "the server's processes are gone", func() error {
		for _, k := range kids {
			if testutil.ProcessAlive(k) {
				return fmt.Errorf("process %d (child of the postmaster) is alive", k)
			}
		}
		return nil
	})
	if err := p.Start(ctx); err != nil {
		t.Fatalf("Start after an escalated Fence: %v", err)
	}
	mustExec(t, ctx, p, "INSERT INTO t VALUES ('after')")
}

// TestPlannedSwitchover: the primary stops cleanly, the standby replays up
// to the primary's last record and is promoted, and the old primary
// follows it without a rewind. Nothing committed is lost.
func TestPlannedSwitchover(t *testing.T) {
	t.Parallel()
	ctx := testutil.Ctx(t, 2*time.Minute)
	a := testutil.StartPostgres(t, testutil.PostgresOptions{Name: "swa"})
	b := testutil.StartPostgres(t, testutil.PostgresOptions{Name: "swb", CloneFrom: a})
	mustExec(t, ctx, a, "CREATE TABLE t (v text); INSERT INTO t SELECT 'r' || g FROM generate_series(1, 500) g")
	if err := b.WaitStreaming(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.WaitReplayed(ctx, 1); !errors.Is(err, replicate.ErrNotStandby) {
		t.Fatalf("WaitReplayed on a primary = %v, want ErrNotStandby", err)
	}
	if err := a.Stop(ctx, replicate.Fast); err != nil {
		t.Fatal(err)
	}
	st := mustStatus(t, ctx, a)
	if st.ClusterState != "shut down" || st.CheckpointLSN == 0 {
		t.Fatalf("a after a fast stop: %+v", st)
	}
	if err := b.WaitReplayed(ctx, st.CheckpointLSN); err != nil {
		t.Fatalf("b replays a's last record %v: %v", st.CheckpointLSN, err)
	}
	if _, err := b.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.Follow(ctx, testutil.SourceOf(b, "swa")); err != nil {
		t.Fatalf("Follow of the cleanly stopped ex-primary: %v", err)
	}
	if err := a.WaitStreaming(ctx); err != nil {
		t.Fatalf("a streaming from b without a rewind: %v", err)
	}
	if n, err := testutil.PostgresQueryInt(ctx, b, "SELECT count(*) FROM t"); err != nil || n != 500 {
		t.Fatalf("b has %d rows (%v), want all 500", n, err)
	}
	mustExec(t, ctx, b, "INSERT INTO t VALUES ('on-b')")
	testutil.Eventually(t, 30*time.Second, "a receives b's writes", func() error {
		n, err := testutil.PostgresQueryInt(ctx, a, "SELECT count(*) FROM t")
		if err != nil || n != 501 {
			return fmt.Errorf("a has %d rows (%v)", n, err)
		}
		return nil
	})
}

// TestFenceDuringStart: a Fence while Start waits for the server makes
// Start fail with ErrFenced and leaves the server stopped.
func TestFenceDuringStart(t *testing.T) {
	t.Parallel()
	ctx := testutil.Ctx(t, 2*time.Minute)
	p := testutil.StartPostgres(t, testutil.PostgresOptions{Name: "fdp"})
	s := testutil.StartPostgres(t, testutil.PostgresOptions{Name: "fds", CloneFrom: p})
	if err := s.Stop(ctx, replicate.Fast); err != nil {
		t.Fatal(err)
	}
	// With hot_standby off the standby never accepts connections, so Start
	// keeps waiting until the Fence.
	cfg := s.Config()
	cfg.Parameters = map[string]string{"hot_standby": "off"}
	slow, err := replicate.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	testutil.StopPostgresAtCleanup(t, slow)
	done := make(chan error, 1)
	go func() { done <- slow.Start(ctx) }()
	testutil.Eventually(t, 30*time.Second, "the postmaster is running", func() error {
		if slow.PID() == 0 {
			return errors.New("no postmaster yet")
		}
		return nil
	})
	// The postmaster may report "standby" in its pid file (Start's ready
	// signal) before the Fence arrives even with hot_standby off; then
	// Start has returned and the Fence must still stop the server. Both
	// orders are checked; the log says which one this run saw.
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Start = %v before the Fence; want nil or (during the Fence) ErrFenced", err)
		}
		t.Logf("Start returned before the Fence (the standby reported ready): checking Fence after Start")
		if err := slow.Fence(ctx); err != nil {
			t.Fatalf("Fence: %v", err)
		}
	default:
		if err := slow.Fence(ctx); err != nil {
			t.Fatalf("Fence: %v", err)
		}
		if err := <-done; err != nil && !errors.Is(err, replicate.ErrFenced) {
			t.Fatalf("Start during Fence = %v, want ErrFenced", err)
		} else if err == nil {
			t.Logf("Start returned nil just before the Fence took effect")
		}
	}
	if pid := slow.PID(); pid != 0 {
		t.Fatalf("a postmaster (pid %d) runs after Fence", pid)
	}
}

// TestOtherStandbyFollowsNewPrimary: after a failover, a second standby
// repoints to the promoted one by reload and streams its new timeline.
func TestOtherStandbyFollowsNewPrimary(t *testing.T) {
	t.Parallel()
	ctx := testutil.Ctx(t, 2*time.Minute)
	p := testutil.StartPostgres(t, testutil.PostgresOptions{Name: "op"})
	s1 := testutil.StartPostgres(t, testutil.PostgresOptions{Name: "os1", CloneFrom: p})
	s2 := testutil.StartPostgres(t, testutil.PostgresOptions{Name: "os2", CloneFrom: p})
	mustExec(t, ctx, p, "CREATE TABLE t (v text); INSERT INTO t VALUES ('1')")
	// Both standbys stream, so they receive p's shutdown checkpoint.
	for _, s := range []*replicate.Instance{s1, s2} {
		if err := s.WaitStreaming(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Stop(ctx, replicate.Fast); err != nil {
		t.Fatal(err)
	}
	last := mustStatus(t, ctx, p).CheckpointLSN
	for _, s := range []*replicate.Instance{s1, s2} {
		if err := s.WaitReplayed(ctx, last); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s1.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	pid := s2.PID()
	if err := s2.Follow(ctx, testutil.SourceOf(s1, "os2")); err != nil {
		t.Fatalf("Follow the new primary: %v", err)
	}
	if err := s2.WaitStreaming(ctx); err != nil {
		t.Fatalf("s2 streaming from the new primary: %v", err)
	}
	if s2.PID() != pid {
		t.Fatal("Follow restarted the standby")
	}
	mustExec(t, ctx, s1, "INSERT INTO t VALUES ('2')")
	waitRows(t, ctx, s2, "t", "1", "2")
	if st := mustStatus(t, ctx, s2); st.Timeline != 2 || !st.InRecovery {
		t.Fatalf("s2 timeline %d (in recovery %v), want a standby on timeline 2", st.Timeline, st.InRecovery)
	}
}

// TestRewindAfterZombiePostmaster: a former primary killed with SIGKILL
// whose postmaster nobody reaps (a machine whose PID 1 does not reap
// orphans) leaves a postmaster.pid naming a zombie; pg_rewind's
// single-user crash recovery refused it ("lock file already exists"), so
// every rewind failed (found by the chaos harness). Rewind now clears
// that stale lock first.
func TestRewindAfterZombiePostmaster(t *testing.T) {
	t.Parallel()
	ctx := testutil.Ctx(t, 3*time.Minute)
	a := testutil.StartPostgres(t, testutil.PostgresOptions{Name: "zombiea"})
	mustExec(t, ctx, a, "CREATE TABLE t (v text)")
	mustExec(t, ctx, a, "INSERT INTO t VALUES ('1-before')")
	b := testutil.StartPostgres(t, testutil.PostgresOptions{Name: "zombieb", CloneFrom: a})
	waitRows(t, ctx, b, "t", "1-before")
	if _, err := b.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	mustExec(t, ctx, a, "INSERT INTO t VALUES ('2-diverged')")
	exited := a.Exited()
	if err := killPID(a.PID()); err != nil {
		t.Fatal(err)
	}
	<-exited
	// The zombie runs as the server's OS user, as the killed postmaster
	// did: postgres takes a PID it may not signal (EPERM) for stale.
	pid, cleanup := zombieAs(t, a.Config().OSUser)
	defer cleanup()
	writePIDFile(t, a.Config().DataDir, pid)
	if err := a.Rewind(ctx, testutil.SourceOf(b, "")); err != nil {
		t.Fatalf("Rewind with a postmaster.pid naming a zombie: %v", err)
	}
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	mustExec(t, ctx, b, "INSERT INTO t VALUES ('3-after')")
	waitRows(t, ctx, a, "t", "1-before", "3-after")
}

// TestStartIf: StartIf starts only while its condition holds, atomically
// with respect to Fence: a condition already false refuses the start; a
// Fence that comes after the condition said yes stops the server it
// starts (ErrFenced), so a decision taken just before a fence never
// leaves a server running after it.
func TestStartIf(t *testing.T) {
	t.Parallel()
	ctx := testutil.Ctx(t, 2*time.Minute)
	p := testutil.StartPostgres(t, testutil.PostgresOptions{Name: "startif"})
	if err := p.Stop(ctx, replicate.Fast); err != nil {
		t.Fatal(err)
	}
	if err := p.StartIf(ctx, func() bool { return false }); !errors.Is(err, replicate.ErrFenced) {
		t.Fatalf("StartIf(false) = %v; want ErrFenced", err)
	}
	if p.PID() > 0 {
		t.Fatalf("StartIf(false) started postmaster %d", p.PID())
	}
	// The condition holds, then a fence comes (it waits for the
	// condition's critical section, as the fencer's would).
	fenced := make(chan error, 1)
	err := p.StartIf(ctx, func() bool {
		go func() { fenced <- p.Fence(ctx) }()
		return true
	})
	if !errors.Is(err, replicate.ErrFenced) {
		t.Fatalf("StartIf with a Fence after the condition = %v; want ErrFenced", err)
	}
	if ferr := <-fenced; ferr != nil {
		t.Fatalf("Fence: %v", ferr)
	}
	testutil.Eventually(t, 10*time.Second, "no postmaster after the fenced start", func() error {
		if st, err := p.Status(ctx); err == nil && st.Running {
			return errors.New("running")
		}
		return nil
	})
	if err := p.StartIf(ctx, func() bool { return true }); err != nil {
		t.Fatalf("StartIf(true) = %v", err)
	}
}
