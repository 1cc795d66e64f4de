package ha

import (
	"context"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgha/pgha/internal/testutil"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// TestIdleClusterIsIdle leaves a healthy three-node cluster alone for a
// fixed number of loop intervals and counts, without timing anything:
// loop iterations per node (the manager's own loop metric), writes to the
// cluster's etcd keys (a watch, by key), and new PostgreSQL logins on
// every node (pg_stat_database.sessions, read over one connection opened
// before the window). A loop that wakes itself (every member-record write
// waking every node's loop) or a status query that logs in every round
// fails it.
func TestIdleClusterIsIdle(t *testing.T) {
	for _, mode := range []SyncMode{SyncOff, SyncOn} {
		t.Run(string(mode), func(t *testing.T) {
			c := startCluster(t, clusterOpts{syncMode: mode, telemetry: true})
			c.waitHealthy(60 * time.Second)
			if mode != SyncOff {
				c.waitSyncSet()
			}
			// Settled: every loop decides to carry on as it is.
			testutil.Eventually(t, 30*time.Second, "every node in its steady decision", func() error {
				for _, n := range c.nodes {
					a := n.mgr.Status().LastAction
					if !strings.HasPrefix(a, "lead: ") && !strings.HasPrefix(a, "wait: streaming from leader") {
						return fmt.Errorf("%s: %q", n.name, a)
					}
				}
				return nil
			})
			ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
			defer cancel()
			var dbs []*pgx.Conn
			for _, n := range c.nodes {
				conn, err := n.inst.Connect(ctx)
				if err != nil {
					t.Fatalf("connect to %s: %v", n.name, err)
				}
				defer conn.Close(context.Background())
				dbs = append(dbs, conn)
			}
			sessions := func() []int64 {
				var out []int64
				for i, db := range dbs {
					var s int64
					if err := db.QueryRow(ctx, "SELECT sum(sessions)::bigint FROM pg_stat_database").Scan(&s); err != nil {
						t.Fatalf("%s: pg_stat_database: %v", c.nodes[i].name, err)
					}
					out = append(out, s)
				}
				return out
			}

			const intervals = 25
			loopEvery := c.nodes[0].mgr.cfg.LoopInterval
			beat := heartbeat(c.nodes[0].mgr.cfg)
			loops0 := c.loopCounts(t)
			logins0 := sessions()
			writes := c.watchWrites(ctx, t)
			window := time.NewTimer(intervals * loopEvery)
			<-window.C
			loops1 := c.loopCounts(t)
			logins1 := sessions()
			perKey := writes()

			// 1 + ε iterations per interval, ε = 20 %, plus one for an
			// interval cut by the window's edges.
			maxLoops := int64(math.Ceil(intervals*1.2)) + 1
			// One heartbeat per member per heartbeat period, plus one for
			// the window's edges.
			maxWrites := int(intervals*loopEvery/beat) + 1
			for i, n := range c.nodes {
				if d := loops1[i] - loops0[i]; d > maxLoops {
					t.Errorf("%s ran %d loop iterations in %d loop intervals, want at most %d", n.name, d, intervals, maxLoops)
				}
				if d := logins1[i] - logins0[i]; d != 0 {
					t.Errorf("%s: %d new PostgreSQL sessions in %d idle loop intervals, want 0", n.name, d, intervals)
				}
				key := c.nodes[0].mgr.layout.Member(n.name)
				if w := perKey[key]; w > maxWrites {
					t.Errorf("%s's member record was written %d times in %d loop intervals (heartbeat %v), want at most %d", n.name, w, intervals, beat, maxWrites)
				}
				delete(perKey, key)
			}
			for k, w := range perKey {
				t.Errorf("%s was written %d times in an idle cluster, want 0", k, w)
			}
			t.Logf("%d loop intervals of %v: loop iterations %v → %v, sessions %v → %v", intervals, loopEvery, loops0, loops1, logins0, logins1)
		})
	}
}

// loopCounts returns each node's loop iterations so far, from the
// pgha.ha.loop.duration histogram.
func (c *testCluster) loopCounts(t *testing.T) []int64 {
	t.Helper()
	var out []int64
	for _, n := range c.nodes {
		var rm metricdata.ResourceMetrics
		if err := n.reader.Collect(context.Background(), &rm); err != nil {
			t.Fatal(err)
		}
		var count uint64
		for _, sm := range rm.ScopeMetrics {
			for _, m := range sm.Metrics {
				if h, ok := m.Data.(metricdata.Histogram[float64]); ok && m.Name == "pgha.ha.loop.duration" {
					for _, dp := range h.DataPoints {
						count += dp.Count
					}
				}
			}
		}
		out = append(out, int64(count))
	}
	return out
}

// watchWrites counts writes to the cluster's keys from now on; the
// returned func stops counting and returns the writes per key, up to the
// etcd revision current when it is called.
func (c *testCluster) watchWrites(ctx context.Context, t *testing.T) func() map[string]int {
	t.Helper()
	pfx := c.nodes[0].mgr.layout.Prefix()
	resp, err := c.cli.Get(ctx, pfx, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	var mu sync.Mutex
	seen := int64(0)
	type write struct {
		key string
		rev int64
	}
	var writes []write
	done := make(chan struct{})
	wch := c.cli.Watch(wctx, pfx, clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1))
	go func() {
		defer close(done)
		for wr := range wch {
			mu.Lock()
			for _, ev := range wr.Events {
				writes = append(writes, write{string(ev.Kv.Key), ev.Kv.ModRevision})
			}
			seen = max(seen, wr.Header.Revision)
			mu.Unlock()
		}
	}()
	return func() map[string]int {
		end, err := c.cli.Get(ctx, pfx, clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			t.Fatal(err)
		}
		// Every write up to end has arrived once the watch reports a
		// revision at or past it (a progress notification if nothing
		// was written since).
		testutil.Eventually(t, 10*time.Second, "the watch to reach the closing revision", func() error {
			mu.Lock()
			s := seen
			mu.Unlock()
			if s >= end.Header.Revision {
				return nil
			}
			c.cli.RequestProgress(wctx)
			return fmt.Errorf("watch at revision %d, want %d", s, end.Header.Revision)
		})
		cancel()
		<-done
		out := map[string]int{}
		for _, w := range writes {
			if w.rev <= end.Header.Revision {
				out[w.key]++
			}
		}
		return out
	}
}
