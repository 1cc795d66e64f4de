package replicate

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
)

const instrumentationName = "github.com/pgha/pgha/replicate"

// pollEvery is how often operations re-check a condition on the server.
const pollEvery = 5 * time.Millisecond

// StopMode is how [Instance.Stop] shuts PostgreSQL down.
type StopMode int

const (
	// Fast rolls back open transactions, disconnects clients and writes a
	// shutdown checkpoint (SIGINT). The default for planned stops.
	Fast StopMode = iota
	// Smart waits for every client to disconnect (SIGTERM). It can wait
	// forever; never use it to fence.
	Smart
	// Immediate aborts every process without a checkpoint (SIGQUIT); the
	// next start runs crash recovery.
	Immediate
)

// String returns "fast", "smart" or "immediate".
func (m StopMode) String() string {
	switch m {
	case Fast:
		return "fast"
	case Smart:
		return "smart"
	case Immediate:
		return "immediate"
	}
	return "StopMode(" + strconv.Itoa(int(m)) + ")"
}

func (m StopMode) signal() syscall.Signal {
	switch m {
	case Smart:
		return syscall.SIGTERM
	case Immediate:
		return syscall.SIGQUIT
	}
	return syscall.SIGINT
}

// Instance drives one PostgreSQL data directory on this machine. Create it
// with [New]. Its methods are safe for concurrent use: operations that change
// the server's process or role (Init, Clone, Start, Stop, Restart, Follow,
// Promote, Rewind) run one at a time; [Instance.Fence], [Instance.Status]
// and the slot and synchronous standby methods do not wait for them.
type Instance struct {
	cfg    Config
	bins   binaries
	cred   *syscall.Credential // nil when not root: run as ourselves
	groups []uint32            // supplementary groups of the OS user
	log    *slog.Logger
	tracer trace.Tracer

	opMu sync.Mutex // serialises role and process changes

	mu       sync.Mutex // guards the fields below
	proc     *process   // the postmaster started or adopted last; nil if none
	spawning bool       // Start is launching a postmaster: do not adopt it
	fenceGen uint64     // incremented by every Fence
	src      *Source    // the source of the last Clone, Follow or Rewind
	srcTLI   uint32     // src's timeline then

	// adminSem (one slot) serialises use of admin, the persistent
	// session for status queries (adminconn.go).
	adminSem chan struct{}
	admin    adminConn
}

