package replicate

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// A postmaster that died (kill -9, an OOM kill) leaves its backends
// running until they next notice: a backend busy in a long query keeps
// going, holding the dead server's shared memory, and PostgreSQL refuses
// to start on the data directory until it is gone ("pre-existing shared
// memory block ... is still in use"). Start kills them first: processes
// of the postgres binary whose working directory is the data directory,
// found while no postmaster runs for it. They can do nothing useful (their
// postmaster is gone, they cannot commit what the restarted server would
// see), and PostgreSQL itself would kill them had its postmaster lived.

// orphanBackends lists the PIDs of postgres processes whose working
// directory is dataDir.
func orphanBackends(dataDir, binDir string) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	want := filepath.Clean(dataDir)
	bin := filepath.Join(binDir, "postgres")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cwd, err := os.Readlink(filepath.Join("/proc", e.Name(), "cwd"))
		if err != nil || filepath.Clean(cwd) != want {
			continue
		}
		exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe"))
		if err != nil || (exe != bin && filepath.Base(exe) != "postgres") {
			continue
		}
		if processAlive(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// killOrphanBackends kills the backends a dead postmaster left in dataDir
// and waits (up to ctx, at most 5 s) for them to be gone. Call it only
// while no postmaster runs for the directory.
func (i *Instance) killOrphanBackends(ctx context.Context) {
	pids := orphanBackends(i.cfg.DataDir, i.bins.dir)
	if len(pids) == 0 {
		return
	}
	for _, pid := range pids {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	t := time.NewTicker(pollEvery)
	defer t.Stop()
	for len(orphanBackends(i.cfg.DataDir, i.bins.dir)) > 0 {
		select {
		case <-ctx.Done():
			i.log.Warn("backends of a dead postmaster outlived SIGKILL", "pids", pids)
			return
		case <-t.C:
		}
	}
	i.log.Info("killed the backends a dead postmaster left running", "pids", pids)
}
