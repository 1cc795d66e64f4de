package testutil

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgha/pgha/replicate"
)

// Test passwords. They are fixed so a failing test can be reproduced by hand;
// the servers listen on loopback only.
const (
	PostgresSuperuserPassword   = "pgha-test-super"
	PostgresReplicationPassword = "pgha-test-repl"
)

// PostgresOptions tune [StartPostgres]. The zero value starts a fresh
// primary.
type PostgresOptions struct {
	// Name is the node name (application_name of a standby). Default
	// "pg1", "pg2", ... unique in the process.
	Name string
	// CloneFrom, when set, makes the server a standby cloned from that
	// running server instead of a fresh initdb.
	CloneFrom *replicate.Instance
	// NoSlot clones without a replication slot (default: a slot named
	// replicate.SlotName(Name) on CloneFrom).
	NoSlot bool
	// NoStart leaves a fresh primary initialized but stopped. Ignored with
	// CloneFrom (Clone starts the standby).
	NoStart bool
	// Parameters are extra server settings.
	Parameters map[string]string
	// Configure, when set, edits the Config before New.
	Configure func(*replicate.Config)
}

var pgCounter atomic.Int64

// PostgresBinDir returns the PostgreSQL server binaries' directory:
// $PGHA_TEST_PGBIN, else replicate.FindBinDir's search. When none is found
// the test is skipped with the install command, or fails when CI=true.
func PostgresBinDir(t TB) string {
	t.Helper()
	dir, err := FindPostgresBinDir()
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("testutil: PostgreSQL server binaries are required under CI=true: %v", err)
		}
		t.Skipf("testutil: PostgreSQL server binaries not found, skipping (install: apt-get install postgresql, or set PGHA_TEST_PGBIN): %v", err)
	}
	return dir
}

// FindPostgresBinDir is [PostgresBinDir] without a test: it returns the
// error instead (for TestMain).
func FindPostgresBinDir() (string, error) {
	return replicate.FindBinDir(os.Getenv("PGHA_TEST_PGBIN"))
}

