package ha

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestWatchdogTimeout(t *testing.T) {
	for _, tc := range []struct {
		left time.Duration
		want time.Duration
		ok   bool
	}{
		{4500 * time.Millisecond, 4 * time.Second, true},
		{time.Second, time.Second, true},
		{1999 * time.Millisecond, time.Second, true},
		{999 * time.Millisecond, 0, false},
		{-time.Second, 0, false},
	} {
		got, err := watchdogTimeout(t0, t0.Add(tc.left))
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("watchdogTimeout(%v left) = %v, %v; want %v, ok %v", tc.left, got, err, tc.want, tc.ok)
		}
		if err == nil && t0.Add(got).After(t0.Add(tc.left)) {
			t.Errorf("timeout %v ends after ValidUntil (%v left)", got, tc.left)
		}
	}
}

func TestShouldPet(t *testing.T) {
	// Pet only when the reset it postpones still lands before ValidUntil.
	if !shouldPet(t0, t0.Add(3*time.Second), 2*time.Second) {
		t.Errorf("3s of validity left, 2s timeout: want pet")
	}
	if !shouldPet(t0, t0.Add(2*time.Second), 2*time.Second) {
		t.Errorf("exactly the timeout left: want pet")
	}
	if shouldPet(t0, t0.Add(1500*time.Millisecond), 2*time.Second) {
		t.Errorf("1.5s left, 2s timeout: want no pet (the reset would come after ValidUntil)")
	}
}

// TestOpenWatchdogNotADevice: a file that is not a watchdog device is
// refused with an error naming the device, and left disarmed.
func TestOpenWatchdogNotADevice(t *testing.T) {
	p := filepath.Join(t.TempDir(), "watchdog")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := openWatchdog(p, t0, t0.Add(4*time.Second))
	if err == nil || !strings.Contains(err.Error(), p) {
		t.Fatalf("openWatchdog(regular file) = %v; want an error naming %s", err, p)
	}
	b, _ := os.ReadFile(p)
	if string(b) != "V" {
		t.Fatalf("device got %q; want the magic close 'V'", b)
	}
	if _, err := openWatchdog(filepath.Join(t.TempDir(), "missing"), t0, t0.Add(4*time.Second)); err == nil || !strings.Contains(err.Error(), "softdog") {
		t.Fatalf("openWatchdog(missing) = %v; want an error that says how to get a device", err)
	}
	if _, err := openWatchdog(p, t0, t0.Add(500*time.Millisecond)); err == nil {
		t.Fatalf("openWatchdog with 0.5s of validity left succeeded; want an error")
	}
}
