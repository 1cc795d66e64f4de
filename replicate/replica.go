package replicate

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// This file is replica creation: the ordered list of methods Clone tries
// (Config.ReplicaMethods), what each runs, and how a failed attempt's data
// directory is moved aside so that the next method starts from an empty
// one.

// ReplicaMethodKind names a way to create a standby's data directory.
type ReplicaMethodKind string

// Replica creation methods.
const (
	// MethodBasebackup copies the source with pg_basebackup (WAL streamed
	// through the slot). It loads the source and takes as long as the
	// copy of the whole database over the network.
	MethodBasebackup ReplicaMethodKind = "basebackup"
	// MethodPgBackRest restores the latest backup of a pgBackRest
	// repository (`pgbackrest restore --type=standby`), then streams the
	// rest from the source. pgBackRest writes restore_command
	// (archive-get), so a standby behind the source's WAL catches up from
	// the archive.
	MethodPgBackRest ReplicaMethodKind = "pgbackrest"
	// MethodCommand runs a user's executable that fills the data
	// directory (WAL-G, Barman, a storage snapshot); see [ReplicaMethod].
	MethodCommand ReplicaMethodKind = "command"
)

// DefaultReplicaMethodTimeout bounds one replica creation method when
// ReplicaMethod.Timeout is zero.
const DefaultReplicaMethodTimeout = time.Hour

// ReplicaMethod is one way [Instance.Clone] may create this node's data
// directory. Clone tries Config.ReplicaMethods in order; each method gets
// an empty data directory and Timeout; it has succeeded when the data
// directory holds a cluster of the source's system that starts as a
// standby of the source. After a failed method, a non-empty data
// directory is moved aside to DataDir + ".failed-<kind>-<UTC time>" (never
// deleted; the error and the log say where), and the next method runs.
//
// The command method runs Path with Args, as OSUser, with an empty
// working directory of its own and only this environment:
//
//	PGHA_DATA_DIR          the empty data directory to fill (mode 0700, owned by OSUser)
//	PGHA_NODE              this node's name (Config.Name)
//	PGHA_BIN_DIR           the PostgreSQL binaries' directory
//	PGHA_SOURCE_HOST       the source's (the leader's) host
//	PGHA_SOURCE_PORT       the source's port
//	PGHA_SOURCE_SLOT       the replication slot on the source ("" for none); it exists
//	PGHA_SYSTEM_ID         the source's system identifier (decimal)
//	PGHA_REPLICATION_USER  Config.ReplicationUser
//	PGHA_SOURCE_CONNINFO   a libpq connection string to the source as ReplicationUser, without a password
//	PGPASSFILE             a libpq password file (mode 0600, owned by OSUser) holding
//	                       ReplicationUser's password; removed when the command ends
//	PATH, LC_ALL, LANG     /usr/local/bin:/usr/bin:/bin, C, C
//
// The password is never in the arguments or the environment. Exit status
// 0 is success. The command needs not configure the standby: pgha writes
// standby.signal, primary_conninfo and primary_slot_name afterwards (other
// lines of postgresql.auto.conf, e.g. a restore_command, are kept). On a
// timeout its process group gets SIGTERM, and the command SIGKILL 5 s
// later if it has not exited.
type ReplicaMethod struct {
	// Kind is basebackup, pgbackrest or command. Required.
	Kind ReplicaMethodKind
	// Timeout bounds the method, including the start of the standby.
	// Default DefaultReplicaMethodTimeout (1h).
	Timeout time.Duration
	// Stanza is the pgBackRest stanza to restore from. Required for
	// pgbackrest; letters, digits, '_', '.', '-'.
	Stanza string
	// ConfigFile is pgBackRest's configuration file (--config), readable
	// by OSUser. Default: pgBackRest's own (/etc/pgbackrest/pgbackrest.conf,
	// else /etc/pgbackrest.conf). pgbackrest only.
	ConfigFile string
	// Path is the program: for pgbackrest, default "pgbackrest" found on
	// PATH; for command, required, an absolute path. basebackup ignores
	// it.
	Path string
	// Args are extra arguments: for pgbackrest, options of the form
	// --name=value put before "restore" (e.g. --repo1-path=/backups,
	// --process-max=4); for command, its arguments. pgha sets
	// --stanza, --pg1-path and --type itself.
	Args []string
}

