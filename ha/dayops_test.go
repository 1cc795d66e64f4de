package ha

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pgha/pgha/internal/keyspace"
	"github.com/pgha/pgha/internal/testutil"
	"github.com/pgha/pgha/replicate"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// This file tests the day-2 operations on real clusters: Reinit, Remove,
// ScheduleSwitchover and CancelSwitchover (issue 17, item 2).

func standbyOf(c *testCluster, lead *testNode) *testNode {
	for _, n := range c.nodes {
		if n != lead {
			return n
		}
	}
	c.t.Fatal("no standby")
	return nil
}

// TestReinitStandby: reinit re-clones a standby from the leader: the old
// data directory is moved aside and still exists (with a file only it
// held), the new one is a fresh clone holding a row written before, the
// node streams again and the request is gone. The leader and an unknown
// node are refused.
func TestReinitStandby(t *testing.T) {
	c := startCluster(t, clusterOpts{n: 2})
	lead := c.waitHealthy(90 * time.Second)
	sb := standbyOf(c, lead)
	ctx := testutil.Ctx(t, 3*time.Minute)
	if err := testutil.PostgresExec(ctx, lead.inst, "CREATE TABLE reinit_t (v text); INSERT INTO reinit_t VALUES ('before')"); err != nil {
		t.Fatal(err)
	}
	dataDir := sb.inst.Config().DataDir
	// A file that only the old directory holds: a fresh clone lacks it.
	marker := filepath.Join(dataDir, "pgha-test-old-dir")
	if err := os.WriteFile(marker, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}

	if err := Reinit(ctx, c.cli, "test", lead.name); !errors.Is(err, ErrIsLeader) || !strings.Contains(err.Error(), "switch over first") {
		t.Fatalf("Reinit of the leader = %v; want ErrIsLeader saying to switch over first", err)
	}
	if err := Reinit(ctx, c.cli, "test", "nope"); !errors.Is(err, ErrUnknownMember) {
		t.Fatalf("Reinit of an unknown node = %v; want ErrUnknownMember", err)
	}

	start := time.Now()
	if err := Reinit(ctx, c.cli, "test", sb.name); err != nil {
		t.Fatalf("Reinit(%s): %v", sb.name, err)
	}
	t.Logf("reinit of %s: request → streaming again in %v", sb.name, time.Since(start).Round(time.Millisecond))
	aside, _ := filepath.Glob(dataDir + ".replaced-*")
	if len(aside) != 1 {
		t.Fatalf("directories moved aside next to %s: %v; want one", dataDir, aside)
	}
	for _, f := range []string{"PG_VERSION", "pgha-test-old-dir"} {
		if _, err := os.Stat(filepath.Join(aside[0], f)); err != nil {
			t.Fatalf("the old data directory %s lacks %s: %v", aside[0], f, err)
		}
	}
	if _, err := os.Stat(marker); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the data directory still holds the old directory's file (stat: %v): not re-cloned", err)
	}
	c.waitHealthy(60 * time.Second)
	testutil.Eventually(t, 30*time.Second, "the row written before on "+sb.name, func() error {
		n, err := testutil.PostgresQueryInt(ctx, sb.inst, "SELECT count(*) FROM reinit_t WHERE v = 'before'")
		if err != nil {
			return err
		}
		if n != 1 {
			return fmt.Errorf("%d rows", n)
		}
		return nil
	})
	st, err := ClusterStatus(ctx, c.cli, "test")
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Reinits) != 0 {
		t.Fatalf("reinit requests left behind: %v", st.Reinits)
	}
	if m, _ := memberNamed(st, sb.name); m.Problem != "" || m.Role != RoleReplica || !m.Streaming {
		t.Fatalf("%s after reinit: %+v", sb.name, m)
	}
}