// process is one postmaster: a supervised child or an adopted one.
type process struct {
	pid      int
	adopted  bool
	done     chan struct{} // closed when the postmaster has exited (and been reaped, if ours)
	err      error         // nil or *ExitError: why it exited; written before done is closed
	stopping atomic.Bool   // set before this package signals it to stop
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// New returns an Instance for cfg.DataDir after validating cfg (a
// [*ConfigError] names the bad field) and finding the PostgreSQL binaries
// (an error wrapping [ErrNoBinaries] names every place searched). It starts
// nothing and does not touch the data directory. When this process runs as
// root, cfg.OSUser must exist.
func New(cfg Config) (*Instance, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := cfg.TLS.checkFiles(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	cfg.DataDir = filepath.Clean(cfg.DataDir)
	cfg.Parameters = cloneMap(cfg.Parameters)
	cfg.ReplicaMethods = cloneMethods(cfg.ReplicaMethods)
	cfg.ReplicationNetworks = append([]string(nil), cfg.ReplicationNetworks...)
	cfg.ClientNetworks = append([]string(nil), cfg.ClientNetworks...)
	bins, err := resolveBinaries(cfg.BinDir)
	if err != nil {
		return nil, err
	}
	i := &Instance{cfg: cfg, bins: bins, adminSem: make(chan struct{}, 1)}
	if os.Geteuid() == 0 {
		u, err := user.Lookup(cfg.OSUser)
		if err != nil {
			return nil, &ConfigError{"OSUser", strconv.Quote(cfg.OSUser), fmt.Sprintf("must be an existing OS user when running as root (PostgreSQL refuses root): %v", err)}
		}
		uid, _ := strconv.ParseUint(u.Uid, 10, 32)
		gid, _ := strconv.ParseUint(u.Gid, 10, 32)
		if uid == 0 {
			return nil, &ConfigError{"OSUser", strconv.Quote(cfg.OSUser), "must not be root: PostgreSQL refuses to run as root"}
		}
		i.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}
		if gids, err := u.GroupIds(); err == nil {
			for _, g := range gids {
				if n, err := strconv.ParseUint(g, 10, 32); err == nil {
					i.groups = append(i.groups, uint32(n))
				}
			}
		}
	}
	lg := cfg.Logger
	if lg == nil {
		lg = slog.Default()
	}
	i.log = lg.With("node", cfg.Name)
	tp := cfg.TracerProvider
	if tp == nil {
		tp = tracenoop.NewTracerProvider()
	}
	i.tracer = tp.Tracer(instrumentationName)
	return i, nil
}

func cloneMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	c := make(map[string]string, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

func cloneMethods(ms []ReplicaMethod) []ReplicaMethod {
	if ms == nil {
		return nil
	}
	c := make([]ReplicaMethod, len(ms))
	for n, m := range ms {
		m.Args = append([]string(nil), m.Args...)
		c[n] = m
	}
	return c
}

// Config returns the instance's configuration with defaults filled in.
func (i *Instance) Config() Config {
	c := i.cfg
	c.Parameters = cloneMap(c.Parameters)
	c.ReplicaMethods = cloneMethods(c.ReplicaMethods)
	return c
}

// BinDir returns the directory the PostgreSQL binaries are run from.
func (i *Instance) BinDir() string { return i.bins.dir }

// Version returns the PostgreSQL version of the binaries, e.g. "15.14".
func (i *Instance) Version() string { return i.bins.version }

// LogTail returns about the last n bytes of the server log, starting at a
// line boundary, or "" when there is no log yet.
func (i *Instance) LogTail(n int) string {
	f, err := os.Open(i.cfg.LogFile)
	if err != nil {
		return ""
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return ""
	}
	off := max(st.Size()-int64(n), 0)
	b := make([]byte, st.Size()-off)
	if _, err := f.ReadAt(b, off); err != nil && !errors.Is(err, io.EOF) {
		return ""
	}
	s := string(b)
	if off > 0 {
		if j := strings.IndexByte(s, '\n'); j >= 0 {
			s = s[j+1:]
		}
	}
	return strings.TrimRight(s, "\n")
}

func (i *Instance) logTail() string { return i.LogTail(tailBytes) }

// Exited returns a channel that is closed when the running postmaster (the
// one this Instance started or adopted) exits, for any reason: Stop, Fence,
// a crash, a kill. When no postmaster runs it returns nil, which blocks
// forever in a select: so a loop can select on Exited every round without
// spinning while the server is down. Call it again after each Start: every
// postmaster has its own channel. [Instance.ExitErr] then says why it
// exited.
func (i *Instance) Exited() <-chan struct{} {
	i.mu.Lock()
	defer i.mu.Unlock()
	if p := i.runningLocked(); p != nil {
		return p.done
	}
	return nil
}

// ExitErr reports why the last postmaster exited: nil while it runs, when
// none was ever started, and after Stop, Restart, Fence or Rewind stopped
// it on purpose; an [*ExitError] with the server log's tail when it exited
// on its own (crash, kill -9, PANIC, stopped by someone else). The next
// Start resets it to nil.
func (i *Instance) ExitErr() error {
	i.mu.Lock()
	p := i.proc
	i.mu.Unlock()
	if p == nil || !p.exited() {
		return nil
	}
	return p.err
}

// PID returns the postmaster's process ID, or 0 when it is not running.
func (i *Instance) PID() int {
	if p := i.running(); p != nil {
		return p.pid
	}
	return 0
}

// running returns the live postmaster for the data directory: the one this
// Instance started, or one it adopts now from postmaster.pid. Nil when none
// runs.
func (i *Instance) running() *process {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.runningLocked()
}

func (i *Instance) runningLocked() *process {
	if i.proc != nil && !i.proc.exited() {
		return i.proc
	}
	if i.spawning {
		return nil
	}
	pid := readPID(i.cfg.DataDir)
	if pid <= 0 || !i.isOurPostmaster(pid) {
		return nil
	}
	p := &process{pid: pid, adopted: true, done: make(chan struct{})}
	i.proc = p
	go i.watchAdopted(p)
	i.log.Info("adopted running postmaster", "pid", pid)
	return p
}

// watchAdopted polls an adopted postmaster (not our child, so it cannot be
// waited for) until it is gone or a zombie.
func (i *Instance) watchAdopted(p *process) {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for range t.C {
		if !processAlive(p.pid) {
			break
		}
	}
	if !p.stopping.Load() {
		p.err = &ExitError{PID: p.pid, ExitCode: -1, LogTail: i.logTail()}
	}
	close(p.done)
}

// clearStaleLock readies a directory no postmaster runs for (the caller
// checked) for a server to start on it, by postgres or by pg_rewind's
// single-user recovery: a dead postmaster's backends must not hold its
// shared memory (orphans.go), and a postmaster.pid whose PID is dead, a
// zombie (a killed postmaster nobody reaps, on machines whose PID 1 does
// not reap orphans) or another program would make postgres refuse to
// start: it is stale, and only it is removed.
func (i *Instance) clearStaleLock(ctx context.Context) error {
	i.killOrphanBackends(ctx)
	if pid := readPID(i.cfg.DataDir); pid > 0 {
		i.log.Info("removing stale postmaster.pid", "pid", pid)
		if err := os.Remove(filepath.Join(i.cfg.DataDir, pidFile)); err != nil {
			return fmt.Errorf("replicate: remove stale %s: %w", pidFile, err)
		}
	}
	return nil
}

// readPID returns the PID in DataDir/postmaster.pid, 0 if there is none.
// A file that does not parse (e.g. truncated by a crash) counts as none:
// PostgreSQL itself replaces it at start.
func readPID(dataDir string) int {
	b, err := os.ReadFile(filepath.Join(dataDir, pidFile))
	if err != nil {
		return 0
	}
	info, err := parsePIDFile(b)
	if err != nil {
		return 0
	}
	return info.PID
}

// pidFileStatus returns line 8 of postmaster.pid: "starting", "ready",
// "standby" or "stopping"; "" if absent.
func pidFileStatus(dataDir string) string {
	b, err := os.ReadFile(filepath.Join(dataDir, pidFile))
	if err != nil {
		return ""
	}
	info, err := parsePIDFile(b)
	if err != nil {
		return ""
	}
	return info.Status
}

// processAlive reports whether pid is a live process (not a zombie).
func processAlive(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return !errors.Is(err, os.ErrNotExist)
	}
	st, err := parseProcStat(b)
	if err != nil {
		return true // unreadable: trust kill(pid, 0)
	}
	return st.State != 'Z' && st.State != 'X'
}

// isOurPostmaster reports whether pid is a live postmaster of DataDir
// (postmasterOf).
func (i *Instance) isOurPostmaster(pid int) bool { return postmasterOf(i.cfg.DataDir, pid) }

// postmasterOf reports whether pid is a live process whose working
// directory is dataDir, as a postmaster's is (without /proc access, a
// live PID is trusted).
func postmasterOf(dataDir string, pid int) bool {
	if !processAlive(pid) {
		return false
	}
	cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid))
	if err != nil {
		// No /proc access: trust the live PID.
		return !errors.Is(err, os.ErrNotExist)
	}
	want, err := filepath.EvalSymlinks(dataDir)
	if err != nil {
		want = dataDir
	}
	return filepath.Clean(cwd) == want
}

