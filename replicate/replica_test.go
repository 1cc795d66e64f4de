package replicate_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgha/pgha/internal/testutil"
	"github.com/pgha/pgha/replicate"
)

// script writes an executable shell script readable by the PostgreSQL OS
// user and returns its path.
func script(t *testing.T, name, body string) string {
	t.Helper()
	dir := t.TempDir()
	if os.Geteuid() == 0 {
		for _, d := range []string{dir, filepath.Dir(dir)} {
			if err := os.Chmod(d, 0o711); err != nil {
				t.Fatal(err)
			}
		}
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// asideDirs returns the directories a failed method of the given kind
// left beside dataDir.
func asideDirs(t *testing.T, dataDir string, kind replicate.ReplicaMethodKind) []string {
	t.Helper()
	m, err := filepath.Glob(dataDir + ".failed-" + string(kind) + "-*")
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestCloneMethodFallback: replica methods are tried in order; a method
// that fails (exit status 3) and one that hangs past its timeout each
// leave their half-written data directory moved aside (with what they
// wrote, never deleted), and the next method (basebackup) builds a
// standby that streams.
func TestCloneMethodFallback(t *testing.T) {
	ctx := testutil.Ctx(t, 2*time.Minute)
	p := testutil.StartPostgres(t, testutil.PostgresOptions{Name: "fbprimary"})
	hang := script(t, "hang.sh", `echo half > "$PGHA_DATA_DIR/PG_VERSION"; echo hanging; exec sleep 300`+"\n")
	fail := script(t, "fail.sh", `echo junk > "$PGHA_DATA_DIR/partial"; echo "restore failed: no backup" >&2; exit 3`+"\n")
	cfg := testutil.PostgresConfig(t, "fbstandby")
	cfg.ReplicaMethods = []replicate.ReplicaMethod{
		{Kind: replicate.MethodCommand, Path: hang, Timeout: 2 * time.Second},
		{Kind: replicate.MethodCommand, Path: fail},
		{Kind: replicate.MethodBasebackup},
	}
	s, err := replicate.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	testutil.StopPostgresAtCleanup(t, s)
	start := time.Now()
	if err := s.Clone(ctx, testutil.SourceOf(p, replicate.SlotName("fbstandby"))); err != nil {
		t.Fatalf("Clone with a failing and a hanging method before basebackup: %v", err)
	}
	t.Logf("Clone took %v (including the 2 s timeout)", time.Since(start))
	aside := asideDirs(t, cfg.DataDir, replicate.MethodCommand)
	if len(aside) != 2 {
		t.Fatalf("directories moved aside = %v; want 2 (the hanging and the failing command's)", aside)
	}
	var sawHalf, sawPartial bool
	for _, d := range aside {
		if b, err := os.ReadFile(filepath.Join(d, "PG_VERSION")); err == nil && string(b) == "half\n" {
			sawHalf = true
		}
		if _, err := os.Stat(filepath.Join(d, "partial")); err == nil {
			sawPartial = true
		}
	}
	if !sawHalf || !sawPartial {
		t.Fatalf("moved-aside directories %v: hanging command's file kept = %v, failing command's file kept = %v; want both", aside, sawHalf, sawPartial)
	}
	if _, err := os.Stat(filepath.Join(cfg.DataDir, "partial")); err == nil {
		t.Fatalf("the failed method's file is in the new data directory %s", cfg.DataDir)
	}
	if err := s.WaitStreaming(ctx); err != nil {
		t.Fatalf("standby built by the third method does not stream: %v", err)
	}
	if err := testutil.PostgresExec(ctx, p, "CREATE TABLE fb AS SELECT 1 AS x"); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 30*time.Second, "the standby replays a write made after the clone", func() error {
		n, err := testutil.PostgresQueryInt(ctx, s, "SELECT count(*) FROM fb")
		if err == nil && n != 1 {
			err = fmt.Errorf("%d rows, want 1", n)
		}
		return err
	})
}

// TestCloneAllMethodsFail: when every method fails, Clone returns an
// error naming each method and where its directory went, and nothing is
// deleted.
func TestCloneAllMethodsFail(t *testing.T) {
	ctx := testutil.Ctx(t, time.Minute)
	p := testutil.StartPostgres(t, testutil.PostgresOptions{Name: "afprimary"})
	fail := script(t, "fail.sh", `echo junk > "$PGHA_DATA_DIR/partial"; exit 1`+"\n")
	empty := script(t, "empty.sh", "exit 0\n")
	cfg := testutil.PostgresConfig(t, "afstandby")
	cfg.ReplicaMethods = []replicate.ReplicaMethod{
		{Kind: replicate.MethodCommand, Path: fail},
		{Kind: replicate.MethodCommand, Path: empty},
	}
	s, err := replicate.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	testutil.StopPostgresAtCleanup(t, s)
	err = s.Clone(ctx, testutil.SourceOf(p, ""))
	t.Logf("Clone error: %v", err)
	var me *replicate.MethodError
	if !errors.As(err, &me) {
		t.Fatalf("Clone = %v; want a *MethodError", err)
	}
	aside := asideDirs(t, cfg.DataDir, replicate.MethodCommand)
	if len(aside) != 1 || !strings.Contains(err.Error(), aside[0]) {
		t.Fatalf("moved aside %v; the error must name the one non-empty directory moved aside: %v", aside, err)
	}
	if !strings.Contains(err.Error(), "holds no PostgreSQL cluster") || !strings.Contains(err.Error(), empty) {
		t.Fatalf("Clone error does not say the second command (%s) left no cluster: %v", empty, err)
	}
}

// TestCloneCommandContract: the command method gets the documented
// environment: it builds the standby with pg_basebackup from
// PGHA_SOURCE_CONNINFO, the slot and the passfile; the password is in
// neither its arguments nor its environment.
func TestCloneCommandContract(t *testing.T) {
	ctx := testutil.Ctx(t, 2*time.Minute)
	p := testutil.StartPostgres(t, testutil.PostgresOptions{Name: "ccprimary"})
	cmd := script(t, "clone.sh", `set -e
if env | grep -q -- "`+testutil.PostgresReplicationPassword+`"; then echo "password in the environment" >&2; exit 9; fi
for v in PGHA_DATA_DIR PGHA_NODE PGHA_BIN_DIR PGHA_SOURCE_HOST PGHA_SOURCE_PORT PGHA_SOURCE_SLOT PGHA_SYSTEM_ID PGHA_REPLICATION_USER PGHA_SOURCE_CONNINFO PGPASSFILE; do
	eval "val=\${$v:-}"; [ -n "$val" ] || { echo "$v is empty" >&2; exit 8; }
done
[ -z "$(ls -A "$PGHA_DATA_DIR")" ] || { echo "data directory not empty" >&2; exit 7; }
exec "$PGHA_BIN_DIR/pg_basebackup" -D "$PGHA_DATA_DIR" -d "$PGHA_SOURCE_CONNINFO" -S "$PGHA_SOURCE_SLOT" -X stream --checkpoint=fast --no-sync "$@"
`)
	cfg := testutil.PostgresConfig(t, "ccstandby")
	cfg.ReplicaMethods = []replicate.ReplicaMethod{{Kind: replicate.MethodCommand, Path: cmd, Args: []string{"--no-password"}}}
	s, err := replicate.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	testutil.StopPostgresAtCleanup(t, s)
	if err := s.Clone(ctx, testutil.SourceOf(p, replicate.SlotName("ccstandby"))); err != nil {
		t.Fatalf("Clone with a command running pg_basebackup: %v", err)
	}
	if err := s.WaitStreaming(ctx); err != nil {
		t.Fatal(err)
	}
	n, err := testutil.PostgresQueryInt(ctx, p, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1 AND active", replicate.SlotName("ccstandby"))
	if err != nil || n != 1 {
		t.Fatalf("active slot %s on the primary: %d, %v; want 1", replicate.SlotName("ccstandby"), n, err)
	}
}

// TestCloneFromPgBackRest builds a standby from a pgBackRest repository
// (a full backup taken while a writer runs) while the writer goes on,
// then checks that it streams from the primary and holds every row the
// writer committed.
func TestCloneFromPgBackRest(t *testing.T) {
	ctx := testutil.Ctx(t, 3*time.Minute)
	repo := testutil.NewPgBackRest(t, "main")
	p := testutil.StartPostgres(t, testutil.PostgresOptions{Name: "brprimary", Parameters: repo.ArchiveParameters()})
	repo.Run(ctx, p, "stanza-create")
	if err := testutil.PostgresExec(ctx, p, "CREATE TABLE w (i bigint PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	// A writer that commits one row at a time until stopped.
	wctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var committed atomic.Int64
	var werr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		conn, err := p.Connect(wctx)
		if err != nil {
			werr = err
			return
		}
		defer conn.Close(context.Background())
		for i := int64(1); wctx.Err() == nil; i++ {
			if _, err := conn.Exec(wctx, "INSERT INTO w VALUES ($1)", i); err != nil {
				if wctx.Err() == nil {
					werr = err
				}
				return
			}
			committed.Store(i)
		}
	}()
	defer func() { stop(); wg.Wait() }()
	testutil.Eventually(t, 10*time.Second, "the writer commits", func() error { return moreThan(committed.Load(), 10) })
	repo.Run(ctx, p, "backup", "--type=full")
	atBackup := committed.Load()
	info := repo.Info(ctx)
	if len(info.Backup) != 1 {
		t.Fatalf("pgbackrest info: %d backups, want 1: %+v", len(info.Backup), info)
	}
	testutil.Eventually(t, 10*time.Second, "the writer commits after the backup", func() error { return moreThan(committed.Load(), atBackup+10) })

	cfg := testutil.PostgresConfig(t, "brstandby")
	cfg.ReplicaMethods = []replicate.ReplicaMethod{repo.Method()}
	s, err := replicate.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	testutil.StopPostgresAtCleanup(t, s)
	start := time.Now()
	if err := s.Clone(ctx, testutil.SourceOf(p, replicate.SlotName("brstandby"))); err != nil {
		t.Fatalf("Clone from the pgBackRest repository: %v", err)
	}
	t.Logf("Clone from pgBackRest took %v", time.Since(start))
	if err := s.WaitStreaming(testutil.Ctx(t, 30*time.Second)); err != nil {
		t.Fatalf("the restored standby does not stream from the primary: %v", err)
	}
	auto, err := os.ReadFile(filepath.Join(cfg.DataDir, "postgresql.auto.conf"))
	if err != nil || !strings.Contains(string(auto), "archive-get") {
		t.Fatalf("postgresql.auto.conf of the restored standby has no pgBackRest restore_command (%v):\n%s", err, auto)
	}
	stop()
	wg.Wait()
	if werr != nil {
		t.Fatalf("writer: %v", werr)
	}
	// The insert in flight when the writer stopped may have committed:
	// the primary's count is the truth, at least what was acknowledged.
	last, err := testutil.PostgresQueryInt(ctx, p, "SELECT count(*) FROM w")
	if err != nil || last < committed.Load() {
		t.Fatalf("primary holds %d rows (%v); %d were acknowledged", last, err, committed.Load())
	}
	testutil.Eventually(t, 30*time.Second, "the standby holds every committed row", func() error {
		n, err := testutil.PostgresQueryInt(ctx, s, "SELECT count(*) FROM w")
		if err == nil && n != last {
			err = fmt.Errorf("%d rows on the standby, %d on the primary", n, last)
		}
		return err
	})
	t.Logf("rows at the backup: %d; committed in all: %d; all on the standby", atBackup, last)
}

func moreThan(n, min int64) error {
	if n > min {
		return nil
	}
	return fmt.Errorf("%d rows committed, want more than %d", n, min)
}

// TestReplicaMethodsBadConfig: a bad method list is a ConfigError naming
// the field and the fix.
func TestReplicaMethodsBadConfig(t *testing.T) {
	cases := []struct {
		m     replicate.ReplicaMethod
		field string
		fix   string
	}{
		{replicate.ReplicaMethod{Kind: "snapshot"}, "ReplicaMethods[1].Kind", "use basebackup, pgbackrest or command"},
		{replicate.ReplicaMethod{}, "ReplicaMethods[1].Kind", "is required"},
		{replicate.ReplicaMethod{Kind: replicate.MethodPgBackRest}, "ReplicaMethods[1].Stanza", "is required for the pgbackrest method"},
		{replicate.ReplicaMethod{Kind: replicate.MethodPgBackRest, Stanza: "main", Args: []string{"--type=time"}}, "ReplicaMethods[1].Args", "is set by pgha"},
		{replicate.ReplicaMethod{Kind: replicate.MethodPgBackRest, Stanza: "main", ConfigFile: "etc/pgbackrest.conf"}, "ReplicaMethods[1].ConfigFile", "absolute path"},
		{replicate.ReplicaMethod{Kind: replicate.MethodCommand}, "ReplicaMethods[1].Path", "absolute path of the executable"},
		{replicate.ReplicaMethod{Kind: replicate.MethodBasebackup, Timeout: -time.Second}, "ReplicaMethods[1].Timeout", "must not be negative"},
	}
	for _, c := range cases {
		cfg := replicate.LocalConfig("n1", "/tmp/pgha-nonexistent/data", 5432)
		cfg.ReplicaMethods = []replicate.ReplicaMethod{{Kind: replicate.MethodBasebackup}, c.m}
		err := cfg.Validate()
		var ce *replicate.ConfigError
		if !errors.As(err, &ce) || ce.Field != c.field || !strings.Contains(err.Error(), c.fix) {
			t.Errorf("Validate(%+v) = %v; want a ConfigError for %s saying %q", c.m, err, c.field, c.fix)
		}
	}
	if _, err := replicate.ParseReplicaMethods("pgbackrest,wal-g"); err == nil || !strings.Contains(err.Error(), `"wal-g"`) {
		t.Errorf("ParseReplicaMethods(pgbackrest,wal-g) = %v; want an error naming wal-g", err)
	}
	ms, err := replicate.ParseReplicaMethods("pgbackrest, basebackup")
	if err != nil || len(ms) != 2 || ms[0].Kind != replicate.MethodPgBackRest || ms[1].Kind != replicate.MethodBasebackup {
		t.Errorf("ParseReplicaMethods(pgbackrest, basebackup) = %+v, %v", ms, err)
	}
}

// TestStandbyCatchesUpFromArchive: a standby stopped while the primary
// wrote, switched and recycled more WAL than it keeps (no slot,
// wal_keep_size 0) cannot stream from where it stopped; with
// restore_command it restores the missing segments from the pgBackRest
// archive, catches up, and streams again, without a new clone.
func TestStandbyCatchesUpFromArchive(t *testing.T) {
	ctx := testutil.Ctx(t, 3*time.Minute)
	repo := testutil.NewPgBackRest(t, "main")
	params := repo.ArchiveParameters()
	params["wal_keep_size"] = "0"
	params["max_wal_size"] = "32MB"
	params["min_wal_size"] = "32MB"
	p := testutil.StartPostgres(t, testutil.PostgresOptions{Name: "arprimary", Parameters: params})
	repo.Run(ctx, p, "stanza-create")
	s := testutil.StartPostgres(t, testutil.PostgresOptions{Name: "arstandby", CloneFrom: p, NoSlot: true, Parameters: params})
	if err := testutil.PostgresExec(ctx, p, "CREATE TABLE ar (i int)"); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 30*time.Second, "the standby replays the table", func() error {
		_, err := testutil.PostgresQueryInt(ctx, s, "SELECT count(*) FROM ar")
		return err
	})
	conn, err := s.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var stoppedAt string
	err = conn.QueryRow(ctx, "SELECT pg_last_wal_replay_lsn()::text").Scan(&stoppedAt)
	conn.Close(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Stop(ctx, replicate.Fast); err != nil {
		t.Fatal(err)
	}
	// Six segments of WAL the standby misses, archived, then recycled on
	// the primary by checkpoints.
	const rows = 6
	for i := range rows {
		if err := testutil.PostgresExec(ctx, p, "INSERT INTO ar SELECT $1::int FROM generate_series(1, 1000)", i); err != nil {
			t.Fatal(err)
		}
		if err := testutil.PostgresExec(ctx, p, "SELECT pg_switch_wal()"); err != nil {
			t.Fatal(err)
		}
	}
	pc, err := p.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close(context.Background())
	var need string
	if err := pc.QueryRow(ctx, "SELECT pg_walfile_name($1::text::pg_lsn)", stoppedAt).Scan(&need); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 60*time.Second, "the primary archived its WAL and removed the segment the standby needs", func() error {
		if _, err := pc.Exec(ctx, "CHECKPOINT"); err != nil {
			return err
		}
		var oldest, archived, current string
		err := pc.QueryRow(ctx, `SELECT (SELECT min(name) FROM pg_ls_waldir() WHERE name ~ '^[0-9A-F]{24}$'),
			coalesce((SELECT last_archived_wal FROM pg_stat_archiver), ''), pg_walfile_name(pg_current_wal_lsn())`).Scan(&oldest, &archived, &current)
		if err != nil {
			return err
		}
		if oldest <= need || archived < need {
			return fmt.Errorf("the standby needs %s; oldest segment on the primary %s, last archived %s, current %s", need, oldest, archived, current)
		}
		return nil
	})
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 60*time.Second, "the standby catches up", func() error {
		n, err := testutil.PostgresQueryInt(ctx, s, "SELECT count(*) FROM ar")
		if err == nil && n != rows*1000 {
			err = fmt.Errorf("%d rows, want %d", n, rows*1000)
		}
		return err
	})
	if err := s.WaitStreaming(testutil.Ctx(t, 30*time.Second)); err != nil {
		t.Fatalf("the standby does not stream again after catching up from the archive: %v", err)
	}
	if log := s.LogTail(64 << 10); !strings.Contains(log, "restored log file \""+need+"\" from archive") {
		t.Fatalf("the standby did not restore %s from the archive; its log:\n%s", need, log)
	}
}
