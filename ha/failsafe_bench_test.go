package ha

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"
)

// BenchmarkFailsafe measures failsafe mode's cost and its recovery: two
// three-node clusters (TTL 2 s, asynchronous, three etcd members), one
// with Failsafe on and one with it off. On each, one connection inserts
// rows into the leader back to back: PGHA_FAILSAFE_STEADY seconds (default
// 10) with etcd healthy (the write path's cost: failsafe adds nothing to
// it by design, so on and off should match within noise), then
// PGHA_FAILSAFE_OUTAGE seconds (default 20) with the etcd quorum lost,
// then etcd back. It prints per phase the inserts, p50 and p99 latency,
// the longest gap between two acknowledged inserts and the failed
// attempts (paced 20 ms apart; the first one's time says when writes
// stopped), and the time from etcd's return until the
// same term renewed its lease (on) or a node accepts writes again (off).
// Run it once:
//
//	go test -run '^$' -bench Failsafe -benchtime 1x ./ha/
func BenchmarkFailsafe(b *testing.B) {
	steady, outage := 10*time.Second, 20*time.Second
	if v := envInt("PGHA_FAILSAFE_STEADY"); v > 0 {
		steady = time.Duration(v) * time.Second
	}
	if v := envInt("PGHA_FAILSAFE_OUTAGE"); v > 0 {
		outage = time.Duration(v) * time.Second
	}
	for b.Loop() {
		for _, on := range []bool{false, true} {
			c, _ := failsafeCluster(b, on, 3)
			lead := c.waitHealthy(90 * time.Second)
			if on {
				waitFailsafeRecord(b, c, lead.name, 3)
			}
			ctx := b.Context()
			conn, err := lead.inst.Connect(ctx)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := conn.Exec(ctx, "CREATE TABLE IF NOT EXISTS bench (id bigserial PRIMARY KEY, at timestamptz DEFAULT now())"); err != nil {
				b.Fatal(err)
			}
			phase := func(name string, d time.Duration) {
				var lat []time.Duration
				var gap time.Duration
				last := time.Now()
				end := time.Now().Add(d)
				errs := 0
				start := time.Now()
				var firstErr time.Duration
				for time.Now().Before(end) {
					s := time.Now()
					ictx, cancel := context.WithTimeout(ctx, 2*time.Second)
					_, err := conn.Exec(ictx, "INSERT INTO bench DEFAULT VALUES")
					cancel()
					if err != nil {
						if errs == 0 {
							firstErr = time.Since(start)
						}
						errs++
						// Reconnect, paced: the fenced server refuses.
						sleepCtx(ctx, 20*time.Millisecond)
						if conn.IsClosed() {
							cctx, cancel := context.WithTimeout(ctx, time.Second)
							if nc, err := lead.inst.Connect(cctx); err == nil {
								conn = nc
							}
							cancel()
						}
						continue
					}
					now := time.Now()
					lat = append(lat, now.Sub(s))
					gap = max(gap, now.Sub(last))
					last = now
				}
				slices.Sort(lat)
				pct := func(p float64) time.Duration {
					if len(lat) == 0 {
						return 0
					}
					return lat[min(len(lat)-1, int(float64(len(lat))*p))]
				}
				fmt.Printf("failsafe=%-5v %-8s %6d inserts  p50 %7.3f ms  p99 %7.3f ms  longest gap %7.1f ms  failed attempts %d (first at +%v)\n",
					on, name, len(lat), ms(pct(0.5)), ms(pct(0.99)), ms(gap), errs, firstErr.Round(time.Millisecond))
				if name == "steady" {
					b.ReportMetric(ms(pct(0.5)), fmt.Sprintf("p50-ms-failsafe-%v", on))
				}
				if name == "outage" && on {
					b.ReportMetric(ms(gap), "outage-gap-ms")
				}
			}
			phase("steady", steady)
			restore := stopEtcdQuorum(b, c)
			phase("outage", outage)
			restore()
			back := time.Now()
			deadline := time.Now().Add(60 * time.Second)
			renewed := time.Duration(-1)
			for time.Now().Before(deadline) {
				if on {
					if term := lead.mgr.currentTerm(); term != nil && !lead.mgr.failsafeActive() && time.Until(term.ValidUntil()) > c.opts.ttl/2 {
						renewed = time.Since(back)
						break
					}
				} else if slices.ContainsFunc(c.nodes, writable) {
					// The leader record may still name the fenced primary
					// (its lease outlived the outage): ask the servers.
					renewed = time.Since(back)
					break
				}
				sleepCtx(ctx, 5*time.Millisecond)
			}
			if on {
				fmt.Printf("failsafe=true  the same term renewed its lease %v after etcd's quorum was back (-1: not within 60 s)\n", renewed.Round(time.Millisecond))
				b.ReportMetric(ms(renewed), "renewed-after-return-ms")
				phase("after", steady)
			} else {
				fmt.Printf("failsafe=false a node accepts writes again %v after etcd's quorum was back (-1: not within 60 s)\n", renewed.Round(time.Millisecond))
			}
			conn.Close(ctx)
			c.stop()
		}
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
