package testutil

import (
	"fmt"
	"time"
)

// pollInterval is how often Eventually re-checks its condition.
const pollInterval = 20 * time.Millisecond

// Eventually calls cond until it returns nil or timeout elapses. On timeout it
// fails the test with msg and the last error cond returned, so the failure says
// what was expected and what was seen. It must be called from the test
// goroutine (it calls t.Fatalf).
//
// Eventually is the only way tests wait for a condition: no test sleeps to
// synchronise.
func Eventually(t TB, timeout time.Duration, msg string, cond func() error) {
	t.Helper()
	if err := Poll(timeout, cond); err != nil {
		t.Fatalf("%s: %v", msg, err)
	}
}

// Poll calls cond every 20 ms until it returns nil or timeout elapses, and
// returns the last error on timeout. Use it where a test must not call
// t.Fatal (from a goroutine) or wants to handle the failure itself.
func Poll(timeout time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	var last error
	for {
		if last = cond(); last == nil {
			return nil
		}
		if !time.Now().Before(deadline) {
			return fmt.Errorf("not true after %v: %w", timeout, last)
		}
		<-tick.C
	}
}
