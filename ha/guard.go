package ha

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/pgha/pgha/replicate"
	"golang.org/x/sys/unix"
)

// This file is the fence guard (Config.FenceGuard): a small separate
// process that holds the leader's fencing deadline and fences PostgreSQL
// when the deadline passes without renewal, so that a manager that is
// frozen (SIGSTOP, a debugger, a process stalled on a dead mount or in
// swap) still cannot leave a writable primary behind once another node
// can be elected. It is the same executable, re-executed with
// PGHA_FENCE_GUARD set: [RunFenceGuardIfRequested] at the start of main
// turns that process into the guard.
//
// The manager and the guard share one 16-byte memory file (memfd): the
// deadline on the system-wide monotonic clock (CLOCK_MONOTONIC, in ns; 0
// when disarmed) and a check word. The manager writes it when a term
// begins and after every renewal moved ValidUntil (deadline = ValidUntil -
// FenceBudget, as for the in-process fencer), and zero when the term ends
// with PostgreSQL no longer writable; it then pokes the guard through the
// guard's stdin. The guard sleeps until the deadline, re-reads the memory
// (a renewal made while it slept moved it), and fences when it has
// passed: SIGINT (fast shutdown), SIGQUIT after FenceTimeout, then
// SIGKILL of the postmaster's children and of the postmaster
// (replicate.FenceDataDir, the sequence of Instance.Fence). It finds the
// postmaster from postmaster.pid and checks /proc that it is the
// postmaster of this data directory, so it never signals a reused PID.
// When its stdin reaches EOF (the manager exited or died), it fences at
// the deadline if armed, and exits. The guard holds no secret (its
// environment is three variables), needs no privilege beyond the
// manager's, and is the manager's child, reaped by it. If the guard
// exits, the manager fences at once (fail safe) and starts a new guard
// before it campaigns again.

// Environment variables of a guard process.
const (
	guardEnv        = "PGHA_FENCE_GUARD" // "1" in a guard
	guardDirEnv     = "PGHA_FENCE_GUARD_DATA_DIR"
	guardTimeoutEnv = "PGHA_FENCE_GUARD_FENCE_TIMEOUT"
	guardReady      = "pgha fence guard ready"
	guardMagic      = 0x5067686147756172 // "PghaGuar"
	guardStartLimit = 10 * time.Second
)

// RunFenceGuardIfRequested makes this process a fence guard and exits it
// when a [Manager] with Config.FenceGuard started it as one (see
// [Config.FenceGuard]); otherwise it returns at once and does nothing.
// Call it first thing in main, before flags are parsed, in every program
// that runs a Manager with FenceGuard on (pgha-agent does), and in
// TestMain of tests that do.
func RunFenceGuardIfRequested() {
	if os.Getenv(guardEnv) != "1" {
		return
	}
	os.Exit(runGuard())
}

// monoNow reads the system-wide monotonic clock, which a guard and its
// manager share (Go's own monotonic readings are relative to each
// process's start).
func monoNow() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		panic("ha: CLOCK_MONOTONIC unreadable: " + err.Error()) // cannot happen on Linux
	}
	return ts.Nano()
}

func encodeDeadline(ns int64) []byte {
	b := make([]byte, 16)
	binary.LittleEndian.PutUint64(b, uint64(ns))
	binary.LittleEndian.PutUint64(b[8:], uint64(ns)^guardMagic)
	return b
}

// readDeadline reads the shared deadline, retrying a torn read.
func readDeadline(f *os.File) (int64, error) {
	b := make([]byte, 16)
	for range 100 {
		if _, err := f.ReadAt(b, 0); err != nil {
			return 0, err
		}
		d := binary.LittleEndian.Uint64(b)
		if binary.LittleEndian.Uint64(b[8:]) == d^guardMagic {
			return int64(d), nil
		}
	}
	return 0, errors.New("fence guard: deadline unreadable (torn 100 times)")
}

// fenceGuard is the manager's handle on its guard process.
type fenceGuard struct {
	cmd    *exec.Cmd
	state  *os.File // the shared deadline
	notify *os.File // the guard's stdin
	done   chan struct{}
	log    *slog.Logger
	mu     sync.Mutex
	armed  int64 // the deadline last written; 0 when disarmed
}

