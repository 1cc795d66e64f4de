package replicate_test

import (
	"fmt"
	"os"
	"testing"

	"github.com/pgha/pgha/internal/testutil"
	"github.com/pgha/pgha/replicate"
)

// exampleBase is a temp dir for the Examples' servers; "" when PostgreSQL
// is not installed (then the Examples print their expected output without
// running servers, and the tests skip, or fail under CI=true).
var exampleBase string

// exampleConfigs returns the configurations of the Example's primary and
// standby: temp dirs, free loopback ports, test passwords.
func exampleConfigs() (primary, standby replicate.Config, ok bool) {
	if exampleBase == "" {
		return primary, standby, false
	}
	var err error
	if primary, err = testutil.PostgresConfigMain("primary", exampleBase); err != nil {
		panic(err)
	}
	if standby, err = testutil.PostgresConfigMain("standby", exampleBase); err != nil {
		panic(err)
	}
	return primary, standby, true
}

func TestMain(m *testing.M) {
	if _, err := testutil.FindPostgresBinDir(); err == nil {
		dir, err := os.MkdirTemp("", "pgha-replicate-example-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "replicate tests:", err)
			os.Exit(1)
		}
		exampleBase = dir
	} else if os.Getenv("CI") == "true" {
		fmt.Fprintln(os.Stderr, "replicate tests: PostgreSQL is required under CI=true:", err)
		os.Exit(1)
	}
	code := m.Run()
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
