package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pgha/pgha/ha"
	"github.com/pgha/pgha/internal/keyspace"
	"github.com/pgha/pgha/internal/testutil"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestUsage: bad command lines exit 2 with a message saying what to do,
// before any etcd is contacted.
func TestUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "a command is required"},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"list"}, "--cluster is required"},
		{[]string{"--cluster", "bad/name", "list"}, "--cluster"},
		{[]string{"--cluster", "c", "failover"}, "failover needs --to NODE"},
		{[]string{"--cluster", "c", "list", "--nope"}, "flag provided but not defined"},
		{[]string{"--cluster", "c", "list", "extra"}, `unexpected argument "extra"`},
		{[]string{"--cluster", "c", "pause", "--json"}, "--json applies to list, history, show-config, switchover, reinit, remove and reload only"},
		{[]string{"--cluster", "c", "restart", "--cancel"}, "restart --cancel needs the NODEs"},
		{[]string{"--cluster", "c", "restart", "--cancel", "--pending", "n1"}, "restart --cancel takes only NODEs"},
		{[]string{"--cluster", "c", "restart", "--at", "2001-01-01T00:00:00Z"}, "is in the past"},
		{[]string{"--cluster", "c", "reload", "bad/name"}, `node "bad/name"`},
		{[]string{"--cluster", "c", "edit-config", "--set", "a=b", "--file", "x.yaml"}, "--set or --file, not both"},
		{[]string{"--cluster", "c", "reinit"}, "reinit needs NODE"},
		{[]string{"--cluster", "c", "remove"}, "remove needs NODE"},
		{[]string{"--cluster", "c", "remove", "bad/name"}, `NODE "bad/name"`},
		{[]string{"--cluster", "c", "reinit", "n1", "extra"}, `unexpected argument "extra"`},
		{[]string{"--cluster", "c", "reinit", "n1", "--wait", "0s"}, "--wait"},
		{[]string{"--cluster", "c", "switchover", "--at", "tomorrow"}, `--at "tomorrow" is not an RFC 3339 time`},
		{[]string{"--cluster", "c", "switchover", "--at", "2001-01-01T00:00:00Z"}, "--at 2001-01-01T00:00:00Z is in the past"},
		{[]string{"--cluster", "c", "switchover", "--at", "2999-01-01T00:00:00Z", "--cancel"}, "--at and --cancel do not go together"},
		{[]string{"--cluster", "c", "switchover", "--cancel", "--to", "n2"}, "--cancel takes no --to"},
		{[]string{"--cluster", "c", "switchover", "--wait", "0s"}, "--wait"},
		{[]string{"--cluster", "c", "--etcd", " ", "list"}, "--etcd: no endpoint given"},
		{[]string{"--cluster", "c", "--etcd-cert-file", "/x.pem", "list"}, "go together"},
	} {
		r := pghactl(t, tc.args...)
		if r.code != exitUsage || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("pghactl %q: %v\nwant exit 2 and %q in stderr", tc.args, r, tc.want)
		}
	}
	if r := pghactl(t, "-h"); r.code != exitOK || !strings.Contains(r.stderr, "Exit codes") {
		t.Errorf("pghactl -h: %v; want exit 0 and the usage", r)
	}
}

// TestEtcdUnreachable: no etcd at the endpoint exits 3 and says what to
// check.
func TestEtcdUnreachable(t *testing.T) {
	addr := testutil.FreeAddr(t) // nothing listens there
	for _, cmd := range []string{"list", "pause", "switchover"} {
		r := pghactl(t, "--etcd", "http://"+addr, "--cluster", "c", "--timeout", "500ms", cmd)
		if r.code != exitUnreachable || !strings.Contains(r.stderr, "check --etcd") {
			t.Errorf("pghactl %s with no etcd: %v\nwant exit 3 and a hint", cmd, r)
		}
	}
}