// PostgresConfig returns a Config for a new node called name with its own
// empty directories under a temp dir, a free loopback port, the test
// passwords and UnsafeNoSync. The data directory does not exist yet. When
// the test runs as root, the directories are made reachable by the
// postgres OS user. Logs go to the test's output.
func PostgresConfig(t TB, name string) replicate.Config {
	t.Helper()
	bin := PostgresBinDir(t)
	base := t.TempDir()
	sock, err := os.MkdirTemp("", "pgs")
	if err != nil {
		t.Fatalf("testutil: create socket dir: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(sock) })
	cfg, err := postgresConfig(name, bin, base, sock)
	if err != nil {
		t.Fatalf("testutil: %v", err)
	}
	if _, bench := t.(*testing.B); bench {
		// Benchmarks always print their output: keep it to the figures.
		cfg.Logger = slog.New(slog.DiscardHandler)
	} else {
		cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return cfg
}

// PostgresConfigMain is [PostgresConfig] for TestMain: directories under
// base (which the caller removes), logs discarded.
func PostgresConfigMain(name, base string) (replicate.Config, error) {
	bin, err := FindPostgresBinDir()
	if err != nil {
		return replicate.Config{}, err
	}
	dir, err := os.MkdirTemp(base, name+"-")
	if err != nil {
		return replicate.Config{}, err
	}
	sock, err := os.MkdirTemp(base, "s")
	if err != nil {
		return replicate.Config{}, err
	}
	cfg, err := postgresConfig(name, bin, dir, sock)
	cfg.Logger = slog.New(slog.DiscardHandler)
	return cfg, err
}

func postgresConfig(name, bin, base, sock string) (replicate.Config, error) {
	port, err := freePort()
	if err != nil {
		return replicate.Config{}, err
	}
	if os.Geteuid() == 0 {
		// t.TempDir and os.MkdirTemp make 0700 directories: let the
		// postgres user through them, and give it the socket dir.
		for _, d := range []string{base, filepath.Dir(base), sock} {
			if err := os.Chmod(d, 0o711); err != nil {
				return replicate.Config{}, err
			}
		}
		if err := chownToPostgres(sock); err != nil {
			return replicate.Config{}, err
		}
		if err := os.Chmod(sock, 0o755); err != nil {
			return replicate.Config{}, err
		}
	}
	return replicate.Config{
		Name:                name,
		DataDir:             filepath.Join(base, "data"),
		BinDir:              bin,
		Port:                port,
		SocketDir:           sock,
		SuperuserPassword:   PostgresSuperuserPassword,
		ReplicationPassword: PostgresReplicationPassword,
		UnsafeNoSync:        true,
		FenceTimeout:        time.Second,
	}, nil
}

func chownToPostgres(path string) error {
	cfg := replicate.DefaultConfig()
	out, err := exec.Command("id", "-u", cfg.OSUser).Output()
	if err != nil {
		return fmt.Errorf("look up OS user %s: %w", cfg.OSUser, err)
	}
	uid, _ := strconv.Atoi(strings.TrimSpace(string(out)))
	out, err = exec.Command("id", "-g", cfg.OSUser).Output()
	if err != nil {
		return fmt.Errorf("look up OS user %s: %w", cfg.OSUser, err)
	}
	gid, _ := strconv.Atoi(strings.TrimSpace(string(out)))
	return os.Chown(path, uid, gid)
}

// freePort returns a loopback TCP port that was free when chosen and that
// no other test of this process was given.
func freePort() (int, error) { return pickPort() }

// StartPostgres starts a PostgreSQL server for the test: a fresh primary
// (initdb), or with opts.CloneFrom a standby cloned from that server. It
// registers a cleanup that stops the server (immediate shutdown) and waits
// for its process to exit, and prints the server log's tail when the test
// failed. It skips or fails the test like [PostgresBinDir] when PostgreSQL
// is missing.
func StartPostgres(t TB, opts PostgresOptions) *replicate.Instance {
	t.Helper()
	if opts.Name == "" {
		opts.Name = fmt.Sprintf("pg%d", pgCounter.Add(1))
	}
	cfg := PostgresConfig(t, opts.Name)
	cfg.Parameters = opts.Parameters
	if opts.Configure != nil {
		opts.Configure(&cfg)
	}
	inst, err := replicate.New(cfg)
	if err != nil {
		t.Fatalf("testutil: replicate.New(%s): %v", opts.Name, err)
	}
	StopPostgresAtCleanup(t, inst)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if opts.CloneFrom != nil {
		src := SourceOf(opts.CloneFrom, "")
		if !opts.NoSlot {
			src.Slot = replicate.SlotName(opts.Name)
		}
		err := inst.Clone(ctx, src)
		if errors.Is(err, replicate.ErrPortInUse) {
			inst, err = restartOnFreePort(t, cfg, func(i *replicate.Instance) error { return i.Follow(ctx, src) })
		}
		if err != nil {
			t.Fatalf("testutil: clone %s from %s: %v", opts.Name, src, err)
		}
		return inst
	}
	if err := inst.Init(ctx); err != nil {
		t.Fatalf("testutil: init %s in %s: %v", opts.Name, cfg.DataDir, err)
	}
	if !opts.NoStart {
		err := inst.Start(ctx)
		if errors.Is(err, replicate.ErrPortInUse) {
			inst, err = restartOnFreePort(t, cfg, func(i *replicate.Instance) error { return i.Start(ctx) })
		}
		if err != nil {
			t.Fatalf("testutil: start %s on port %d: %v", opts.Name, cfg.Port, err)
		}
	}
	return inst
}

// restartOnFreePort starts cfg's data directory with start on another free
// port: the port picked first was taken by another test process meanwhile.
func restartOnFreePort(t TB, cfg replicate.Config, start func(*replicate.Instance) error) (*replicate.Instance, error) {
	var err error
	for range 3 {
		if cfg.Port, err = freePort(); err != nil {
			return nil, err
		}
		inst, nerr := replicate.New(cfg)
		if nerr != nil {
			return nil, nerr
		}
		StopPostgresAtCleanup(t, inst)
		if err = start(inst); err == nil {
			return inst, nil
		}
		if !errors.Is(err, replicate.ErrPortInUse) {
			return nil, err
		}
	}
	return nil, err
}

// StopPostgresAtCleanup registers a cleanup that stops inst with an
// immediate shutdown, waits for its postmaster to exit, and prints the
// server log's tail if the test failed.
func StopPostgresAtCleanup(t TB, inst *replicate.Instance) {
	t.Helper()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("--- server log of %s (%s, tail) ---\n%s", inst.Config().Name, inst.Config().LogFile, inst.LogTail(8192))
		}
		if err := StopPostgres(inst); err != nil {
			t.Errorf("testutil: %v", err)
		}
	})
}