// String returns the kind, with the stanza or the path.
func (m ReplicaMethod) String() string {
	switch m.Kind {
	case MethodPgBackRest:
		return string(m.Kind) + " stanza " + m.Stanza
	case MethodCommand:
		return string(m.Kind) + " " + m.Path
	}
	return string(m.Kind)
}

var stanzaRE = nameRE

// validate checks method number n of Config.ReplicaMethods.
func (m ReplicaMethod) validate(n int) error {
	field := func(f string) string { return fmt.Sprintf("ReplicaMethods[%d].%s", n, f) }
	switch m.Kind {
	case MethodBasebackup:
	case MethodPgBackRest:
		if m.Stanza == "" {
			return &ConfigError{field("Stanza"), `""`, "is required for the pgbackrest method: the stanza of the repository to restore from (pgbackrest --stanza)"}
		}
		if !stanzaRE.MatchString(m.Stanza) {
			return &ConfigError{field("Stanza"), strconv.Quote(m.Stanza), "must be 1-63 letters, digits, '_', '-' or '.'"}
		}
		if m.ConfigFile != "" && !filepath.IsAbs(m.ConfigFile) {
			return &ConfigError{field("ConfigFile"), strconv.Quote(m.ConfigFile), "must be an absolute path or empty (pgBackRest's default)"}
		}
		for _, a := range m.Args {
			name, _, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
			switch {
			case !strings.HasPrefix(a, "--"):
				return &ConfigError{field("Args"), strconv.Quote(a), "must be a pgBackRest option --name=value"}
			case name == "stanza" || name == "pg1-path" || name == "type" || name == "config":
				return &ConfigError{field("Args"), strconv.Quote(a), "is set by pgha: use Stanza and ConfigFile; the data directory and --type=standby are fixed"}
			}
		}
	case MethodCommand:
		if m.Path == "" || !filepath.IsAbs(m.Path) {
			return &ConfigError{field("Path"), strconv.Quote(m.Path), "must be the absolute path of the executable that fills PGHA_DATA_DIR (see ReplicaMethod)"}
		}
	case "":
		return &ConfigError{field("Kind"), `""`, "is required: basebackup, pgbackrest or command"}
	default:
		return &ConfigError{field("Kind"), strconv.Quote(string(m.Kind)), "is not a replica method: use basebackup, pgbackrest or command"}
	}
	if m.Kind == MethodPgBackRest && m.Path != "" && !filepath.IsAbs(m.Path) {
		return &ConfigError{field("Path"), strconv.Quote(m.Path), "must be the absolute path of pgbackrest, or empty (found on PATH)"}
	}
	if m.Timeout < 0 {
		return &ConfigError{field("Timeout"), m.Timeout, "must not be negative (0 means the default, 1h)"}
	}
	return nil
}

// ParseReplicaMethods parses a comma-separated list of method kinds, e.g.
// "pgbackrest,basebackup", into methods with default settings (for flags;
// fill in Stanza, Path and the rest afterwards).
func ParseReplicaMethods(s string) ([]ReplicaMethod, error) {
	var out []ReplicaMethod
	for _, k := range strings.Split(s, ",") {
		k = strings.TrimSpace(k)
		switch ReplicaMethodKind(k) {
		case MethodBasebackup, MethodPgBackRest, MethodCommand:
			out = append(out, ReplicaMethod{Kind: ReplicaMethodKind(k)})
		default:
			return nil, &ConfigError{"ReplicaMethods", strconv.Quote(k), "is not a replica method: use a comma-separated list of basebackup, pgbackrest and command"}
		}
	}
	return out, nil
}

// replicaMethods returns the configured methods, or basebackup alone.
func (i *Instance) replicaMethods() []ReplicaMethod {
	if len(i.cfg.ReplicaMethods) == 0 {
		return []ReplicaMethod{{Kind: MethodBasebackup}}
	}
	return i.cfg.ReplicaMethods
}

