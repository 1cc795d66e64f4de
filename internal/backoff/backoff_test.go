package backoff

import (
	"context"
	"testing"
	"time"
)

// TestBounds checks that every wait lies in [min, ceiling], that the
// ceiling doubles and stops at max, and that Reset starts over.
func TestBounds(t *testing.T) {
	const min, max = 10 * time.Millisecond, 300 * time.Millisecond
	b := New(min, max)
	ceil := min
	for i := range 200 {
		d := b.Next()
		if d < min || d > ceil {
			t.Fatalf("retry %d: wait %v outside [%v, %v]", i, d, min, ceil)
		}
		ceil = time.Duration(float64(ceil) * 2)
		if ceil > max {
			ceil = max
		}
	}
	if b.ceil != max {
		t.Fatalf("after 200 retries the ceiling is %v, want the cap %v", b.ceil, max)
	}
	b.Reset()
	for range 100 {
		if d := b.Next(); d != min {
			// After a reset the ceiling is min: the wait is min.
			t.Fatalf("first wait after Reset is %v, want %v", d, min)
		}
		b.Reset()
	}
}

// TestCapNeverExceeded drives many loops to the cap and checks no wait is
// above max, even for a max that is not min times a power of two.
func TestCapNeverExceeded(t *testing.T) {
	const min, max = 7 * time.Millisecond, 1000 * time.Millisecond
	for range 50 {
		b := New(min, max)
		for range 100 {
			if d := b.Next(); d > max {
				t.Fatalf("wait %v above the cap %v", d, max)
			}
		}
	}
}

// TestJitterSpread checks that waits at the cap spread over the whole
// window: 1000 draws fill each tenth of [min, max], and their mean is near
// the middle. Lockstep retries would put them all in one bucket.
func TestJitterSpread(t *testing.T) {
	const min, max = 10 * time.Millisecond, 1010 * time.Millisecond
	b := New(min, max)
	for range 10 {
		b.Next() // reach the cap
	}
	var buckets [10]int
	var sum time.Duration
	const n = 1000
	for range n {
		d := b.Next()
		sum += d
		i := int((d - min) * 10 / (max - min + 1))
		buckets[i]++
	}
	for i, c := range buckets {
		// Each bucket expects 100; a fair draw below 50 has odds of
		// about 1e-7.
		if c < 50 {
			t.Errorf("bucket %d of 10 holds %d of %d waits (want about %d): %v", i, c, n, n/10, buckets)
		}
	}
	mean := sum / n
	if mid := (min + max) / 2; mean < mid-60*time.Millisecond || mean > mid+60*time.Millisecond {
		t.Errorf("mean wait %v, want near %v", mean, mid)
	}
}

// TestBadInput checks that a zero or inverted range is raised, not a
// panic or a spin.
func TestBadInput(t *testing.T) {
	b := New(0, 0)
	if d := b.Next(); d != time.Millisecond {
		t.Fatalf("New(0, 0).Next() = %v, want 1ms", d)
	}
	b = New(50*time.Millisecond, time.Millisecond)
	for range 10 {
		if d := b.Next(); d != 50*time.Millisecond {
			t.Fatalf("New(50ms, 1ms).Next() = %v, want 50ms", d)
		}
	}
}

// TestWaitCancel checks that Wait returns false at once when ctx ends,
// and true after a wait otherwise.
func TestWaitCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	b := New(time.Hour, time.Hour)
	start := time.Now()
	if b.Wait(ctx) {
		t.Fatal("Wait on a cancelled ctx returned true")
	}
	if el := time.Since(start); el > time.Second {
		t.Fatalf("Wait on a cancelled ctx took %v", el)
	}
	if !New(time.Millisecond, time.Millisecond).Wait(context.Background()) {
		t.Fatal("Wait on a live ctx returned false")
	}
}