// StopPostgres stops inst with an immediate shutdown and waits up to 30 s
// for its postmaster to exit.
func StopPostgres(inst *replicate.Instance) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := inst.Stop(ctx, replicate.Immediate); err != nil {
		return fmt.Errorf("stop %s: %w", inst.Config().Name, err)
	}
	if pid := inst.PID(); pid != 0 {
		return fmt.Errorf("stop %s: postmaster %d still running", inst.Config().Name, pid)
	}
	return nil
}

// SourceOf returns the Source that reaches inst over loopback TCP, with
// slot (may be empty).
func SourceOf(inst *replicate.Instance, slot string) replicate.Source {
	return replicate.Source{Host: "127.0.0.1", Port: inst.Config().Port, Slot: slot}
}

// PostgresExec runs sql on inst as the superuser and returns the error.
func PostgresExec(ctx context.Context, inst *replicate.Instance, sql string, args ...any) error {
	conn, err := inst.Connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql, args...)
	return err
}

// PostgresQueryInt runs a query returning one integer on inst.
func PostgresQueryInt(ctx context.Context, inst *replicate.Instance, sql string, args ...any) (int64, error) {
	conn, err := inst.Connect(ctx)
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.Background())
	var n int64
	err = conn.QueryRow(ctx, sql, args...).Scan(&n)
	return n, err
}

// PostgresProcesses returns the command lines of running `postgres -D`
// processes whose data directory is under dir ("" for all).
func PostgresProcesses(dir string) ([]string, error) {
	return postgresProcesses(dir, 0)
}

// ChildPostgresProcesses returns the command lines of running `postgres -D`
// processes that are children of this process: a TestMain calls it after
// m.Run to check that no test leaked a server.
func ChildPostgresProcesses() ([]string, error) {
	return postgresProcesses("", os.Getpid())
}

func postgresProcesses(dir string, ppid int) ([]string, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		if len(args) >= 3 && filepath.Base(args[0]) == "postgres" && args[1] == "-D" && strings.HasPrefix(args[2], dir) {
			if st, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat")); err == nil {
				j := strings.LastIndexByte(string(st), ')')
				if j >= 0 && j+2 < len(st) && st[j+2] == 'Z' {
					continue
				}
				// Fields after the name: state, ppid, ...
				if f := strings.Fields(string(st[j+1:])); ppid != 0 && (len(f) < 2 || f[1] != strconv.Itoa(ppid)) {
					continue
				}
			}
			out = append(out, e.Name()+" "+strings.Join(args, " "))
		}
	}
	return out, nil
}

// PostgresChildren returns the PIDs of the live children of a postmaster.
func PostgresChildren(postmaster int) []int {
	var kids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		j := strings.LastIndexByte(string(b), ')')
		if f := strings.Fields(string(b[j+1:])); len(f) >= 2 && f[0] != "Z" && f[1] == strconv.Itoa(postmaster) {
			kids = append(kids, n)
		}
	}
	return kids
}

// ProcessAlive reports whether pid is a live process (not a zombie).
func ProcessAlive(pid int) bool {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return false
	}
	j := strings.LastIndexByte(string(b), ')')
	return j >= 0 && j+2 < len(b) && b[j+2] != 'Z' && b[j+2] != 'X'
}

// ConnectSuperuser opens a connection to pg's server as the superuser over
// its unix socket (SocketDir and Port): the test's way to look at a node
// whatever network faults are injected. The connect is bounded by 2 s.
func ConnectSuperuser(ctx context.Context, pg replicate.Config) (*pgx.Conn, error) {
	cc, err := pgx.ParseConfig("")
	if err != nil {
		return nil, err
	}
	cc.Host, cc.Port, cc.Database, cc.Fallbacks = pg.SocketDir, uint16(pg.Port), "postgres", nil
	cc.User, cc.Password = "postgres", PostgresSuperuserPassword
	cc.ConnectTimeout = 2 * time.Second
	return pgx.ConnectConfig(ctx, cc)
}
