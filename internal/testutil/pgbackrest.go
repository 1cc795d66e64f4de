package testutil

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/pgha/pgha/replicate"
)

// PgBackRestPath returns the pgbackrest program: $PGHA_TEST_PGBACKREST,
// else pgbackrest on PATH, else /usr/bin/pgbackrest. When none is found
// the test fails with the fix (never skipped: the backup tests are part
// of the suite).
func PgBackRestPath(t TB) string {
	t.Helper()
	if p := os.Getenv("PGHA_TEST_PGBACKREST"); p != "" {
		if fi, err := os.Stat(p); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			t.Fatalf("testutil: PGHA_TEST_PGBACKREST=%s is not an executable file: point it at pgbackrest, or unset it", p)
		}
		return p
	}
	if p, err := exec.LookPath("pgbackrest"); err == nil {
		return p
	}
	for _, p := range []string{"/usr/bin/pgbackrest", "/usr/local/bin/pgbackrest"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	t.Fatalf("testutil: pgBackRest is required by this test and was not found (PATH, /usr/bin, /usr/local/bin): run scripts/ensure-pgbackrest.sh (installs the Debian package pgbackrest as root), or apt-get install pgbackrest, or set PGHA_TEST_PGBACKREST")
	return ""
}

// PgBackRest is a pgBackRest repository on the local file system
// (repo1-type=posix) in a temp dir, with its configuration file, logs and
// locks there too, all owned by the PostgreSQL OS user.
type PgBackRest struct {
	// Path is the pgbackrest program.
	Path string
	// Stanza is the stanza's name.
	Stanza string
	// ConfigFile is the configuration file (--config).
	ConfigFile string
	// Dir holds the repository (Dir/repo), logs and locks.
	Dir string
	t   TB
}

