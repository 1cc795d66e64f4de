package ha

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pgha/pgha/internal/testutil"
	"github.com/pgha/pgha/replicate"
)

// walSegments groups the archived WAL segment numbers (log id × 256 +
// segment, 16 MB segments) by timeline; partial (a timeline's last,
// incomplete segment, archived by the promoted node) counts as held.
// dups lists names archived more than once.
func walSegments(t *testing.T, files []string) (byTLI map[uint64][]uint64, history []string, dups []string) {
	t.Helper()
	byTLI = map[uint64][]uint64{}
	seen := map[string]bool{}
	for _, f := range files {
		if strings.HasSuffix(f, ".history") {
			history = append(history, f)
			continue
		}
		if len(f) < 24 {
			continue
		}
		name := f[:24]
		if strings.Contains(f, ".partial") {
			name += ".partial"
		} else if strings.Contains(f, ".backup") {
			continue // a backup's label file, not a segment
		}
		if seen[name] {
			dups = append(dups, name)
		}
		seen[name] = true
		tli, err1 := strconv.ParseUint(f[:8], 16, 32)
		log, err2 := strconv.ParseUint(f[8:16], 16, 32)
		seg, err3 := strconv.ParseUint(f[16:24], 16, 32)
		if err1 != nil || err2 != nil || err3 != nil {
			t.Fatalf("archived file %q is not a WAL segment name", f)
		}
		byTLI[tli] = append(byTLI[tli], log*256+seg)
	}
	for k := range byTLI {
		slices.Sort(byTLI[k])
	}
	return byTLI, history, dups
}

