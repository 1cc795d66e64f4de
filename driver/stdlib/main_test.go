package stdlib_test

import (
	"context"
	"database/sql"
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

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/pgha/pgha/driver"
	"github.com/pgha/pgha/election"
	"github.com/pgha/pgha/internal/keyspace"
	"github.com/pgha/pgha/internal/testutil"
	"github.com/pgha/pgha/replicate"
)

// shared is the server the Examples use, started in TestMain when they
// run; nil otherwise.
var shared *replicate.Instance

func TestMain(m *testing.M) {
	flag.Parse()
	slog.SetDefault(slog.New(slog.NewTextHandler(io.Discard, nil)))
	if _, err := testutil.FindPostgresBinDir(); err != nil {
		if os.Getenv("CI") == "true" {
			fmt.Fprintln(os.Stderr, "stdlib tests: PostgreSQL is required under CI=true:", err)
			os.Exit(1)
		}
		fmt.Fprintln(os.Stderr, "stdlib tests: PostgreSQL not found, skipping:", err)
		os.Exit(0)
	}
	var base string
	run := flag.Lookup("test.run").Value.String()
	if run == "" || strings.Contains(run, "Example") {
		var err error
		if base, err = os.MkdirTemp("", "pgha-stdlib-test-"); err == nil {
			shared, err = startShared(base)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "stdlib tests: start the Examples' server:", err)
			stopShared(base)
			os.Exit(1)
		}
	}
	code := m.Run()
	stopShared(base)
	if code == 0 {
		if err := testutil.CheckLeaks(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}

func startShared(base string) (*replicate.Instance, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg, err := testutil.PostgresConfigMain("sx1", base)
	if err != nil {
		return nil, err
	}
	inst, err := replicate.New(cfg)
	if err != nil {
		return nil, err
	}
	if err := inst.Init(ctx); err != nil {
		return nil, err
	}
	shared = inst
	return inst, inst.Start(ctx)
}

func stopShared(base string) {
	if shared != nil {
		testutil.StopPostgres(shared)
	}
	if base != "" {
		os.RemoveAll(base)
	}
}

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

// newPool creates a driver.Pool from connString and closes it at the end
// of the test.
func newPool(t testing.TB, connString string) *driver.Pool {
	t.Helper()
	cfg, err := driver.ParseConfig(connString)
	if err != nil {
		t.Fatalf("driver.ParseConfig: %v", err)
	}
	cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	p, err := driver.NewWithConfig(t.Context(), cfg)
	if err != nil {
		t.Fatalf("driver.NewWithConfig: %v", err)
	}
	t.Cleanup(p.Close)
	return p
}

// closeDB closes db at the end of the test, before the pool under it.
func closeDB(t testing.TB, db *sql.DB) {
	t.Cleanup(func() {
		if err := db.Close(); err != nil {
			t.Errorf("close *sql.DB: %v", err)
		}
	})
}

// leaderTerm is a leadership term plus the etcd client it runs on.
type leaderTerm struct {
	*election.Term
	cli *clientv3.Client
}

// campaign makes node the leader of cluster with inst's address, the way
// the HA manager does; the term is resigned and closed at cleanup.
func campaign(t *testing.T, ctx context.Context, endpoints []string, cluster, node string, inst *replicate.Instance, writable bool) *leaderTerm {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	layout, err := keyspace.NewLayout("", cluster)
	if err != nil {
		t.Fatal(err)
	}
	el, err := election.New(election.Config{Client: cli, Prefix: layout.Leader(), LeaseTTL: 2 * time.Second,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	term, err := el.Campaign(ctx, leaderRecord(node, inst, writable))
	if err != nil {
		t.Fatalf("campaign %s: %v", node, err)
	}
	lt := &leaderTerm{term, cli}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		term.Resign(ctx)
		cli.Close()
	})
	return lt
}

// leaderRecord is the leader record the HA manager would write for inst.
func leaderRecord(name string, inst *replicate.Instance, writable bool) []byte {
	b, err := keyspace.Encode(keyspace.LeaderRecord{Node: name, Host: "127.0.0.1", Port: inst.Config().Port, Writable: writable})
	if err != nil {
		panic(err)
	}
	return b
}