// TestCLI runs every command against a real three-node cluster.
func TestCLI(t *testing.T) {
	c := startCluster(t, 3)
	st := c.waitHealthy(90*time.Second, 3)
	leader := st.Leader.Node

	// list: a table with every member, the leader marked.
	r := c.ctl(t, exitOK, "list")
	t.Logf("pghactl list:\n%s", r.stdout)
	for _, want := range []string{"MEMBER", "ROLE", "STATE", "TL", "LAG", "LEADER", "SYNC", "n1", "n2", "n3", "primary", "replica", "streaming"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("list output lacks %q:\n%s", want, r.stdout)
		}
	}
	for _, line := range strings.Split(r.stdout, "\n") {
		if strings.HasPrefix(line, leader+" ") && !strings.Contains(line, "primary") {
			t.Errorf("leader %s's line does not say primary: %q", leader, line)
		}
	}
	// list --json: the cluster state, decodable.
	var got ha.ClusterState
	r = c.ctl(t, exitOK, "list", "--json")
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatalf("list --json: %v\n%s", err, r.stdout)
	}
	if got.Leader == nil || got.Leader.Node != leader || len(got.Members) != 3 || got.Cluster != testClusterName {
		t.Fatalf("list --json: leader %+v, %d members, cluster %q; want leader %s, 3 members", got.Leader, len(got.Members), got.Cluster, leader)
	}
	// A wrong cluster name is an operation failure that names the fix.
	for _, args := range [][]string{{"list"}, {"list", "--json"}, {"history", "--json"}} {
		r = pghactl(t, append([]string{"--etcd", c.EtcdEndpoints()[0], "--cluster", "other"}, args...)...)
		if r.code != exitFailed || !strings.Contains(r.stderr, "check --cluster") || r.stdout != "" {
			t.Errorf("%v of an unknown cluster: %v; want exit 1, a hint and no output", args, r)
		}
	}

	// pause and resume.
	c.ctl(t, exitOK, "pause", "--reason", "maintenance")
	if r := c.ctl(t, exitOK, "list"); !strings.Contains(r.stdout, "PAUSED (maintenance)") {
		t.Logf("pghactl list:\n%s", r.stdout)
		t.Errorf("list after pause does not say PAUSED:\n%s", r.stdout)
	}
	if st := c.state(t); !st.Paused {
		t.Errorf("list --json after pause: paused false")
	}
	c.ctl(t, exitOK, "resume")
	if st := c.state(t); st.Paused {
		t.Errorf("list --json after resume: paused true")
	}
	if r := c.ctl(t, exitOK, "resume"); !strings.Contains(r.stdout, "was not paused") {
		t.Errorf("resume when not paused: %v", r)
	}

	// Refusals, each exit 1 with what to do instead.
	target := standbyNames(st)[0]
	other := standbyNames(st)[1]
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"failover", "--to", target}, "pghactl switchover --to " + target},
		{[]string{"switchover", "--to", "nope"}, `no member "nope"; members: n1, n2, n3`},
		{[]string{"switchover", "--to", leader}, leader + " already leads"},
	} {
		r := c.ctl(t, exitFailed, tc.args...)
		if !strings.Contains(r.stderr, tc.want) {
			t.Errorf("pghactl %q: %v\nwant %q in stderr", tc.args, r, tc.want)
		}
	}

	// switchover --to a standby: it leads, the old leader follows.
	r = c.ctl(t, exitOK, "switchover", "--to", target)
	if !strings.Contains(r.stdout, leader+" → "+target) {
		t.Errorf("switchover output: %q", r.stdout)
	}
	st = c.waitHealthy(60*time.Second, 3)
	if st.Leader.Node != target {
		t.Fatalf("leader after switchover to %s: %s", target, st.Leader.Node)
	}

	// history: the switch to target's timeline.
	r = c.ctl(t, exitOK, "history")
	t.Logf("pghactl history:\n%s", r.stdout)
	if !strings.Contains(r.stdout, "SWITCH LSN") || !strings.Contains(r.stdout, target) {
		t.Errorf("history lacks the switchover to %s:\n%s", target, r.stdout)
	}
	var hist []ha.HistoryEntry
	r = c.ctl(t, exitOK, "history", "--json")
	if err := json.Unmarshal([]byte(r.stdout), &hist); err != nil {
		t.Fatalf("history --json: %v\n%s", err, r.stdout)
	}
	if len(hist) == 0 || hist[len(hist)-1].Leader != target || hist[len(hist)-1].Timeline != st.Leader.Timeline {
		t.Fatalf("history --json: %+v; want the last entry for %s on timeline %d", hist, target, st.Leader.Timeline)
	}

	// failover --to with no leader: pause, let the leader leave (nobody
	// takes over while paused), then promote a chosen standby.
	c.ctl(t, exitOK, "pause")
	c.StopManager(target)
	testutil.Eventually(t, 30*time.Second, "no leader after the leader left a paused cluster", func() error {
		if st := c.state(t); st.Leader != nil {
			return &stateError{"leader " + st.Leader.Node}
		}
		return nil
	})
	if r := c.ctl(t, exitFailed, "switchover", "--to", other); !strings.Contains(r.stderr, "pghactl failover --to NODE") {
		t.Errorf("switchover with no leader: %v", r)
	}
	r = c.ctl(t, exitOK, "failover", "--to", other)
	if !strings.Contains(r.stdout, other+" is the leader") {
		t.Errorf("failover output: %q", r.stdout)
	}
	c.ctl(t, exitOK, "resume")
	if st := c.waitHealthy(60*time.Second, 2); st.Leader.Node != other {
		t.Fatalf("leader after failover to %s: %s", other, st.Leader.Node)
	}
}