// FenceDataDir fences the postmaster that runs for dataDir without an
// Instance, for a process that did not start it (ha's fence guard): the
// postmaster is found from postmaster.pid and checked in /proc (a reused
// PID is never signalled). The sequence is [Instance.Fence]'s: SIGINT (fast
// shutdown), SIGQUIT after timeout, then SIGKILL of its children and of
// it. It returns the postmaster's PID (0 when none runs) and the last
// signal sent. The caller is not the postmaster's parent: a postmaster
// that exited but was not reaped by its frozen parent counts as gone.
func FenceDataDir(dataDir string, timeout time.Duration) (pid int, signal string, err error) {
	pid = readPID(dataDir)
	if pid <= 0 || !postmasterOf(dataDir, pid) {
		return 0, "", nil
	}
	gone := func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		t := time.NewTicker(pollEvery)
		defer t.Stop()
		for processAlive(pid) {
			select {
			case <-ctx.Done():
				return !processAlive(pid)
			case <-t.C:
			}
		}
		return true
	}
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGQUIT} {
		if err := syscall.Kill(pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
			return pid, sig.String(), err
		}
		if gone() {
			return pid, sig.String(), nil
		}
	}
	for _, k := range childPIDs(pid) {
		syscall.Kill(k, syscall.SIGKILL)
	}
	syscall.Kill(pid, syscall.SIGKILL)
	if gone() {
		return pid, syscall.SIGKILL.String(), nil
	}
	return pid, syscall.SIGKILL.String(), fmt.Errorf("replicate: postmaster %d of %s still runs after SIGKILL", pid, dataDir)
}

