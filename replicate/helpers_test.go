package replicate_test

import (
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"unsafe"
)

func killPID(pid int) error { return syscall.Kill(pid, syscall.SIGKILL) }

// stalePID returns the PID of a process of the given kind for a stale
// postmaster.pid: "dead" (exited and reaped), "zombie" (exited, not yet
// reaped) or "other" (alive, not a postmaster).
func stalePID(t *testing.T, kind string) (int, func()) {
	t.Helper()
	cmd := exec.Command("sleep", "300")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	switch kind {
	case "dead":
		cmd.Process.Kill()
		cmd.Wait()
		return pid, func() {}
	case "zombie":
		cmd.Process.Kill()
		// Wait for it to exit without reaping it: it stays a zombie.
		if err := waitNoReap(pid); err != nil {
			t.Fatal(err)
		}
		return pid, func() { cmd.Wait() }
	default:
		return pid, func() { cmd.Process.Kill(); cmd.Wait() }
	}
}

// zombieAs returns the PID of a zombie process that ran as OS user name
// (when this process is root; else as this process's user).
func zombieAs(t *testing.T, name string) (int, func()) {
	t.Helper()
	cmd := exec.Command("sleep", "300")
	if os.Geteuid() == 0 && name != "" {
		u, err := user.Lookup(name)
		if err != nil {
			t.Fatal(err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	cmd.Process.Kill()
	if err := waitNoReap(cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	return cmd.Process.Pid, func() { cmd.Wait() }
}

// waitNoReap blocks until child pid has exited, leaving it a zombie
// (waitid with WNOWAIT).
func waitNoReap(pid int) error {
	var si [128]byte
	const pPID, wNoWait = 1, 0x01000000
	_, _, e := syscall.Syscall6(syscall.SYS_WAITID, pPID, uintptr(pid), uintptr(unsafe.Pointer(&si)), syscall.WEXITED|wNoWait, 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

func writePIDFile(t *testing.T, dataDir string, pid int) {
	t.Helper()
	// The format of postmaster.pid: PID, data dir, start time, port, socket
	// dir, listen address, shmem key, status.
	s := strconv.Itoa(pid) + "\n" + dataDir + "\n1700000000\n5432\n/tmp\n127.0.0.1\n  0   0\nready   \n"
	p := filepath.Join(dataDir, "postmaster.pid")
	if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}
