package replicate

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// tailBytes is how much of a tool's output or the server log errors carry.
const tailBytes = 4096

// tail returns the last tailBytes of s, starting at a line boundary.
func tail(s string) string {
	s = strings.TrimRight(s, "\n")
	if len(s) <= tailBytes {
		return s
	}
	s = s[len(s)-tailBytes:]
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return s
}

func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	return -1
}

// runOpts are the extras of one tool run.
type runOpts struct {
	env   []string // added to the base environment, e.g. PGPASSWORD=...
	stdin io.Reader
	dir   string // working directory; "" for this process's
	group bool   // on cancellation, signal the whole process group (a user's script and its children)
}

// baseEnv is the environment every PostgreSQL program gets: a fixed locale,
// so messages can be matched, and nothing from this process.
func baseEnv() []string {
	return []string{"PATH=/usr/local/bin:/usr/bin:/bin", "LC_ALL=C", "LANG=C", "PGPASSFILE=/dev/null"}
}

// run runs one PostgreSQL program to completion, as the OS user, and returns
// its combined output. A failure is a *CommandError with the output's tail.
func (i *Instance) run(ctx context.Context, name string, args []string, o runOpts) (string, error) {
	return i.runPath(ctx, i.bins.path(name), args, o)
}

// runPath is run for a program given by its path.
func (i *Instance) runPath(ctx context.Context, path string, args []string, o runOpts) (string, error) {
	cmd := exec.CommandContext(ctx, path, args...)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	cmd.Stdin = o.stdin
	cmd.Dir = o.dir
	cmd.Env = append(baseEnv(), o.env...)
	cmd.SysProcAttr = i.sysProcAttr()
	cmd.WaitDelay = 5 * time.Second
	// Send SIGTERM first on cancellation: pg_basebackup and pg_rewind clean
	// up after it; WaitDelay then kills.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	if o.group {
		cmd.Cancel = killGroup(cmd)
	}
	err := cmd.Run()
	if err != nil {
		if ctx.Err() != nil {
			err = errors.Join(ctx.Err(), err)
		}
		return out.String(), &CommandError{Path: path, Args: args, ExitCode: exitCode(err), Stderr: tail(out.String()), Err: err}
	}
	return out.String(), nil
}

// sysProcAttr runs a child as the OS user (when root) in its own process
// group, so terminal signals to this process do not reach it and a fence
// can signal the postmaster and all its backends at once.
func (i *Instance) sysProcAttr() *syscall.SysProcAttr {
	a := &syscall.SysProcAttr{Setpgid: true}
	if i.cred != nil {
		c := *i.cred
		a.Credential = &c
	}
	return a
}
