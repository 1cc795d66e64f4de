package replicate_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/pgha/pgha/internal/testutil"
	"github.com/pgha/pgha/replicate"
)

// TestStatusTimelineWithoutReceiver: a standby that followed a promotion
// and is then restarted after kill -9 while no primary runs has no WAL
// receiver; Status must still report the timeline it replays (from the
// history files in pg_wal), not its last restartpoint's. Found by the
// chaos harness: the synchronous standby reported the old timeline, was
// judged ineligible, and no node could be promoted.
func TestStatusTimelineWithoutReceiver(t *testing.T) {
	t.Parallel()
	ctx := testutil.Ctx(t, 2*time.Minute)
	p := testutil.StartPostgres(t, testutil.PostgresOptions{Name: "tp"})
	s1 := testutil.StartPostgres(t, testutil.PostgresOptions{Name: "ts1", CloneFrom: p})
	s2 := testutil.StartPostgres(t, testutil.PostgresOptions{Name: "ts2", CloneFrom: p})
	mustExec(t, ctx, p, "CREATE TABLE t (v text); INSERT INTO t VALUES ('1')")
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
	if err := s2.Follow(ctx, testutil.SourceOf(s1, "ts2")); err != nil {
		t.Fatal(err)
	}
	mustExec(t, ctx, s1, "INSERT INTO t VALUES ('2')")
	waitRows(t, ctx, s2, "t", "1", "2")

	// The new primary goes away and the standby crashes.
	if err := s1.Stop(ctx, replicate.Fast); err != nil {
		t.Fatal(err)
	}
	exited := s2.Exited()
	if err := killPID(s2.PID()); err != nil {
		t.Fatal(err)
	}
	<-exited
	testutil.Eventually(t, 30*time.Second, "restart the standby after kill -9", func() error {
		err := s2.Start(ctx)
		if errors.Is(err, replicate.ErrFenced) {
			t.Fatal(err)
		}
		return err
	})
	st := mustStatus(t, ctx, s2)
	if st.WALReceiver != nil && st.WALReceiver.Status == "streaming" {
		t.Fatalf("s2 streams from %s:%d, but no primary runs", st.WALReceiver.SenderHost, st.WALReceiver.SenderPort)
	}
	var ckptTLI int64
	if v, err := testutil.PostgresQueryInt(ctx, s2, "SELECT timeline_id FROM pg_control_checkpoint()"); err == nil {
		ckptTLI = v
	}
	t.Logf("s2: replay LSN %s, restartpoint timeline %d, Status timeline %d", st.ReplayLSN, ckptTLI, st.Timeline)
	if !st.InRecovery || st.Timeline != 2 {
		t.Fatalf("s2 after restart: timeline %d (in recovery %v), want a standby on timeline 2", st.Timeline, st.InRecovery)
	}
}

// TestStatusDivergedStandby: an asynchronous standby that received more
// WAL than the standby that was promoted cannot follow the new timeline
// (PostgreSQL: "new timeline 2 forked off current database system timeline
// 1 before current recovery point"). Status must report it on its old
// timeline and Diverged, although it fetched the new timeline's history
// file, so that the HA manager rewinds it; after a Rewind it follows. CI
// caught the regression this guards: Status reported such a standby on
// the new timeline, and it stayed stuck for good.
func TestStatusDivergedStandby(t *testing.T) {
	t.Parallel()
	ctx := testutil.Ctx(t, 2*time.Minute)
	p := testutil.StartPostgres(t, testutil.PostgresOptions{Name: "dp"})
	s1 := testutil.StartPostgres(t, testutil.PostgresOptions{Name: "ds1", CloneFrom: p})
	s2 := testutil.StartPostgres(t, testutil.PostgresOptions{Name: "ds2", CloneFrom: p})
	mustExec(t, ctx, p, "CREATE TABLE t (v text); INSERT INTO t VALUES ('1')")
	waitRows(t, ctx, s1, "t", "1")
	waitRows(t, ctx, s2, "t", "1")

	// s1 falls behind: only s2 receives row 2. Then the primary dies.
	if err := s1.Stop(ctx, replicate.Fast); err != nil {
		t.Fatal(err)
	}
	mustExec(t, ctx, p, "INSERT INTO t VALUES ('2')")
	waitRows(t, ctx, s2, "t", "1", "2")
	exited := p.Exited()
	if err := killPID(p.PID()); err != nil {
		t.Fatal(err)
	}
	<-exited

	// The laggard is promoted and s2 is pointed at it.
	if err := s1.Start(ctx); err != nil {
		t.Fatal(err)
	}
	tl, err := s1.Promote(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s1.EnsureSlot(ctx, replicate.SlotName("ds2")); err != nil {
		t.Fatal(err)
	}
	src := testutil.SourceOf(s1, replicate.SlotName("ds2"))
	if err := s2.Follow(ctx, src); err != nil {
		t.Fatal(err)
	}
	var st replicate.Status
	testutil.Eventually(t, 30*time.Second, "s2 reported diverged", func() error {
		var err error
		if st, err = s2.Status(ctx); err != nil {
			return err
		}
		if !st.Diverged {
			return fmt.Errorf("not diverged yet: timeline %d, replay %s, receiver %+v", st.Timeline, st.ReplayLSN, st.WALReceiver)
		}
		return nil
	})
	t.Logf("s2: timeline %d, replay %s, diverged from s1's timeline %d", st.Timeline, st.ReplayLSN, tl)
	if st.Timeline >= tl {
		t.Fatalf("diverged s2 reports timeline %d; want its old one, below s1's %d", st.Timeline, tl)
	}

	// A rewind brings it onto s1's timeline: row 2 is gone, new rows come.
	if err := s2.Stop(ctx, replicate.Fast); err != nil {
		t.Fatal(err)
	}
	if err := s2.Rewind(ctx, src); err != nil {
		t.Fatal(err)
	}
	if err := s2.Start(ctx); err != nil {
		t.Fatal(err)
	}
	mustExec(t, ctx, s1, "INSERT INTO t VALUES ('3')")
	waitRows(t, ctx, s2, "t", "1", "3")
	st = mustStatus(t, ctx, s2)
	if st.Diverged || st.Timeline != tl {
		t.Fatalf("s2 after rewind: timeline %d, diverged %v; want timeline %d, not diverged", st.Timeline, st.Diverged, tl)
	}
}
