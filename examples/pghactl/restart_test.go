package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/pgha/pgha/driver"
	"github.com/pgha/pgha/ha"
	"github.com/pgha/pgha/internal/testutil"
)

// poolWriter inserts rows through a driver.Pool (etcd mode) until
// stopped and records every acknowledged id and when it was acknowledged.
type poolWriter struct {
	mu    sync.Mutex
	acked []int64
	at    []time.Time
	errs  []error
	stop  func()
}

func (c *testCluster) startPoolWriter(t *testing.T) *poolWriter {
	t.Helper()
	c.waitHealthy(90*time.Second, 3)
	dsn := c.DSN() + " pgha_failover_timeout=30s"
	ctx, cancel := context.WithCancel(context.Background())
	pool, err := driver.New(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(testutil.Ctx(t, 30*time.Second), "CREATE TABLE IF NOT EXISTS rr (id bigint PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	w := &poolWriter{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for id := int64(1); ctx.Err() == nil; id++ {
			_, err := pool.Exec(ctx, "INSERT INTO rr VALUES ($1)", id)
			w.mu.Lock()
			if err == nil {
				w.acked = append(w.acked, id)
				w.at = append(w.at, time.Now())
			} else if ctx.Err() == nil {
				w.errs = append(w.errs, err)
			}
			w.mu.Unlock()
			t := time.NewTimer(5 * time.Millisecond) // a load's pace
			select {
			case <-ctx.Done():
			case <-t.C:
			}
			t.Stop()
		}
	}()
	w.stop = func() { cancel(); <-done; pool.Close() }
	return w
}

// pauses returns the gaps longer than d between acknowledged writes.
func (w *poolWriter) pauses(d time.Duration) []time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []time.Duration
	for i := 1; i < len(w.at); i++ {
		if g := w.at[i].Sub(w.at[i-1]); g > d {
			out = append(out, g)
		}
	}
	return out
}

// TestRollingRestart: a restart-only parameter changed cluster-wide is
// pending on every node; 'pghactl restart --pending' restarts the
// standbys one at a time and the primary after a switchover, under a
// driver.Pool writer: nothing is pending after, no acknowledged write is
// lost, the writer saw only typed errors, and at most one pause over 200 ms (the
// switchover's).
func TestRollingRestart(t *testing.T) {
	c := startCluster(t, 3)
	st := c.waitHealthy(90*time.Second, 3)
	oldLeader := st.Leader.Node
	w := c.startPoolWriter(t)
	defer w.stop()
	c.ctl(t, exitOK, "edit-config", "--force", "--set", "parameters.shared_buffers=40MB")
	testutil.Eventually(t, 30*time.Second, "shared_buffers pending on every node", func() error {
		st, err := ha.ClusterStatus(context.Background(), c.EtcdClient(), testClusterName)
		if err != nil {
			return err
		}
		for _, m := range st.Members {
			if len(m.PendingRestart) == 0 {
				return fmt.Errorf("%s: nothing pending", m.Node)
			}
		}
		return nil
	})
	start := time.Now()
	r := c.ctl(t, exitOK, "restart", "--pending")
	took := time.Since(start)
	t.Logf("pghactl restart --pending:\n%s", r.stdout)
	st, err := ha.ClusterStatus(context.Background(), c.EtcdClient(), testClusterName)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range st.Members {
		if len(m.PendingRestart) != 0 {
			t.Errorf("%s still pending %v after the rolling restart", m.Node, m.PendingRestart)
		}
	}
	if st.Leader == nil || st.Leader.Node == oldLeader {
		t.Errorf("leader after the rolling restart = %+v; want a switchover away from %s", st.Leader, oldLeader)
	}
	w.stop()
	pauses := w.pauses(200 * time.Millisecond)
	w.mu.Lock()
	acked, errs := append([]int64(nil), w.acked...), w.errs
	w.mu.Unlock()
	t.Logf("rolling restart took %v; %d writes acknowledged, pauses over 200 ms: %v, errors: %d", took.Round(time.Millisecond), len(acked), pauses, len(errs))
	for _, e := range errs {
		t.Logf("writer error: %v", e)
		if !errors.Is(e, driver.ErrFailover) && !errors.Is(e, driver.ErrOutcomeUnknown) && !errors.Is(e, driver.ErrNoPrimary) {
			t.Errorf("untyped writer error: %v", e)
		}
	}
	if len(pauses) > 1 {
		t.Errorf("%d write pauses over 200 ms (%v); want at most one (the switchover's)", len(pauses), pauses)
	}
	conn, err := c.Instance(st.Leader.Node).Connect(testutil.Ctx(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	have := map[int64]bool{}
	rows, err := conn.Query(context.Background(), "SELECT id FROM rr")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id int64
		rows.Scan(&id)
		have[id] = true
	}
	rows.Close()
	var lost []int64
	for _, id := range acked {
		if !have[id] {
			lost = append(lost, id)
		}
	}
	if len(lost) > 0 {
		t.Fatalf("%d acknowledged writes lost: %v", len(lost), lost[:min(10, len(lost))])
	}
}
