package main

import (
	"fmt"
	"os"
	"testing"

	"github.com/pgha/pgha/internal/testutil"
	"go.uber.org/goleak"
)

// TestMain fails the run when a test leaves a goroutine or a postgres
// process behind.
func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	if code == 0 {
		if err := goleak.Find(testutil.LeakOptions()...); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
		if procs, err := testutil.ChildPostgresProcesses(); err == nil && len(procs) > 0 {
			fmt.Fprintf(os.Stderr, "leaked postgres processes:\n%v\n", procs)
			code = 1
		}
	}
	os.Exit(code)
}