// Start starts PostgreSQL as a supervised child process and returns once it
// accepts connections (as a primary, or as a hot standby). If a postmaster
// already runs for the data directory (started by this or an earlier
// Instance), Start adopts it and waits for it to be ready instead. A stale
// postmaster.pid left by a dead process is ignored.
//
// Before starting, Start rewrites pgha.conf, pg_hba.conf and the passfile
// from the Config. A standby with hot_standby off never accepts
// connections, so Start waits for it until ctx ends. Errors:
// [ErrNotInitialized], [ErrVersionMismatch],
// [ErrWrongOwner], [ErrSystemIDMismatch], [ErrPortInUse], [ErrFenced] (a
// Fence stopped the server while Start waited for it), or a [*ServerError]
// with the server log's tail. A full or read-only file system gives an
// error that errors.Is matches with syscall.ENOSPC or syscall.EROFS,
// naming DataDir and the fix. When ctx ends first the server
// is left starting (it stays supervised) and Start returns a *ServerError
// wrapping ctx.Err().
func (i *Instance) Start(ctx context.Context) error {
	i.opMu.Lock()
	defer i.opMu.Unlock()
	return withDiskHint(i.start(ctx), i.cfg.DataDir)
}

// StartIf is Start for a server that must only run while ok holds (a
// primary restarted under a leadership term): ok is evaluated atomically
// with respect to Fence, so that either ok sees what made the caller
// fence (and StartIf returns an error wrapping ErrFenced without
// starting), or a Fence that comes after ok returned true makes the start
// fail with ErrFenced and the server is stopped. ok must not call this
// Instance's methods.
func (i *Instance) StartIf(ctx context.Context, ok func() bool) error {
	i.opMu.Lock()
	defer i.opMu.Unlock()
	return withDiskHint(i.startIf(ctx, ok), i.cfg.DataDir)
}

func (i *Instance) start(ctx context.Context) error { return i.startIf(ctx, nil) }

func (i *Instance) startIf(ctx context.Context, ok func() bool) error {
	i.mu.Lock()
	gen := i.fenceGen
	if ok != nil && !ok() {
		i.mu.Unlock()
		return fmt.Errorf("%w: start refused: the condition for running no longer holds", ErrFenced)
	}
	p := i.runningLocked()
	i.mu.Unlock()
	if p != nil {
		return i.waitReady(ctx, p, "start")
	}
	if !i.initialized() {
		return fmt.Errorf("%w: %s (run Init or Clone first)", ErrNotInitialized, i.cfg.DataDir)
	}
	if err := i.checkRewindIncomplete(); err != nil {
		return err
	}
	if err := i.checkDirs(); err != nil {
		return err
	}
	if err := i.checkVersion(); err != nil {
		return err
	}
	if i.cfg.SystemID != 0 {
		id, err := i.controlSystemID(ctx)
		if err != nil {
			return err
		}
		if id != i.cfg.SystemID {
			return fmt.Errorf("%w: data directory %s belongs to system %d, Config.SystemID is %d", ErrSystemIDMismatch, i.cfg.DataDir, id, i.cfg.SystemID)
		}
	}
	if err := i.checkPort(); err != nil {
		return err
	}
	if err := i.clearStaleLock(ctx); err != nil {
		return err
	}
	if err := i.writeNodeConfig(); err != nil {
		return err
	}
	i.mu.Lock()
	i.spawning = true
	i.mu.Unlock()
	p, err := i.spawn()
	i.mu.Lock()
	i.spawning = false
	if err == nil {
		i.proc = p
	}
	fenced := i.fenceGen != gen
	i.mu.Unlock()
	if err != nil {
		return err
	}
	if fenced {
		p.stopping.Store(true)
		i.signal(p, syscall.SIGQUIT)
		<-p.done
		return ErrFenced
	}
	if err := i.waitReady(ctx, p, "start"); err != nil {
		i.mu.Lock()
		fenced := i.fenceGen != gen
		i.mu.Unlock()
		if fenced {
			return fmt.Errorf("%w: %w", ErrFenced, err)
		}
		return err
	}
	return nil
}

