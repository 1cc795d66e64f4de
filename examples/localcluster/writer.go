package main

import (
	"context"
	"sync"
	"time"

	"github.com/pgha/pgha/driver"
)

// writer inserts one row at a time through the pool and records which ids
// were acknowledged and when.
type writer struct {
	mu      sync.Mutex
	acked   []int64
	ackedAt []time.Time
	errs    int
	start   time.Time
	stop    func()
}

func startWriter(pool *driver.Pool) *writer {
	w := &writer{start: time.Now()}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for id := int64(1); ctx.Err() == nil; id++ {
			ectx, ecancel := context.WithTimeout(ctx, 5*time.Second)
			_, err := pool.Exec(ectx, "INSERT INTO demo_writes (id) VALUES ($1)", id)
			ecancel()
			w.mu.Lock()
			if err == nil {
				w.acked = append(w.acked, id)
				w.ackedAt = append(w.ackedAt, time.Now())
			} else if ctx.Err() == nil {
				// An error of unknown outcome: this id is simply not
				// counted as acknowledged; the next write uses a new id.
				w.errs++
			}
			w.mu.Unlock()
		}
	}()
	w.stop = func() { cancel(); <-done }
	return w
}

// stats returns acknowledged writes, errors and the rate over the last
// second.
func (w *writer) stats() (int, int, float64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	cut := time.Now().Add(-time.Second)
	for i := len(w.ackedAt) - 1; i >= 0 && w.ackedAt[i].After(cut); i-- {
		n++
	}
	return len(w.acked), w.errs, float64(n)
}

// pauseSince is the longest gap between acknowledged writes from since to
// now (including the gap still open now).
func (w *writer) pauseSince(since time.Time) time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	var worst time.Duration
	prev := since
	for _, at := range w.ackedAt {
		if at.Before(since) {
			continue
		}
		worst = max(worst, at.Sub(prev))
		prev = at
	}
	return worst
}

// countSince counts acknowledged writes after since.
func (w *writer) countSince(since time.Time) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, at := range w.ackedAt {
		if at.After(since) {
			n++
		}
	}
	return n
}

// ackedIDs returns a copy of every acknowledged id.
func (w *writer) ackedIDs() []int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]int64(nil), w.acked...)
}
