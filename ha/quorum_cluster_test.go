package ha

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/pgha/pgha/internal/testutil"
	"github.com/pgha/pgha/replicate"
)

// TestQuorumRepeatedFailovers: in quorum mode (ANY 1 of the two standbys)
// the primary is killed (kill -9) three times under a writer; each time a
// voter is promoted only with both voters heard, and no acknowledged write
// is lost.
func TestQuorumRepeatedFailovers(t *testing.T) {
	c := startCluster(t, clusterOpts{syncMode: SyncQuorum})
	c.sample()
	lead := c.waitHealthy(90 * time.Second)
	w := c.startWriter()
	defer w.stop()
	for round := 1; round <= 3; round++ {
		c.waitQuorum(lead, 1, 2)
		w.waitMore(t, 30, 30*time.Second, fmt.Sprintf("round %d: writes before the crash", round))
		old := lead
		kill9(t, old)
		c.waitNewLeader(old.name, 30*time.Second, fmt.Sprintf("round %d: a new leader", round))
		w.waitMore(t, 30, 30*time.Second, fmt.Sprintf("round %d: writes on the new primary", round))
		lead = c.waitHealthy(90 * time.Second)
		if lost := w.lost(t, lead); len(lost) > 0 {
			var why []string
			for _, id := range lost {
				why = append(why, w.describe(id))
			}
			t.Fatalf("round %d: quorum mode lost %d acknowledged writes on %s (killed %s): %v", round, len(lost), lead.name, old.name, why)
		}
	}
}

// waitQuorum waits until lead applies ANY k of n voters and the sync
// record says the same.
func (c *testCluster) waitQuorum(lead *testNode, k, n int) {
	c.t.Helper()
	want := fmt.Sprintf("ANY %d (", k)
	c.t.Logf("waiting for %s to apply %s... of %d voters", lead.name, want, n)
	testutil.Eventually(c.t, 60*time.Second, "quorum commit applied and recorded", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		st, err := lead.inst.Status(ctx)
		if err != nil {
			return err
		}
		applied, ok := parseApplied(st.SynchronousStandbyNames)
		if !ok || applied.K != k || len(applied.Voters) != n {
			return fmt.Errorf("synchronous_standby_names %q", st.SynchronousStandbyNames)
		}
		cs, err := ClusterStatus(ctx, c.cli, "test")
		if err != nil {
			return err
		}
		if len(cs.SyncSet) != n {
			return fmt.Errorf("sync record voters %v", cs.SyncSet)
		}
		return nil
	})
}

// TestQuorumVoterRemovedAndAdded: under a writer, a voter leaves (its node
// stops) and comes back; the leader applies ANY 1 of the one voter left,
// then of both again, narrowing and widening the record as it goes; then
// the primary is killed and no acknowledged write is lost.
func TestQuorumVoterRemovedAndAdded(t *testing.T) {
	c := startCluster(t, clusterOpts{syncMode: SyncQuorum})
	c.sample()
	lead := c.waitHealthy(90 * time.Second)
	w := c.startWriter()
	defer w.stop()
	c.waitQuorum(lead, 1, 2)
	w.waitMore(t, 30, 30*time.Second, "writes with two voters")
	var gone *testNode
	for _, n := range c.nodes {
		if n != lead {
			gone = n
			break
		}
	}
	c.stopManager(gone, false)
	ctx := t.Context()
	if err := gone.inst.Stop(ctx, replicate.Fast); err != nil {
		t.Fatal(err)
	}
	c.waitQuorum(lead, 1, 1)
	w.waitMore(t, 30, 30*time.Second, "writes with one voter")
	c.startManager(gone)
	c.waitHealthy(90 * time.Second)
	c.waitQuorum(lead, 1, 2)
	w.waitMore(t, 30, 30*time.Second, "writes with the voter back")
	kill9(t, lead)
	c.waitNewLeader(lead.name, 30*time.Second, "a new leader")
	w.waitMore(t, 30, 30*time.Second, "writes on the new primary")
	newLead := c.waitHealthy(90 * time.Second)
	w.stop()
	if lost := w.lost(t, newLead); len(lost) > 0 {
		t.Fatalf("quorum mode lost %d acknowledged writes across a voter's removal and return: %v", len(lost), lost)
	}
}
