package election_test

import (
	"fmt"
	"os"
	"testing"

	"github.com/pgha/pgha/internal/testutil"
)

// exampleEndpoints is the client URL of an etcd started for the runnable
// Examples.
var exampleEndpoints []string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "pgha-election-example-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "election tests:", err)
		os.Exit(1)
	}
	c, err := testutil.StartEtcdMain(dir, 1)
	if err != nil {
		fmt.Fprintln(os.Stderr, "election tests: start etcd for examples:", err)
		os.Exit(1)
	}
	exampleEndpoints = c.Endpoints()
	code := m.Run()
	c.Close()
	os.RemoveAll(dir)
	if code == 0 {
		if err := testutil.FindLeaks(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}
