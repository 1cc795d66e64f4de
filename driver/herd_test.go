package driver_test

import (
	"fmt"
	"net"
	"slices"
	"sync"
	"testing"
	"time"
)

// TestProbesDoNotLockstep starts 20 pools at the same instant (as a
// failover reaches every pool at once) against a node that accepts TCP
// connections and closes them at once, so that there is no primary and
// every pool probes in its fast mode. It records when each connection
// attempt arrives and checks that the pools back off (far fewer attempts
// than one per pool every 25 ms, the old fixed interval) and spread out
// (after the first 100 ms, the median non-empty 10 ms window holds the
// attempts of at most a quarter of the pools; in lockstep it would hold
// all of them). No PostgreSQL is needed.
func TestProbesDoNotLockstep(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var arrivals []time.Time
	var accepted sync.WaitGroup
	accepted.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			arrivals = append(arrivals, time.Now())
			mu.Unlock()
			c.Close()
		}
	})
	defer func() { ln.Close(); accepted.Wait() }()
	// A second dead host, not observed: with a single host the pool
	// presumes it is the primary and probes nothing until an operation
	// fails, so two hosts are needed for the pools to look for a primary.
	ln2, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted.Go(func() {
		for {
			c, err := ln2.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	})
	defer ln2.Close()

	const pools = 20
	const watch = 3 * time.Second
	host, port, _ := net.SplitHostPort(ln.Addr().String())
	start := time.Now()
	for range pools {
		newPool(t, parse(t, fmt.Sprintf("postgres://u:p@%s:%s,%s/db?pgha_probe_interval=1s&pgha_probe_timeout=500ms&connect_timeout=1&sslmode=disable", host, port, ln2.Addr())))
	}
	time.Sleep(watch) // the observation window, not synchronisation
	mu.Lock()
	got := slices.Clone(arrivals)
	mu.Unlock()

	// Attempts per 100 ms window, and the fullest 10 ms window after the
	// first 100 ms (the pools start together by construction).
	per100 := make([]int, int(watch/(100*time.Millisecond))+1)
	per10 := map[int]int{}
	for _, a := range got {
		d := a.Sub(start)
		per100[min(int(d/(100*time.Millisecond)), len(per100)-1)]++
		if d >= 100*time.Millisecond {
			per10[int(d/(10*time.Millisecond))]++
		}
	}
	// A process stall (GC, a loaded machine) delays the accept loop and
	// the pools' timers alike and yields a few crowded windows whatever
	// the schedule: the median of the non-empty windows is what lockstep
	// would raise to about one attempt per pool.
	var counts []int
	for _, n := range per10 {
		counts = append(counts, n)
	}
	slices.Sort(counts)
	fullest, median := 0, 0
	if len(counts) > 0 {
		fullest, median = counts[len(counts)-1], counts[len(counts)/2]
	}
	lockstep := pools * int(watch/(25*time.Millisecond))
	t.Logf("%d pools, %v: %d connection attempts (fixed 25 ms probing would make %d probes); per 100 ms window: %v; 10 ms windows after 100 ms: %d non-empty, median %d attempts, fullest %d",
		pools, watch, len(got), lockstep, per100, len(counts), median, fullest)
	if len(got) < pools {
		t.Fatalf("only %d connection attempts from %d pools: the pools did not probe", len(got), pools)
	}
	// Backoff: waits grow to 200 ms (mean about 112 ms at the cap), so
	// each pool probes about 27 times in 3 s, against 120 at a fixed 25
	// ms. pgx opens two TCP connections per failed probe against this
	// server (a lone pool's attempts arrive in pairs), so the bound is
	// one attempt per pool per 25 ms: fixed probing would make twice that.
	if len(got) > lockstep {
		t.Errorf("%d attempts: the pools did not back off (bound %d)", len(got), lockstep)
	}
	if median > pools/4 {
		t.Errorf("a non-empty 10 ms window holds a median %d attempts of %d pools: lockstep", median, pools)
	}
}