type stateError struct{ s string }

func (e *stateError) Error() string { return e.s }

// state is list --json, decoded.
func (c *testCluster) state(t testing.TB) ha.ClusterState {
	t.Helper()
	r := c.ctl(t, exitOK, "list", "--json")
	var st ha.ClusterState
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		t.Fatalf("list --json: %v\n%s", err, r.stdout)
	}
	return st
}

// TestEtcdAuth: a wrong etcd password exits 3 and points at the
// credentials; the right one (from a file or the environment) gets through.
func TestEtcdAuth(t *testing.T) {
	etcd := testutil.StartEtcd(t, 1)
	cli := etcd.Client(t)
	ctx := testutil.Ctx(t, 2*time.Minute)
	const pw = "ctl-root-Vb51"
	if _, err := cli.UserAdd(ctx, "root", pw); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.UserGrantRole(ctx, "root", "root"); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.AuthEnable(ctx); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	wrong, right := filepath.Join(dir, "wrong"), filepath.Join(dir, "right")
	os.WriteFile(wrong, []byte("nope\n"), 0o600)
	os.WriteFile(right, []byte(pw+"\n"), 0o600)
	// Each authentication costs etcd a bcrypt hash, slow in a -race
	// binary on a loaded machine: allow for it.
	base := []string{"--etcd", etcd.Endpoints()[0], "--cluster", "c", "--etcd-username", "root", "--timeout", "30s"}

	r := pghactl(t, append(base, "--etcd-password-file", wrong, "list")...)
	t.Logf("wrong password: %s", r.stderr)
	if r.code != exitUnreachable || !strings.Contains(r.stderr, "check --etcd-username and the password") || strings.Contains(r.stderr, pw) {
		t.Errorf("wrong password: %v\nwant exit 3 and a hint about the credentials", r)
	}
	r = pghactl(t, append(base, "--etcd-password-file", right, "list")...)
	if r.code != exitFailed || !strings.Contains(r.stderr, `no cluster "c"`) {
		t.Errorf("right password, no such cluster: %v\nwant exit 1 and no cluster", r)
	}
	var out, errb bytes.Buffer
	env := func(k string) string {
		if k == "PGHA_ETCD_PASSWORD" {
			return pw
		}
		return ""
	}
	if code := runEnv(ctx, append(base, "pause"), env, &out, &errb); code != exitFailed || !strings.Contains(errb.String(), `no cluster "c"`) {
		t.Errorf("pause of an unknown cluster with PGHA_ETCD_PASSWORD: exit %d: %s; want exit 1 and no cluster", code, errb.String())
	}
	if code := runEnv(ctx, append(base, "--etcd-password-file", right, "resume"), env, &out, &errb); code != exitUsage {
		t.Errorf("password in both the environment and a file: exit %d; want 2", code)
	}
	r = pghactl(t, "--etcd", etcd.Endpoints()[0], "--cluster", "c", "--timeout", "30s", "list")
	t.Logf("no credentials: %s", r.stderr)
	if r.code != exitUnreachable {
		t.Errorf("no credentials with auth on: %v; want exit 3", r)
	}
}