// TestArchiveSurvivesFailover: WAL archiving set cluster-wide
// (archive_mode, archive_command, restore_command in the cluster's
// configuration, archive_mode applied by a rolling restart of the nodes it
// is pending on) loses no segment across a failover, even when the
// primary dies with segments it never archived: its archive_command is
// made to fail (a node override) while it writes and switches three
// segments, and the promoted standby, with ArchiveReceivedWAL, archives
// the segments it received. After the failover pgbackrest check passes on
// the new primary, and the repository's archive spans both timelines with
// no missing segment between the first archived one and the last, no
// segment twice, and the promotion's history file.
func TestArchiveSurvivesFailover(t *testing.T) {
	repo := testutil.NewPgBackRest(t, "main")
	c := startCluster(t, clusterOpts{n: 2, pgConfig: func(_ string, cfg *replicate.Config) { cfg.ArchiveReceivedWAL = true }})
	c.sample()
	lead := c.waitHealthy(90 * time.Second)
	ctx := testutil.Ctx(t, 4*time.Minute)

	if err := ProposeConfig(ctx, c.cli, "test", ClusterConfig{Parameters: repo.ArchiveParameters()}); err != nil {
		t.Fatalf("ProposeConfig(archive settings): %v", err)
	}
	testutil.Eventually(t, 30*time.Second, "archive_mode pending restart on every node", func() error {
		p := pendingOf(t, c)
		for _, n := range c.nodes {
			if !slices.Contains(p[n.name], "archive_mode") {
				return fmt.Errorf("pending restart %v", p)
			}
		}
		return nil
	})
	done, err := RollingRestart(ctx, c.cli, "test", RollingRestartOptions{PendingOnly: true, NoSwitchover: true})
	if err != nil {
		t.Fatalf("RollingRestart: %v (restarted %v)", err, done)
	}
	for _, n := range c.nodes {
		if got := settingOn(t, n, "archive_mode"); got != "on" {
			t.Fatalf("%s runs with archive_mode %s after the rolling restart; want on", n.name, got)
		}
		if got := settingOn(t, n, "archive_command"); got != repo.ArchiveCommand() {
			t.Fatalf("%s runs with archive_command %q; want %q", n.name, got, repo.ArchiveCommand())
		}
	}
	lead = c.waitHealthy(60 * time.Second)
	repo.Run(ctx, lead.inst, "stanza-create")
	repo.Run(ctx, lead.inst, "check")
	repo.Run(ctx, lead.inst, "backup", "--type=full")

	// The primary's archiving fails from now on, while it writes and
	// switches three segments that its standby receives.
	stuck := ClusterConfig{Parameters: repo.ArchiveParameters(), NodeParameters: map[string]map[string]string{lead.name: {"archive_command": "/bin/false"}}}
	if err := ProposeConfig(ctx, c.cli, "test", stuck); err != nil {
		t.Fatalf("ProposeConfig(a failing archive_command on %s): %v", lead.name, err)
	}
	testutil.Eventually(t, 30*time.Second, "the primary's archive_command fails", func() error {
		if got := settingOn(t, lead, "archive_command"); got != "/bin/false" {
			return fmt.Errorf("archive_command %q", got)
		}
		return nil
	})
	for i := range 3 {
		for _, q := range []string{"CREATE TABLE IF NOT EXISTS seg (i int)", fmt.Sprintf("INSERT INTO seg VALUES (%d)", i), "SELECT pg_switch_wal()"} {
			if err := testutil.PostgresExec(ctx, lead.inst, q); err != nil {
				t.Fatal(err)
			}
		}
	}
	if failed, err := testutil.PostgresQueryInt(ctx, lead.inst, "SELECT failed_count FROM pg_stat_archiver"); err != nil || failed == 0 {
		t.Fatalf("the primary's failed archive attempts: %d, %v; want some", failed, err)
	}
	w := c.startWriter()
	defer w.stop()
	w.waitMore(t, 20, 30*time.Second, "writes before the failover")
	c.stopManager(lead, true)
	kill9(t, lead)
	c.waitNewLeader(lead.name, 30*time.Second, "a new leader")
	w.waitMore(t, 20, 30*time.Second, "writes on the new primary")
	w.stop()
	lr, err := c.leaderRecord()
	if err != nil {
		t.Fatal(err)
	}
	if lr.Timeline < 2 {
		t.Fatalf("new leader %s on timeline %d; want a new timeline", lr.Node, lr.Timeline)
	}
	newLead := c.node(lr.Node)
	// check switches WAL on the new primary and waits for that segment
	// in the archive: the new primary archives.
	out := repo.Run(ctx, newLead.inst, "check")
	t.Logf("pgbackrest check on the new primary %s: ok %s", newLead.name, strings.TrimSpace(out))

	info := repo.Info(ctx)
	if info.Status.Code != 0 || len(info.Archive) != 1 {
		t.Fatalf("pgbackrest info: status %d %q, %d archives; want ok and one: %+v", info.Status.Code, info.Status.Message, len(info.Archive), info)
	}
	a := info.Archive[0]
	t.Logf("archive %s: min %s max %s", a.ID, a.Min, a.Max)
	if !strings.HasPrefix(a.Min, "00000001") || !strings.HasPrefix(a.Max, fmt.Sprintf("%08X", lr.Timeline)) {
		t.Fatalf("archive min %s max %s; want timeline 1 to timeline %d", a.Min, a.Max, lr.Timeline)
	}
	byTLI, history, dups := walSegments(t, repo.ArchivedFiles())
	t.Logf("archived segments by timeline: %v; history files %v", byTLI, history)
	if len(dups) > 0 {
		t.Fatalf("segments archived twice: %v", dups)
	}
	if want := fmt.Sprintf("%08X.history", lr.Timeline); !slices.Contains(history, want) {
		t.Fatalf("history files %v; want %s (the promotion's)", history, want)
	}
	// Each timeline's segments are contiguous, and the next timeline
	// starts at most one segment after the previous one ends (it starts
	// in the segment of the switch point).
	var prevEnd uint64
	for tli := uint64(1); tli <= uint64(lr.Timeline); tli++ {
		segs := byTLI[tli]
		if len(segs) == 0 {
			if tli == uint64(lr.Timeline) || tli == 1 {
				t.Fatalf("no segment archived on timeline %d: %v", tli, byTLI)
			}
			continue // an intermediate timeline that wrote nothing
		}
		for k := 1; k < len(segs); k++ {
			if segs[k] != segs[k-1]+1 && segs[k] != segs[k-1] { // a segment and its .partial share a number
				t.Fatalf("gap on timeline %d: segment %X then %X: %v", tli, segs[k-1], segs[k], byTLI)
			}
		}
		if tli > 1 && segs[0] > prevEnd+1 {
			t.Fatalf("gap between timelines: the previous ends at segment %X, timeline %d starts at %X: %v", prevEnd, tli, segs[0], byTLI)
		}
		prevEnd = segs[len(segs)-1]
	}
}

// TestReplicaMethodsInCluster: the HA loop clones a new standby with the
// node's replica methods in order: a first method that fails leaves its
// directory moved aside, and basebackup builds the standby that streams.
func TestReplicaMethodsInCluster(t *testing.T) {
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	fail := filepath.Join(dir, "fail.sh")
	if err := os.WriteFile(fail, []byte("#!/bin/sh\necho junk > \"$PGHA_DATA_DIR/partial\"\nexit 2\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	c := startCluster(t, clusterOpts{n: 2, pgConfig: func(_ string, cfg *replicate.Config) {
		cfg.ReplicaMethods = []replicate.ReplicaMethod{{Kind: replicate.MethodCommand, Path: fail}, {Kind: replicate.MethodBasebackup}}
	}})
	lead := c.waitHealthy(90 * time.Second)
	for _, n := range c.nodes {
		aside, err := filepath.Glob(n.inst.Config().DataDir + ".failed-command-*")
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case n == lead && len(aside) != 0:
			t.Fatalf("the bootstrap node %s moved a directory aside: %v", n.name, aside)
		case n != lead && len(aside) != 1:
			t.Fatalf("standby %s: directories moved aside %v; want the failed command's one", n.name, aside)
		case n != lead:
			if _, err := os.Stat(filepath.Join(aside[0], "partial")); err != nil {
				t.Fatalf("the failed command's file is not in %s: %v", aside[0], err)
			}
		}
	}
}
