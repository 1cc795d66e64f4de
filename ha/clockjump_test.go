package ha

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/pgha/pgha/internal/keyspace"
	"github.com/pgha/pgha/internal/testutil"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestWallClockSteps steps the machine's wall clock ten minutes forward,
// then ten minutes back, under a leader with a writer, as an NTP step or
// a wrong date -s would on a node. Every lease deadline is measured on the
// monotonic clock, so neither step may end the term, fence the primary or
// cause a failover: the same term (leader key create revision) and the
// same postmaster must serve writes throughout, with no write lost. A
// deadline computed from wall time would fence at once on the forward
// step (ten minutes past ValidUntil) or lead ten minutes too long on the
// backward one.
func TestWallClockSteps(t *testing.T) {
	clock := testutil.StepWallClock(t)
	c := startCluster(t, clusterOpts{ttl: 5 * time.Second})
	c.sample()
	lead := c.waitHealthy(90 * time.Second)
	w := c.startWriter()
	defer w.stop()
	w.waitMore(t, 20, 30*time.Second, "writes before the steps")

	layout, _ := keyspace.NewLayout("", "test")
	token := func() (int64, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		resp, err := c.cli.Get(ctx, layout.Leader()+"/", clientv3.WithPrefix())
		if err != nil {
			return 0, err
		}
		if len(resp.Kvs) != 1 {
			return 0, fmt.Errorf("%d leader keys", len(resp.Kvs))
		}
		return resp.Kvs[0].CreateRevision, nil
	}
	tok, err := token()
	if err != nil {
		t.Fatal(err)
	}
	pid := lead.inst.PID()
	// hold watches the cluster for two lease TTLs after a step: the term
	// and the postmaster must stay, and writes must go on.
	hold := func(step string) {
		t.Helper()
		start, acked := time.Now(), w.ackedCount()
		err := testutil.Poll(30*time.Second, func() error {
			if got, err := token(); err == nil && got != tok {
				t.Fatalf("after the %s step: leader key create revision %d, was %d: the term ended", step, got, tok)
			}
			if got := lead.inst.PID(); got != pid {
				t.Fatalf("after the %s step: %s's postmaster is %d, was %d: it was fenced or restarted", step, lead.name, got, pid)
			}
			if since := time.Since(start); since < 2*c.opts.ttl {
				return fmt.Errorf("held %v", since)
			}
			if n := w.ackedCount() - acked; n < 20 {
				return fmt.Errorf("%d writes acknowledged since the step", n)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("after the %s step: %v", step, err)
		}
		t.Logf("%s step: same term %d, same postmaster %d, %d writes acknowledged in %v", step, tok, pid, w.ackedCount()-acked, time.Since(start).Round(time.Millisecond))
	}
	clock.Jump(10 * time.Minute)
	hold("forward")
	clock.Jump(-10 * time.Minute)
	hold("backward")
	clock.Restore()

	w.stop()
	if lost := w.lost(t, lead); len(lost) > 0 {
		t.Fatalf("%d acknowledged writes lost: %v", len(lost), lost)
	}
	if lr, err := c.leaderRecord(); err != nil || lr.Node != lead.name {
		t.Fatalf("leader after the steps = %+v, %v; want %s", lr, err, lead.name)
	}
}