// startFenceGuard starts a guard for the PostgreSQL in dataDir and waits
// for it to say it is ready.
func startFenceGuard(dataDir string, fenceTimeout time.Duration, log *slog.Logger) (*fenceGuard, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("fence guard: find this executable: %w", err)
	}
	fd, err := unix.MemfdCreate("pgha-fence-guard", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("fence guard: memfd: %w", err)
	}
	state := os.NewFile(uintptr(fd), "pgha-fence-guard")
	if _, err := state.WriteAt(encodeDeadline(0), 0); err != nil {
		state.Close()
		return nil, fmt.Errorf("fence guard: %w", err)
	}
	stdin, notify, err := os.Pipe()
	if err != nil {
		state.Close()
		return nil, fmt.Errorf("fence guard: %w", err)
	}
	out, outW, err := os.Pipe()
	if err != nil {
		state.Close()
		stdin.Close()
		notify.Close()
		return nil, fmt.Errorf("fence guard: %w", err)
	}
	cmd := exec.Command(exe)
	cmd.Env = []string{guardEnv + "=1", guardDirEnv + "=" + dataDir, guardTimeoutEnv + "=" + fenceTimeout.String()}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, outW, outW
	cmd.ExtraFiles = []*os.File{state}
	// Its own process group: a terminal's ^C reaches the manager, which
	// leaves cleanly, not the guard.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		state.Close()
		stdin.Close()
		notify.Close()
		out.Close()
		outW.Close()
		return nil, fmt.Errorf("fence guard: start %s: %w", exe, err)
	}
	stdin.Close()
	outW.Close()
	g := &fenceGuard{cmd: cmd, state: state, notify: notify, done: make(chan struct{}), log: log}
	ready := make(chan struct{})
	go func() { // the guard's output, to the manager's log; ends with the guard
		sc := bufio.NewScanner(out)
		first := true
		for sc.Scan() {
			line := sc.Text()
			if first && line == guardReady {
				first = false
				close(ready)
				continue
			}
			log.Warn("fence guard", "said", line)
		}
		out.Close()
	}()
	go func() {
		err := cmd.Wait()
		if err != nil {
			log.Debug("fence guard exited", "err", err.Error())
		}
		close(g.done)
	}()
	t := time.NewTimer(guardStartLimit)
	defer t.Stop()
	select {
	case <-ready:
		return g, nil
	case <-g.done:
		g.stop()
		return nil, fmt.Errorf("fence guard: %s exited before it was ready: does its main call ha.RunFenceGuardIfRequested first?", exe)
	case <-t.C:
		g.stop()
		return nil, fmt.Errorf("fence guard: %s did not say it was ready within %v: its main must call ha.RunFenceGuardIfRequested first", exe, guardStartLimit)
	}
}

// alive reports whether the guard process still runs.
func (g *fenceGuard) alive() bool {
	select {
	case <-g.done:
		return false
	default:
		return true
	}
}

// arm sets the fencing deadline (a local time.Time with its monotonic
// reading, e.g. ValidUntil - FenceBudget) if it moved.
func (g *fenceGuard) arm(deadline time.Time) error {
	return g.set(max(1, monoNow()+int64(time.Until(deadline))))
}

// disarm clears the deadline: call it only once PostgreSQL no longer
// accepts writes, or when the term ended while this manager runs.
func (g *fenceGuard) disarm() error { return g.set(0) }

func (g *fenceGuard) set(ns int64) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if ns == g.armed {
		return nil
	}
	if _, err := g.state.WriteAt(encodeDeadline(ns), 0); err != nil {
		return fmt.Errorf("fence guard: write deadline: %w", err)
	}
	g.armed = ns
	// Poke it; a full pipe (a stopped guard) does not matter: the
	// deadline is in the shared memory, which it reads when it wakes.
	g.notify.SetWriteDeadline(time.Now().Add(10 * time.Millisecond))
	g.notify.Write([]byte{'\n'})
	return nil
}

// stop disarms the guard, ends it and waits for it (killing it after a
// few seconds).
func (g *fenceGuard) stop() {
	g.disarm()
	g.notify.Close()
	t := time.NewTimer(5 * time.Second)
	defer t.Stop()
	select {
	case <-g.done:
	case <-t.C:
		g.cmd.Process.Kill()
		<-g.done
	}
	g.state.Close()
}

// runGuard is the guard process's main; it returns the exit code.
func runGuard() int {
	out := os.Stdout
	say := func(format string, args ...any) { fmt.Fprintf(out, format+"\n", args...) }
	dataDir := os.Getenv(guardDirEnv)
	timeout, err := time.ParseDuration(os.Getenv(guardTimeoutEnv))
	if dataDir == "" || err != nil || timeout <= 0 {
		say("fence guard: bad environment: %s=%q %s=%q", guardDirEnv, dataDir, guardTimeoutEnv, os.Getenv(guardTimeoutEnv))
		return 2
	}
	state := os.NewFile(3, "pgha-fence-guard")
	if _, err := readDeadline(state); err != nil {
		say("fence guard: no shared deadline on fd 3: %v", err)
		return 2
	}
	poke := make(chan struct{}, 1)
	eof := make(chan struct{})
	go func() {
		b := make([]byte, 64)
		for {
			if _, err := os.Stdin.Read(b); err != nil {
				close(eof)
				return
			}
			select {
			case poke <- struct{}{}:
			default:
			}
		}
	}()
	say(guardReady)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var fencedFor int64
	managerGone := false
	for {
		d, err := readDeadline(state)
		if err != nil {
			say("fence guard: %v", err)
			return 1
		}
		now := monoNow()
		if d != 0 && d != fencedFor && now >= d {
			pid, how, err := replicate.FenceDataDir(dataDir, timeout)
			fencedFor = d
			if err != nil {
				say("fence guard: the lease deadline passed without renewal; fencing PostgreSQL in %s failed: %v", dataDir, err)
			} else if pid != 0 {
				say("fence guard: the lease deadline passed without renewal (%v late); fenced PostgreSQL (postmaster %d; last signal %s)", time.Duration(now-d).Round(time.Millisecond), pid, how)
			}
		}
		if managerGone && (d == 0 || d == fencedFor) {
			return 0
		}
		var wake <-chan time.Time
		if d != 0 && d != fencedFor {
			timer.Reset(time.Duration(d - now))
			wake = timer.C
		}
		select {
		case <-poke:
		case <-wake:
		case <-eof:
			managerGone = true
			eof = nil
		}
		if wake != nil && !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	}
}
