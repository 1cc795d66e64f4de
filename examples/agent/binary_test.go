package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pgha/pgha/internal/testutil"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
	buildDir  string
)

// agentBinary builds pgha-agent once per test binary.
func agentBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "pgha-agent-bin-")
		if buildErr != nil {
			return
		}
		binPath = filepath.Join(buildDir, "pgha-agent")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = errors.New(err.Error() + "\n" + string(out))
		}
	})
	if buildErr != nil {
		t.Fatalf("go build pgha-agent: %v", buildErr)
	}
	return binPath
}

// TestBinarySIGTERM runs the built agent as a process: it bootstraps,
// PostgreSQL does not inherit the passwords from its environment, and
// SIGTERM stops it with status 0 and its PostgreSQL with it. A
// configuration error exits 2.
func TestBinarySIGTERM(t *testing.T) {
	bin := agentBinary(t)
	etcd := testutil.StartEtcd(t, 1)
	args, addr, dataDir := agentArgs(t, "b1", "bintest", etcd.Endpoints()[0])
	const super, repl = "bin-super-Tr42", "bin-repl-Yw17"
	var out bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "PGHA_PG_SUPERUSER_PASSWORD="+super, "PGHA_PG_REPLICATION_PASSWORD="+repl)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	exited := false
	t.Cleanup(func() {
		if !exited {
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("agent output:\n%s", out.String())
		}
	})
	waitStatus(t, addr, "/primary", 200)

	pidFile, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(pidFile), "\n", 2)[0]))
	environ, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil {
		t.Fatalf("postmaster %d environment: %v", pid, err)
	}
	if bytes.Contains(environ, []byte(super)) || bytes.Contains(environ, []byte(repl)) || bytes.Contains(environ, []byte("PGHA_PG_SUPERUSER_PASSWORD")) {
		t.Errorf("the postmaster inherited a password from the agent's environment")
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err = <-done:
		exited = true
	case <-time.After(60 * time.Second):
		t.Fatalf("the agent did not exit within 60s of SIGTERM")
	}
	if err != nil {
		t.Fatalf("agent exit after SIGTERM: %v; want status 0", err)
	}
	if testutil.ProcessAlive(pid) {
		t.Errorf("postmaster %d still runs after the agent exited", pid)
	}
	if strings.Contains(out.String(), super) || strings.Contains(out.String(), repl) {
		t.Errorf("a password appears in the agent's output")
	}

	bad := exec.Command(bin, "--cluster", "c", "--node", "n")
	bad.Env = []string{}
	msg, err := bad.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(string(msg), "pg-data-dir is required") {
		t.Errorf("agent with no data dir: %v, %s; want exit status 2 and the fix", err, msg)
	}
}
