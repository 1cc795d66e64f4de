package election_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/pgha/pgha/election"
	"github.com/pgha/pgha/internal/testutil"
	clientv3 "go.etcd.io/etcd/client/v3"
)

const prefix = "/pgha/test/leader"

func newElector(t testing.TB, cli *clientv3.Client, ttl time.Duration, name string) *election.Elector {
	t.Helper()
	e, err := election.New(election.Config{
		Client:   cli,
		Prefix:   prefix,
		LeaseTTL: ttl,
		Logger:   slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo})).With("node", name),
	})
	if err != nil {
		t.Fatalf("election.New: %v", err)
	}
	return e
}

// campaign wins or fails the test, and resigns at cleanup.
func campaign(t testing.TB, e *election.Elector, value string) *election.Term {
	t.Helper()
	term, err := e.Campaign(testutil.Ctx(t, 30*time.Second), []byte(value))
	if err != nil {
		t.Fatalf("campaign %s: %v", value, err)
	}
	t.Cleanup(func() { resign(t, term) })
	return term
}

// campaignRetry campaigns until it wins, for use right after etcd restarts,
// when a campaign may fail on a transient etcd error (Campaign does not
// retry by design).
func campaignRetry(t testing.TB, e *election.Elector, value string) *election.Term {
	t.Helper()
	var term *election.Term
	testutil.Eventually(t, 30*time.Second, "campaign "+value+" wins", func() error {
		var err error
		term, err = e.Campaign(testutil.Ctx(t, 10*time.Second), []byte(value))
		return err
	})
	t.Cleanup(func() { resign(t, term) })
	return term
}

func resign(t testing.TB, term *election.Term) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := term.Resign(ctx); err != nil {
		t.Logf("resign %s: %v", term.Key(), err)
	}
}

// asyncCampaign campaigns in a goroutine and reports the term with the
// instant Campaign returned.
type result struct {
	term *election.Term
	err  error
	at   time.Time
}

func asyncCampaign(t testing.TB, ctx context.Context, e *election.Elector, value string) <-chan result {
	ch := make(chan result, 1)
	joined := make(chan result, 1)
	go func() {
		term, err := e.Campaign(ctx, []byte(value))
		r := result{term, err, time.Now()}
		joined <- r
		ch <- r
	}()
	t.Cleanup(func() {
		// Join the goroutine and release a term it may have won.
		if r := <-joined; r.term != nil {
			resign(t, r.term)
		}
	})
	return ch
}

// keys returns the keys under the election prefix.
func keys(t testing.TB, cli *clientv3.Client) []string {
	t.Helper()
	resp, err := cli.Get(testutil.Ctx(t, 5*time.Second), prefix+"/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatalf("get keys: %v", err)
	}
	var ks []string
	for _, kv := range resp.Kvs {
		ks = append(ks, string(kv.Key))
	}
	return ks
}

// waitRenewed waits until the term's lease was renewed at least once, so
// that ValidUntil comes from a renewal and not from the grant.
func waitRenewed(t testing.TB, term *election.Term) {
	t.Helper()
	first := term.ValidUntil()
	testutil.Eventually(t, 10*time.Second, "the lease is renewed once", func() error {
		if !term.ValidUntil().After(first) {
			return fmt.Errorf("ValidUntil unchanged")
		}
		return nil
	})
}

// watchDone records the instant the term's Done channel was seen closed.
func watchDone(term *election.Term) <-chan time.Time {
	ch := make(chan time.Time, 1)
	go func() { <-term.Done(); ch <- time.Now() }()
	return ch
}

