package replicate

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"
)

// rewindMarker is the file that records a pg_rewind in progress: it lives
// beside the data directory, where pg_rewind does not look.
func (i *Instance) rewindMarker() string { return i.cfg.DataDir + ".rewind-incomplete" }

func (i *Instance) markRewind(src Source) error {
	msg := fmt.Sprintf("pg_rewind of %s from %s started at %s.\n"+
		"While this file exists the rewind has not finished and the data directory may be damaged:\n"+
		"PostgreSQL will not be started on it. Clone it afresh (ReplaceDataDir moves it aside).\n",
		i.cfg.DataDir, src, time.Now().UTC().Format(time.RFC3339))
	return os.WriteFile(i.rewindMarker(), []byte(msg), 0o600)
}

func (i *Instance) unmarkRewind() error {
	if err := os.Remove(i.rewindMarker()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// rewindIncomplete reports whether an earlier rewind did not finish.
func (i *Instance) rewindIncomplete() bool {
	_, err := os.Stat(i.rewindMarker())
	return err == nil
}

// checkRewindIncomplete is Start's guard.
func (i *Instance) checkRewindIncomplete() error {
	if i.rewindIncomplete() {
		return fmt.Errorf("%w: %s (see %s): clone it afresh, e.g. with ReplaceDataDir set", ErrRewindIncomplete, i.cfg.DataDir, i.rewindMarker())
	}
	return nil
}

// rewindStartedModifying reports whether a failed pg_rewind got as far as
// changing the target: it prints "rewinding from last common checkpoint"
// before it copies anything, and a run cut short by its context may have
// been anywhere.
func rewindStartedModifying(err error) bool {
	return strings.Contains(err.Error(), "rewinding from last common checkpoint") ||
		errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// clearRewindMarker is called by Clone once the old directory was moved
// aside: the marker goes with it.
func (i *Instance) clearRewindMarker(aside string) {
	if !i.rewindIncomplete() {
		return
	}
	if err := os.Rename(i.rewindMarker(), aside+".rewind-incomplete"); err != nil {
		i.log.Warn("move the rewind marker aside", "err", err.Error())
	}
}
