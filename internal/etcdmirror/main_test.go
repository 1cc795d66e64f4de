package etcdmirror

import (
	"testing"

	"github.com/pgha/pgha/internal/testutil"
)

func TestMain(m *testing.M) { testutil.VerifyNoLeaks(m) }
