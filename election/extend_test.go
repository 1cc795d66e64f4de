package election_test

import (
	"errors"
	"testing"
	"time"

	"github.com/pgha/pgha/election"
	"github.com/pgha/pgha/internal/testutil"
)

// TestExtendUntilAcrossQuorumLoss: a term extended past its lease-based
// deadline lasts through an etcd outage, and once the quorum is back it
// renews the same lease (same key, same token), so no new election is
// needed. Without the extension the term would end by ValidUntil
// (TestQuorumLost).
func TestExtendUntilAcrossQuorumLoss(t *testing.T) {
	etcd := testutil.StartEtcd(t, 3)
	ttl := 2 * time.Second
	a := newElector(t, etcd.Client(t), ttl, "a")
	term := campaign(t, a, "a")
	waitRenewed(t, term)
	lead := etcd.WaitLeader(t, 10*time.Second)
	down := []int{lead, (lead + 1) % 3}
	for _, i := range down {
		etcd.Stop(i)
	}
	// Keep extending by a second at a time for three TTLs.
	outageEnd := time.Now().Add(3 * ttl)
	for time.Now().Before(outageEnd) {
		if !term.ExtendUntil(time.Now().Add(time.Second)) {
			t.Fatalf("ExtendUntil on a live term = false; term ended with %v", term.Err())
		}
		if term.ValidUntil().Before(time.Now()) {
			t.Fatalf("ValidUntil %v in the past after ExtendUntil", term.ValidUntil())
		}
		select {
		case <-term.Done():
			t.Fatalf("term ended during the extension: %v", term.Err())
		case <-time.After(200 * time.Millisecond):
		}
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
	// The lease survived (etcd refreshes leases when a new etcd leader is
	// elected): a renewal succeeds, ValidUntil moves on without extension.
	testutil.Eventually(t, 10*time.Second, "a renewal after the quorum is back", func() error {
		if err := term.Err(); err != nil {
			t.Fatalf("term ended after the quorum came back: %v", err)
		}
		if left := time.Until(term.ValidUntil()); left < ttl/2 {
			term.ExtendUntil(time.Now().Add(time.Second))
			return errors.New("not renewed yet")
		}
		return nil
	})
	if l, err := a.Leader(testutil.Ctx(t, 10*time.Second)); err != nil || l.Token != term.Token() {
		t.Fatalf("Leader after quorum restored = %+v, %v; want the same term (token %d)", l, err, term.Token())
	}
}

// TestExtendUntilStopsOnLostLease: an extension never outlives an
// authoritative answer: when the key is deleted, the term ends at once.
func TestExtendUntilStopsOnLostLease(t *testing.T) {
	etcd := testutil.StartEtcd(t, 1)
	a := newElector(t, etcd.Client(t), 2*time.Second, "a")
	term := campaign(t, a, "a")
	term.ExtendUntil(time.Now().Add(time.Minute))
	cli := etcd.Client(t)
	if _, err := cli.Delete(testutil.Ctx(t, 5*time.Second), term.Key()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-term.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("term extended by a minute still live 5s after its key was deleted")
	}
	if !errors.Is(term.Err(), election.ErrKeyDeleted) {
		t.Fatalf("term ended with %v; want ErrKeyDeleted", term.Err())
	}
	if term.ExtendUntil(time.Now().Add(time.Minute)) {
		t.Fatal("ExtendUntil on an ended term = true")
	}
}
