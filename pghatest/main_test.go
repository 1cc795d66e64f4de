package pghatest_test

import (
	"testing"

	"github.com/pgha/pgha/internal/testutil"
)

// TestMain fails the run when a test leaves a goroutine or a postgres
// process behind.
func TestMain(m *testing.M) { testutil.VerifyNoLeaksOrServers(m) }
