package replicate

import (
	"errors"
	"fmt"
	"strings"
	"syscall"
)

// Sentinel errors. Operations wrap them with context; match them with
// errors.Is.
var (
	// ErrNoBinaries: the PostgreSQL server binaries were not found. The
	// wrapping error lists every place that was searched.
	ErrNoBinaries = errors.New("replicate: PostgreSQL server binaries not found")

	// ErrNotInitialized: the data directory holds no PostgreSQL cluster
	// (no PG_VERSION file). Run [Instance.Init] or [Instance.Clone] first.
	ErrNotInitialized = errors.New("replicate: data directory holds no PostgreSQL cluster")

	// ErrDataDirNotEmpty: Init or Clone was asked to create a cluster in a
	// directory that is not empty. Nothing was changed. Set
	// [Config.ReplaceDataDir] to let Clone move it aside.
	ErrDataDirNotEmpty = errors.New("replicate: data directory is not empty")

	// ErrRunning: the operation needs the server stopped, and it is running.
	ErrRunning = errors.New("replicate: server is running")

	// ErrNotRunning: the operation needs a running server.
	ErrNotRunning = errors.New("replicate: server is not running")

	// ErrNotStandby: Follow was asked to repoint a running primary. Fence or
	// Stop it, then Rewind it (or Follow it while stopped).
	ErrNotStandby = errors.New("replicate: server is a running primary, not a standby")

	// ErrPortInUse: another process listens on the configured port.
	ErrPortInUse = errors.New("replicate: port in use")

	// ErrSystemIDMismatch: a data directory or a source server belongs to
	// another cluster (a different PostgreSQL system identifier) than the
	// one expected.
	ErrSystemIDMismatch = errors.New("replicate: system identifier mismatch")

	// ErrVersionMismatch: the data directory was created by another major
	// version of PostgreSQL than the binaries in use.
	ErrVersionMismatch = errors.New("replicate: PostgreSQL major version mismatch")

	// ErrWrongOwner: a directory is owned by another OS user than the one
	// PostgreSQL runs as, or the OS user cannot reach it.
	ErrWrongOwner = errors.New("replicate: directory not usable by the PostgreSQL OS user")

	// ErrAuthentication: the server rejected a password (superuser or
	// replication role). The password itself never appears in any error.
	ErrAuthentication = errors.New("replicate: password authentication failed")

	// ErrRewindImpossible: pg_rewind cannot bring this data directory back
	// in line with the source: another cluster, WAL needed for the rewind
	// is gone, or neither data checksums nor wal_log_hints were on. Clone
	// afresh instead. Returned wrapped in a [*RewindError].
	ErrRewindImpossible = errors.New("replicate: rewind impossible")

	// ErrRewindIncomplete: a pg_rewind of this data directory started
	// modifying it and did not finish (its source died, it was killed):
	// the directory may be damaged, so Start refuses it. Clone it afresh
	// (with [Config.ReplaceDataDir] to move it aside). The marker is the
	// file DataDir + ".rewind-incomplete".
	ErrRewindIncomplete = errors.New("replicate: an interrupted rewind left the data directory unusable")

	// ErrFenced: a Start raced with a Fence and lost: the server it started
	// was stopped again at once.
	ErrFenced = errors.New("replicate: fenced while starting")
)

// ConfigError reports an invalid [Config] field: its name, its value and
// what to do instead. [Config.Validate] and [New] return it.
type ConfigError struct {
	Field  string
	Value  any
	Reason string
}

// Error returns "replicate: <Field> <Value> <Reason>".
func (e *ConfigError) Error() string {
	return fmt.Sprintf("replicate: %s %v %s", e.Field, e.Value, e.Reason)
}

// CommandError reports a PostgreSQL tool (initdb, pg_basebackup, pg_rewind,
// pg_controldata, postgres --single) that failed. Args never hold a
// password. Stderr is the tail of the tool's standard error (at most
// [tailBytes] bytes).
type CommandError struct {
	Path     string   // the binary run
	Args     []string // its arguments, without the binary
	ExitCode int      // -1 when it did not exit normally (signal, not started)
	Stderr   string   // tail of standard error (and standard output)
	Err      error    // the underlying error from os/exec or the context
}

// Error returns the command line, how it failed and its output's tail.
// Error describes the failure.
func (e *CommandError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "replicate: %s: %v", strings.Join(append([]string{e.Path}, e.Args...), " "), e.Err)
	if s := strings.TrimSpace(e.Stderr); s != "" {
		b.WriteString(": ")
		b.WriteString(s)
	}
	return b.String()
}

// Unwrap returns Err.
// Unwrap returns the underlying error.
func (e *CommandError) Unwrap() error { return e.Err }

// ExitError is what [Instance.ExitErr] returns when the postmaster exited
// without being asked to: a crash, a kill -9, a PANIC, or a stop by someone
// else. LogTail holds the last lines of the server log.
type ExitError struct {
	PID      int
	ExitCode int    // -1 when killed by a signal or unknown (adopted process)
	Signal   string // the signal that killed it, if any, e.g. "killed"
	LogTail  string
}

