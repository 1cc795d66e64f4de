package pghatest_test

import (
	"fmt"
	"os"
	"testing"

	"github.com/pgha/pgha/internal/testutil"
)

// TestMain fails the run when a test leaves a goroutine or a postgres
// process behind.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if err := testutil.CheckLeaks(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}
