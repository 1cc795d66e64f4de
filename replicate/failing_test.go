package replicate_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgha/pgha/internal/testutil"
	"github.com/pgha/pgha/replicate"
)

// mountTmpfs mounts a tmpfs of size bytes on a new temp dir and unmounts it
// at cleanup (after the servers registered later have stopped). It skips
// the test when this process may not mount (not root, no CAP_SYS_ADMIN).
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+size+",mode=0755"); err != nil {
		t.Skipf("cannot mount a tmpfs to fill or make read-only (needs root with CAP_SYS_ADMIN): %v", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
			syscall.Unmount(dir, syscall.MNT_DETACH)
		}
	})
	return dir
}

// remount changes the options of the tmpfs on dir (size, ro/rw).
func remount(t *testing.T, dir string, flags uintptr, size string) {
	t.Helper()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_REMOUNT|flags, "size="+size+",mode=0755"); err != nil {
		t.Fatalf("remount %s (flags %#x, size %s): %v", dir, flags, size, err)
	}
}

// fill writes a file on dir's file system until it is full and returns
// its path.
func fill(t *testing.T, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "filler")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("fill %s: %v; want ENOSPC", dir, err)
			}
			return p
		}
	}
}

// checkDiskError asserts err is the full or read-only error for dataDir:
// errors.Is with errno, the directory and the fix in the message.
func checkDiskError(t *testing.T, what string, err error, errno syscall.Errno, dataDir, fix string) {
	t.Helper()
	t.Logf("%s error: %v", what, err)
	if !errors.Is(err, errno) || !strings.Contains(err.Error(), dataDir) || !strings.Contains(err.Error(), fix) {
		t.Fatalf("%s = %v; want an error matching %v that names %s and says %q", what, err, errno, dataDir, fix)
	}
}

// TestFullDataDirectory runs Init, Start and Clone on a real, full file
// system (a tmpfs): each fails with an error naming the data directory,
// ENOSPC and the fix, deletes nothing of ours, and succeeds once space is
// back.
func TestFullDataDirectory(t *testing.T) {
	ctx := testutil.Ctx(t, 3*time.Minute)
	mnt := mountTmpfs(t, "8m")
	cfg := testutil.PostgresConfig(t, "full")
	cfg.DataDir = filepath.Join(mnt, "data")
	inst, err := replicate.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	testutil.StopPostgresAtCleanup(t, inst)

	// Init: initdb needs about 40 MB (a 16 MB WAL segment and the catalog).
	err = inst.Init(ctx)
	checkDiskError(t, "Init on an 8 MB file system", err, syscall.ENOSPC, cfg.DataDir, "free space")
	remount(t, mnt, 0, "96m")
	if err := inst.Init(ctx); err != nil {
		t.Fatalf("Init once the file system has room: %v", err)
	}

	// Start: the node configuration written at every start does not fit.
	filler := fill(t, mnt)
	err = inst.Start(ctx)
	checkDiskError(t, "Start on a full file system", err, syscall.ENOSPC, cfg.DataDir, "free space")
	if _, err := os.Stat(filepath.Join(cfg.DataDir, "PG_VERSION")); err != nil {
		t.Fatalf("after a Start on a full disk: %v", err)
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if err := inst.Start(ctx); err != nil {
		t.Fatalf("Start once space is free again: %v", err)
	}

	// Clone from the running server into a file system too small for it.
	cmnt := mountTmpfs(t, "8m")
	ccfg := testutil.PostgresConfig(t, "fullclone")
	ccfg.DataDir = filepath.Join(cmnt, "data")
	clone, err := replicate.New(ccfg)
	if err != nil {
		t.Fatal(err)
	}
	testutil.StopPostgresAtCleanup(t, clone)
	err = clone.Clone(ctx, testutil.SourceOf(inst, ""))
	checkDiskError(t, "Clone into an 8 MB file system", err, syscall.ENOSPC, ccfg.DataDir, "free space")
	remount(t, cmnt, 0, "96m")
	if err := clone.Clone(ctx, testutil.SourceOf(inst, "")); err != nil {
		t.Fatalf("Clone once the file system has room: %v", err)
	}
	if st, err := clone.Status(ctx); err != nil || !st.Running || !st.InRecovery {
		t.Fatalf("clone Status = %+v, %v; want a running standby", st, err)
	}
}

// TestReadOnlyDataDirectory starts a server whose data directory's file
// system was remounted read-only: Start fails with an error naming the
// directory, EROFS and the fix, and succeeds once it is writable again.
func TestReadOnlyDataDirectory(t *testing.T) {
	ctx := testutil.Ctx(t, 2*time.Minute)
	mnt := mountTmpfs(t, "96m")
	cfg := testutil.PostgresConfig(t, "rofs")
	cfg.DataDir = filepath.Join(mnt, "data")
	inst, err := replicate.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	testutil.StopPostgresAtCleanup(t, inst)
	if err := inst.Init(ctx); err != nil {
		t.Fatal(err)
	}
	remount(t, mnt, syscall.MS_RDONLY, "96m")
	err = inst.Start(ctx)
	checkDiskError(t, "Start on a read-only file system", err, syscall.EROFS, cfg.DataDir, "remount it read-write")
	if st, err := inst.Status(ctx); err != nil || !st.Initialized || st.Running {
		t.Fatalf("Status after the refused Start = %+v, %v; want initialized, stopped", st, err)
	}
	remount(t, mnt, 0, "96m")
	if err := inst.Start(ctx); err != nil {
		t.Fatalf("Start once the file system is writable again: %v", err)
	}
}
