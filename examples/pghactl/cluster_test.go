package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
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
