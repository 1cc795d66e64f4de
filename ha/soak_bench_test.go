package ha

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgha/pgha/driver"
	"github.com/pgha/pgha/internal/testutil"
)

// soakSample is one row of BenchmarkSoak's table.
type soakSample struct {
	at         time.Duration
	faults     int
	goroutines int
	heapInuse  uint64 // bytes, after a GC
	fds        int    // open file descriptors of the process
	poolTotal  int32  // the pool's connections (all nodes)
	poolIdle   int32
	pgBackends []int // client backends per node (pg_stat_activity), the sampler's own excluded
	leases     int   // etcd leases
	writesOK   int64
	writesErr  int64
}

var soakOnce sync.Once

// BenchmarkSoak runs a three-node cluster and a driver.Pool under a steady
// write load, with a fault every PGHA_SOAK_FAULT_EVERY (default 30s),
// alternating a planned switchover and the loss of the primary's node (its
// manager abandoned, its postmaster killed with -9, the manager restarted
// once a new leader writes). Every PGHA_SOAK_SAMPLE (default 10s) it prints
// the process's goroutines, heap in use after a GC and open file
// descriptors, the pool's connections, the client backends on each node
// and the etcd leases. It runs for PGHA_SOAK_DURATION (default 2m), then
// compares the first sample after the first fault (everything warmed up)
// with the last, and fails if goroutines grew by more than 20% + 20, heap
// by more than 50% + 16 MiB, file descriptors by more than 20, or any
// count of connections or leases exceeds its bound. The managers, the pool
// and etcd run in this one process: the goroutine, heap and fd figures are
// theirs together. Run it once:
//
//	PGHA_SOAK_DURATION=10m go test -run '^$' -bench BenchmarkSoak -benchtime 1x -timeout 60m ./ha/
//
// The managers' logs go to a file whose path the benchmark prints. The
// embedded etcd is never compacted here, so its revision history (every
// member record update) adds to the heap over time.
func BenchmarkSoak(b *testing.B) {
	ran := false
	soakOnce.Do(func() { ran = true; runSoak(b) })
	if !ran {
		b.Skip("BenchmarkSoak runs once per process")
	}
}

func envDuration(b *testing.B, name string, def time.Duration) time.Duration {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		b.Fatalf("%s=%q: want a positive duration such as 10m", name, v)
	}
	return d
}

