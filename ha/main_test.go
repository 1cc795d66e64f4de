package ha_test

import (
	"fmt"
	"os"
	"testing"

	"github.com/pgha/pgha/ha"
	"github.com/pgha/pgha/internal/testutil"
)

// exampleBase is a temp dir for the Example's server, and exampleEtcd the
// endpoints of an etcd started for it; exampleBase is "" when PostgreSQL is
// not installed (the cluster tests then skip, or fail under CI=true).
var (
	exampleBase string
	exampleEtcd []string
)

func TestMain(m *testing.M) {
	// Tests with Config.FenceGuard re-execute this binary as the guard.
	ha.RunFenceGuardIfRequested()
	var etcd *testutil.EtcdCluster
	if _, err := testutil.FindPostgresBinDir(); err == nil {
		dir, err := os.MkdirTemp("", "pgha-ha-example-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "ha tests:", err)
			os.Exit(1)
		}
		exampleBase = dir
		if etcd, err = testutil.StartEtcdMain(dir, 1); err != nil {
			fmt.Fprintln(os.Stderr, "ha tests: start etcd:", err)
			os.Exit(1)
		}
		exampleEtcd = etcd.Endpoints()
	} else if os.Getenv("CI") == "true" {
		fmt.Fprintln(os.Stderr, "ha tests: PostgreSQL is required under CI=true:", err)
		os.Exit(1)
	}
	code := m.Run()
	if etcd != nil {
		etcd.Close()
	}
	if exampleBase != "" {
		os.RemoveAll(exampleBase)
	}
	if code == 0 {
		if err := testutil.CheckLeaks(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}