// NewPgBackRest creates an empty repository for stanza in a temp dir.
// Call Run("stanza-create") against the primary before archiving to it.
func NewPgBackRest(t TB, stanza string) *PgBackRest {
	t.Helper()
	path := PgBackRestPath(t)
	base := t.TempDir()
	dir := filepath.Join(base, "pgbackrest")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		for _, d := range []string{base, filepath.Dir(base)} {
			if err := os.Chmod(d, 0o711); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, sub := range []string{"repo", "log", "lock", "spool"} {
		if err := os.Mkdir(filepath.Join(dir, sub), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	conf := filepath.Join(dir, "pgbackrest.conf")
	content := fmt.Sprintf(`[global]
repo1-type=posix
repo1-path=%s
repo1-retention-full=4
log-path=%s
lock-path=%s
spool-path=%s
log-level-console=warn
log-level-file=detail
compress-type=none
start-fast=y
archive-timeout=30
`, filepath.Join(dir, "repo"), filepath.Join(dir, "log"), filepath.Join(dir, "lock"), filepath.Join(dir, "spool"))
	if err := os.WriteFile(conf, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		err := filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
			if err != nil {
				return err
			}
			return chownToPostgres(p)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	r := &PgBackRest{Path: path, Stanza: stanza, ConfigFile: conf, Dir: dir, t: t}
	t.Cleanup(func() {
		if t.Failed() {
			for _, f := range []string{"archive-push-async", "archive-push", "archive-get", "backup", "restore", "check", "stanza-create"} {
				p := filepath.Join(dir, "log", stanza+"-"+f+".log")
				if b, err := os.ReadFile(p); err == nil {
					if len(b) > 4096 {
						b = b[len(b)-4096:]
					}
					t.Logf("--- %s (tail) ---\n%s", p, b)
				}
			}
		}
	})
	return r
}

// command is the pgbackrest command line prefix for the stanza, with
// pg1-path taken from $PGDATA (set by replicate for the postmaster), so
// that one setting serves every node.
func (r *PgBackRest) command() string {
	return fmt.Sprintf("%s --config=%s --stanza=%s --pg1-path=\"$PGDATA\"", r.Path, r.ConfigFile, r.Stanza)
}

// ArchiveCommand is an archive_command that pushes to this repository
// from whichever node runs it.
func (r *PgBackRest) ArchiveCommand() string { return r.command() + " archive-push %p" }

// RestoreCommand is a restore_command that fetches from this repository.
func (r *PgBackRest) RestoreCommand() string { return r.command() + ` archive-get %f "%p"` }

// ArchiveParameters are the server settings that archive every node's WAL
// to this repository and restore from it.
func (r *PgBackRest) ArchiveParameters() map[string]string {
	return map[string]string{"archive_mode": "on", "archive_command": r.ArchiveCommand(), "restore_command": r.RestoreCommand()}
}

// Method is the replicate.ReplicaMethod that restores from this
// repository.
func (r *PgBackRest) Method() replicate.ReplicaMethod {
	return replicate.ReplicaMethod{Kind: replicate.MethodPgBackRest, Stanza: r.Stanza, ConfigFile: r.ConfigFile, Path: r.Path}
}

// Run runs `pgbackrest <args> <command>` as the PostgreSQL OS user, and
// returns its output; a failure fails the test. With inst (for
// stanza-create, check, backup) it names inst's data directory, socket and
// port, and connects as the superuser; nil for commands that take no pg
// options (info, expire).
func (r *PgBackRest) Run(ctx context.Context, inst *replicate.Instance, command string, args ...string) string {
	r.t.Helper()
	out, err := r.Try(ctx, inst, command, args...)
	if err != nil {
		r.t.Fatalf("testutil: pgbackrest %s: %v\n%s", command, err, out)
	}
	return out
}

// Try is Run returning the error instead of failing the test.
func (r *PgBackRest) Try(ctx context.Context, inst *replicate.Instance, command string, args ...string) (string, error) {
	full := []string{"--config=" + r.ConfigFile, "--stanza=" + r.Stanza}
	env := []string{"PATH=/usr/local/bin:/usr/bin:/bin", "LC_ALL=C"}
	osUser := replicate.DefaultOSUser
	if inst != nil {
		cfg := inst.Config()
		full = append(full, "--pg1-path="+cfg.DataDir, "--pg1-port="+strconv.Itoa(cfg.Port),
			"--pg1-socket-path="+cfg.SocketDir, "--pg1-user="+cfg.Superuser)
		env = append(env, "PGPASSWORD="+cfg.SuperuserPassword)
		osUser = cfg.OSUser
	}
	full = append(full, args...)
	full = append(full, command)
	cmd := exec.CommandContext(ctx, r.Path, full...)
	cmd.Dir = r.Dir
	cmd.Env = env
	if os.Geteuid() == 0 {
		cred, err := osUserCredential(osUser)
		if err != nil {
			return "", err
		}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// PgBackRestArchive is one archive (one database version) of `pgbackrest
// info --output=json`.
type PgBackRestArchive struct {
	ID  string `json:"id"`
	Min string `json:"min"`
	Max string `json:"max"`
}

// PgBackRestBackup is one backup of `pgbackrest info --output=json`.
type PgBackRestBackup struct {
	Label   string `json:"label"`
	Type    string `json:"type"`
	Archive struct {
		Start string `json:"start"`
		Stop  string `json:"stop"`
	} `json:"archive"`
}

// PgBackRestInfo is the part of `pgbackrest info --output=json` for one
// stanza that tests check.
type PgBackRestInfo struct {
	Name    string              `json:"name"`
	Archive []PgBackRestArchive `json:"archive"`
	Backup  []PgBackRestBackup  `json:"backup"`
	Status  struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"status"`
}

// Info returns the stanza's `pgbackrest info --output=json`.
func (r *PgBackRest) Info(ctx context.Context) PgBackRestInfo {
	r.t.Helper()
	out := r.Run(ctx, nil, "info", "--output=json")
	var infos []PgBackRestInfo
	if err := json.Unmarshal([]byte(out), &infos); err != nil {
		r.t.Fatalf("testutil: pgbackrest info: %v\n%s", err, out)
	}
	for _, in := range infos {
		if in.Name == r.Stanza {
			return in
		}
	}
	r.t.Fatalf("testutil: pgbackrest info: no stanza %s in %s", r.Stanza, out)
	return PgBackRestInfo{}
}

// ArchivedFiles returns the names of the files in the repository's WAL
// archive (segments with their checksum suffix, history files), sorted by
// path.
func (r *PgBackRest) ArchivedFiles() []string {
	r.t.Helper()
	var names []string
	root := filepath.Join(r.Dir, "repo", "archive", r.Stanza)
	err := filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if !fi.IsDir() && !strings.HasSuffix(p, ".info") && !strings.HasSuffix(p, ".info.copy") {
			names = append(names, fi.Name())
		}
		return nil
	})
	if err != nil {
		r.t.Fatalf("testutil: list the archive: %v", err)
	}
	return names
}

// osUserCredential returns the credential of OS user name.
func osUserCredential(name string) (*syscall.Credential, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return nil, fmt.Errorf("look up OS user %s: %w", name, err)
	}
	uid, _ := strconv.ParseUint(u.Uid, 10, 32)
	gid, _ := strconv.ParseUint(u.Gid, 10, 32)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}
