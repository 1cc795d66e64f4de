package ha

import (
	"context"
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
