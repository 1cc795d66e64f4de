package replicate_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/pgha/pgha/internal/testutil"
	"github.com/pgha/pgha/replicate"
)

// The benchmarks time role changes on an idle, small cluster of servers on
// this machine and report the median, p90-free, in milliseconds (the ns/op
// figure is the mean of the same timed sections). Run them with
//
//	go test -run '^$' -bench . -benchtime 20x ./replicate/

// timings collects per-iteration durations and reports their median.
type timings []time.Duration

func (ts *timings) measure(b *testing.B, f func()) {
	b.StartTimer()
	start := time.Now()
	f()
	*ts = append(*ts, time.Since(start))
	b.StopTimer()
}

func (ts timings) report(b *testing.B, unit string) {
	if len(ts) == 0 {
		return
	}
	s := slices.Clone(ts)
	slices.Sort(s)
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	b.ReportMetric(float64(med.Microseconds())/1000, "median-ms/"+unit)
	b.ReportMetric(float64(s[len(s)-1].Microseconds())/1000, "max-ms/"+unit)
}

func benchCtx(b *testing.B) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	b.Cleanup(cancel)
	return ctx
}

// BenchmarkPromote times Promote of a streaming standby until it returns
// (the server accepts writes), and separately until a first INSERT on a new
// connection has committed. Between iterations the old primary is fenced and
// rewound to follow the new one, so the roles swap every time.
func BenchmarkPromote(b *testing.B) {
	ctx := benchCtx(b)
	p := testutil.StartPostgres(b, testutil.PostgresOptions{Name: "bp1"})
	s := testutil.StartPostgres(b, testutil.PostgresOptions{Name: "bp2", CloneFrom: p})
	if err := testutil.PostgresExec(ctx, p, "CREATE TABLE t (v int)"); err != nil {
		b.Fatal(err)
	}
	var promote, writable timings
	b.StopTimer()
	b.ResetTimer()
	for n := 0; n < b.N; n++ {
		if err := s.WaitStreaming(ctx); err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		promote.measure(b, func() {
			if _, err := s.Promote(ctx); err != nil {
				b.Fatal(err)
			}
		})
		if err := testutil.PostgresExec(ctx, s, "INSERT INTO t VALUES (1)"); err != nil {
			b.Fatal(err)
		}
		writable = append(writable, time.Since(start))
		// Swap: the old primary rejoins as a standby of the new one.
		if err := p.Fence(ctx); err != nil {
			b.Fatal(err)
		}
		if err := p.Rewind(ctx, testutil.SourceOf(s, replicate.SlotName(p.Config().Name))); err != nil {
			b.Fatal(err)
		}
		p, s = s, p
	}
	promote.report(b, "promote")
	writable.report(b, "first-commit")
}

