package chaos

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pgha/pgha/internal/testutil"
)

func TestMain(m *testing.M) {
	code := m.Run()
	Cleanup()
	if code == 0 {
		// testutil.LeakOptions ignores the toxiproxy stubs that the proxy
		// library itself leaves blocked after long runs.
		if err := testutil.CheckLeaks(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}

// TestChaos runs the harness. make test runs it with a fixed seed for a
// short time; make chaos sets PGHA_CHAOS_SEED (0: random),
// PGHA_CHAOS_DURATION, PGHA_CHAOS_SYNC and PGHA_CHAOS_FAILSAFE (on or off);
// PGHA_CHAOS_FENCE_GUARD=off turns the agents' fence guard off.
func TestChaos(t *testing.T) {
	testutil.PostgresBinDir(t)
	opts := Options{Seed: 1, Duration: 40 * time.Second, Sync: "on"}
	if s := os.Getenv("PGHA_CHAOS_SEED"); s != "" {
		seed, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			t.Fatalf("PGHA_CHAOS_SEED=%q: want an integer (0 for a random seed)", s)
		}
		if seed == 0 {
			seed = time.Now().UnixNano() % 1e9
		}
		opts.Seed = seed
	}
	if s := os.Getenv("PGHA_CHAOS_DURATION"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			t.Fatalf("PGHA_CHAOS_DURATION=%q: want a positive duration such as 10m", s)
		}
		opts.Duration = d
	}
	if s := os.Getenv("PGHA_CHAOS_SYNC"); s != "" {
		if s != "on" && s != "off" && s != "strict" && s != "quorum" && s != "quorum-strict" {
			t.Fatalf("PGHA_CHAOS_SYNC=%q: want on, strict, quorum, quorum-strict or off", s)
		}
		opts.Sync = s
	}
	switch s := os.Getenv("PGHA_CHAOS_FAILSAFE"); s {
	case "", "off":
	case "on":
		opts.Failsafe = true
	default:
		t.Fatalf("PGHA_CHAOS_FAILSAFE=%q: want on or off", s)
	}
	switch s := os.Getenv("PGHA_CHAOS_FENCE_GUARD"); s {
	case "", "on":
	case "off":
		opts.NoFenceGuard = true
	default:
		t.Fatalf("PGHA_CHAOS_FENCE_GUARD=%q: want on or off", s)
	}
	if s := os.Getenv("PGHA_CHAOS_FAULTS"); s != "" {
		for _, k := range strings.Split(s, ",") {
			if !slices.Contains(allFaults, k) {
				t.Fatalf("PGHA_CHAOS_FAULTS: unknown fault kind %q; the kinds are %s", k, strings.Join(allFaults, ","))
			}
			opts.Faults = append(opts.Faults, k)
		}
	}
	if d := os.Getenv("PGHA_CHAOS_OUT"); d != "" {
		opts.Dir = d
	} else {
		dir, err := os.MkdirTemp("", fmt.Sprintf("pgha-chaos-%d-", opts.Seed))
		if err != nil {
			t.Fatal(err)
		}
		opts.Dir = dir
		t.Cleanup(func() {
			if !t.Failed() {
				os.RemoveAll(dir)
			}
		})
	}
	if testing.Verbose() {
		opts.Progress = os.Stdout
	}
	t.Logf("seed %d, duration %v, sync %s, failsafe %v, output in %s", opts.Seed, opts.Duration, opts.Sync, opts.Failsafe, opts.Dir)
	rep := Run(t, opts)
	t.Logf("\n%s", rep)
}