// Error says how the postmaster exited, followed by the server log's tail.
// Error describes the failure.
func (e *ExitError) Error() string {
	how := fmt.Sprintf("exit code %d", e.ExitCode)
	if e.Signal != "" {
		how = "signal: " + e.Signal
	} else if e.ExitCode < 0 {
		how = "exit status unknown (adopted process)"
	}
	s := fmt.Sprintf("replicate: postmaster (pid %d) exited unexpectedly: %s", e.PID, how)
	if e.LogTail != "" {
		s += "\nserver log:\n" + e.LogTail
	}
	return s
}

// ServerError reports an operation on a running server that did not
// succeed, with the tail of the server log that explains it.
type ServerError struct {
	Op      string // e.g. "start", "promote"
	Err     error
	LogTail string
}

// Error returns the operation and its error, followed by the server log's
// tail.
// Error describes the failure.
func (e *ServerError) Error() string {
	s := fmt.Sprintf("replicate: %s: %s", e.Op, strings.TrimPrefix(fmt.Sprint(e.Err), "replicate: "))
	if e.LogTail != "" {
		s += "\nserver log:\n" + e.LogTail
	}
	return s
}

// Unwrap returns Err.
// Unwrap returns the underlying error.
func (e *ServerError) Unwrap() error { return e.Err }

// RewindError reports a pg_rewind that did not succeed. When Impossible is
// true, retrying cannot help (errors.Is(err, ErrRewindImpossible) is true):
// the data directory must be re-cloned. Otherwise the failure may be
// transient (source unreachable) and a retry may succeed.
type RewindError struct {
	Impossible bool
	Reason     string // one line: why, from pg_rewind's output
	Err        error  // usually a *CommandError
}

// Error returns the reason and the underlying error.
func (e *RewindError) Error() string {
	inner := strings.TrimPrefix(fmt.Sprint(e.Err), "replicate: ")
	if e.Impossible {
		return fmt.Sprintf("replicate: rewind impossible: %s: %s", e.Reason, inner)
	}
	return fmt.Sprintf("replicate: rewind: %s: %s", e.Reason, inner)
}

// Unwrap returns Err.
// Unwrap returns the underlying error.
func (e *RewindError) Unwrap() error { return e.Err }

// Is reports ErrRewindImpossible for impossible rewinds.
func (e *RewindError) Is(target error) bool {
	return target == ErrRewindImpossible && e.Impossible
}

// opError adds the operation to an error: "replicate: <op>: <err>", without
// repeating the package prefix of err. errors.Is and errors.As see err.
type opError struct {
	op  string
	err error
}

func opErr(op string, err error) error { return &opError{op, err} }

// Error describes the failure.
func (e *opError) Error() string {
	return "replicate: " + e.op + ": " + strings.TrimPrefix(e.err.Error(), "replicate: ")
}

// Unwrap returns the underlying error.
func (e *opError) Unwrap() error { return e.err }

// diskError is an operation that failed because the file system holding
// the data directory is full or read-only. errors.Is(err, syscall.ENOSPC)
// or errors.Is(err, syscall.EROFS) matches it; Error says what to do.
type diskError struct {
	dir   string
	errno syscall.Errno // ENOSPC (also for EDQUOT) or EROFS
	err   error
}

// Error names the directory, the cause and the fix.
func (e *diskError) Error() string {
	inner := strings.TrimPrefix(e.err.Error(), "replicate: ")
	if e.errno == syscall.EROFS {
		return fmt.Sprintf("replicate: %s: the file system of %s is read-only (EROFS): remount it read-write (or fix the volume), then retry; nothing was deleted", inner, e.dir)
	}
	return fmt.Sprintf("replicate: %s: the file system of %s is full (ENOSPC): free space on it or grow the volume, then retry; nothing was deleted", inner, e.dir)
}

// Unwrap returns the underlying error.
func (e *diskError) Unwrap() error { return e.err }

// Is matches the errno, also when the cause was only seen in a tool's
// output or the server log.
func (e *diskError) Is(target error) bool { return target == e.errno }

// withDiskHint turns an error caused by a full or read-only file system
// into a *diskError naming dir; other errors are returned unchanged.
func withDiskHint(err error, dir string) error {
	if err == nil {
		return nil
	}
	var de *diskError
	if errors.As(err, &de) {
		return err
	}
	switch {
	case errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) || outputSays(err, "No space left on device", "Disk quota exceeded"):
		return &diskError{dir: dir, errno: syscall.ENOSPC, err: err}
	case errors.Is(err, syscall.EROFS) || outputSays(err, "Read-only file system"):
		return &diskError{dir: dir, errno: syscall.EROFS, err: err}
	}
	return err
}

// outputSays reports whether a failed tool's output or the server log's
// tail carried in err contains one of msgs.
func outputSays(err error, msgs ...string) bool {
	var texts []string
	var ce *CommandError
	if errors.As(err, &ce) {
		texts = append(texts, ce.Stderr)
	}
	var se *ServerError
	if errors.As(err, &se) {
		texts = append(texts, se.LogTail)
	}
	for _, t := range texts {
		for _, m := range msgs {
			if strings.Contains(t, m) {
				return true
			}
		}
	}
	return false
}