// spawn starts `postgres -D DataDir` as a child whose output goes to the log
// file, and a goroutine that reaps it.
func (i *Instance) spawn() (*process, error) {
	lf, err := os.OpenFile(i.cfg.LogFile, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("replicate: open server log: %w", err)
	}
	if err := i.chown(i.cfg.LogFile); err != nil {
		lf.Close()
		return nil, err
	}
	path := i.bins.path("postgres")
	args := []string{"-D", i.cfg.DataDir}
	cmd := exec.Command(path, args...)
	cmd.Stdout = lf
	cmd.Stderr = lf
	// PGDATA lets archive_command and restore_command name the data
	// directory of whichever node runs them (pgbackrest --pg1-path="$PGDATA").
	cmd.Env = append(baseEnv(), "PGDATA="+i.cfg.DataDir)
	cmd.Dir = i.cfg.DataDir
	cmd.SysProcAttr = i.sysProcAttr()
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, &CommandError{Path: path, Args: args, ExitCode: -1, Err: err}
	}
	// The child has its own copy of the log file descriptor.
	lf.Close()
	p := &process{pid: cmd.Process.Pid, done: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		if !p.stopping.Load() {
			ee := &ExitError{PID: p.pid, ExitCode: exitCode(err), LogTail: i.logTail()}
			if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				ee.Signal = ws.Signal().String()
			}
			p.err = ee
		}
		close(p.done)
	}()
	return p, nil
}

// waitReady waits until the postmaster reports "ready" or "standby" in its
// pid file and accepts a connection.
func (i *Instance) waitReady(ctx context.Context, p *process, op string) error {
	t := time.NewTicker(pollEvery)
	defer t.Stop()
	for {
		switch pidFileStatus(i.cfg.DataDir) {
		case "ready", "standby":
			return nil
		}
		select {
		case <-p.done:
			err := p.err
			var ee *ExitError
			if errors.As(err, &ee) {
				c := *ee
				c.LogTail = "" // the ServerError carries it
				err = &c
			}
			return &ServerError{Op: op, Err: err, LogTail: i.logTail()}
		case <-ctx.Done():
			return &ServerError{Op: op, Err: fmt.Errorf("server not ready: %w", ctx.Err()), LogTail: i.logTail()}
		case <-t.C:
		}
	}
}

func (i *Instance) checkVersion() error {
	b, err := os.ReadFile(filepath.Join(i.cfg.DataDir, "PG_VERSION"))
	if err != nil {
		return fmt.Errorf("replicate: %w", err)
	}
	v, err := parsePGVersion(b)
	if err != nil {
		return fmt.Errorf("replicate: data directory %s: %w", i.cfg.DataDir, err)
	}
	if v != i.bins.major {
		return fmt.Errorf("%w: data directory %s was created by PostgreSQL %d, the binaries in %s are PostgreSQL %s: set BinDir to PostgreSQL %d's binaries (or upgrade the data directory with pg_upgrade)",
			ErrVersionMismatch, i.cfg.DataDir, v, i.bins.dir, i.bins.version, v)
	}
	return nil
}

