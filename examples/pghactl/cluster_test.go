package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgha/pgha/ha"
	"github.com/pgha/pgha/internal/testutil"
	"github.com/pgha/pgha/replicate"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// testCluster is a real cluster in the test process: an embedded etcd,
// three PostgreSQL servers and one ha.Manager each (a minimal copy of
// ha's own test harness).
type testCluster struct {
	t     testing.TB
	etcd  *testutil.EtcdCluster
	cli   *clientv3.Client
	nodes []*testNode
}

type testNode struct {
	name   string
	inst   *replicate.Instance
	cancel context.CancelFunc
	done   chan error
}

const testClusterName = "clitest"

func startCluster(t testing.TB, n int) *testCluster {
	t.Helper()
	etcd := testutil.StartEtcd(t, 1)
	c := &testCluster{t: t, etcd: etcd, cli: etcd.Client(t)}
	t.Cleanup(c.stop)
	for i := 1; i <= n; i++ {
		name := fmt.Sprintf("n%d", i)
		inst, err := replicate.New(testutil.PostgresConfig(t, name))
		if err != nil {
			t.Fatalf("replicate.New(%s): %v", name, err)
		}
		testutil.StopPostgresAtCleanup(t, inst)
		node := &testNode{name: name, inst: inst}
		mgr, err := ha.New(ha.Config{
			Cluster:      testClusterName,
			Node:         name,
			Client:       testutil.NewEtcdClient(t, etcd.Endpoints()...),
			Instance:     inst,
			LeaseTTL:     2 * time.Second,
			LoopInterval: 200 * time.Millisecond,
			Logger:       slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo})),
		})
		if err != nil {
			t.Fatalf("ha.New(%s): %v", name, err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		node.cancel, node.done = cancel, make(chan error, 1)
		go func() { node.done <- mgr.Run(ctx) }()
		c.nodes = append(c.nodes, node)
	}
	return c
}

// stopManager stops a node's manager cleanly (a leader stops its
// PostgreSQL and resigns).
func (c *testCluster) stopManager(n *testNode) {
	if n.cancel == nil {
		return
	}
	n.cancel()
	if err := <-n.done; err != nil {
		c.t.Errorf("manager %s: Run returned %v", n.name, err)
	}
	n.cancel = nil
}

func (c *testCluster) stop() {
	var wg sync.WaitGroup
	for _, n := range c.nodes {
		wg.Go(func() { c.stopManager(n) })
	}
	wg.Wait()
}

// waitHealthy waits until etcd shows a writable leader and every other
// running member streaming, and returns the state.
func (c *testCluster) waitHealthy(timeout time.Duration, members int) ha.ClusterState {
	c.t.Helper()
	var st ha.ClusterState
	testutil.Eventually(c.t, timeout, "a writable leader and streaming standbys", func() error {
		var err error
		st, err = ha.ClusterStatus(testutil.Ctx(c.t, 2*time.Second), c.cli, testClusterName)
		if err != nil {
			return err
		}
		if st.Leader == nil || !st.Leader.Writable {
			return fmt.Errorf("leader %+v", st.Leader)
		}
		n := 0
		for _, m := range st.Members {
			if m.Leader {
				continue
			}
			if m.Role != ha.RoleReplica || !m.Healthy || !m.Streaming || m.Timeline != st.Leader.Timeline {
				return fmt.Errorf("%s: role %s healthy %v streaming %v timeline %d", m.Node, m.Role, m.Healthy, m.Streaming, m.Timeline)
			}
			n++
		}
		if n != members-1 {
			return fmt.Errorf("%d streaming standbys, want %d", n, members-1)
		}
		return nil
	})
	return st
}

func (c *testCluster) node(name string) *testNode {
	for _, n := range c.nodes {
		if n.name == name {
			return n
		}
	}
	c.t.Fatalf("no node %s", name)
	return nil
}

