package ha

import (
	"errors"
	"testing"
	"time"

	"github.com/pgha/pgha/internal/keyspace"
)

func TestRetryGate(t *testing.T) {
	t0 := time.Unix(1000, 0)
	g := retryGate{min: 500 * time.Millisecond, max: 4 * time.Second}
	clone := action{Kind: actClone, Leader: &keyspace.LeaderRecord{Node: "n2"}}
	boom := errors.New("pg_basebackup: connection refused")

	if ok, _, _ := g.allow(clone, t0); !ok {
		t.Fatal("a first attempt was held back")
	}
	// Failures: each wait lies in [min, ceiling], the ceiling doubling up
	// to max; the action is held back until then, with its error.
	now := t0
	ceil := g.min
	for i := range 8 {
		d := g.done(clone, now, boom)
		if d < g.min || d > ceil {
			t.Fatalf("failure %d: wait %v, want within [%v, %v]", i+1, d, g.min, ceil)
		}
		ceil = min(2*ceil, g.max)
		if ok, left, err := g.allow(clone, now.Add(d-time.Millisecond)); ok || left != time.Millisecond || err != boom {
			t.Fatalf("failure %d: 1ms before the retry: allow = %v, %v, %v; want held back 1ms with the last error", i+1, ok, left, err)
		}
		now = now.Add(d)
		if ok, _, _ := g.allow(clone, now); !ok {
			t.Fatalf("failure %d: held back after its wait %v", i+1, d)
		}
	}
	// Another target (a new leader) or another action runs at once.
	other := action{Kind: actClone, Leader: &keyspace.LeaderRecord{Node: "n3"}}
	g.done(clone, now, boom)
	if ok, _, _ := g.allow(other, now); !ok {
		t.Fatal("a clone from another leader was held back")
	}
	if ok, _, _ := g.allow(action{Kind: actRewind, Leader: clone.Leader}, now); !ok {
		t.Fatal("a rewind was held back by a failed clone")
	}
	// Safety actions are never held back or recorded.
	for _, k := range []actionKind{actFence, actResign, actPromote, actLead, actCampaign, actRestartPrimary} {
		a := action{Kind: k}
		if d := g.done(a, now, boom); d != 0 {
			t.Fatalf("%v failure recorded a wait %v", k, d)
		}
		if ok, _, _ := g.allow(a, now); !ok {
			t.Fatalf("%v held back", k)
		}
	}
	// A success resets: a later failure starts again at min.
	g.done(clone, now, nil)
	if ok, _, _ := g.allow(clone, now); !ok {
		t.Fatal("held back after a success")
	}
	if d := g.done(clone, now, boom); d != g.min {
		t.Fatalf("first wait after a success %v, want min %v", d, g.min)
	}
}