// BenchmarkFence times Fence of a primary with one streaming standby and an
// open write transaction, until the postmaster has exited.
func BenchmarkFence(b *testing.B) {
	ctx := benchCtx(b)
	p := testutil.StartPostgres(b, testutil.PostgresOptions{Name: "bf1"})
	testutil.StartPostgres(b, testutil.PostgresOptions{Name: "bf2", CloneFrom: p})
	if err := testutil.PostgresExec(ctx, p, "CREATE TABLE t (v int)"); err != nil {
		b.Fatal(err)
	}
	var fence timings
	b.StopTimer()
	b.ResetTimer()
	for n := 0; n < b.N; n++ {
		if err := p.Start(ctx); err != nil {
			b.Fatal(err)
		}
		conn, err := p.Connect(ctx)
		if err != nil {
			b.Fatal(err)
		}
		tx, err := conn.Begin(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := tx.Exec(ctx, "INSERT INTO t VALUES (1)"); err != nil {
			b.Fatal(err)
		}
		fence.measure(b, func() {
			if err := p.Fence(ctx); err != nil {
				b.Fatal(err)
			}
		})
		if err := tx.Commit(ctx); err == nil {
			b.Fatal("a transaction committed after Fence")
		}
		conn.Close(context.Background())
	}
	fence.report(b, "fence")
}

// BenchmarkFollow times Follow of a running standby to another source plus
// the wait until its WAL receiver streams from it again. The standby
// alternates between the primary (through its slot) and the other standby
// (cascading).
func BenchmarkFollow(b *testing.B) {
	ctx := benchCtx(b)
	p := testutil.StartPostgres(b, testutil.PostgresOptions{Name: "bw1"})
	s1 := testutil.StartPostgres(b, testutil.PostgresOptions{Name: "bw2", CloneFrom: p})
	s2 := testutil.StartPostgres(b, testutil.PostgresOptions{Name: "bw3", CloneFrom: p})
	sources := []replicate.Source{testutil.SourceOf(s1, ""), testutil.SourceOf(p, "bw3")}
	var follow timings
	b.StopTimer()
	b.ResetTimer()
	for n := 0; n < b.N; n++ {
		src := sources[n%2]
		follow.measure(b, func() {
			if err := s2.Follow(ctx, src); err != nil {
				b.Fatal(err)
			}
			if err := s2.WaitStreaming(ctx); err != nil {
				b.Fatal(err)
			}
		})
	}
	follow.report(b, "follow")
}

// BenchmarkClone times Clone of a small database (about 10 MB of table data
// on top of an empty cluster's 30-odd MB) into an empty directory, until
// the standby accepts connections.
func BenchmarkClone(b *testing.B) {
	ctx := benchCtx(b)
	p := testutil.StartPostgres(b, testutil.PostgresOptions{Name: "bc1"})
	if err := testutil.PostgresExec(ctx, p, "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 100000) g"); err != nil {
		b.Fatal(err)
	}
	var clone timings
	b.StopTimer()
	b.ResetTimer()
	for n := 0; n < b.N; n++ {
		cfg := testutil.PostgresConfig(b, fmt.Sprintf("bc-clone%d", n))
		inst, err := replicate.New(cfg)
		if err != nil {
			b.Fatal(err)
		}
		testutil.StopPostgresAtCleanup(b, inst)
		clone.measure(b, func() {
			if err := inst.Clone(ctx, testutil.SourceOf(p, replicate.SlotName(cfg.Name))); err != nil {
				b.Fatal(err)
			}
		})
		if err := testutil.StopPostgres(inst); err != nil {
			b.Fatal(err)
		}
		if err := p.DropSlot(ctx, replicate.SlotName(cfg.Name)); err != nil {
			b.Fatal(err)
		}
	}
	clone.report(b, "clone")
}

// BenchmarkFollowNewPrimary times what a failover asks of the other
// standbys: Follow the newly promoted primary (a new timeline) plus the wait
// until streaming from it. Three nodes rotate roles: each iteration fences
// the primary, promotes a standby (untimed), times the other standby's
// Follow, then rewinds the old primary to follow the new one (untimed).
func BenchmarkFollowNewPrimary(b *testing.B) {
	ctx := benchCtx(b)
	n0 := testutil.StartPostgres(b, testutil.PostgresOptions{Name: "bn0"})
	nodes := []*replicate.Instance{
		n0,
		testutil.StartPostgres(b, testutil.PostgresOptions{Name: "bn1", CloneFrom: n0}),
		testutil.StartPostgres(b, testutil.PostgresOptions{Name: "bn2", CloneFrom: n0}),
	}
	slot := func(i *replicate.Instance) string { return replicate.SlotName(i.Config().Name) }
	var follow timings
	b.StopTimer()
	b.ResetTimer()
	for n := 0; n < b.N; n++ {
		primary, next, other := nodes[n%3], nodes[(n+1)%3], nodes[(n+2)%3]
		// Both standbys must stream, so that they receive the primary's
		// shutdown checkpoint.
		for _, s := range []*replicate.Instance{next, other} {
			wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			err := s.WaitStreaming(wctx)
			cancel()
			if err != nil {
				b.Fatal(err)
			}
		}
		if err := primary.Stop(ctx, replicate.Fast); err != nil {
			b.Fatal(err)
		}
		st, err := primary.Status(ctx)
		if err != nil {
			b.Fatal(err)
		}
		for _, s := range []*replicate.Instance{next, other} {
			wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			err := s.WaitReplayed(wctx, st.CheckpointLSN)
			cancel()
			if err != nil {
				b.Fatalf("iteration %d: %s replays %s's last record: %v", n, s.Config().Name, primary.Config().Name, err)
			}
		}
		if _, err := next.Promote(ctx); err != nil {
			b.Fatal(err)
		}
		follow.measure(b, func() {
			if err := other.Follow(ctx, testutil.SourceOf(next, slot(other))); err != nil {
				b.Fatal(err)
			}
			if err := other.WaitStreaming(ctx); err != nil {
				b.Fatal(err)
			}
		})
		if err := primary.Rewind(ctx, testutil.SourceOf(next, slot(primary))); err != nil {
			b.Fatal(err)
		}
	}
	follow.report(b, "follow-new-primary")
}

// BenchmarkReplicaMethods times the creation of a standby of the same
// database by each replica method, from an empty directory until the
// standby streams from the primary: pg_basebackup from the primary, and a
// pgBackRest restore from a posix repository on this machine (one
// process, and four) followed by streaming. The database holds about
// PGHA_BENCH_REPLICA_MB MB of table data (default 128) on top of an empty
// cluster's 30-odd MB; its size is reported as db-MB. The full backup is
// taken once, untimed, with archiving on.
func BenchmarkReplicaMethods(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	b.Cleanup(cancel)
	mb := 128
	if v := os.Getenv("PGHA_BENCH_REPLICA_MB"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			b.Fatalf("PGHA_BENCH_REPLICA_MB=%q: want a positive number of megabytes", v)
		}
		mb = n
	}
	repo := testutil.NewPgBackRest(b, "bench")
	params := repo.ArchiveParameters()
	params["max_wal_size"] = "4GB"
	p := testutil.StartPostgres(b, testutil.PostgresOptions{Name: "brm", Parameters: params})
	repo.Run(ctx, p, "stanza-create")
	// Rows of about 330 bytes on disk (a 256-character pad, tuple header
	// and alignment).
	rows := mb << 20 / 330
	if err := testutil.PostgresExec(ctx, p, "CREATE TABLE big AS SELECT g AS id, repeat(md5(g::text), 8) AS pad FROM generate_series(1, $1::int) g", rows); err != nil {
		b.Fatal(err)
	}
	dbBytes, err := testutil.PostgresQueryInt(ctx, p, "SELECT sum(pg_database_size(datname))::bigint FROM pg_database")
	if err != nil {
		b.Fatal(err)
	}
	repo.Run(ctx, p, "backup", "--type=full")
	for _, m := range []struct {
		name   string
		method replicate.ReplicaMethod
	}{
		{"basebackup", replicate.ReplicaMethod{Kind: replicate.MethodBasebackup}},
		{"pgbackrest-1proc", repo.Method()},
		{"pgbackrest-4proc", func() replicate.ReplicaMethod { m := repo.Method(); m.Args = []string{"--process-max=4"}; return m }()},
	} {
		b.Run(m.name, func(b *testing.B) {
			var create timings
			b.StopTimer()
			b.ResetTimer()
			for n := 0; n < b.N; n++ {
				cfg := testutil.PostgresConfig(b, fmt.Sprintf("brm-%s-%d", m.name, n))
				cfg.ReplicaMethods = []replicate.ReplicaMethod{m.method}
				inst, err := replicate.New(cfg)
				if err != nil {
					b.Fatal(err)
				}
				testutil.StopPostgresAtCleanup(b, inst)
				create.measure(b, func() {
					if err := inst.Clone(ctx, testutil.SourceOf(p, replicate.SlotName(cfg.Name))); err != nil {
						b.Fatal(err)
					}
					if err := inst.WaitStreaming(ctx); err != nil {
						b.Fatal(err)
					}
				})
				if err := testutil.StopPostgres(inst); err != nil {
					b.Fatal(err)
				}
				if err := p.DropSlot(ctx, replicate.SlotName(cfg.Name)); err != nil {
					b.Fatal(err)
				}
				if err := os.RemoveAll(filepath.Dir(cfg.DataDir)); err != nil {
					b.Fatal(err)
				}
			}
			create.report(b, "create")
			b.ReportMetric(float64(dbBytes)/(1<<20), "db-MB")
			if m.method.Kind == replicate.MethodPgBackRest {
				// The restore alone, as pgBackRest timed it (its last
				// "restore command end" line); the rest of create is the
				// standby's start and catch-up.
				b.ReportMetric(lastRestoreMillis(b, repo), "restore-ms")
			}
		})
	}
}

// lastRestoreMillis returns the duration of the last restore in the
// repository's restore log, in milliseconds.
func lastRestoreMillis(b *testing.B, repo *testutil.PgBackRest) float64 {
	log, err := os.ReadFile(filepath.Join(repo.Dir, "log", repo.Stanza+"-restore.log"))
	if err != nil {
		b.Fatal(err)
	}
	m := regexp.MustCompile(`restore command end: completed successfully \((\d+)ms\)`).FindAllSubmatch(log, -1)
	if len(m) == 0 {
		b.Fatalf("no completed restore in the pgBackRest restore log")
	}
	ms, _ := strconv.ParseFloat(string(m[len(m)-1][1]), 64)
	return ms
}
