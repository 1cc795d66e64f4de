package replicate_test

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pgha/pgha/internal/testutil"
	"github.com/pgha/pgha/replicate"
)

// BenchmarkQuorumCommit compares commit latency under FIRST 1 and ANY 1
// (quorum commit) of two standbys when one standby's replication link is
// slowed by 50 ms each way (a fault proxy's latency): FIRST 1 lists the
// slow standby first (the one it would wait for), ANY 1 waits for whichever
// confirms first. A real primary and two real standbys; one client
// commits single-row INSERTs one after the other. It prints p50/p99 per
// setting and reports the p50s. Run it once:
//
//	go test -run '^$' -bench QuorumCommit -benchtime 1x ./replicate/
func BenchmarkQuorumCommit(b *testing.B) {
	const commits = 200
	ctx := benchCtx(b)
	p := testutil.StartPostgres(b, testutil.PostgresOptions{Name: "qp"})
	testutil.StartPostgres(b, testutil.PostgresOptions{Name: "qfast", CloneFrom: p}) // the fast standby, direct
	slow := testutil.StartPostgres(b, testutil.PostgresOptions{Name: "qslow", CloneFrom: p})
	px := testutil.StartProxy(b, "qslow-replication", "127.0.0.1:"+strconv.Itoa(p.Config().Port))
	host, port, _ := strings.Cut(px.Addr(), ":")
	pn, _ := strconv.Atoi(port)
	if err := slow.Follow(ctx, replicate.Source{Host: host, Port: pn, Slot: "qslow"}); err != nil {
		b.Fatal(err)
	}
	if err := slow.WaitStreaming(ctx); err != nil {
		b.Fatal(err)
	}
	px.Latency(50)
	if err := testutil.PostgresExec(ctx, p, "CREATE TABLE q (v int)"); err != nil {
		b.Fatal(err)
	}
	run := func(spec replicate.SyncSpec) []time.Duration {
		if _, err := p.SetSynchronousStandbys(ctx, spec); err != nil {
			b.Fatal(err)
		}
		conn, err := p.Connect(ctx)
		if err != nil {
			b.Fatal(err)
		}
		defer conn.Close(ctx)
		var lat []time.Duration
		for i := range commits {
			t := time.Now()
			if _, err := conn.Exec(ctx, "INSERT INTO q VALUES ($1)", i); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(t))
		}
		slices.Sort(lat)
		return lat
	}
	for b.Loop() {
		first := run(replicate.SyncSpec{Method: replicate.SyncFirst, Num: 1, Names: []string{"qslow", "qfast"}})
		quorum := run(replicate.SyncSpec{Method: replicate.SyncAny, Num: 1, Names: []string{"qslow", "qfast"}})
		async := run(replicate.SyncSpec{})
		pct := func(l []time.Duration, q int) float64 { return float64(l[len(l)*q/100].Microseconds()) / 1000 }
		fmt.Printf("\ncommit latency, %d sequential single-row INSERTs; standby qslow's link +50 ms each way, qfast direct\n", commits)
		fmt.Printf("%-32s %9s %9s\n", "synchronous_standby_names", "p50 ms", "p99 ms")
		for _, r := range []struct {
			name string
			l    []time.Duration
		}{{`FIRST 1 ("qslow", "qfast")`, first}, {`ANY 1 ("qslow", "qfast")`, quorum}, {"'' (asynchronous)", async}} {
			fmt.Printf("%-32s %9.2f %9.2f\n", r.name, pct(r.l, 50), pct(r.l, 99))
		}
		b.ReportMetric(pct(first, 50), "first-p50-ms")
		b.ReportMetric(pct(quorum, 50), "any-p50-ms")
	}
}
