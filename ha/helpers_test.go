package ha

import (
	"context"
	"os"
	"strconv"
	"time"
)

// sleepCtx waits d or until ctx is done (a load's pace in tests, never a
// synchronisation); it reports whether d passed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// envInt reads a positive integer from the environment, 0 if unset or
// not one.
func envInt(name string) int {
	n, err := strconv.Atoi(os.Getenv(name))
	if err != nil || n < 0 {
		return 0
	}
	return n
}
