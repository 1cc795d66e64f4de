package driver_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/pgha/pgha/election"
	"github.com/pgha/pgha/ha"
	"github.com/pgha/pgha/internal/keyspace"
	"github.com/pgha/pgha/internal/testutil"
	"github.com/pgha/pgha/replicate"
)

// TestHAFailover is the end-to-end case: two nodes run by ha managers in
// synchronous mode, a writer through an etcd-mode pool, and the primary's
// postmaster killed; the manager fails over at once and the pool follows,
// without being recreated, with no acknowledged write lost.
func TestHAFailover(t *testing.T) {
	etcd := testutil.StartEtcd(t, 1)
	insts := map[string]*replicate.Instance{}
	for _, name := range []string{"ha1", "ha2"} {
		inst, err := replicate.New(testutil.PostgresConfig(t, name))
		if err != nil {
			t.Fatal(err)
		}
		testutil.StopPostgresAtCleanup(t, inst)
		insts[name] = inst
		mgr, err := ha.New(ha.Config{
			Cluster:      "ha",
			Node:         name,
			Client:       etcd.Client(t),
			Instance:     inst,
			LeaseTTL:     2 * time.Second,
			LoopInterval: 200 * time.Millisecond,
			SyncMode:     ha.SyncOn,
			Logger:       testLogger(t).With("node", name),
		})
		if err != nil {
			t.Fatalf("ha.New(%s): %v", name, err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- mgr.Run(ctx) }()
		t.Cleanup(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("manager %s: %v", name, err)
			}
		})
	}
	ctx := testutil.Ctx(t, 3*time.Minute)
	cli := etcd.Client(t)
	layout, _ := keyspace.NewLayout("", "ha")
	el, err := election.New(election.Config{Client: cli, Prefix: layout.Leader(), Logger: discardLogger})
	if err != nil {
		t.Fatal(err)
	}
	leader := func() (string, error) {
		l, err := el.Leader(ctx)
		if err != nil {
			return "", err
		}
		rec, err := keyspace.Decode[keyspace.LeaderRecord](l.Value)
		if err != nil {
			return "", err
		}
		if !rec.Writable {
			return "", errors.New("leader not writable yet")
		}
		return rec.Node, nil
	}
	// Wait for a writable leader with a synchronous standby.
	var old string
	testutil.Eventually(t, 2*time.Minute, "cluster bootstrapped with a synchronous standby", func() error {
		var err error
		if old, err = leader(); err != nil {
			return err
		}
		other := "ha1"
		if old == "ha1" {
			other = "ha2"
		}
		resp, err := cli.Get(ctx, layout.Member(other))
		if err != nil || len(resp.Kvs) == 0 {
			return fmt.Errorf("member record of %s: %v", other, err)
		}
		m, err := keyspace.Decode[keyspace.MemberRecord](resp.Kvs[0].Value)
		if err != nil {
			return err
		}
		if m.Role != keyspace.RoleReplica || !m.Streaming || !m.Healthy {
			return fmt.Errorf("standby %s: role %s, streaming %v, healthy %v", other, m.Role, m.Streaming, m.Healthy)
		}
		resp, err = cli.Get(ctx, layout.Sync())
		if err != nil || len(resp.Kvs) == 0 {
			return fmt.Errorf("sync key: %v", err)
		}
		sr, err := keyspace.Decode[keyspace.SyncRecord](resp.Kvs[0].Value)
		if err != nil {
			return err
		}
		if len(sr.Standbys) != 1 || sr.Standbys[0] != other {
			return fmt.Errorf("sync standbys %v, want [%s]", sr.Standbys, other)
		}
		n, err := testutil.PostgresQueryInt(ctx, insts[old], "select count(*) from pg_stat_replication where sync_state in ('sync', 'quorum')")
		if err == nil && n != 1 {
			err = fmt.Errorf("%d synchronous standbys", n)
		}
		return err
	})
	if err := testutil.PostgresExec(ctx, insts[old], "create table w(v int primary key)"); err != nil {
		t.Fatal(err)
	}
	cfg := parse(t, connString("pgha_cluster=ha&pgha_failover_timeout=30s&pgha_read_mode=replicas&pgha_etcd="+etcd.Endpoints()[0]))
	p := newPool(t, cfg)
	// Replicas come from the managers' member records.
	testutil.Eventually(t, 10*time.Second, "read served by the standby named in the member records", func() error {
		var port int
		if err := p.Reader().QueryRow(ctx, "select inet_server_port()").Scan(&port); err != nil {
			return err
		}
		if port == insts[old].Config().Port {
			return errors.New("read served by the primary")
		}
		return nil
	})
	w := startWriter(ctx, p)
	waitAcked(t, w, 50, "writes before the failover")

	kill(t, insts[old])
	before := w.ackedCount()
	start := time.Now()
	waitAcked(t, w, before+50, "writes after the failover")
	t.Logf("primary killed → 50 more writes acknowledged in %v", time.Since(start).Round(time.Millisecond))
	now, err := leader()
	if err != nil || now == old {
		t.Fatalf("leader after the failover = %q, %v; want the other node", now, err)
	}
	w.check(t, insts[now])
	checkFirstXID(t, ctx, cli, layout, insts[now], before)
}

// checkFirstXID checks the history entry the manager wrote at the
// promotion: its first_xid is set, above the id of every row written
// before the failover (v ≤ before) and at most the id of the last row
// written after it.
func checkFirstXID(t *testing.T, ctx context.Context, cli *clientv3.Client, layout keyspace.Layout, inst *replicate.Instance, before int) {
	t.Helper()
	resp, err := cli.Get(ctx, layout.History())
	if err != nil || len(resp.Kvs) == 0 {
		t.Fatalf("history key: %v", err)
	}
	h, err := keyspace.Decode[keyspace.HistoryRecord](resp.Kvs[0].Value)
	if err != nil {
		t.Fatal(err)
	}
	e := h.Entries[len(h.Entries)-1]
	if e.FirstXID < keyspace.FirstNormalXID {
		t.Fatalf("history entry of the promotion %+v has no first_xid", e)
	}
	oldMax, err := testutil.PostgresQueryInt(ctx, inst, "select coalesce(max(xmin::text::bigint), 0) from w where v <= $1", before)
	if err != nil {
		t.Fatal(err)
	}
	last, err := testutil.PostgresQueryInt(ctx, inst, "select xmin::text::bigint from w order by v desc limit 1")
	if err != nil {
		t.Fatal(err)
	}
	if uint64(oldMax) >= e.FirstXID || uint64(last) < e.FirstXID {
		t.Fatalf("first_xid %d of timeline %d: want above %d (the last id written before the failover) and at most %d (the last row's)", e.FirstXID, e.Timeline, oldMax, last)
	}
	t.Logf("first_xid %d of timeline %d: old rows up to id %d, last row id %d", e.FirstXID, e.Timeline, oldMax, last)
}