// result is one pghactl run.
type result struct {
	code           int
	stdout, stderr string
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// pghactl runs the CLI in process with no PGHA_* environment.
func pghactl(t testing.TB, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	code := runEnv(testutil.Ctx(t, 2*time.Minute), args, func(string) string { return "" }, &out, &errb)
	return result{code, out.String(), errb.String()}
}

// ctl runs the CLI against c and checks the exit code.
func (c *testCluster) ctl(t testing.TB, want int, args ...string) result {
	t.Helper()
	full := append([]string{"--etcd", strings.Join(c.etcd.Endpoints(), ","), "--cluster", testClusterName}, args...)
	r := pghactl(t, full...)
	if r.code != want {
		t.Fatalf("pghactl %s: %v; want exit %d", strings.Join(args, " "), r, want)
	}
	return r
}

func standbyNames(st ha.ClusterState) []string {
	var s []string
	for _, m := range st.Members {
		if !m.Leader {
			s = append(s, m.Node)
		}
	}
	return s
}

// TestDayTwoVerbs runs switchover --at and --cancel, reinit and remove
// against a real two-node cluster, with --json.
func TestDayTwoVerbs(t *testing.T) {
	c := startCluster(t, 2)
	st := c.waitHealthy(90*time.Second, 2)
	leader, standby := st.Leader.Node, standbyNames(st)[0]

	// A scheduled switchover is listed, and a cancelled one is gone.
	at := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	r := c.ctl(t, exitOK, "switchover", "--to", standby, "--at", at.Format(time.RFC3339), "--json")
	var sw switchoverResult
	if err := json.Unmarshal([]byte(r.stdout), &sw); err != nil || sw.Scheduled == nil || !sw.Scheduled.At.Equal(at) || sw.Scheduled.To != standby {
		t.Fatalf("switchover --at --json: %+v, %v\n%s", sw, err, r.stdout)
	}
	r = c.ctl(t, exitOK, "list")
	if !strings.Contains(r.stdout, "SCHEDULED switchover from "+leader+" to "+standby+" at "+at.Format(time.RFC3339)) {
		t.Fatalf("list does not show the scheduled switchover:\n%s", r.stdout)
	}
	c.ctl(t, exitFailed, "switchover", "--at", at.Add(time.Minute).Format(time.RFC3339))
	r = c.ctl(t, exitOK, "switchover", "--cancel")
	if !strings.Contains(r.stdout, "cancelled the pending switchover from "+leader) {
		t.Fatalf("switchover --cancel: %v", r)
	}
	if st := c.state(t); st.Switchover != nil {
		t.Fatalf("switchover still pending after --cancel: %+v", st.Switchover)
	}
	// One due in 2 s fires (not before).
	at = time.Now().Add(2 * time.Second)
	c.ctl(t, exitOK, "switchover", "--at", at.Format(time.RFC3339Nano))
	testutil.Eventually(t, 30*time.Second, "the scheduled switchover", func() error {
		if st := c.state(t); st.Leader == nil || st.Leader.Node != standby || !st.Leader.Writable {
			return fmt.Errorf("leader %+v", st.Leader)
		}
		return nil
	})
	if now := time.Now(); now.Before(at) {
		t.Fatalf("the scheduled switchover fired %v early", at.Sub(now))
	}
	st = c.waitHealthy(60*time.Second, 2)
	leader, standby = st.Leader.Node, standbyNames(st)[0]

	// reinit: the leader is refused, the standby re-cloned.
	r = c.ctl(t, exitFailed, "reinit", leader)
	if !strings.Contains(r.stderr, "pghactl switchover") {
		t.Fatalf("reinit of the leader: %v; want a hint to switch over first", r)
	}
	c.ctl(t, exitFailed, "reinit", "nope")
	r = c.ctl(t, exitOK, "reinit", standby, "--json")
	var nr nodeResult
	if err := json.Unmarshal([]byte(r.stdout), &nr); err != nil || nr.Node != standby || nr.Leader != leader {
		t.Fatalf("reinit --json: %+v, %v\n%s", nr, err, r.stdout)
	}
	if aside, _ := filepath.Glob(c.node(standby).inst.Config().DataDir + ".replaced-*"); len(aside) != 1 {
		t.Fatalf("directories moved aside: %v; want one", aside)
	}
	c.waitHealthy(60*time.Second, 2)

	// remove: refused while live; done once stopped.
	r = c.ctl(t, exitFailed, "remove", standby)
	if !strings.Contains(r.stderr, "stop its manager") {
		t.Fatalf("remove of a live member: %v; want a hint to stop it first", r)
	}
	sb := c.node(standby)
	c.stopManager(sb)
	if err := sb.inst.Stop(testutil.Ctx(t, time.Minute), replicate.Fast); err != nil {
		t.Fatal(err)
	}
	r = c.ctl(t, exitOK, "remove", standby, "--json")
	if err := json.Unmarshal([]byte(r.stdout), &nr); err != nil || nr.Node != standby {
		t.Fatalf("remove --json: %+v, %v\n%s", nr, err, r.stdout)
	}
	ss, err := c.node(leader).inst.Slots(testutil.Ctx(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range ss {
		if s.Name == replicate.SlotName(standby) {
			t.Fatalf("%s's slot still on the leader after remove", standby)
		}
	}
	c.ctl(t, exitFailed, "remove", standby)
}