func TestConfigValidate(t *testing.T) {
	cli := &clientv3.Client{}
	ok := election.Config{Client: cli, Prefix: "/p"}
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	for _, tc := range []struct {
		name  string
		mod   func(*election.Config)
		field string
	}{
		{"no client", func(c *election.Config) { c.Client = nil }, "Client"},
		{"no prefix", func(c *election.Config) { c.Prefix = "" }, "Prefix"},
		{"slash prefix", func(c *election.Config) { c.Prefix = "/" }, "Prefix"},
		{"sub-second TTL", func(c *election.Config) { c.LeaseTTL = 500 * time.Millisecond }, "LeaseTTL"},
		{"fractional TTL", func(c *election.Config) { c.LeaseTTL = 2500 * time.Millisecond }, "LeaseTTL"},
		{"negative TTL", func(c *election.Config) { c.LeaseTTL = -time.Second }, "LeaseTTL"},
		{"margin too big", func(c *election.Config) { c.SafetyMargin = 3 * time.Second }, "SafetyMargin"},
		{"negative margin", func(c *election.Config) { c.SafetyMargin = -time.Millisecond }, "SafetyMargin"},
		{"renew too slow", func(c *election.Config) { c.RenewInterval = 4 * time.Second }, "RenewInterval"},
		{"negative renew", func(c *election.Config) { c.RenewInterval = -time.Second }, "RenewInterval"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			tc.mod(&c)
			err := c.Validate()
			var ce *election.ConfigError
			if !errors.As(err, &ce) || ce.Field != tc.field {
				t.Fatalf("Validate() = %v; want *ConfigError for field %s", err, tc.field)
			}
			if !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("error %q does not name the field %s", err, tc.field)
			}
			if _, err := election.New(c); err == nil {
				t.Fatalf("New accepted an invalid config")
			}
		})
	}
}

func TestCampaignResignSingleMember(t *testing.T) {
	etcd := testutil.StartEtcd(t, 1)
	cli := etcd.Client(t)
	e := newElector(t, cli, 2*time.Second, "a")
	ctx := testutil.Ctx(t, 30*time.Second)

	if _, err := e.Leader(ctx); !errors.Is(err, election.ErrNoLeader) {
		t.Fatalf("Leader before any campaign = %v; want ErrNoLeader", err)
	}
	before := time.Now()
	term := campaign(t, e, "node-a")
	if vu := term.ValidUntil(); !vu.After(time.Now()) || vu.After(before.Add(2*time.Second)) {
		t.Fatalf("ValidUntil %v after campaign start; want in (now, start+TTL]", vu.Sub(before))
	}
	l, err := e.Leader(ctx)
	if err != nil || string(l.Value) != "node-a" || l.Key != term.Key() || l.Token != term.Token() {
		t.Fatalf("Leader = %+v, %v; want node-a with key %s token %d", l, err, term.Key(), term.Token())
	}
	resp, err := cli.Get(ctx, term.Key())
	if err != nil || len(resp.Kvs) != 1 || resp.Kvs[0].CreateRevision != term.Token() {
		t.Fatalf("leader key %s: %v, %v; want create revision %d", term.Key(), resp, err, term.Token())
	}
	if resp.Kvs[0].Lease != int64(term.Lease()) {
		t.Fatalf("leader key lease %x; want %x", resp.Kvs[0].Lease, int64(term.Lease()))
	}

	// The lease is renewed: after more than a TTL, the term still holds.
	first := term.ValidUntil()
	testutil.Eventually(t, 10*time.Second, "ValidUntil advances past the first lease deadline", func() error {
		if vu := term.ValidUntil(); !vu.After(first.Add(time.Second)) {
			return fmt.Errorf("ValidUntil still %v past the first", vu.Sub(first))
		}
		return term.Err()
	})
	if rtt := term.RenewalRTT(); rtt <= 0 || rtt > time.Second {
		t.Fatalf("RenewalRTT after renewals on loopback = %v; want a measured round trip", rtt)
	}

	if err := term.Proclaim(ctx, []byte("node-a v2")); err != nil {
		t.Fatalf("Proclaim: %v", err)
	}
	if l, _ := e.Leader(ctx); string(l.Value) != "node-a v2" {
		t.Fatalf("Leader value after Proclaim = %q", l.Value)
	}

	if err := term.Resign(ctx); err != nil {
		t.Fatalf("Resign: %v", err)
	}
	select {
	case <-term.Done():
	default:
		t.Fatalf("Done not closed after Resign")
	}
	if !errors.Is(term.Err(), election.ErrResigned) {
		t.Fatalf("Err after Resign = %v; want ErrResigned", term.Err())
	}
	if ks := keys(t, cli); len(ks) != 0 {
		t.Fatalf("keys after Resign: %v; want none", ks)
	}
	if err := term.Resign(ctx); err != nil {
		t.Fatalf("second Resign: %v; want nil (idempotent)", err)
	}
	if err := term.Proclaim(ctx, []byte("x")); !errors.Is(err, election.ErrNotLeader) {
		t.Fatalf("Proclaim after Resign = %v; want ErrNotLeader", err)
	}
	if ks := keys(t, cli); len(ks) != 0 {
		t.Fatalf("Proclaim after Resign created keys: %v", ks)
	}
}

