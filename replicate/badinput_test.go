package replicate_test

import (
	"errors"
	"log/slog"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pgha/pgha/internal/testutil"
	"github.com/pgha/pgha/replicate"
)

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	base := func() replicate.Config {
		c := replicate.DefaultConfig()
		c.Name, c.DataDir = "n1", "/var/lib/pgha/n1"
		c.SuperuserPassword, c.ReplicationPassword = "s3cret-su", "s3cret-repl"
		return c
	}
	if err := base().Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	if err := replicate.LocalConfig("n1", "/tmp/pgha/n1", 5555).Validate(); err != nil {
		t.Fatalf("LocalConfig: %v", err)
	}
	tests := []struct {
		edit func(*replicate.Config)
		want string
	}{
		{func(c *replicate.Config) { c.Port = 70000 }, "replicate: Port 70000 out of range 1..65535"},
		{func(c *replicate.Config) { c.Name = "" }, `replicate: Name "" must be`},
		{func(c *replicate.Config) { c.DataDir = "rel/dir" }, `replicate: DataDir "rel/dir" must be an absolute path`},
		{func(c *replicate.Config) { c.SuperuserPassword = "" }, "SuperuserPassword"},
		{func(c *replicate.Config) { c.ReplicationPassword = "" }, "ReplicationPassword"},
		{func(c *replicate.Config) { c.ReplicationUser = c.Superuser }, "must differ from Superuser"},
		{func(c *replicate.Config) { c.ClientNetworks = []string{"10.0.0.0"} }, `ClientNetworks "10.0.0.0" must be a CIDR`},
		{func(c *replicate.Config) { c.Parameters = map[string]string{"port": "1"} }, `Parameters "port" is set from Config`},
		{func(c *replicate.Config) { c.SocketDir = "/" + strings.Repeat("x", 100) }, "SocketDir"},
		{func(c *replicate.Config) { c.FenceTimeout = -time.Second }, "FenceTimeout -1s must not be negative"},
		{func(c *replicate.Config) { c.SuperuserPassword = "a\nb" }, "SuperuserPassword (redacted)"},
	}
	for _, tt := range tests {
		c := base()
		tt.edit(&c)
		err := c.Validate()
		var ce *replicate.ConfigError
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Validate() = %v, want a *ConfigError containing %q", err, tt.want)
		}
		if _, err := replicate.New(c); !errors.As(err, &ce) {
			t.Errorf("New() = %v, want the same *ConfigError", err)
		}
		if err != nil && strings.Contains(err.Error(), "a\nb") {
			t.Errorf("error shows the password: %v", err)
		}
	}
}

func TestNoBinaries(t *testing.T) {
	t.Parallel()
	c := replicate.DefaultConfig()
	c.Name, c.DataDir, c.BinDir = "n1", t.TempDir(), "/nonexistent/pg/bin"
	c.SuperuserPassword, c.ReplicationPassword = "x", "y"
	_, err := replicate.New(c)
	t.Logf("New error: %v", err)
	if !errors.Is(err, replicate.ErrNoBinaries) || !strings.Contains(err.Error(), "/nonexistent/pg/bin") || !strings.Contains(err.Error(), "initdb") {
		t.Fatalf("New with a BinDir without binaries = %v; want ErrNoBinaries naming the dir and what is missing", err)
	}
}

