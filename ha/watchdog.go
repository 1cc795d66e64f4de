package ha

import (
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// WatchdogMode says whether the leader arms a Linux watchdog device
// (/dev/watchdog, e.g. the softdog module) so that a frozen or dead manager
// whose PostgreSQL keeps accepting writes gets its machine reset before
// any other node can be elected.
type WatchdogMode string

// Watchdog modes.
const (
	// WatchdogOff (default): no watchdog. A frozen manager cannot fence its
	// PostgreSQL; only clients that follow the leader record (driver.Pool)
	// are protected, and synchronous mode bounds what the old primary can
	// acknowledge.
	WatchdogOff WatchdogMode = "off"
	// WatchdogAutomatic: arm the watchdog when the device can be opened and
	// configured; lead without it (with a warning) otherwise.
	WatchdogAutomatic WatchdogMode = "automatic"
	// WatchdogRequired: never lead without an armed watchdog. A node whose
	// device cannot be opened and configured does not campaign.
	WatchdogRequired WatchdogMode = "required"
)

// DefaultWatchdogDevice is the watchdog device used when
// Config.WatchdogDevice is empty.
const DefaultWatchdogDevice = "/dev/watchdog"

// watchdog is an open watchdog device. While armed, the machine is reset
// unless pet is called before the timeout passes.
type watchdog struct {
	f       *os.File
	path    string
	timeout time.Duration
}

// openWatchdog opens and configures the device with the largest whole
// number of seconds that ends no later than validUntil.
func openWatchdog(path string, now, validUntil time.Time) (*watchdog, error) {
	timeout, err := watchdogTimeout(now, validUntil)
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("open watchdog device %s: %w (load softdog or set WatchdogDevice)", path, err)
	}
	secs := int(timeout / time.Second)
	if err := unix.IoctlSetPointerInt(int(f.Fd()), unix.WDIOC_SETTIMEOUT, secs); err != nil {
		// Opening armed it: disarm with the magic close before giving up.
		f.Write([]byte("V"))
		f.Close()
		return nil, fmt.Errorf("set watchdog timeout %ds on %s: %w (is it a watchdog device?)", secs, path, err)
	}
	return &watchdog{f: f, path: path, timeout: timeout}, nil
}

// watchdogUsable reports whether path is a character device this process
// can open for writing (without opening it, which would arm it).
func watchdogUsable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode()&os.ModeCharDevice != 0 && unix.Access(path, unix.W_OK) == nil
}

// watchdogTimeout is the watchdog timeout for a term valid until
// validUntil: whole seconds (the device's unit), at least 1, ending no
// later than validUntil.
func watchdogTimeout(now, validUntil time.Time) (time.Duration, error) {
	left := validUntil.Sub(now)
	secs := left / time.Second
	if secs < 1 {
		return 0, fmt.Errorf("watchdog: only %v left before ValidUntil; need at least 1s to arm", left.Round(time.Millisecond))
	}
	return secs * time.Second, nil
}

// shouldPet reports whether petting now keeps the reset no later than
// validUntil: pet only after a renewal that moved ValidUntil far enough.
func shouldPet(now, validUntil time.Time, timeout time.Duration) bool {
	return !now.Add(timeout).After(validUntil)
}

// pet restarts the watchdog's countdown.
func (w *watchdog) pet() error {
	if err := unix.IoctlWatchdogKeepalive(int(w.f.Fd())); err != nil {
		// Some drivers only support writes.
		if _, werr := w.f.Write([]byte("1")); werr != nil {
			return fmt.Errorf("pet watchdog %s: %w", w.path, errors.Join(err, werr))
		}
	}
	return nil
}

// disarm stops the watchdog with the magic close ('V', then close).
// Call it only after PostgreSQL has stopped accepting writes.
func (w *watchdog) disarm() error {
	_, err := w.f.Write([]byte("V"))
	return errors.Join(err, w.f.Close())
}
