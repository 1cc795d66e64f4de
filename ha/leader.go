package ha

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/pgha/pgha/election"
	"github.com/pgha/pgha/internal/keyspace"
	"github.com/pgha/pgha/replicate"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// This file is the leader's upkeep: the writable leader record, one
// replication slot per member, and the synchronous standby set.

// lead is the leader's heartbeat: publish a writable leader record, keep a
// replication slot per member, maintain the synchronous standby set.
func (m *Manager) lead(ctx context.Context, o observation) error {
	term := m.currentTerm()
	if term == nil {
		return nil
	}
	if o.Leader == nil || o.Leader.Node != m.cfg.Node || !o.Leader.Writable || o.Leader.Timeline != o.Local.Timeline {
		if err := m.proclaim(ctx, term, o.Local.Timeline, true); err != nil {
			return err
		}
	}
	if o.Switchover != nil && o.Switchover.From != m.cfg.Node {
		// A switchover record that names another node as the old leader
		// is stale: remove it (guarded by our leadership).
		// Only the record observed: an operator's new request written
		// since (naming this node) must survive (TestSwitchoverToEveryNode
		// lost one that way in CI).
		m.cfg.Client.Txn(ctx).If(term.IsOwner(), clientv3.Compare(clientv3.ModRevision(m.layout.Switchover()), "=", o.SwitchoverRev)).
			Then(clientv3.OpDelete(m.layout.Switchover())).Commit()
	}
	m.maintainSlots(ctx, o)
	if m.cfg.SyncMode != SyncOff {
		return m.maintainSync(ctx, term, o)
	}
	return nil
}

// maintainSlots keeps a replication slot for every other member, and
// drops a slot this manager created once its member has been gone for
// DepartedSlotTTL, so that a departed node's slot does not retain WAL on
// the leader forever.
func (m *Manager) maintainSlots(ctx context.Context, o observation) {
	if m.ownSlots == nil {
		m.ownSlots = map[string]time.Time{}
	}
	present := map[string]bool{}
	for name := range o.Members {
		if name == m.cfg.Node {
			continue
		}
		slot := replicate.SlotName(name)
		present[slot] = true
		if err := m.inst.EnsureSlot(ctx, slot); err != nil {
			m.log.Debug("ensure slot", "member", name, "err", err.Error())
			continue
		}
		m.ownSlots[slot] = time.Time{}
	}
	for slot, gone := range m.ownSlots {
		switch {
		case present[slot] || slot == replicate.SlotName(m.cfg.Node):
		case gone.IsZero():
			m.ownSlots[slot] = o.Now
		case m.cfg.DepartedSlotTTL > 0 && o.Now.Sub(gone) >= m.cfg.DepartedSlotTTL:
			if err := m.inst.DropSlot(ctx, slot); err != nil {
				m.log.Debug("drop slot of departed member", "slot", slot, "err", err.Error())
				continue
			}
			delete(m.ownSlots, slot)
			m.log.Info("dropped the replication slot of a departed member", "slot", slot, "gone_for", o.Now.Sub(gone).Round(time.Second).String())
		}
	}
}

// maintainSync keeps synchronous_standby_names and the sync key in step so
// that the sync key always contains every standby that may hold a commit
// the others lack: it is widened before synchronous_standby_names names a
// new standby, and narrowed only after a standby left it.
func (m *Manager) maintainSync(ctx context.Context, term *election.Term, o observation) error {
	sctx, cancel := context.WithTimeout(ctx, m.cfg.LoopInterval)
	defer cancel()
	st, err := m.inst.Status(sctx)
	if err != nil {
		return err
	}
	var streaming []string
	for _, r := range st.Replicas {
		if r.State == "streaming" {
			streaming = append(streaming, r.Name)
		}
	}
	// Keep current sync standbys that still stream, then add others by name.
	var want []string
	for _, n := range o.SyncSet {
		if slices.Contains(streaming, n) && len(want) < m.cfg.SyncStandbys {
			want = append(want, n)
		}
	}
	slices.Sort(streaming)
	for _, n := range streaming {
		if len(want) < m.cfg.SyncStandbys && !slices.Contains(want, n) {
			want = append(want, n)
		}
	}
	if len(want) == 0 {
		if m.cfg.SyncMode == SyncStrict {
			// Strict: keep waiting for the current sync standbys; never
			// drop to asynchronous.
			return nil
		}
		// On: fall back to asynchronous commits only when no standby has
		// streamed for a while, not during a WAL receiver's reconnect:
		// while the sync key is empty no standby may be promoted.
		if m.noSyncSince.IsZero() {
			m.noSyncSince = time.Now()
		}
		if time.Since(m.noSyncSince) < rewindGrace(m.cfg) {
			return nil
		}
	} else {
		m.noSyncSince = time.Time{}
	}
	slices.Sort(want)
	union := slices.Clone(o.SyncSet)
	for _, n := range want {
		if !slices.Contains(union, n) {
			union = append(union, n)
		}
	}
	slices.Sort(union)
	if !o.SyncPresent || !slices.Equal(union, sortedCopy(o.SyncSet)) {
		if err := m.writeSync(ctx, term, union); err != nil {
			return err
		}
	}
	spec := replicate.SyncSpec{Method: replicate.SyncFirst, Num: len(want), Names: want}
	if len(want) == 0 {
		spec = replicate.SyncSpec{}
	}
	if spec.String() != st.SynchronousStandbyNames {
		if _, err := m.inst.SetSynchronousStandbys(ctx, spec); err != nil {
			return fmt.Errorf("set synchronous_standby_names: %w", err)
		}
	}
	if !slices.Equal(union, want) {
		return m.writeSync(ctx, term, want)
	}
	return nil
}

// syncBeforePromote names every other member as a synchronous standby
// candidate (FIRST n of them, n = SyncStandbys) on this standby before it
// is promoted, after widening the sync key to include them.
func (m *Manager) syncBeforePromote(ctx context.Context, term *election.Term, o observation) error {
	var others []string
	for name := range o.Members {
		if name != m.cfg.Node {
			others = append(others, name)
		}
	}
	if len(others) == 0 {
		if m.cfg.SyncMode == SyncStrict {
			return errors.New("strict synchronous mode and no other member to confirm commits")
		}
		return nil
	}
	slices.Sort(others)
	union := slices.Clone(o.SyncSet)
	for _, n := range others {
		if !slices.Contains(union, n) {
			union = append(union, n)
		}
	}
	slices.Sort(union)
	if err := m.writeSync(ctx, term, union); err != nil {
		return err
	}
	spec := replicate.SyncSpec{Method: replicate.SyncFirst, Num: min(m.cfg.SyncStandbys, len(others)), Names: others}
	if _, err := m.inst.SetSynchronousStandbys(ctx, spec); err != nil {
		return fmt.Errorf("set synchronous_standby_names before promotion: %w", err)
	}
	return nil
}

func sortedCopy(s []string) []string {
	c := slices.Clone(s)
	slices.Sort(c)
	return c
}

func (m *Manager) writeSync(ctx context.Context, term *election.Term, standbys []string) error {
	if standbys == nil {
		standbys = []string{}
	}
	b, err := keyspace.Encode(keyspace.SyncRecord{Leader: m.cfg.Node, Standbys: standbys})
	if err != nil {
		return err
	}
	tr, err := m.cfg.Client.Txn(ctx).If(term.IsOwner()).Then(clientv3.OpPut(m.layout.Sync(), string(b))).Commit()
	if err != nil {
		return fmt.Errorf("write sync key: %w", err)
	}
	if !tr.Succeeded {
		return election.ErrNotLeader
	}
	return nil
}
