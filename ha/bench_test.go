package ha

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/pgha/pgha/internal/testutil"
)

// firstAckAfter returns how long after since the first write was
// acknowledged by a node other than old, waiting for it. (The old primary
// may still acknowledge writes in flight right after the fault.)
func (w *writer) firstAckAfter(t testing.TB, since time.Time, old string) time.Duration {
	t.Helper()
	var d time.Duration
	testutil.Eventually(t, 60*time.Second, "a write acknowledged by the new primary", func() error {
		w.mu.Lock()
		defer w.mu.Unlock()
		for i, at := range w.ackedAt {
			if at.After(since) && w.ackedBy[i] != old {
				d = at.Sub(since)
				return nil
			}
		}
		return fmt.Errorf("no write acknowledged by a new primary since the fault")
	})
	return d
}

// haScenario measures one thing on a fresh three-node cluster.
type haScenario struct {
	name, target string
	measure      func(b *testing.B, ttl time.Duration) time.Duration
}

var haScenarios = []haScenario{
	{"node loss → first write", "≤ TTL+0.5s", func(b *testing.B, ttl time.Duration) time.Duration {
		c := startCluster(b, clusterOpts{ttl: ttl})
		old := c.waitHealthy(90 * time.Second)
		w := c.startWriter()
		defer w.stop()
		w.waitMore(b, 20, 30*time.Second, "writes before the fault")
		start := time.Now()
		c.stopManager(old, true)
		kill9(b, old)
		return w.firstAckAfter(b, start, old.name)
	}},
	{"PG crash (sync) → first write", "≤ 0.5s", func(b *testing.B, ttl time.Duration) time.Duration {
		c := startCluster(b, clusterOpts{ttl: ttl, syncMode: SyncOn})
		old := c.waitHealthy(90 * time.Second)
		c.waitSyncSet()
		w := c.startWriter()
		defer w.stop()
		w.waitMore(b, 20, 30*time.Second, "writes before the fault")
		start := time.Now()
		kill9(b, old)
		d := w.firstAckAfter(b, start, old.name)
		lead := c.waitHealthy(60*time.Second, old.name)
		w.stop()
		if lost := w.lost(b, lead); len(lost) > 0 {
			b.Fatalf("sync mode lost %d acknowledged writes", len(lost))
		}
		return d
	}},
	{"switchover write pause", "≤ 0.3s, 0 lost", func(b *testing.B, ttl time.Duration) time.Duration {
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
		d := w.maxPause(start)
		lead := c.waitHealthy(60*time.Second, old.name)
		w.stop()
		if lost := w.lost(b, lead); len(lost) > 0 {
			b.Fatalf("switchover lost %d acknowledged writes", len(lost))
		}
		return d
	}},
	{"bootstrap 3 nodes → healthy", "≤ 2s", func(b *testing.B, ttl time.Duration) time.Duration {
		start := time.Now()
		c := startCluster(b, clusterOpts{ttl: ttl})
		c.waitHealthy(90 * time.Second)
		return time.Since(start)
	}},
}

// BenchmarkHA measures failover, switchover and bootstrap on real
// three-node clusters (embedded etcd, three PostgreSQL servers, three
// managers), one fresh cluster per run, for lease TTL 2 s and 5 s, and
// prints a table of medians and maxima. Each run is a sub-benchmark that
// reports its own figure in ms. Run it with one iteration per run:
//
//	go test -run '^$' -bench BenchmarkHA -benchtime 1x ./ha/
//
// PGHA_BENCH_RUNS sets the runs per figure (default 5). The writer in
// these measurements reads the leader record before each write and uses a
// direct pgx connection, not driver.Pool. Bootstrap time includes starting
// the embedded etcd and the fault proxies (about 0.1 s).
func BenchmarkHA(b *testing.B) {
	runs := 5
	if v, err := strconv.Atoi(os.Getenv("PGHA_BENCH_RUNS")); err == nil && v > 0 {
		runs = v
	}
	type row struct {
		name, target string
		ttl          time.Duration
		samples      []time.Duration
	}
	var rows []row
	for _, sc := range haScenarios {
		for _, ttl := range []time.Duration{2 * time.Second, 5 * time.Second} {
			r := row{name: sc.name, target: sc.target, ttl: ttl}
			for i := range runs {
				b.Run(fmt.Sprintf("%s/ttl=%v/run%d", sc.name, ttl, i+1), func(b *testing.B) {
					d := sc.measure(b, ttl)
					r.samples = append(r.samples, d)
					b.ReportMetric(float64(d)/float64(time.Millisecond), "ms")
					b.ReportMetric(0, "ns/op")
				})
			}
			rows = append(rows, r)
		}
	}
	fmt.Printf("\n%-32s %-5s %-5s %-10s %-10s %s\n", "measurement", "TTL", "runs", "median", "max", "target")
	for _, r := range rows {
		if len(r.samples) == 0 {
			continue
		}
		s := slices.Clone(r.samples)
		slices.Sort(s)
		fmt.Printf("%-32s %-5v %-5d %-10v %-10v %s\n", r.name, r.ttl, len(s), s[len(s)/2].Round(time.Millisecond), s[len(s)-1].Round(time.Millisecond), r.target)
	}
}
