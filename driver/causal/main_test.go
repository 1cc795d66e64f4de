package causal_test

import (
	"testing"

	"github.com/pgha/pgha/internal/testutil"
)

func TestMain(m *testing.M) { testutil.VerifyNoLeaksOrServers(m) }