// TestTwoCandidatesRace: of two candidates campaigning at once exactly one
// wins; the other wins only after the first resigned, and the first's Done
// has closed by then.
func TestTwoCandidatesRace(t *testing.T) {
	etcd := testutil.StartEtcd(t, 1)
	ctx := testutil.Ctx(t, 60*time.Second)
	a := newElector(t, etcd.Client(t), 2*time.Second, "a")
	b := newElector(t, etcd.Client(t), 2*time.Second, "b")

	ra := asyncCampaign(t, ctx, a, "a")
	rb := asyncCampaign(t, ctx, b, "b")
	var first result
	var second <-chan result
	select {
	case first = <-ra:
		second = rb
	case first = <-rb:
		second = ra
	}
	if first.err != nil {
		t.Fatalf("first campaign: %v", first.err)
	}
	// The loser must still be waiting while the winner leads.
	testutil.Eventually(t, 5*time.Second, "both candidates' keys exist", func() error {
		if ks := keys(t, etcd.Client(t)); len(ks) != 2 {
			return fmt.Errorf("keys %v", ks)
		}
		return nil
	})
	select {
	case r := <-second:
		t.Fatalf("second candidate won (%v) while the first leads", r.err)
	default:
	}
	doneAt := watchDone(first.term)
	resign(t, first.term)
	r := <-second
	if r.err != nil {
		t.Fatalf("second campaign after resign: %v", r.err)
	}
	if d := <-doneAt; !d.Before(r.at) {
		t.Fatalf("first term's Done closed %v after the second won; want before", d.Sub(r.at))
	}
	if r.term.Token() <= first.term.Token() {
		t.Fatalf("token %d after handover; want > %d", r.term.Token(), first.term.Token())
	}
}

// TestResignHandsOverTokensIncrease: 20 handovers by resign, each to the
// waiting candidate; tokens strictly increase.
func TestResignHandsOverTokensIncrease(t *testing.T) {
	etcd := testutil.StartEtcd(t, 1)
	ctx := testutil.Ctx(t, 120*time.Second)
	es := []*election.Elector{newElector(t, etcd.Client(t), 2*time.Second, "a"), newElector(t, etcd.Client(t), 2*time.Second, "b")}

	cur := campaign(t, es[0], "0")
	last := cur.Token()
	for i := 1; i <= 20; i++ {
		e := es[i%2]
		next := asyncCampaign(t, ctx, e, fmt.Sprint(i))
		testutil.Eventually(t, 5*time.Second, "waiting candidate's key exists", func() error {
			if ks := keys(t, etcd.Client(t)); len(ks) != 2 {
				return fmt.Errorf("keys %v", ks)
			}
			return nil
		})
		if err := cur.Resign(ctx); err != nil {
			t.Fatalf("handover %d: resign: %v", i, err)
		}
		r := <-next
		if r.err != nil {
			t.Fatalf("handover %d: campaign: %v", i, r.err)
		}
		if r.term.Token() <= last {
			t.Fatalf("handover %d: token %d not above previous %d", i, r.term.Token(), last)
		}
		if l, err := e.Leader(ctx); err != nil || l.Token != r.term.Token() || string(l.Value) != fmt.Sprint(i) {
			t.Fatalf("handover %d: Leader = %+v, %v", i, l, err)
		}
		last, cur = r.term.Token(), r.term
		t.Cleanup(func() { resign(t, r.term) })
	}
}

// TestCampaignCancelLeavesNoKey: a campaign cancelled while it waits removes
// its key at once (etcd issue 21128 leaves it behind).
func TestCampaignCancelLeavesNoKey(t *testing.T) {
	etcd := testutil.StartEtcd(t, 1)
	cli := etcd.Client(t)
	leader := campaign(t, newElector(t, cli, 5*time.Second, "a"), "a")

	ctx, cancel := context.WithCancel(t.Context())
	r := asyncCampaign(t, ctx, newElector(t, cli, 5*time.Second, "b"), "b")
	testutil.Eventually(t, 5*time.Second, "candidate b's key exists", func() error {
		if ks := keys(t, cli); len(ks) != 2 {
			return fmt.Errorf("keys %v", ks)
		}
		return nil
	})
	cancel()
	res := <-r
	if !errors.Is(res.err, context.Canceled) || res.term != nil {
		t.Fatalf("cancelled campaign = %v, %v; want context.Canceled and no term", res.term, res.err)
	}
	if ks := keys(t, cli); len(ks) != 1 || ks[0] != leader.Key() {
		t.Fatalf("keys after the cancelled campaign returned: %v; want only the leader's %s", ks, leader.Key())
	}

	// A campaign whose deadline passes while it waits, likewise.
	dctx, dcancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer dcancel()
	_, err := newElector(t, cli, 5*time.Second, "c").Campaign(dctx, []byte("c"))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("campaign past its deadline = %v; want DeadlineExceeded", err)
	}
	if ks := keys(t, cli); len(ks) != 1 {
		t.Fatalf("keys after a timed-out campaign: %v; want only the leader's", ks)
	}
}

