package election_test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pgha/pgha/election"
	"github.com/pgha/pgha/internal/testutil"
)

// reportDurations reports the median and max of samples in milliseconds.
func reportDurations(b *testing.B, what string, samples []time.Duration) {
	b.Helper()
	if len(samples) == 0 {
		return
	}
	slices.Sort(samples)
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(ms(samples[len(samples)/2]), what+"-median-ms")
	b.ReportMetric(ms(samples[len(samples)-1]), what+"-max-ms")
	b.ReportMetric(0, "ns/op") // wall time per op is dominated by setup; the metrics above are the result
}

// BenchmarkHandoverResign measures the time from the leader's Resign call
// to the waiting candidate's Campaign returning. Target: median ≤ 50 ms.
func BenchmarkHandoverResign(b *testing.B) {
	for _, ttl := range []time.Duration{2 * time.Second, 5 * time.Second} {
		b.Run(fmt.Sprintf("ttl=%v", ttl), func(b *testing.B) {
			etcd := testutil.StartEtcd(b, 1)
			es := []*election.Elector{newElector(b, etcd.Client(b), ttl, "a"), newElector(b, etcd.Client(b), ttl, "b")}
			ctx := testutil.Ctx(b, 10*time.Minute)
			cur := campaign(b, es[0], "0")
			var samples []time.Duration
			b.ResetTimer()
			for i := 1; i <= b.N; i++ {
				next := asyncCampaign(b, ctx, es[i%2], fmt.Sprint(i))
				testutil.Eventually(b, 5*time.Second, "candidate's key exists", func() error {
					if ks := keys(b, etcd.Client(b)); len(ks) != 2 {
						return fmt.Errorf("keys %v", ks)
					}
					return nil
				})
				start := time.Now()
				if err := cur.Resign(ctx); err != nil {
					b.Fatal(err)
				}
				r := <-next
				if r.err != nil {
					b.Fatal(r.err)
				}
				samples = append(samples, r.at.Sub(start))
				cur = r.term
			}
			b.StopTimer()
			resign(b, cur)
			reportDurations(b, "handover", samples)
		})
	}
}

// BenchmarkHandoverLeaseLost measures the time from cutting the leader off
// etcd (a blackholing proxy) to the waiting candidate's Campaign returning.
// Target: median ≤ TTL + 300 ms.
//
// phase=worst cuts right after a successful renewal, so the lease has its
// whole TTL left; phase=random cuts at a uniformly random point of the
// renewal interval, as a real fault would. Either way etcd revokes expired
// leases from a loop that runs every 500 ms, which adds 0-500 ms.
func BenchmarkHandoverLeaseLost(b *testing.B) {
	for _, tc := range []struct {
		ttl   time.Duration
		phase string
	}{{2 * time.Second, "worst"}, {2 * time.Second, "random"}, {5 * time.Second, "worst"}, {5 * time.Second, "random"}} {
		ttl := tc.ttl
		b.Run(fmt.Sprintf("ttl=%v/phase=%s", ttl, tc.phase), func(b *testing.B) {
			etcd := testutil.StartEtcd(b, 1)
			px := testutil.StartProxy(b, "leader-etcd", strings.TrimPrefix(etcd.Endpoints()[0], "http://"))
			direct := newElector(b, etcd.Client(b), ttl, "direct")
			proxied := newElector(b, testutil.NewEtcdClient(b, px.URL()), ttl, "proxied")
			ctx := testutil.Ctx(b, 30*time.Minute)
			var samples []time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				px.Pass()
				var lead *election.Term
				testutil.Eventually(b, 30*time.Second, "proxied candidate leads", func() error {
					t, err := proxied.Campaign(testutil.Ctx(b, 10*time.Second), []byte("leader"))
					lead = t
					return err
				})
				next := asyncCampaign(b, ctx, direct, "next")
				waitRenewed(b, lead)
				if tc.phase == "random" {
					// Fault placement, not synchronisation: a fault lands
					// at a random point between two renewals.
					time.Sleep(rand.N(ttl / 5))
				}
				start := time.Now()
				px.Blackhole()
				r := <-next
				if r.err != nil {
					b.Fatal(r.err)
				}
				samples = append(samples, r.at.Sub(start))
				if vu := lead.ValidUntil(); !r.at.After(vu) {
					b.Fatalf("new leader %v before the old one's ValidUntil", vu.Sub(r.at))
				}
				resign(b, r.term)
				px.Pass()
				resign(b, lead)
			}
			b.StopTimer()
			reportDurations(b, "handover", samples)
		})
	}
}
