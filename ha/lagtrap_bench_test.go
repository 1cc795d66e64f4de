package ha

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// BenchmarkLagTrap measures failover under a write load heavy enough to
// keep standbys behind (issue 16's "lag trap"): asynchronous mode,
// MaxLagOnFailover at its default 1 MiB, TTL 2 s, three nodes; four
// connections insert 50 rows of 2 kB per statement into the leader as fast
// as they can. Each round the leader's node is lost (manager stopped
// without cleanup, postmaster kill -9) after 3 s of load, and the round
// records whether a new primary appeared within 20 s and how fast, the
// standbys' published lag before the loss, and the candidates' last
// decision. The lost node then rejoins. Run it once:
//
//	PGHA_LAGTRAP_ROUNDS=10 go test -run '^$' -bench LagTrap -benchtime 1x ./ha/
func BenchmarkLagTrap(b *testing.B) {
	rounds := 10
	if v := envInt("PGHA_LAGTRAP_ROUNDS"); v > 0 {
		rounds = v
	}
	c := startCluster(b, clusterOpts{})
	lead := c.waitHealthy(90 * time.Second)
	ctx := b.Context()
	conn, err := lead.inst.Connect(ctx)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "CREATE TABLE heavy (id bigserial PRIMARY KEY, pad text)"); err != nil {
		b.Fatal(err)
	}
	conn.Close(ctx)
	type result struct {
		ok        bool
		took      time.Duration
		maxLag    int64
		decisions []string
	}
	var results []result
	for b.Loop() {
		for round := 1; round <= rounds; round++ {
			lead = c.waitHealthy(120 * time.Second)
			var inserted atomic.Int64
			lctx, stopLoad := context.WithCancel(ctx)
			var wg sync.WaitGroup
			for range 4 {
				wg.Go(func() { heavyLoad(lctx, c, &inserted) })
			}
			load := time.NewTimer(3 * time.Second)
			<-load.C
			var maxLag int64
			if st, err := ClusterStatus(ctx, c.cli, "test"); err == nil {
				for _, m := range st.Members {
					if m.Role == RoleReplica {
						maxLag = max(maxLag, m.LagBytes)
					}
				}
			}
			start := time.Now()
			c.stopManager(lead, true)
			kill9(b, lead)
			r := result{maxLag: maxLag}
			deadline := time.Now().Add(20 * time.Second)
			for time.Now().Before(deadline) {
				if lr, err := c.leaderRecord(); err == nil && lr.Node != lead.name && lr.Writable {
					r.ok, r.took = true, time.Since(start)
					break
				}
				sleepCtx(ctx, 20*time.Millisecond)
			}
			for _, n := range c.nodes {
				if n != lead {
					r.decisions = append(r.decisions, n.name+": "+n.mgr.Status().LastAction)
				}
			}
			stopLoad()
			wg.Wait()
			results = append(results, r)
			// The lost node comes back (rejoins, or leads again when no
			// one could take over).
			c.startManager(lead)
		}
		fmt.Printf("\nlag trap: async, MaxLagOnFailover 1 MiB, TTL 2 s, 4 writers × 50 rows × 2 kB per statement; node loss of the leader after 3 s of load\n")
		fmt.Printf("%-6s %-10s %10s %22s  %s\n", "round", "failover", "time", "max standby lag, B", "candidates' last decision")
		okCount := 0
		for i, r := range results {
			state := "NONE"
			if r.ok {
				state = "ok"
				okCount++
			}
			fmt.Printf("%-6d %-10s %10v %22d  %s\n", i+1, state, r.took.Round(10*time.Millisecond), r.maxLag, strings.Join(r.decisions, " | "))
		}
		b.ReportMetric(float64(okCount), "failovers")
		b.ReportMetric(float64(len(results)-okCount), "no-primary")
	}
}

// heavyLoad inserts 50 rows of 2 kB per statement into the current leader
// until ctx ends.
func heavyLoad(ctx context.Context, c *testCluster, inserted *atomic.Int64) {
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	for ctx.Err() == nil {
		if conn == nil {
			lr, err := c.leaderRecord()
			if err != nil || !lr.Writable {
				sleepCtx(ctx, 20*time.Millisecond)
				continue
			}
			cctx, cancel := context.WithTimeout(ctx, time.Second)
			conn, err = c.node(lr.Node).inst.Connect(cctx)
			cancel()
			if err != nil {
				conn = nil
				continue
			}
		}
		if _, err := conn.Exec(ctx, "INSERT INTO heavy (pad) SELECT repeat('x', 2000) FROM generate_series(1, 50)"); err != nil {
			conn.Close(context.Background())
			conn = nil
			continue
		}
		inserted.Add(50)
	}
}