// TestForeignKeys: stray keys under the prefix (no lease, a name that is
// not the lease, a lease-bound key with another name) neither block a
// campaign nor break Leader or Observe.
func TestForeignKeys(t *testing.T) {
	etcd := testutil.StartEtcd(t, 1)
	cli := etcd.Client(t)
	ctx := testutil.Ctx(t, 30*time.Second)
	g, err := cli.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	for k, opts := range map[string][]clientv3.OpOption{
		prefix + "/garbage":      nil,
		prefix + "/1234abcd":     nil,
		prefix + "/not-hex-name": {clientv3.WithLease(g.ID)},
		prefix + "/1":            {clientv3.WithLease(g.ID)},
		prefix + "/":             nil,
	} {
		if _, err := cli.Put(ctx, k, "\x00\xff{not json", opts...); err != nil {
			t.Fatal(err)
		}
	}
	e := newElector(t, cli, 2*time.Second, "a")
	obs := e.Observe(ctx)
	if l := <-obs; !l.IsZero() {
		t.Fatalf("Observe first value with only foreign keys = %+v; want no leader", l)
	}
	if _, err := e.Leader(ctx); !errors.Is(err, election.ErrNoLeader) {
		t.Fatalf("Leader with only foreign keys = %v; want ErrNoLeader", err)
	}
	term := campaign(t, e, "a")
	if l, err := e.Leader(ctx); err != nil || l.Token != term.Token() {
		t.Fatalf("Leader = %+v, %v; want our term", l, err)
	}
	select {
	case l := <-obs:
		if l.Token != term.Token() {
			t.Fatalf("Observe = %+v; want our term %d", l, term.Token())
		}
	case <-ctx.Done():
		t.Fatal("Observe did not report the new leader")
	}
	// A foreign key written after the leader changes nothing.
	if _, err := cli.Put(ctx, prefix+"/0", "x"); err != nil {
		t.Fatal(err)
	}
	if l, err := e.Leader(ctx); err != nil || l.Token != term.Token() {
		t.Fatalf("Leader after a new foreign key = %+v, %v", l, err)
	}
}

// TestObserve: the current leader first, then every change including "no
// leader", across an etcd restart.
func TestObserve(t *testing.T) {
	etcd := testutil.StartEtcd(t, 1)
	cli := etcd.Client(t)
	ctx, cancel := context.WithCancel(testutil.Ctx(t, 60*time.Second))
	e := newElector(t, cli, 2*time.Second, "obs")
	obs := e.Observe(ctx)
	next := func(what string) election.Leader {
		t.Helper()
		select {
		case l, ok := <-obs:
			if !ok {
				t.Fatalf("Observe closed; want %s", what)
			}
			return l
		case <-time.After(15 * time.Second):
			t.Fatalf("no Observe value within 15s; want %s", what)
		}
		return election.Leader{}
	}
	if l := next("no leader"); !l.IsZero() {
		t.Fatalf("first Observe = %+v; want no leader", l)
	}
	a := campaign(t, newElector(t, cli, 2*time.Second, "a"), "a")
	if l := next("a"); string(l.Value) != "a" || l.Token != a.Token() {
		t.Fatalf("Observe = %+v; want a", l)
	}
	if err := a.Proclaim(ctx, []byte("a2")); err != nil {
		t.Fatal(err)
	}
	if l := next("a2"); string(l.Value) != "a2" {
		t.Fatalf("Observe = %+v; want a2", l)
	}
	resign(t, a)
	if l := next("no leader after resign"); !l.IsZero() {
		t.Fatalf("Observe = %+v; want no leader", l)
	}

	// Restart etcd under the observer: it reconnects and keeps reporting.
	etcd.Stop(0)
	etcd.Restart(0)
	b := campaignRetry(t, newElector(t, cli, 2*time.Second, "b"), "b")
	if l := next("b after etcd restart"); string(l.Value) != "b" || l.Token != b.Token() {
		t.Fatalf("Observe after restart = %+v; want b", l)
	}
	cancel()
	for range obs { // drains, and checks the channel closes
	}
}

