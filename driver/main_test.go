package driver_test

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pgha/pgha/driver"
	"github.com/pgha/pgha/internal/keyspace"
	"github.com/pgha/pgha/internal/testutil"
	"github.com/pgha/pgha/replicate"
)

// pureTests run without PostgreSQL.
const pureTests = "^(ExampleParseConfig|TestMethodSet|TestConfigDropIn|TestConfigCopy|TestChooseTopology|TestClassify|TestParseConfig.*|TestValidate.*|TestCausalTokenString|TestEtcdNeverAnswers|FuzzParseConfig)$"

// shared is the cluster the Examples and benchmarks use: one etcd member, a
// primary "ex1" holding the leader record of cluster "ex", and a streaming
// standby "ex2". It is nil when PostgreSQL is not installed.
var shared *sharedEnv

type sharedEnv struct {
	base             string
	etcd             *testutil.EtcdCluster
	primary, standby *replicate.Instance
	term             *leaderTerm
}

func TestMain(m *testing.M) {
	flag.Parse()
	// Examples log to slog.Default: keep their output quiet.
	slog.SetDefault(discardLogger)
	if _, err := testutil.FindPostgresBinDir(); err != nil {
		if os.Getenv("CI") == "true" {
			fmt.Fprintln(os.Stderr, "driver tests: PostgreSQL is required under CI=true:", err)
			os.Exit(1)
		}
		fmt.Fprintln(os.Stderr, "driver tests: PostgreSQL not found, running only the tests that need no server:", err)
		flag.Set("test.run", pureTests)
	} else if needShared() {
		env, err := startShared()
		if err != nil {
			fmt.Fprintln(os.Stderr, "driver tests: start the shared cluster:", err)
			if env != nil {
				env.close()
			}
			os.Exit(1)
		}
		shared = env
	}
	code := m.Run()
	if shared != nil {
		shared.close()
	}
	if code == 0 {
		if err := testutil.CheckLeaks(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}

// needShared reports whether the selected tests include Examples or
// benchmarks, which use the shared cluster.
func needShared() bool {
	run := flag.Lookup("test.run").Value.String()
	bench := flag.Lookup("test.bench").Value.String()
	return bench != "" || run == "" || strings.Contains(run, "Example")
}

func startShared() (*sharedEnv, error) {
	base, err := os.MkdirTemp("", "pgha-driver-test-")
	if err != nil {
		return nil, err
	}
	env := &sharedEnv{base: base}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if env.etcd, err = testutil.StartEtcdMain(base, 1); err != nil {
		return env, err
	}
	pcfg, err := testutil.PostgresConfigMain("ex1", base)
	if err != nil {
		return env, err
	}
	scfg, err := testutil.PostgresConfigMain("ex2", base)
	if err != nil {
		return env, err
	}
	if env.primary, err = replicate.New(pcfg); err != nil {
		return env, err
	}
	if err := env.primary.Init(ctx); err != nil {
		return env, err
	}
	if err := env.primary.Start(ctx); err != nil {
		return env, err
	}
	if env.standby, err = replicate.New(scfg); err != nil {
		return env, err
	}
	src := testutil.SourceOf(env.primary, replicate.SlotName("ex2"))
	if err := env.standby.Clone(ctx, src); err != nil {
		return env, err
	}
	// Play the HA manager: ex1 leads cluster "ex".
	env.term, err = campaignT(ctx, env.etcd.Endpoints(), "ex", "ex1", env.primary, true)
	return env, err
}

func (e *sharedEnv) close() {
	if e.term != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		e.term.Resign(ctx)
		cancel()
		e.term.Close()
	}
	for _, inst := range []*replicate.Instance{e.standby, e.primary} {
		if inst != nil {
			testutil.StopPostgres(inst)
		}
	}
	if e.etcd != nil {
		e.etcd.Close()
	}
	os.RemoveAll(e.base)
}

// --- helpers ----------------------------------------------------------------

// connString is a connection string for the given servers (a multi-host
// string) with extra key=value options.
func connString(extra string, insts ...*replicate.Instance) string {
	var hosts []string
	for _, in := range insts {
		hosts = append(hosts, "127.0.0.1:"+strconv.Itoa(in.Config().Port))
	}
	s := fmt.Sprintf("postgres://postgres:%s@%s/postgres?sslmode=disable", url.QueryEscape(testutil.PostgresSuperuserPassword), strings.Join(hosts, ","))
	if extra != "" {
		s += "&" + extra
	}
	return s
}

func addrOf(in *replicate.Instance) string { return "127.0.0.1:" + strconv.Itoa(in.Config().Port) }

// leaderRecord is the leader record the HA manager would write for inst.
func leaderRecord(name string, inst *replicate.Instance, writable bool) []byte {
	b, err := keyspace.Encode(keyspace.LeaderRecord{Node: name, Host: "127.0.0.1", Port: inst.Config().Port, Writable: writable})
	if err != nil {
		panic(err)
	}
	return b
}

// testLogger sends the pool's logs to the test output.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

var discardLogger = slog.New(slog.NewTextHandler(io.Discard, nil))

// newPool creates a pool from cfg and closes it at the end of the test.
func newPool(t testing.TB, cfg *driver.Config) *driver.Pool {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	p, err := driver.NewWithConfig(t.Context(), cfg)
	if err != nil {
		t.Fatalf("driver.NewWithConfig: %v", err)
	}
	t.Cleanup(p.Close)
	return p
}

func parse(t testing.TB, s string) *driver.Config {
	t.Helper()
	cfg, err := driver.ParseConfig(s)
	if err != nil {
		t.Fatalf("driver.ParseConfig(%q): %v", s, err)
	}
	return cfg
}
