package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgha/pgha/ha"
	"github.com/pgha/pgha/internal/testutil"
	"github.com/pgha/pgha/pghatest"
	"github.com/pgha/pgha/replicate"
)

// testCluster is a real cluster in the test process, from pghatest: an
// embedded etcd, PostgreSQL servers and one ha.Manager each.
type testCluster struct {
	*pghatest.Cluster
	t testing.TB
}

const testClusterName = "clitest"

func startCluster(t testing.TB, n int) *testCluster {
	t.Helper()
	return &testCluster{Cluster: pghatest.Start(t, pghatest.Options{Nodes: n, Cluster: testClusterName}), t: t}
}

// waitHealthy waits until the cluster is healthy (pghatest's
// WaitHealthy: a writable primary, every running standby streaming on its
// timeline) and etcd holds exactly members member records, and returns
// the state.
func (c *testCluster) waitHealthy(timeout time.Duration, members int) ha.ClusterState {
	c.t.Helper()
	c.WaitHealthy(timeout)
	var st ha.ClusterState
	testutil.Eventually(c.t, timeout, fmt.Sprintf("a writable leader and %d members", members), func() error {
		var err error
		st, err = ha.ClusterStatus(testutil.Ctx(c.t, 2*time.Second), c.EtcdClient(), testClusterName)
		if err != nil {
			return err
		}
		if st.Leader == nil || !st.Leader.Writable {
			return fmt.Errorf("leader %+v", st.Leader)
		}
		if len(st.Members) != members {
			return fmt.Errorf("%d members, want %d", len(st.Members), members)
		}
		return nil
	})
	return st
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
	full := append([]string{"--etcd", strings.Join(c.EtcdEndpoints(), ","), "--cluster", testClusterName}, args...)
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
	if aside, _ := filepath.Glob(c.Instance(standby).Config().DataDir + ".replaced-*"); len(aside) != 1 {
		t.Fatalf("directories moved aside: %v; want one", aside)
	}
	c.waitHealthy(60*time.Second, 2)

	// remove: refused while live; done once stopped.
	r = c.ctl(t, exitFailed, "remove", standby)
	if !strings.Contains(r.stderr, "stop its manager") {
		t.Fatalf("remove of a live member: %v; want a hint to stop it first", r)
	}
	c.StopManager(standby)
	if err := c.Instance(standby).Stop(testutil.Ctx(t, time.Minute), replicate.Fast); err != nil {
		t.Fatal(err)
	}
	r = c.ctl(t, exitOK, "remove", standby, "--json")
	if err := json.Unmarshal([]byte(r.stdout), &nr); err != nil || nr.Node != standby {
		t.Fatalf("remove --json: %+v, %v\n%s", nr, err, r.stdout)
	}
	ss, err := c.Instance(leader).Slots(testutil.Ctx(t, 10*time.Second))
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