func runSoak(b *testing.B) {
	duration := envDuration(b, "PGHA_SOAK_DURATION", 2*time.Minute)
	faultEvery := envDuration(b, "PGHA_SOAK_FAULT_EVERY", 30*time.Second)
	sampleEvery := envDuration(b, "PGHA_SOAK_SAMPLE", 10*time.Second)
	logPath := filepath.Join(os.TempDir(), fmt.Sprintf("pgha-soak-%d.log", time.Now().Unix()))
	logFile, err := os.Create(logPath)
	if err != nil {
		b.Fatal(err)
	}
	defer logFile.Close()
	logger := slog.New(slog.NewTextHandler(logFile, &slog.HandlerOptions{Level: slog.LevelInfo}))
	fmt.Printf("soak: %v, a fault every %v, a sample every %v; logs in %s\n", duration, faultEvery, sampleEvery, logPath)

	var mgrMu sync.Mutex // orders manager restarts with the sampler
	c := startCluster(b, clusterOpts{ttl: 5 * time.Second, configure: func(node string, cfg *Config) {
		cfg.Logger = logger.With("component", "ha")
	}})
	c.waitHealthy(180 * time.Second)

	// The pool and its steady load: 4 writers, one insert each every 20 ms.
	pcfg, err := driver.ParseConfig(fmt.Sprintf("user=postgres password=%s dbname=postgres pgha_etcd=%s pgha_cluster=test pgha_failover_timeout=30s pool_max_conns=8 connect_timeout=2",
		testutil.PostgresSuperuserPassword, c.etcd.Endpoints()[0]))
	if err != nil {
		b.Fatal(err)
	}
	pcfg.Logger = logger.With("component", "driver")
	pool, err := driver.NewWithConfig(testutil.Ctx(b, 30*time.Second), pcfg)
	if err != nil {
		b.Fatal(err)
	}
	defer pool.Close()
	if _, err := pool.Exec(testutil.Ctx(b, 30*time.Second), "CREATE TABLE IF NOT EXISTS soak (id bigserial PRIMARY KEY, at timestamptz DEFAULT now())"); err != nil {
		b.Fatal(err)
	}
	var ok, failed atomic.Int64
	lctx, stopLoad := context.WithCancel(context.Background())
	var load sync.WaitGroup
	for range 4 {
		load.Go(func() {
			tick := time.NewTicker(20 * time.Millisecond)
			defer tick.Stop()
			for {
				ctx, cancel := context.WithTimeout(lctx, 10*time.Second)
				_, err := pool.Exec(ctx, "INSERT INTO soak DEFAULT VALUES")
				cancel()
				if lctx.Err() != nil {
					return
				}
				if err != nil {
					failed.Add(1)
				} else {
					ok.Add(1)
				}
				select {
				case <-lctx.Done():
					return
				case <-tick.C:
				}
			}
		})
	}
	defer func() { stopLoad(); load.Wait() }()

	start := time.Now()
	var faults atomic.Int64
	sample := func() soakSample {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		fds, _ := os.ReadDir("/proc/self/fd")
		st := pool.Stat()
		s := soakSample{at: time.Since(start), faults: int(faults.Load()), goroutines: runtime.NumGoroutine(),
			heapInuse: ms.HeapInuse, fds: len(fds), poolTotal: st.TotalConns(), poolIdle: st.IdleConns(),
			writesOK: ok.Load(), writesErr: failed.Load()}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		for _, n := range c.nodes {
			count := -1
			if conn, err := n.inst.Connect(ctx); err == nil {
				conn.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()").Scan(&count)
				conn.Close(ctx)
			}
			s.pgBackends = append(s.pgBackends, count)
		}
		if resp, err := c.cli.Leases(ctx); err == nil {
			s.leases = len(resp.Leases)
		}
		return s
	}
	header := fmt.Sprintf("%8s %6s %10s %9s %5s %9s %14s %6s %9s %6s", "t", "faults", "goroutines", "heap MiB", "fds", "pool t/i", "backends n1-3", "leases", "writes", "errs")
	row := func(s soakSample) string {
		return fmt.Sprintf("%8v %6d %10d %9.1f %5d %9s %14s %6d %9d %6d", s.at.Round(time.Second), s.faults, s.goroutines,
			float64(s.heapInuse)/(1<<20), s.fds, fmt.Sprintf("%d/%d", s.poolTotal, s.poolIdle),
			strings.Trim(fmt.Sprint(s.pgBackends), "[]"), s.leases, s.writesOK, s.writesErr)
	}
	var samples []soakSample
	var baseline *soakSample
	fmt.Println(header)
	take := func() {
		mgrMu.Lock()
		s := sample()
		mgrMu.Unlock()
		samples = append(samples, s)
		if baseline == nil && s.faults >= 1 {
			baseline = &samples[len(samples)-1]
		}
		fmt.Println(row(s))
	}
	take()
	// A fault the cluster does not recover from fails the run (through
	// Fatal): print the figures gathered until then anyway.
	defer func() {
		if b.Failed() && len(samples) > 0 {
			fmt.Printf("\nFAILED after %v; samples until then:\n%s\n", time.Since(start).Round(time.Second), header)
			for _, s := range []soakSample{samples[0], samples[len(samples)-1]} {
				fmt.Println(row(s))
			}
		}
	}()

	nextFault := time.Now().Add(faultEvery)
	nextSample := time.Now().Add(sampleEvery)
	for time.Since(start) < duration {
		now := time.Now()
		switch {
		case !now.Before(nextFault):
			lead := c.waitHealthy(180 * time.Second)
			if faults.Load()%2 == 0 {
				ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
				to, err := Switchover(ctx, c.cli, "test", "")
				cancel()
				if err != nil {
					b.Fatalf("fault %d: switchover from %s: %v (logs: %s)", faults.Load()+1, lead.name, err, logPath)
				}
				logger.Info("soak: switchover done", "from", lead.name, "to", to)
			} else {
				mgrMu.Lock()
				c.stopManager(lead, true)
				mgrMu.Unlock()
				if lead.inst.PID() > 0 { // a late renewal may have fenced it already
					kill9(b, lead)
				}
				c.waitNewLeader(lead.name, 60*time.Second, "a new leader after the node loss")
				mgrMu.Lock()
				c.startManager(lead)
				mgrMu.Unlock()
				logger.Info("soak: node loss survived", "lost", lead.name)
			}
			faults.Add(1)
			c.waitHealthy(180 * time.Second)
			nextFault = time.Now().Add(faultEvery)
		case !now.Before(nextSample):
			take()
			nextSample = nextSample.Add(sampleEvery)
		default:
			sleepCtx(b.Context(), min(time.Until(nextFault), time.Until(nextSample))) // the schedule's pace
		}
	}
	take()
	last := samples[len(samples)-1]
	if baseline == nil {
		b.Fatalf("no sample after the first fault: run longer than PGHA_SOAK_FAULT_EVERY (%v)", faultEvery)
	}
	first := *baseline
	fmt.Printf("\nfirst sample after the first fault vs last (%d faults, %d writes acknowledged, %d failed):\n%s\n%s\n%s\n",
		last.faults, last.writesOK, last.writesErr, header, row(first), row(last))
	var maxG, maxFD int
	var maxHeap uint64
	for _, s := range samples {
		maxG, maxFD, maxHeap = max(maxG, s.goroutines), max(maxFD, s.fds), max(maxHeap, s.heapInuse)
	}
	fmt.Printf("max over the run: goroutines %d, heap %.1f MiB, fds %d\n", maxG, float64(maxHeap)/(1<<20), maxFD)
	if g := last.goroutines; g > first.goroutines+first.goroutines/5+20 {
		b.Errorf("goroutines grew from %d to %d (bound +20%% + 20)", first.goroutines, g)
	}
	if h := last.heapInuse; h > first.heapInuse+first.heapInuse/2+16<<20 {
		b.Errorf("heap in use grew from %.1f to %.1f MiB (bound +50%% + 16 MiB)", float64(first.heapInuse)/(1<<20), float64(h)/(1<<20))
	}
	if f := last.fds; f > first.fds+20 {
		b.Errorf("open file descriptors grew from %d to %d (bound +20)", first.fds, f)
	}
	for _, s := range samples {
		if s.poolTotal > pcfg.MaxConns*int32(len(c.nodes)) {
			b.Errorf("at %v the pool holds %d connections; bound MaxConns (%d) per node", s.at, s.poolTotal, pcfg.MaxConns)
		}
		for i, n := range s.pgBackends {
			// Pool connections, its probe connection, the managers' own.
			if n > int(pcfg.MaxConns)+5 {
				b.Errorf("at %v node n%d has %d client backends; bound %d", s.at, i+1, n, pcfg.MaxConns+5)
			}
		}
		if s.leases > 2*len(c.nodes)+2 {
			b.Errorf("at %v etcd holds %d leases; bound %d (a leader lease and a member lease per node, and the abandoned one until it expires)", s.at, s.leases, 2*len(c.nodes)+2)
		}
	}
	if last.writesOK <= first.writesOK {
		b.Errorf("no write acknowledged after the first fault: the load stalled")
	}
	b.ReportMetric(float64(last.goroutines-first.goroutines), "goroutines-growth")
	b.ReportMetric(float64(int64(last.heapInuse)-int64(first.heapInuse))/(1<<20), "heap-MiB-growth")
	b.ReportMetric(float64(last.fds-first.fds), "fds-growth")
	b.ReportMetric(0, "ns/op")
}
