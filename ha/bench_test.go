package ha

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/pgha/pgha/internal/testutil"
)

// firstAckAfter returns how long after since the first write was
// acknowledged, waiting for it.
func (w *writer) firstAckAfter(t testing.TB, since time.Time) time.Duration {
	t.Helper()
	var d time.Duration
	testutil.Eventually(t, 60*time.Second, "a write acknowledged after the fault", func() error {
		w.mu.Lock()
		defer w.mu.Unlock()
		for _, at := range w.ackedAt {
			if at.After(since) {
				d = at.Sub(since)
				return nil
			}
		}
		return fmt.Errorf("no write acknowledged since the fault")
	})
	return d
}

func report(b *testing.B, samples []time.Duration) {
	slices.Sort(samples)
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(ms(samples[len(samples)/2]), "median-ms")
	b.ReportMetric(ms(samples[len(samples)-1]), "max-ms")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkHA measures, on real three-node clusters (one per run), for
// lease TTL 2 s and 5 s:
//   - node-loss: primary's manager abandoned and postmaster killed → first
//     write acknowledged by the new primary (target ≤ TTL + 0.5 s);
//   - pg-crash-sync: kill -9 of the primary's postmaster in synchronous mode
//     → first write on the new primary (target ≤ 0.5 s);
//   - switchover-pause: longest gap between acknowledged writes across a
//     planned switchover (target ≤ 0.3 s, zero loss: checked);
//   - bootstrap: three empty data directories → writable primary with two
//     streaming standbys (target ≤ 2 s).
//
// Run: go test -run '^$' -bench BenchmarkHA -benchtime 5x ./ha/
func BenchmarkHA(b *testing.B) {
	for _, ttl := range []time.Duration{2 * time.Second, 5 * time.Second} {
		b.Run(fmt.Sprintf("node-loss/ttl=%v", ttl), func(b *testing.B) {
			var s []time.Duration
			for range b.N {
				b.Run("run", func(b *testing.B) {
					c := startCluster(b, clusterOpts{ttl: ttl})
					old := c.waitHealthy(90 * time.Second)
					w := c.startWriter()
					defer w.stop()
					w.waitMore(b, 20, 30*time.Second, "writes before the fault")
					start := time.Now()
					c.stopManager(old, true)
					kill9(b, old)
					s = append(s, w.firstAckAfter(b, start))
				})
			}
			report(b, s)
		})
		b.Run(fmt.Sprintf("pg-crash-sync/ttl=%v", ttl), func(b *testing.B) {
			var s []time.Duration
			for range b.N {
				b.Run("run", func(b *testing.B) {
					c := startCluster(b, clusterOpts{ttl: ttl, syncMode: SyncOn})
					old := c.waitHealthy(90 * time.Second)
					w := c.startWriter()
					defer w.stop()
					w.waitMore(b, 20, 30*time.Second, "writes before the fault")
					start := time.Now()
					kill9(b, old)
					s = append(s, w.firstAckAfter(b, start))
				})
			}
			report(b, s)
		})
		b.Run(fmt.Sprintf("switchover-pause/ttl=%v", ttl), func(b *testing.B) {
			var s []time.Duration
			for range b.N {
				b.Run("run", func(b *testing.B) {
					c := startCluster(b, clusterOpts{ttl: ttl})
					old := c.waitHealthy(90 * time.Second)
					w := c.startWriter()
					defer w.stop()
					w.waitMore(b, 50, 30*time.Second, "writes before the switchover")
					start := time.Now()
					if _, err := Switchover(testutil.Ctx(b, 30*time.Second), c.cli, "test", ""); err != nil {
						b.Fatal(err)
					}
					w.waitMore(b, 50, 30*time.Second, "writes after the switchover")
					s = append(s, w.maxPause(start))
					lead := c.waitHealthy(60*time.Second, old.name)
					w.stop()
					if lost := w.lost(b, lead); len(lost) > 0 {
						b.Fatalf("switchover lost %d acknowledged writes", len(lost))
					}
				})
			}
			report(b, s)
		})
		b.Run(fmt.Sprintf("bootstrap/ttl=%v", ttl), func(b *testing.B) {
			var s []time.Duration
			for range b.N {
				b.Run("run", func(b *testing.B) {
					start := time.Now()
					c := startCluster(b, clusterOpts{ttl: ttl})
					c.waitHealthy(90 * time.Second)
					s = append(s, time.Since(start))
				})
			}
			report(b, s)
		})
	}
}