// TestRemoveMember: remove refuses a live member (its record is on a
// live lease) saying to stop it first; once its manager and PostgreSQL
// are stopped, remove drops its slot on the leader (which DepartedSlotTTL
// would keep for 30 minutes) and leaves no record; a second remove finds
// nothing (ErrUnknownMember). A member record left without a lease is
// deleted.
func TestRemoveMember(t *testing.T) {
	c := startCluster(t, clusterOpts{n: 2})
	lead := c.waitHealthy(90 * time.Second)
	sb := standbyOf(c, lead)
	ctx := testutil.Ctx(t, 3*time.Minute)
	slot := replicate.SlotName(sb.name)
	slots := func() []string {
		ss, err := lead.inst.Slots(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, s := range ss {
			names = append(names, s.Name)
		}
		return names
	}
	testutil.Eventually(t, 30*time.Second, "the standby's slot on the leader", func() error {
		if s := slots(); !slices.Contains(s, slot) {
			return fmt.Errorf("slots %v", s)
		}
		return nil
	})

	err := Remove(ctx, c.cli, "test", sb.name)
	if !errors.Is(err, ErrMemberLive) || !strings.Contains(err.Error(), "stop its manager") {
		t.Fatalf("Remove of a live member = %v; want ErrMemberLive saying to stop it first", err)
	}
	if err := Remove(ctx, c.cli, "test", lead.name); !errors.Is(err, ErrMemberLive) {
		t.Fatalf("Remove of the leader = %v; want ErrMemberLive", err)
	}

	c.stopManager(sb, false)
	if err := sb.inst.Stop(ctx, replicate.Fast); err != nil {
		t.Fatal(err)
	}
	if err := Remove(ctx, c.cli, "test", sb.name); err != nil {
		t.Fatalf("Remove of a stopped member: %v", err)
	}
	if s := slots(); slices.Contains(s, slot) {
		t.Fatalf("slots %v still hold %s's after remove", s, sb.name)
	}
	layout, _ := keyspace.NewLayout("", "test")
	for _, key := range []string{layout.Member(sb.name), layout.Remove(sb.name)} {
		if resp, err := c.cli.Get(ctx, key); err != nil || len(resp.Kvs) > 0 {
			t.Fatalf("%s after remove: %v %v", key, resp.Kvs, err)
		}
	}
	if err := Remove(ctx, c.cli, "test", sb.name); !errors.Is(err, ErrUnknownMember) {
		t.Fatalf("a second Remove = %v; want ErrUnknownMember", err)
	}

	// A member record on no lease (not a manager's) is forgotten too.
	b, err := keyspace.Encode(keyspace.MemberRecord{Node: "ghost", Role: keyspace.RoleStopped, Host: "h", Port: 1, LagBytes: -1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.cli.Put(ctx, layout.Member("ghost"), string(b)); err != nil {
		t.Fatal(err)
	}
	if err := Remove(ctx, c.cli, "test", "ghost"); err != nil {
		t.Fatalf("Remove of a lease-less record: %v", err)
	}
	if resp, err := c.cli.Get(ctx, layout.Member("ghost")); err != nil || len(resp.Kvs) > 0 {
		t.Fatalf("ghost's record after remove: %v %v", resp.Kvs, err)
	}
}

// TestScheduledSwitchover: a switchover scheduled 3 s ahead is shown by
// ClusterStatus, becomes due on the leader no earlier than its time and
// within one loop interval (+1 s of slack for a loaded machine), and
// hands over; one that is cancelled does not fire. Past times are
// refused.
func TestScheduledSwitchover(t *testing.T) {
	c := startCluster(t, clusterOpts{n: 2})
	lead := c.waitHealthy(90 * time.Second)
	sb := standbyOf(c, lead)
	ctx := testutil.Ctx(t, 3*time.Minute)
	layout, _ := keyspace.NewLayout("", "test")
	const loop = 200 * time.Millisecond // startCluster's LoopInterval

	if err := ScheduleSwitchover(ctx, c.cli, "test", sb.name, time.Now().Add(-time.Second)); err == nil || !strings.Contains(err.Error(), "not in the future") {
		t.Fatalf("a switchover scheduled in the past = %v; want an error", err)
	}

	// Record when the leader makes the request immediate.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	dueAt := make(chan time.Time, 1)
	wch := c.cli.Watch(wctx, layout.Switchover())
	go func() {
		for resp := range wch {
			for _, ev := range resp.Events {
				if ev.Type != clientv3.EventTypePut {
					continue
				}
				if r, err := keyspace.Decode[keyspace.SwitchoverRecord](ev.Kv.Value); err == nil && r.At.IsZero() {
					select {
					case dueAt <- time.Now():
					default:
					}
				}
			}
		}
	}()

	at := time.Now().Add(3 * time.Second)
	if err := ScheduleSwitchover(ctx, c.cli, "test", sb.name, at); err != nil {
		t.Fatal(err)
	}
	st, err := ClusterStatus(ctx, c.cli, "test")
	if err != nil || st.Switchover == nil || !st.Switchover.At.Equal(at) || st.Switchover.To != sb.name {
		t.Fatalf("ClusterStatus shows switchover %+v (%v); want one to %s at %v", st.Switchover, err, sb.name, at)
	}
	if st.Leader.Node != lead.name {
		t.Fatalf("leader %s before the scheduled time; want %s", st.Leader.Node, lead.name)
	}
	c.waitNewLeader(lead.name, 30*time.Second, "the scheduled switchover")
	if now := time.Now(); now.Before(at) {
		t.Fatalf("the switchover happened %v before its time", at.Sub(now).Round(time.Millisecond))
	}
	var due time.Time
	select {
	case due = <-dueAt:
	case <-time.After(10 * time.Second):
		t.Fatal("the switchover happened but the leader never made the request immediate")
	}
	late := due.Sub(at)
	t.Logf("scheduled switchover due %v after its time (loop interval %v)", late.Round(time.Millisecond), loop)
	if late < 0 || late > loop+time.Second {
		t.Fatalf("scheduled switchover became due %v after its time; want within [0, %v]", late, loop+time.Second)
	}
	c.waitHealthy(60 * time.Second)

	// Cancelled: it does not fire.
	at = time.Now().Add(2 * time.Second)
	if err := ScheduleSwitchover(ctx, c.cli, "test", lead.name, at); err != nil {
		t.Fatal(err)
	}
	req, ok, err := CancelSwitchover(ctx, c.cli, "test")
	if err != nil || !ok || !req.At.Equal(at) || req.From != sb.name {
		t.Fatalf("CancelSwitchover = %+v %v %v; want the scheduled switchover from %s", req, ok, err, sb.name)
	}
	deadline := at.Add(loop + 2*time.Second)
	for time.Now().Before(deadline) {
		lr, err := c.leaderRecord()
		if err == nil && lr.Node != sb.name {
			t.Fatalf("a cancelled switchover fired: leader %s", lr.Node)
		}
		if resp, err := c.cli.Get(ctx, layout.Switchover()); err == nil && len(resp.Kvs) > 0 {
			t.Fatalf("a switchover record reappeared after the cancel: %s", resp.Kvs[0].Value)
		}
		select {
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		case <-time.After(50 * time.Millisecond): // a bounded observation, not a synchronisation
		}
	}
}