// TestWithdrawOnTimeout: a switchover or failover that does not complete
// within --wait is withdrawn, so it cannot fire later; an unhealthy target
// is waited for, then refused without a request. The cluster is faked in
// etcd: records, no managers.
func TestWithdrawOnTimeout(t *testing.T) {
	etcd := testutil.StartEtcd(t, 1)
	cli := etcd.Client(t)
	ctx := testutil.Ctx(t, 30*time.Second)
	layout, err := keyspace.NewLayout("", "fake")
	if err != nil {
		t.Fatal(err)
	}
	enc := func(rec []byte, err error) []byte {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return rec
	}
	put := func(key string, rec []byte) {
		t.Helper()
		if _, err := cli.Put(ctx, key, string(rec)); err != nil {
			t.Fatal(err)
		}
	}
	// A leader key is an election key: named after its lease.
	lease, err := cli.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	leaderKey := layout.Leader() + "/" + strconv.FormatInt(int64(lease.ID), 16)
	leader := enc(keyspace.Encode(keyspace.LeaderRecord{Node: "n1", Host: "127.0.0.1", Port: 5432, Timeline: 1, Writable: true}))
	if _, err := cli.Put(ctx, leaderKey, string(leader), clientv3.WithLease(lease.ID)); err != nil {
		t.Fatal(err)
	}
	for _, m := range []keyspace.MemberRecord{
		{Node: "n1", Role: keyspace.RolePrimary, Host: "127.0.0.1", Port: 5432, Timeline: 1, Healthy: true},
		{Node: "n2", Role: keyspace.RoleReplica, Host: "127.0.0.1", Port: 5433, Timeline: 1, Healthy: true, Streaming: true},
		{Node: "n3", Role: keyspace.RoleStopped, Host: "127.0.0.1", Port: 5434, Timeline: 1, Problem: "pg_rewind cannot bring this data directory back: re-clone it"},
	} {
		put(layout.Member(m.Node), enc(keyspace.Encode(m)))
	}
	if r := pghactl(t, "--etcd", etcd.Endpoints()[0], "--cluster", "fake", "list"); r.code != 0 || !strings.Contains(r.stdout, "PROBLEM n3: pg_rewind cannot bring this data directory back: re-clone it") {
		t.Errorf("list does not show n3's problem: %v", r)
	}
	pending := func() bool {
		t.Helper()
		resp, err := cli.Get(ctx, layout.Switchover())
		if err != nil {
			t.Fatal(err)
		}
		return len(resp.Kvs) > 0
	}
	base := []string{"--etcd", etcd.Endpoints()[0], "--cluster", "fake"}

	r := pghactl(t, append(base, "switchover", "--to", "n3", "--wait", "500ms")...)
	if r.code != exitFailed || !strings.Contains(r.stdout, "waiting for n3") || !strings.Contains(r.stderr, "n3 is not a healthy standby (role stopped, healthy false) after --wait 500ms") {
		t.Errorf("switchover to a stopped node: %v", r)
	}
	if pending() {
		t.Errorf("a switchover to an unhealthy node was requested")
	}
	r = pghactl(t, append(base, "switchover", "--to", "n2", "--wait", "500ms")...)
	if r.code != exitFailed || !strings.Contains(r.stderr, "the request was withdrawn") {
		t.Errorf("switchover nobody carries out: %v", r)
	}
	if pending() {
		t.Errorf("the timed-out switchover is still pending")
	}
	if _, err := cli.Revoke(ctx, lease.ID); err != nil {
		t.Fatal(err)
	}
	r = pghactl(t, append(base, "failover", "--to", "n2", "--wait", "500ms")...)
	if r.code != exitFailed || !strings.Contains(r.stderr, "the request was withdrawn") {
		t.Errorf("failover nobody carries out: %v", r)
	}
	if pending() {
		t.Errorf("the timed-out failover is still pending")
	}
}

// TestSwitchoverToEveryNode hands leadership to each node in turn, twice
// round. It caught an ha livelock: a switchover target that was not the
// best candidate by (timeline, LSN, priority, name) won the election, then
// resigned in campaign()'s re-check, again and again.
func TestSwitchoverToEveryNode(t *testing.T) {
	c := startCluster(t, 3)
	for i := range 6 {
		st := c.waitHealthy(90*time.Second, 3)
		var to string
		for j, m := range st.Members {
			if m.Leader {
				to = st.Members[(j+1)%len(st.Members)].Node
			}
		}
		c.ctl(t, exitOK, "switchover", "--to", to, "--wait", "20s")
		if st := c.waitHealthy(60*time.Second, 3); st.Leader.Node != to {
			t.Fatalf("switchover %d: leader %s; want %s", i+1, st.Leader.Node, to)
		}
	}
}