// TestBadInputs checks the errors for a data directory that is not empty,
// another cluster's data directory or source, a port in use, a directory
// owned by someone else and a wrong password.
func TestBadInputs(t *testing.T) {
	t.Parallel()
	ctx := testutil.Ctx(t, 3*time.Minute)
	p := testutil.StartPostgres(t, testutil.PostgresOptions{Name: "bad1"})
	other := testutil.StartPostgres(t, testutil.PostgresOptions{Name: "bad2"})

	t.Run("init-not-empty", func(t *testing.T) {
		cfg := testutil.PostgresConfig(t, "notempty")
		os.Mkdir(cfg.DataDir, 0o700)
		keep := filepath.Join(cfg.DataDir, "precious")
		os.WriteFile(keep, []byte("x"), 0o600)
		inst, err := replicate.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := inst.Init(ctx); !errors.Is(err, replicate.ErrDataDirNotEmpty) {
			t.Fatalf("Init in a non-empty dir = %v, want ErrDataDirNotEmpty", err)
		}
		if err := inst.Init(ctx); !strings.Contains(err.Error(), "precious") {
			t.Logf("Init error: %v", err)
			t.Fatalf("error does not name what is in the dir: %v", err)
		}
		if _, err := os.Stat(keep); err != nil {
			t.Fatalf("Init touched the existing file: %v", err)
		}
		// Clone refuses too, unless ReplaceDataDir: then it moves the old
		// directory aside.
		if err := inst.Clone(ctx, testutil.SourceOf(p, "")); !errors.Is(err, replicate.ErrDataDirNotEmpty) {
			t.Fatalf("Clone into a non-empty dir = %v, want ErrDataDirNotEmpty", err)
		}
		cfg.ReplaceDataDir = true
		inst, err = replicate.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		testutil.StopPostgresAtCleanup(t, inst)
		if err := inst.Clone(ctx, testutil.SourceOf(p, "")); err != nil {
			t.Fatalf("Clone with ReplaceDataDir: %v", err)
		}
		aside, _ := filepath.Glob(cfg.DataDir + ".replaced-*")
		if len(aside) != 1 {
			t.Fatalf("moved-aside dirs: %v, want one", aside)
		}
		if _, err := os.Stat(filepath.Join(aside[0], "precious")); err != nil {
			t.Fatalf("the moved-aside dir lost its file: %v", err)
		}
		// Init of an initialized dir.
		if err := inst.Init(ctx); !errors.Is(err, replicate.ErrDataDirNotEmpty) {
			t.Fatalf("Init of an initialized dir = %v, want ErrDataDirNotEmpty", err)
		}
	})

	t.Run("another-cluster", func(t *testing.T) {
		st := mustStatus(t, ctx, p)
		cfg := p.Config()
		cfg.SystemID = st.SystemID + 1
		cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), nil))
		inst, err := replicate.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Stop(ctx, replicate.Fast); err != nil {
			t.Fatal(err)
		}
		err = inst.Start(ctx)
		t.Logf("Start error: %v", err)
		if !errors.Is(err, replicate.ErrSystemIDMismatch) {
			t.Fatalf("Start with another SystemID = %v, want ErrSystemIDMismatch", err)
		}
		if err := p.Start(ctx); err != nil {
			t.Fatal(err)
		}
		// A standby of p cannot follow or rewind from another cluster.
		s := testutil.StartPostgres(t, testutil.PostgresOptions{Name: "bad1s", CloneFrom: p, NoSlot: true})
		if err := s.Follow(ctx, testutil.SourceOf(other, "")); !errors.Is(err, replicate.ErrSystemIDMismatch) {
			t.Fatalf("Follow another cluster = %v, want ErrSystemIDMismatch", err)
		}
		if err := s.Stop(ctx, replicate.Fast); err != nil {
			t.Fatal(err)
		}
		err = s.Rewind(ctx, testutil.SourceOf(other, ""))
		t.Logf("Rewind error: %v", err)
		var re *replicate.RewindError
		if !errors.Is(err, replicate.ErrRewindImpossible) || !errors.As(err, &re) || !errors.Is(err, replicate.ErrSystemIDMismatch) {
			t.Fatalf("Rewind from another cluster = %v, want a *RewindError, ErrRewindImpossible and ErrSystemIDMismatch", err)
		}
	})

	t.Run("port-in-use", func(t *testing.T) {
		cfg := testutil.PostgresConfig(t, "portbusy")
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		cfg.Port = l.Addr().(*net.TCPAddr).Port
		inst, err := replicate.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		testutil.StopPostgresAtCleanup(t, inst)
		if err := inst.Init(ctx); err != nil {
			t.Fatal(err)
		}
		err = inst.Start(ctx)
		t.Logf("Start error: %v", err)
		if !errors.Is(err, replicate.ErrPortInUse) || !strings.Contains(err.Error(), l.Addr().String()) {
			t.Fatalf("Start on a busy port = %v, want ErrPortInUse naming %s", err, l.Addr())
		}
	})

	t.Run("bad-parameter", func(t *testing.T) {
		cfg := testutil.PostgresConfig(t, "badparam")
		good, err := replicate.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := good.Init(ctx); err != nil {
			t.Fatal(err)
		}
		cfg.Parameters = map[string]string{"shared_buffers": "lots"}
		inst, err := replicate.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		testutil.StopPostgresAtCleanup(t, inst)
		err = inst.Start(ctx)
		t.Logf("Start error: %v", err)
		var se *replicate.ServerError
		var ee *replicate.ExitError
		if !errors.As(err, &se) || !errors.As(err, &ee) || !strings.Contains(se.LogTail, "shared_buffers") || strings.Count(err.Error(), "shared_buffers") != 1 {
			t.Fatalf("Start with a bad setting = %v; want a *ServerError wrapping an *ExitError, with the log line naming shared_buffers once", err)
		}
	})

	t.Run("other-major-version", func(t *testing.T) {
		cfg := testutil.PostgresConfig(t, "oldver")
		inst, err := replicate.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		testutil.StopPostgresAtCleanup(t, inst)
		if err := inst.Init(ctx); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(cfg.DataDir, "PG_VERSION"), []byte("9\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		err = inst.Start(ctx)
		t.Logf("Start error: %v", err)
		if !errors.Is(err, replicate.ErrVersionMismatch) || !strings.Contains(err.Error(), "PostgreSQL 9") ||
			!strings.Contains(err.Error(), "PostgreSQL "+inst.Version()) || !strings.Contains(err.Error(), inst.BinDir()) || !strings.Contains(err.Error(), "BinDir") {
			t.Fatalf("Start of a data dir of PostgreSQL 9 = %v, want ErrVersionMismatch naming both versions, the binary directory and the fix", err)
		}
		// A PG_VERSION that is not a version names the file.
		if err := os.WriteFile(filepath.Join(cfg.DataDir, "PG_VERSION"), []byte("fifteen\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		err = inst.Start(ctx)
		t.Logf("Start error: %v", err)
		if err == nil || !strings.Contains(err.Error(), "PG_VERSION holds \"fifteen\\n\"") || !strings.Contains(err.Error(), cfg.DataDir) {
			t.Fatalf("Start with PG_VERSION \"fifteen\" = %v, want an error naming PG_VERSION, its content and the data dir", err)
		}
	})

	t.Run("wrong-password", func(t *testing.T) {
		const bad = "not-the-password-42"
		cfg := p.Config()
		cfg.SuperuserPassword = bad
		cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), nil))
		inst, err := replicate.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		_, err = inst.Status(ctx)
		t.Logf("Status error: %v", err)
		if !errors.Is(err, replicate.ErrAuthentication) || strings.Contains(err.Error(), bad) {
			t.Fatalf("Status with a wrong superuser password = %v; want ErrAuthentication without the password", err)
		}
		// A clone with a wrong replication password.
		ccfg := testutil.PostgresConfig(t, "badrepl")
		ccfg.ReplicationPassword = bad
		c, err := replicate.New(ccfg)
		if err != nil {
			t.Fatal(err)
		}
		err = c.Clone(ctx, testutil.SourceOf(p, ""))
		t.Logf("Clone error: %v", err)
		if !errors.Is(err, replicate.ErrAuthentication) || strings.Contains(err.Error(), bad) {
			t.Fatalf("Clone with a wrong replication password = %v; want ErrAuthentication without the password", err)
		}
		if _, err := os.Stat(ccfg.DataDir); err == nil {
			if ents, _ := os.ReadDir(ccfg.DataDir); len(ents) > 0 {
				t.Fatalf("a refused clone left %d entries in the data dir", len(ents))
			}
		}
	})

	t.Run("owned-by-someone-else", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("needs root to create a directory owned by another user")
		}
		cfg := testutil.PostgresConfig(t, "owner")
		inst, err := replicate.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := inst.Init(ctx); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(cfg.DataDir, 0, 0); err != nil {
			t.Fatal(err)
		}
		err = inst.Start(ctx)
		t.Logf("Start error: %v", err)
		if !errors.Is(err, replicate.ErrWrongOwner) || !strings.Contains(err.Error(), "chown") {
			t.Fatalf("Start of a data dir owned by root = %v, want ErrWrongOwner with the fix", err)
		}
		// A socket directory the postgres user cannot write to.
		u, err := user.Lookup(inst.Config().OSUser)
		if err != nil {
			t.Fatal(err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		scfg := cfg
		scfg.SocketDir = t.TempDir()
		os.Chmod(scfg.SocketDir, 0o755)
		sinst, err := replicate.New(scfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(cfg.DataDir, uid, gid); err != nil { // the data dir is fine again
			t.Fatal(err)
		}
		err = sinst.Start(ctx)
		t.Logf("Start error: %v", err)
		if !errors.Is(err, replicate.ErrWrongOwner) || !strings.Contains(err.Error(), "SocketDir") {
			t.Fatalf("Start with a root-owned SocketDir = %v, want ErrWrongOwner naming SocketDir", err)
		}
		// A data dir the postgres user cannot reach.
		cfg2 := testutil.PostgresConfig(t, "noreach")
		locked := filepath.Join(filepath.Dir(cfg2.DataDir), "locked")
		if err := os.Mkdir(locked, 0o700); err != nil {
			t.Fatal(err)
		}
		cfg2.DataDir = filepath.Join(locked, "data")
		inst2, err := replicate.New(cfg2)
		if err != nil {
			t.Fatal(err)
		}
		err = inst2.Init(ctx)
		t.Logf("Init error: %v", err)
		if !errors.Is(err, replicate.ErrWrongOwner) || !strings.Contains(err.Error(), locked) {
			t.Fatalf("Init under a 0700 root dir = %v, want ErrWrongOwner naming %s", err, locked)
		}
	})
}