// createReplica fills the (empty) data directory with method m and
// starts it as a standby of src. On failure the server is stopped; the
// caller moves the directory aside.
func (i *Instance) createReplica(ctx context.Context, m ReplicaMethod, src Source, sysID uint64, srcTLI uint32) error {
	timeout := m.Timeout
	if timeout == 0 {
		timeout = DefaultReplicaMethodTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var err error
	switch m.Kind {
	case MethodPgBackRest:
		err = i.restorePgBackRest(ctx, m)
	case MethodCommand:
		err = i.runReplicaCommand(ctx, m, src, sysID)
	default:
		err = i.basebackup(ctx, src)
	}
	if err != nil {
		return err
	}
	if !i.initialized() {
		return fmt.Errorf("replicate: %s succeeded but %s holds no PostgreSQL cluster (no PG_VERSION)", m, i.cfg.DataDir)
	}
	if err := i.checkVersion(); err != nil {
		return err
	}
	got, err := i.controlSystemID(ctx)
	if err != nil {
		return err
	}
	if got != sysID {
		return fmt.Errorf("%w: %s restored system %d, the source %s is system %d", ErrSystemIDMismatch, m, got, src, sysID)
	}
	if err := i.writeStandbyConfig(src); err != nil {
		return err
	}
	i.setSource(src, srcTLI)
	if err := i.start(ctx); err != nil {
		sctx, scancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer scancel()
		if serr := i.stop(sctx, Immediate); serr != nil {
			err = errors.Join(err, serr)
		}
		return err
	}
	return nil
}

// basebackup runs pg_basebackup from src into the data directory.
func (i *Instance) basebackup(ctx context.Context, src Source) error {
	args := []string{"-D", i.cfg.DataDir, "-h", src.Host, "-p", strconv.Itoa(src.Port), "-U", i.cfg.ReplicationUser,
		"--no-password", "--wal-method=stream", "--checkpoint=fast"}
	if src.Slot != "" {
		args = append(args, "--slot="+src.Slot)
	}
	if i.cfg.UnsafeNoSync {
		args = append(args, "--no-sync")
	}
	env := []string{"PGPASSWORD=" + i.cfg.ReplicationPassword, "PGAPPNAME=" + i.cfg.Name, "PGCONNECT_TIMEOUT=5"}
	env = append(env, i.sslEnv()...)
	if _, err := i.run(ctx, "pg_basebackup", args, runOpts{env: env}); err != nil {
		var ce *CommandError
		if errors.As(err, &ce) && strings.Contains(ce.Stderr, "password authentication failed") {
			err = fmt.Errorf("%w: %w", ErrAuthentication, err)
		}
		return err
	}
	return nil
}

// pgBackRestPath is the pgbackrest program of m.
func pgBackRestPath(m ReplicaMethod) string {
	if m.Path != "" {
		return m.Path
	}
	if p, err := exec.LookPath("pgbackrest"); err == nil {
		return p
	}
	for _, p := range []string{"/usr/bin/pgbackrest", "/usr/local/bin/pgbackrest"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return "pgbackrest"
}

// restorePgBackRest restores the stanza's latest backup into the data
// directory as a standby (standby.signal, restore_command).
func (i *Instance) restorePgBackRest(ctx context.Context, m ReplicaMethod) error {
	var args []string
	if m.ConfigFile != "" {
		args = append(args, "--config="+m.ConfigFile)
	}
	args = append(args, "--stanza="+m.Stanza, "--pg1-path="+i.cfg.DataDir)
	args = append(args, m.Args...)
	args = append(args, "--type=standby", "restore")
	_, err := i.runPath(ctx, pgBackRestPath(m), args, runOpts{dir: os.TempDir()})
	return err
}

// runReplicaCommand runs a user's replica creation command with the
// documented environment (see ReplicaMethod).
func (i *Instance) runReplicaCommand(ctx context.Context, m ReplicaMethod, src Source, sysID uint64) error {
	pass, cleanup, err := i.secretFile("pgha-replica-command-", "pgpass", i.passFileContent())
	if err != nil {
		return err
	}
	defer cleanup()
	work := filepath.Join(filepath.Dir(pass), "work")
	if err := os.Mkdir(work, 0o700); err != nil {
		return fmt.Errorf("replicate: %w", err)
	}
	if err := i.chown(work); err != nil {
		return err
	}
	conninfo := strings.Join(append([]string{
		"host=" + quoteConninfo(src.Host), fmt.Sprintf("port=%d", src.Port),
		"user=" + quoteConninfo(i.cfg.ReplicationUser), "application_name=" + quoteConninfo(i.cfg.Name),
		"connect_timeout=5",
	}, i.sslConninfo()...), " ")
	env := []string{
		"PGHA_DATA_DIR=" + i.cfg.DataDir,
		"PGHA_NODE=" + i.cfg.Name,
		"PGHA_BIN_DIR=" + i.bins.dir,
		"PGHA_SOURCE_HOST=" + src.Host,
		"PGHA_SOURCE_PORT=" + strconv.Itoa(src.Port),
		"PGHA_SOURCE_SLOT=" + src.Slot,
		"PGHA_SYSTEM_ID=" + strconv.FormatUint(sysID, 10),
		"PGHA_REPLICATION_USER=" + i.cfg.ReplicationUser,
		"PGHA_SOURCE_CONNINFO=" + conninfo,
		"PGPASSFILE=" + pass,
	}
	_, err = i.runPath(ctx, m.Path, m.Args, runOpts{env: env, dir: work, group: true})
	return err
}

// walSegmentRE matches a WAL segment file name.
var walSegmentRE = regexp.MustCompile(`^[0-9A-F]{24}$`)

// archiveReceivedWAL marks the WAL segments in pg_wal whose archive
// status is "done" (a standby's received segments; see
// Config.ArchiveReceivedWAL) "ready", so that the archiver of the
// promoted server pushes them. It returns how many it marked.
func (i *Instance) archiveReceivedWAL() int {
	dir := filepath.Join(i.cfg.DataDir, "pg_wal", "archive_status")
	ents, err := os.ReadDir(dir)
	if err != nil {
		i.log.Warn("archive received WAL: read archive_status", "err", err.Error())
		return 0
	}
	n := 0
	for _, e := range ents {
		seg, ok := strings.CutSuffix(e.Name(), ".done")
		if !ok || !walSegmentRE.MatchString(seg) {
			continue
		}
		if _, err := os.Stat(filepath.Join(i.cfg.DataDir, "pg_wal", seg)); err != nil {
			continue // recycled meanwhile
		}
		if err := os.Rename(filepath.Join(dir, e.Name()), filepath.Join(dir, seg+".ready")); err != nil {
			i.log.Warn("archive received WAL: mark ready", "segment", seg, "err", err.Error())
			continue
		}
		n++
	}
	if n > 0 {
		i.log.Info("received WAL handed to the archiver", "segments", n)
	}
	return n
}

// secretFile writes content to a new mode-0600 file called name, owned
// by the OS user, in a new temp dir that only it can read; cleanup removes
// both.
func (i *Instance) secretFile(prefix, name, content string) (path string, cleanup func(), err error) {
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		return "", nil, fmt.Errorf("replicate: %w", err)
	}
	cleanup = func() { os.RemoveAll(dir) }
	if err := i.chown(dir); err != nil {
		cleanup()
		return "", nil, err
	}
	path = filepath.Join(dir, name)
	if err := i.writeFile(path, []byte(content), 0o600); err != nil {
		cleanup()
		return "", nil, err
	}
	return path, cleanup, nil
}

// moveAsideFailed moves a data directory a failed method left behind to
// DataDir.failed-<kind>-<time> and returns where; "" when it was empty or
// absent (nothing to keep) or could not be read.
func (i *Instance) moveAsideFailed(kind ReplicaMethodKind) (string, error) {
	entries, err := os.ReadDir(i.cfg.DataDir)
	if errors.Is(err, fs.ErrNotExist) || (err == nil && len(entries) == 0) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("replicate: read data directory: %w", err)
	}
	aside := fmt.Sprintf("%s.failed-%s-%s", i.cfg.DataDir, kind, time.Now().UTC().Format("20060102T150405.000000000Z"))
	if err := os.Rename(i.cfg.DataDir, aside); err != nil {
		return "", fmt.Errorf("replicate: move the failed data directory aside to %s: %w", aside, err)
	}
	i.clearRewindMarker(aside)
	return aside, nil
}

// MethodError is a replica creation method that failed during
// [Instance.Clone]: which one, where its data directory was moved ("" when
// it left the directory empty), and why.
type MethodError struct {
	Method ReplicaMethod
	// MovedTo is where the data directory the method left was moved
	// (never deleted); "" when it was empty.
	MovedTo string
	Err     error
}

// Error names the method, where its directory went and the cause.
func (e *MethodError) Error() string {
	s := fmt.Sprintf("replica method %s: %s", e.Method, strings.TrimPrefix(e.Err.Error(), "replicate: "))
	if e.MovedTo != "" {
		s += " (its data directory was moved aside to " + e.MovedTo + ")"
	}
	return s
}

// Unwrap returns Err.
func (e *MethodError) Unwrap() error { return e.Err }

// killGroup is a Cancel function for a command run in its own process
// group: the whole group gets SIGTERM.
func killGroup(cmd *exec.Cmd) func() error {
	return func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM) }
}
