package ha

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pgha/pgha/internal/testutil"
	"github.com/pgha/pgha/replicate"
)

// errStop marks a Poll condition that failed for good.
var errStop = errors.New("failed")

// TestEtcdUnreachableAtStart starts a manager while its etcd is stopped:
// Run keeps going (it neither returns nor starts PostgreSQL as a primary
// without a leader key) and, once etcd is back, the node bootstraps the
// cluster and leads with a writable PostgreSQL.
func TestEtcdUnreachableAtStart(t *testing.T) {
	etcd := testutil.StartEtcd(t, 1)
	c := &testCluster{t: t, etcd: etcd, opts: clusterOpts{n: 1, ttl: 2 * time.Second}}
	cfg := testutil.PostgresConfig(t, "n1")
	inst, err := replicate.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	testutil.StopPostgresAtCleanup(t, inst)
	px := testutil.StartProxy(t, "n1-etcd", strings.TrimPrefix(etcd.Endpoints()[0], "http://"))
	n := &testNode{name: "n1", inst: inst, proxy: px}
	c.nodes = []*testNode{n}

	etcd.Stop(0)
	c.startManager(n)
	t.Cleanup(c.stop)

	// While etcd is down, the manager runs on and PostgreSQL stays
	// uninitialized: nothing is decided without the cluster view. This is
	// an observation window, not a synchronisation: 150 polls of 20 ms,
	// more than a lease TTL and 15 loop intervals.
	polls := 0
	err = testutil.Poll(time.Minute, func() error {
		select {
		case err := <-n.done:
			return fmt.Errorf("%w: Run returned %v while etcd was down", errStop, err)
		default:
		}
		if inst.Initialized() {
			return fmt.Errorf("%w: PostgreSQL was initialized without etcd", errStop)
		}
		if polls++; polls < 150 {
			return errors.New("still observing")
		}
		return nil
	})
	if errors.Is(err, errStop) || err != nil {
		t.Fatal(err)
	}

	c.cli = nil
	etcd.Restart(0)
	c.cli = etcd.Client(t)
	testutil.Eventually(t, 90*time.Second, "n1 leads once etcd is back", func() error {
		select {
		case err := <-n.done:
			return fmt.Errorf("Run returned %v", err)
		default:
		}
		rec, err := c.leaderRecord()
		switch {
		case err != nil:
			return err
		case rec == nil:
			return errors.New("no leader yet")
		case rec.Node != "n1" || !rec.Writable:
			return fmt.Errorf("leader record %+v; want n1, writable", rec)
		}
		if !writable(n) {
			return errors.New("n1's PostgreSQL does not accept writes yet")
		}
		return nil
	})
}
