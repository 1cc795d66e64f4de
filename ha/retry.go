package ha

import (
	"time"

	"github.com/pgha/pgha/internal/backoff"
)

// retryGate spaces out the retries of a role change that keeps failing
// (a clone, rewind, follow, start or bootstrap), so that a node whose
// source is down does not run pg_basebackup or pg_rewind against it, and
// log a warning, every loop interval. The waits grow from min to max with
// full jitter (internal/backoff), so nodes that fail together do not
// retry together. A different action or target (a new leader) is tried
// at once, and a success resets the gate. Safety actions (fence, resign,
// promote, lead) are never gated.
//
// Only the Run goroutine uses it; now is the loop's clock.
type retryGate struct {
	min, max time.Duration
	key      string // action kind and target of the failing action
	at       time.Time
	b        *backoff.Backoff
	err      error // the failure being waited out
}

// gated reports whether kind is a role change whose retries are spaced.
func gated(kind actionKind) bool {
	switch kind {
	case actClone, actReclone, actReinit, actRewind, actFollow, actStart, actBootstrap:
		return true
	}
	return false
}

func gateKey(a action) string {
	if a.Leader != nil {
		return a.Kind.String() + " " + a.Leader.Node
	}
	return a.Kind.String()
}

// allow reports whether a may run at now; if not, how long is left and
// the error of its last attempt.
func (g *retryGate) allow(a action, now time.Time) (bool, time.Duration, error) {
	if !gated(a.Kind) || gateKey(a) != g.key || !now.Before(g.at) {
		return true, 0, nil
	}
	return false, g.at.Sub(now), g.err
}

// done records a's outcome and returns the wait before it may be retried
// (0 after a success or for an action that is not gated).
func (g *retryGate) done(a action, now time.Time, err error) time.Duration {
	if err == nil || !gated(a.Kind) {
		if err == nil {
			g.key = ""
		}
		return 0
	}
	if k := gateKey(a); k != g.key {
		g.key, g.b = k, backoff.New(g.min, g.max)
	}
	d := g.b.Next()
	g.at, g.err = now.Add(d), err
	return d
}

// retryMax caps the wait between two attempts of a failing role change.
// It bounds how late a standby may follow a new primary after a fault that
// made its follows fail for a while (in synchronous mode, commits can wait
// for that standby), so it stays short: 5 s is still ten times fewer
// attempts than one per default loop interval.
const retryMax = 5 * time.Second
