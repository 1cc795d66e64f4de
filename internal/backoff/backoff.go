// Package backoff is capped exponential backoff with full jitter, for the
// retry loops against etcd and PostgreSQL in election, ha and driver.
//
// Each retry waits a uniformly random time between Min and the current
// ceiling; the ceiling starts at Min, doubles on every retry and stops at
// Max. Because every process draws its own random wait, nodes and pools
// that see the same failure at the same instant spread their retries over
// the whole window instead of retrying in lockstep ("full jitter" in the
// AWS Architecture Blog's "Exponential Backoff And Jitter"; the floor Min
// keeps a retry from spinning).
//
// It is written here rather than taken from github.com/cenkalti/backoff
// (already in the module graph) because that library randomises around
// the current interval (±RandomizationFactor), so its waits can exceed
// MaxInterval and never spread down to the floor: neither a hard cap nor
// full jitter.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Backoff is the state of one retry loop. The zero value is not usable:
// make one with [New]. It is not safe for concurrent use: each loop owns
// its own.
type Backoff struct {
	min, max, ceil time.Duration
}

// New returns a Backoff whose waits lie in [min, max]. A min below 1 ms is
// raised to 1 ms and a max below min is raised to min, so that a
// misconfigured caller never spins or panics.
func New(min, max time.Duration) *Backoff {
	min = max2(min, time.Millisecond)
	max = max2(max, min)
	return &Backoff{min: min, max: max, ceil: min}
}

func max2(a, b time.Duration) time.Duration {
	if a > b {
		return a
	}
	return b
}

// Next returns the wait before the next retry, uniformly random in
// [min, ceiling], and doubles the ceiling up to max.
func (b *Backoff) Next() time.Duration {
	d := b.min + rand.N(b.ceil-b.min+1)
	if b.ceil <= b.max/2 {
		b.ceil *= 2
	} else {
		b.ceil = b.max
	}
	return d
}

// Reset starts over at min, after a success.
func (b *Backoff) Reset() { b.ceil = b.min }

// Wait sleeps for [Backoff.Next] or until ctx is done, and reports whether
// ctx is still live.
func (b *Backoff) Wait(ctx context.Context) bool {
	t := time.NewTimer(b.Next())
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
