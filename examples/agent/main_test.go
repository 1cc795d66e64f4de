package main

import (
	"fmt"
	"os"
	"testing"

	"github.com/pgha/pgha/ha"
	"github.com/pgha/pgha/internal/testutil"
)

// TestMain fails the run when a test leaves a goroutine or a postgres
// process behind.
func TestMain(m *testing.M) {
	// The agent's fence guard (on by default) re-executes this binary.
	ha.RunFenceGuardIfRequested()
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	if code == 0 {
		if err := testutil.CheckLeaks(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}
