package replicate

import (
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

// rewindStartedModifying reports whether a pg_rewind run whose output (with
// --progress) is out got as far as changing the target directory. With
// --progress, pg_rewind prints "need to copy N MB" right before its point
// of no return (perform_rewind): until then it has only read both
// directories and the WAL, and a single-user crash recovery of the target
// ("--no-ensure-shutdown" not given) leaves a consistent directory. So a
// run that failed or was killed before that line changed nothing that a
// retry cannot redo. Without that line in its output, nothing was changed.
func rewindStartedModifying(out string) bool {
	return strings.Contains(out, "need to copy") || strings.Contains(out, "kB (") ||
		strings.Contains(out, "creating backup label") || strings.Contains(out, "syncing target data directory")
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
