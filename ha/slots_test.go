package ha

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/pgha/pgha/internal/testutil"
	"github.com/pgha/pgha/replicate"
)

// TestDepartedMemberSlotDropped: the leader keeps a slot per member; when a
// member is gone (its manager dead, its PostgreSQL stopped, its record
// expired) for DepartedSlotTTL, the leader drops that member's slot, so
// that it does not retain WAL for good. The slot of the member that stays
// and a slot the leader did not create are kept.
func TestDepartedMemberSlotDropped(t *testing.T) {
	c := startCluster(t, clusterOpts{configure: func(_ string, cfg *Config) { cfg.DepartedSlotTTL = time.Second }})
	lead := c.waitHealthy(90 * time.Second)
	var gone, stays *testNode
	for _, n := range c.nodes {
		if n == lead {
			continue
		}
		if gone == nil {
			gone = n
		} else {
			stays = n
		}
	}
	ctx := testutil.Ctx(t, 2*time.Minute)
	if err := lead.inst.EnsureSlot(ctx, "user_slot"); err != nil {
		t.Fatal(err)
	}
	slots := func() ([]string, error) {
		ss, err := lead.inst.Slots(ctx)
		var names []string
		for _, s := range ss {
			names = append(names, s.Name)
		}
		return names, err
	}
	testutil.Eventually(t, 30*time.Second, "a slot for each standby on the leader", func() error {
		names, err := slots()
		if err != nil {
			return err
		}
		for _, n := range []*testNode{gone, stays} {
			if !slices.Contains(names, replicate.SlotName(n.name)) {
				return fmt.Errorf("slots %v lack %s's", names, n.name)
			}
		}
		return nil
	})

	// gone's node dies for good: its manager stops renewing, its
	// PostgreSQL stops.
	c.stopManager(gone, true)
	if err := gone.inst.Stop(ctx, replicate.Fast); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	testutil.Eventually(t, 60*time.Second, "the departed member's slot dropped", func() error {
		names, err := slots()
		if err != nil {
			return err
		}
		if slices.Contains(names, replicate.SlotName(gone.name)) {
			return fmt.Errorf("slots %v still hold %s's", names, gone.name)
		}
		return nil
	})
	t.Logf("%s's slot dropped %v after its node stopped (lease TTL %v + DepartedSlotTTL 1s)", gone.name, time.Since(start).Round(time.Millisecond), c.opts.ttl)
	names, err := slots()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(names, replicate.SlotName(stays.name)) || !slices.Contains(names, "user_slot") {
		t.Fatalf("slots %v; want %s's and user_slot kept", names, stays.name)
	}
	if err := testutil.PostgresExec(context.Background(), lead.inst, "SELECT pg_drop_replication_slot('user_slot')"); err != nil {
		t.Fatal(err)
	}
}