// checkPort fails with ErrPortInUse when something listens on the port.
func (i *Instance) checkPort() error {
	for _, a := range strings.Split(i.cfg.ListenAddresses, ",") {
		a = strings.TrimSpace(a)
		if a == "*" {
			a = ""
		}
		if a == "" && strings.TrimSpace(i.cfg.ListenAddresses) == "" {
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort(a, strconv.Itoa(i.cfg.Port)))
		if err != nil {
			if errors.Is(err, syscall.EADDRINUSE) {
				return fmt.Errorf("%w: %s:%d is taken by another process (choose another Port or stop it)", ErrPortInUse, a, i.cfg.Port)
			}
			continue // e.g. an address of another host: postgres reports it
		}
		l.Close()
	}
	return nil
}

func (i *Instance) signal(p *process, sig syscall.Signal) {
	if err := syscall.Kill(p.pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		i.log.Warn("signal postmaster", "pid", p.pid, "signal", sig.String(), "err", err)
	}
}

// Stop shuts PostgreSQL down with mode and waits until the postmaster has
// exited. It is a no-op when the server is not running. When ctx ends
// first, the shutdown goes on and Stop returns a [*ServerError] wrapping
// ctx.Err().
func (i *Instance) Stop(ctx context.Context, mode StopMode) error {
	i.opMu.Lock()
	defer i.opMu.Unlock()
	return i.stop(ctx, mode)
}

func (i *Instance) stop(ctx context.Context, mode StopMode) error {
	p := i.running()
	if p == nil {
		return nil
	}
	// A smart shutdown waits for every session, ours included.
	i.closeAdmin(ctx)
	p.stopping.Store(true)
	i.signal(p, mode.signal())
	select {
	case <-p.done:
		i.log.Info("stopped", "mode", mode.String(), "pid", p.pid)
		return nil
	case <-ctx.Done():
		return &ServerError{Op: "stop " + mode.String(), Err: ctx.Err(), LogTail: i.logTail()}
	}
}

// Restart stops the server with mode (if it runs) and starts it again.
func (i *Instance) Restart(ctx context.Context, mode StopMode) error {
	i.opMu.Lock()
	defer i.opMu.Unlock()
	if err := i.stop(ctx, mode); err != nil {
		return err
	}
	return i.start(ctx)
}

// Fence stops the server accepting writes now, for a primary that may have
// lost its lease. It does not wait for other operations. It sends a fast
// shutdown (open transactions are rolled back and their clients
// disconnected, so nothing more commits), waits up to Config.FenceTimeout,
// then an immediate shutdown, waits up to FenceTimeout again, and then
// sends SIGKILL to the postmaster's children and the postmaster. When ctx
// has a deadline, each wait is at most a third of the time left, so that
// the postmaster is gone before the deadline. It returns
// once the postmaster has exited; a Start racing with it fails with
// [ErrFenced]. It is a no-op when the server is not running. If ctx ends
// before the postmaster is gone, Fence kills them at once and returns a
// [*ServerError] wrapping ctx.Err().
func (i *Instance) Fence(ctx context.Context) (err error) {
	ctx, span := i.tracer.Start(ctx, "replicate.Fence")
	defer func() { endSpan(span, err) }()
	start := time.Now()
	i.mu.Lock()
	i.fenceGen++
	p := i.runningLocked()
	i.mu.Unlock()
	if p == nil {
		return nil
	}
	p.stopping.Store(true)
	// Each step waits FenceTimeout, or less when ctx has a deadline: the
	// fast and the immediate shutdown get a third each of the time left,
	// so that the postmaster is gone (SIGKILL if need be) before the
	// deadline, not after. A partitioned primary's fast shutdown cannot
	// finish (its WAL senders wait for standbys it cannot reach), and a
	// lease-loss fence must end before the lease can expire.
	wait := i.cfg.FenceTimeout
	if dl, ok := ctx.Deadline(); ok {
		wait = max(0, min(wait, time.Until(dl)/3))
	}
	steps := []struct {
		sig  syscall.Signal
		wait time.Duration
	}{{syscall.SIGINT, wait}, {syscall.SIGQUIT, wait}}
	for _, s := range steps {
		i.signal(p, s.sig)
		t := time.NewTimer(s.wait)
		select {
		case <-p.done:
			t.Stop()
			i.log.Info("fenced", "signal", s.sig.String(), "took", time.Since(start))
			return nil
		case <-ctx.Done():
			t.Stop()
			i.killAll(ctx, p)
			return &ServerError{Op: "fence", Err: ctx.Err(), LogTail: i.logTail()}
		case <-t.C:
		}
	}
	i.killAll(ctx, p)
	select {
	case <-p.done:
		i.log.Warn("fenced with SIGKILL", "took", time.Since(start))
		return nil
	case <-ctx.Done():
		return &ServerError{Op: "fence", Err: ctx.Err(), LogTail: i.logTail()}
	}
}