// TestThreeMembersEtcdLeaderStopped: stopping the etcd Raft leader does
// not end a healthy term: renewals succeed through another member.
func TestThreeMembersEtcdLeaderStopped(t *testing.T) {
	etcd := testutil.StartEtcd(t, 3)
	cli := etcd.Client(t)
	e := newElector(t, cli, 5*time.Second, "a")
	term := campaign(t, e, "a")

	stopped := time.Now()
	etcd.Stop(etcd.WaitLeader(t, 10*time.Second))
	testutil.Eventually(t, 15*time.Second, "a renewal succeeds after the etcd leader stopped", func() error {
		if err := term.Err(); err != nil {
			t.Fatalf("term ended after the etcd leader stopped: %v", err)
		}
		if vu := term.ValidUntil(); vu.Before(stopped.Add(5*time.Second - 500*time.Millisecond)) {
			return fmt.Errorf("ValidUntil %v after the stop; no renewal yet", vu.Sub(stopped))
		}
		return nil
	})
	if l, err := e.Leader(testutil.Ctx(t, 10*time.Second)); err != nil || l.Token != term.Token() {
		t.Fatalf("Leader after etcd leader change = %+v, %v; want our term", l, err)
	}
}

// TestQuorumLost: with two of three members down, the leader's term ends by
// its ValidUntil, and no other candidate wins before that instant; once the
// quorum is back, the waiting candidate wins.
func TestQuorumLost(t *testing.T) {
	etcd := testutil.StartEtcd(t, 3)
	ttl := 2 * time.Second
	a := newElector(t, etcd.Client(t), ttl, "a")
	b := newElector(t, etcd.Client(t), ttl, "b")
	term := campaign(t, a, "a")
	doneAt := watchDone(term)
	rb := asyncCampaign(t, testutil.Ctx(t, 60*time.Second), b, "b")
	testutil.Eventually(t, 5*time.Second, "b's key exists", func() error {
		if ks := keys(t, etcd.Client(t)); len(ks) != 2 {
			return fmt.Errorf("keys %v", ks)
		}
		return nil
	})

	waitRenewed(t, term)
	lead := etcd.WaitLeader(t, 10*time.Second)
	down := []int{lead, (lead + 1) % 3}
	for _, i := range down {
		etcd.Stop(i)
	}
	var closed time.Time
	select {
	case closed = <-doneAt:
	case <-time.After(2 * ttl):
		t.Fatalf("term still live %v after the quorum was lost", 2*ttl)
	}
	vu := term.ValidUntil()
	if closed.After(vu) {
		t.Fatalf("Done closed %v after ValidUntil; want no later than ValidUntil", closed.Sub(vu))
	}
	if !errors.Is(term.Err(), election.ErrLeaseExpired) {
		t.Fatalf("term ended with %v; want ErrLeaseExpired", term.Err())
	}

	// b waits in the queue, but its own lease cannot be renewed without a
	// quorum either: its campaign must fail, not win later on a dead lease.
	r := <-rb
	if r.err == nil {
		if !r.at.After(vu) {
			t.Fatalf("b won %v before a's ValidUntil: two leaders", vu.Sub(r.at))
		}
		t.Fatalf("b won while the quorum was lost")
	}
	if !errors.Is(r.err, election.ErrLeaseExpired) && !errors.Is(r.err, election.ErrLeaseLost) {
		t.Fatalf("b's campaign without quorum = %v; want ErrLeaseExpired/ErrLeaseLost", r.err)
	}

	var restarts []<-chan error
	for _, i := range down {
		restarts = append(restarts, etcd.RestartAsync(i))
	}
	for _, ch := range restarts {
		if err := <-ch; err != nil {
			t.Fatalf("restart etcd member: %v", err)
		}
	}
	// Once the quorum is back, a new campaign wins (a's lease expires on
	// the server or was revoked by a's cleanup).
	b2 := campaignRetry(t, b, "b")
	if l, err := b.Leader(testutil.Ctx(t, 10*time.Second)); err != nil || l.Token != b2.Token() {
		t.Fatalf("Leader after quorum restored = %+v, %v; want b", l, err)
	}
	if b2.Token() <= term.Token() {
		t.Fatalf("token %d after the quorum loss; want > %d", b2.Token(), term.Token())
	}
}

