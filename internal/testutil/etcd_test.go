package testutil_test

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/pgha/pgha/internal/testutil"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func TestStartEtcdSingle(t *testing.T) {
	c := testutil.StartEtcd(t, 1)
	cli := c.Client(t)
	ctx := testutil.Ctx(t, 10*time.Second)
	if _, err := cli.Put(ctx, "k", "v"); err != nil {
		t.Fatalf("put: %v", err)
	}
	resp, err := cli.Get(ctx, "k")
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v" {
		t.Fatalf("get k = %v, %v; want v", resp, err)
	}
}

// TestEtcdThreeMembersLoseQuorum stops two of three members: writes must
// fail; restarting one restores the quorum and writes succeed again.
func TestEtcdThreeMembersLoseQuorum(t *testing.T) {
	c := testutil.StartEtcd(t, 3)
	cli := c.Client(t)
	put := func(d time.Duration) error {
		ctx, cancel := clientv3.WithRequireLeader(testutil.Ctx(t, d)), func() {}
		defer cancel()
		_, err := cli.Put(ctx, "k", "v")
		return err
	}
	if err := put(10 * time.Second); err != nil {
		t.Fatalf("put with 3 members: %v", err)
	}
	leader := c.WaitLeader(t, 10*time.Second)
	c.Stop(leader)
	testutil.Eventually(t, 15*time.Second, "put after the etcd leader stopped", func() error { return put(2 * time.Second) })

	other := (leader + 1) % 3
	c.Stop(other)
	if err := put(2 * time.Second); err == nil {
		t.Fatalf("put succeeded with 1 of 3 members running; want an error")
	}
	done := c.RestartAsync(leader)
	testutil.Eventually(t, 20*time.Second, "put after the quorum is back", func() error { return put(2 * time.Second) })
	if err := <-done; err != nil {
		t.Fatalf("restart member %d: %v", leader, err)
	}
	c.Restart(other)
	if !c.Running(other) || !c.Running(leader) {
		t.Fatalf("members not running after restart")
	}
}

func TestProxyModes(t *testing.T) {
	// An echo server upstream.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	p := testutil.StartProxy(t, "echo", l.Addr().String())

	roundTrip := func(timeout time.Duration) (time.Duration, error) {
		c, err := net.DialTimeout("tcp", p.Addr(), time.Second)
		if err != nil {
			return 0, err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(timeout))
		start := time.Now()
		if _, err := c.Write([]byte("ping")); err != nil {
			return 0, err
		}
		buf := make([]byte, 4)
		if _, err := io.ReadFull(c, buf); err != nil {
			return 0, err
		}
		if string(buf) != "ping" {
			return 0, fmt.Errorf("echo returned %q", buf)
		}
		return time.Since(start), nil
	}

	if _, err := roundTrip(2 * time.Second); err != nil {
		t.Fatalf("pass: %v", err)
	}
	p.Blackhole()
	_, err = roundTrip(300 * time.Millisecond)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("blackhole: round trip err = %v; want a timeout (bytes vanish, connection stays open)", err)
	}
	p.Reset()
	if _, err := roundTrip(2 * time.Second); err == nil || (errors.As(err, &ne) && ne.Timeout()) {
		t.Fatalf("reset: round trip err = %v; want a connection reset/EOF, not success or timeout", err)
	}
	p.Latency(200)
	d, err := roundTrip(3 * time.Second)
	if err != nil || d < 200*time.Millisecond {
		t.Fatalf("latency 200ms: round trip %v, err %v; want ≥ 200ms", d, err)
	}
	p.Pass()
	if _, err := roundTrip(2 * time.Second); err != nil {
		t.Fatalf("pass after faults: %v", err)
	}
}

// TestEtcdKillKeepsLeases: Kill stops members like a crash, so a lease
// cannot expire while the cluster is down: after a restart it is still
// there, with its TTL restarted by the new Raft leader.
func TestEtcdKillKeepsLeases(t *testing.T) {
	c := testutil.StartEtcd(t, 3)
	cli := c.Client(t)
	ctx := testutil.Ctx(t, time.Minute)
	g, err := cli.Grant(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	// All at once, as a whole-cluster outage: a graceful stop would keep
	// a quorum (and expire the lease) for seconds while the others stop.
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Go(func() { c.Kill(i) })
	}
	wg.Wait()
	down := time.NewTimer(3 * time.Second) // the outage outlasts the TTL
	<-down.C
	var chans []<-chan error
	for i := range 3 {
		chans = append(chans, c.RestartAsync(i))
	}
	for _, ch := range chans {
		if err := <-ch; err != nil {
			t.Fatal(err)
		}
	}
	ttl, err := cli.TimeToLive(ctx, g.ID)
	if err != nil {
		t.Fatal(err)
	}
	if ttl.TTL <= 0 {
		t.Fatalf("lease TTL %d after the outage; want it kept (etcd expired it while stopping)", ttl.TTL)
	}
}