// killAll sends SIGKILL to the postmaster's children (backends, WAL
// senders, checkpointer: each leads its own session, so no process group
// holds them all), gives the postmaster, which is in immediate shutdown and
// reaps them, a moment to exit on its own, then kills it too. Killing the
// children first leaves no orphan for a PID 1 that does not reap.
func (i *Instance) killAll(ctx context.Context, p *process) {
	kids := childPIDs(p.pid)
	for _, k := range kids {
		syscall.Kill(k, syscall.SIGKILL)
	}
	t := time.NewTimer(100 * time.Millisecond)
	defer t.Stop()
	select {
	case <-p.done:
	case <-ctx.Done():
	case <-t.C:
	}
	i.signal(p, syscall.SIGKILL)
	i.log.Warn("fence: killed the postmaster and its children", "pid", p.pid, "children", len(kids))
}

// childPIDs returns the PIDs of the live children of pid, from /proc.
func childPIDs(pid int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var kids []int
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		st, err := parseProcStat(b)
		if err == nil && st.PPID == pid && st.State != 'Z' {
			kids = append(kids, n)
		}
	}
	return kids
}

// Connect opens a connection to the local server as the superuser over the
// unix socket, to database "postgres". The caller closes it. Errors wrap
// [ErrAuthentication] for a rejected password and [ErrNotRunning] when
// nothing listens.
func (i *Instance) Connect(ctx context.Context) (*pgx.Conn, error) {
	return i.connect(ctx, "postgres")
}

func (i *Instance) connect(ctx context.Context, db string) (*pgx.Conn, error) {
	return i.connectTo(ctx, i.cfg.SocketDir, i.cfg.Port, db)
}

// connectTo connects as the superuser to host (a socket directory or a
// network host) and port.
func (i *Instance) connectTo(ctx context.Context, host string, port int, db string) (*pgx.Conn, error) {
	cc, err := pgx.ParseConfig("")
	if err != nil {
		return nil, fmt.Errorf("replicate: %w", err)
	}
	if !strings.HasPrefix(host, "/") {
		if cc.TLSConfig, err = i.clientTLS(host); err != nil {
			return nil, err
		}
	}
	cc.Host = host
	cc.Port = uint16(port)
	cc.User = i.cfg.Superuser
	cc.Password = i.cfg.SuperuserPassword
	cc.Database = db
	cc.ConnectTimeout = 5 * time.Second
	cc.RuntimeParams = map[string]string{"application_name": "pgha-replicate"}
	cc.Fallbacks = nil
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		where := net.JoinHostPort(host, strconv.Itoa(port))
		if strings.HasPrefix(host, "/") {
			where = filepath.Join(host, fmt.Sprintf(".s.PGSQL.%d", port))
		}
		return nil, connError(err, where+" as "+i.cfg.Superuser)
	}
	return conn, nil
}

// connError classifies a connection error without leaking the password
// (pgconn's errors never contain it).
func connError(err error, where string) error {
	switch {
	case isAuthError(err):
		return fmt.Errorf("%w: connect to %s: %v", ErrAuthentication, where, err)
	case errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("%w: connect to %s: %v", ErrNotRunning, where, err)
	}
	return fmt.Errorf("replicate: connect to %s: %w", where, err)
}
