package testutil

import (
	"os"
	"syscall"
	"time"
)

// WallClock steps this machine's wall clock (CLOCK_REALTIME), as an NTP
// step or an operator's date -s would, and puts it back: [WallClock.Jump]
// sets it to the true time plus an offset, [WallClock.Restore] (also run
// at cleanup) to the true time, computed from the monotonic clock, which
// a step does not move.
//
// A test suite must not change the machine it runs on, and the step is
// machine-wide (every other process sees the clock move): it runs only
// when PGHA_TEST_CLOCK=on (make test-clock) and is skipped otherwise,
// saying how to enable it. Stepping the clock needs CAP_SYS_TIME (root):
// when enabled without it, the test fails. Use it only in a test that runs
// alone (not t.Parallel), on a machine of your own.
type WallClock struct {
	t      TB
	origin time.Time // a time.Now() with its monotonic reading
	offset time.Duration
}

// StepWallClock returns a WallClock for the test, after checking that the
// clock can be set (by setting it to the true time).
func StepWallClock(t TB) *WallClock {
	t.Helper()
	if os.Getenv("PGHA_TEST_CLOCK") != "on" {
		t.Skip("testutil: not stepping this machine's wall clock (it moves for every process on the machine); run with PGHA_TEST_CLOCK=on, or make test-clock, on a machine of your own")
	}
	c := &WallClock{t: t, origin: time.Now()}
	if err := c.set(0); err != nil {
		t.Fatalf("testutil: PGHA_TEST_CLOCK=on but the wall clock cannot be set (needs root / CAP_SYS_TIME): %v", err)
	}
	t.Cleanup(c.Restore)
	return c
}

// trueTime is the wall time as it would be without any step.
func (c *WallClock) trueTime() time.Time {
	return c.origin.Round(0).Add(time.Since(c.origin))
}

func (c *WallClock) set(offset time.Duration) error {
	tv := syscall.NsecToTimeval(c.trueTime().Add(offset).UnixNano())
	if err := syscall.Settimeofday(&tv); err != nil {
		return err
	}
	c.offset = offset
	return nil
}

// Jump steps the wall clock to the true time plus offset (negative: back).
func (c *WallClock) Jump(offset time.Duration) {
	c.t.Helper()
	if err := c.set(offset); err != nil {
		c.t.Fatalf("testutil: step the wall clock by %v: %v", offset, err)
	}
	c.t.Logf("wall clock stepped to %v from the true time (now %s)", offset, time.Now().Round(0).Format(time.TimeOnly))
}

// Restore puts the wall clock back to the true time. It is idempotent.
func (c *WallClock) Restore() {
	if c.offset == 0 {
		return
	}
	if err := c.set(0); err != nil {
		c.t.Errorf("testutil: restore the wall clock: %v", err)
	}
}