// TestLeaderCutOff: the leader's etcd client is cut off by a blackholing
// proxy. Its term ends by ValidUntil, and the other candidate wins only
// after that instant.
func TestLeaderCutOff(t *testing.T) {
	for _, mode := range []string{"blackhole", "reset"} {
		t.Run(mode, func(t *testing.T) {
			etcd := testutil.StartEtcd(t, 1)
			px := testutil.StartProxy(t, "a-etcd", strings.TrimPrefix(etcd.Endpoints()[0], "http://"))
			ttl := 2 * time.Second
			a := newElector(t, testutil.NewEtcdClient(t, px.URL()), ttl, "a")
			b := newElector(t, etcd.Client(t), ttl, "b")
			term := campaign(t, a, "a")
			doneAt := watchDone(term)
			rb := asyncCampaign(t, testutil.Ctx(t, 30*time.Second), b, "b")
			waitRenewed(t, term)

			cut := time.Now()
			if mode == "blackhole" {
				px.Blackhole()
			} else {
				px.Reset()
			}
			var closed time.Time
			select {
			case closed = <-doneAt:
			case <-time.After(2 * ttl):
				t.Fatalf("term still live %v after the cut", 2*ttl)
			}
			vu := term.ValidUntil()
			if closed.After(vu) {
				t.Fatalf("Done closed %v after ValidUntil", closed.Sub(vu))
			}
			r := <-rb
			if r.err != nil {
				t.Fatalf("b's campaign: %v", r.err)
			}
			if !r.at.After(vu) {
				t.Fatalf("b won %v before a's ValidUntil: two leaders", vu.Sub(r.at))
			}
			t.Logf("cut→a's Done %v, cut→b leads %v, a's ValidUntil→b leads %v",
				closed.Sub(cut).Round(time.Millisecond), r.at.Sub(cut).Round(time.Millisecond), r.at.Sub(vu).Round(time.Millisecond))
			px.Pass()
		})
	}
}

// TestWaitingCandidateLeaseExpires: a candidate whose lease expires while
// it waits in the queue fails its campaign instead of winning later with a
// dead lease (etcd issue 19597).
func TestWaitingCandidateLeaseExpires(t *testing.T) {
	etcd := testutil.StartEtcd(t, 1)
	cli := etcd.Client(t)
	px := testutil.StartProxy(t, "b-etcd", strings.TrimPrefix(etcd.Endpoints()[0], "http://"))
	a := campaign(t, newElector(t, cli, 2*time.Second, "a"), "a")
	b := newElector(t, testutil.NewEtcdClient(t, px.URL()), 2*time.Second, "b")
	rb := asyncCampaign(t, testutil.Ctx(t, 30*time.Second), b, "b")
	testutil.Eventually(t, 5*time.Second, "b's key exists", func() error {
		if ks := keys(t, cli); len(ks) != 2 {
			return fmt.Errorf("keys %v", ks)
		}
		return nil
	})
	px.Blackhole()
	// b's key vanishes when its lease expires on the server.
	testutil.Eventually(t, 10*time.Second, "b's key expires", func() error {
		if ks := keys(t, cli); len(ks) != 1 {
			return fmt.Errorf("keys %v", ks)
		}
		return nil
	})
	resign(t, a)
	px.Pass()
	r := <-rb
	if r.err == nil {
		t.Fatalf("b won with an expired lease (token %d)", r.term.Token())
	}
	if !errors.Is(r.err, election.ErrLeaseExpired) && !errors.Is(r.err, election.ErrLeaseLost) {
		t.Fatalf("b's campaign error = %v; want ErrLeaseExpired or ErrLeaseLost", r.err)
	}
	if _, err := b.Leader(testutil.Ctx(t, 10*time.Second)); !errors.Is(err, election.ErrNoLeader) {
		t.Fatalf("Leader after b's failed campaign = %v; want ErrNoLeader", err)
	}
}

func TestSlowRenewalRule(t *testing.T) {
	for _, tc := range []struct {
		rtt, ttl time.Duration
		slow     bool
	}{
		{time.Millisecond, 2 * time.Second, false},
		{199 * time.Millisecond, 2 * time.Second, false},
		{201 * time.Millisecond, 2 * time.Second, true},
		{400 * time.Millisecond, 5 * time.Second, false},
		{600 * time.Millisecond, 5 * time.Second, true},
	} {
		if got := election.SlowRenewal(tc.rtt, tc.ttl); got != tc.slow {
			t.Errorf("SlowRenewal(%v, %v) = %v, want %v", tc.rtt, tc.ttl, got, tc.slow)
		}
	}
}
