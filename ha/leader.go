package ha

import (
	"context"
	"fmt"
	"maps"
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
	m.judgeConfig(ctx, term, o)
	if rev := o.Reinits[m.cfg.Node]; rev != 0 {
		// The leader cannot re-clone itself: Reinit refuses this, but the
		// request may predate a switchover. Drop it rather than let it
		// fire whenever this node next follows.
		key := m.layout.Reinit(m.cfg.Node)
		m.cfg.Client.Txn(ctx).If(term.IsOwner(), clientv3.Compare(clientv3.ModRevision(key), "=", rev)).Then(clientv3.OpDelete(key)).Commit()
		m.log.Warn("refused a reinit request for this node: it leads (switch over first, then reinit it as a standby)")
	}
	if err := m.maintainFailsafe(ctx, term, o); err != nil {
		m.log.Warn("failsafe record", "err", err.Error())
	}
	o.Members = m.carryOutRemovals(ctx, term, o)
	m.maintainSlots(ctx, o)
	if o.Policy.SyncMode != SyncOff {
		return m.maintainSync(ctx, term, o)
	}
	return nil
}

// switchoverDue rewrites the scheduled switchover o saw as an immediate
// one (At cleared), guarded by the term and by the record's revision (a
// cancel or a new request since wins). The write wakes the loop, which
// then performs it like any switchover.
func (m *Manager) switchoverDue(ctx context.Context, o observation) error {
	term := m.currentTerm()
	if term == nil {
		return nil
	}
	now := *o.Switchover
	now.At = time.Time{}
	b, err := keyspace.Encode(now)
	if err != nil {
		return err
	}
	key := m.layout.Switchover()
	tr, err := m.cfg.Client.Txn(ctx).If(term.IsOwner(), clientv3.Compare(clientv3.ModRevision(key), "=", o.SwitchoverRev)).
		Then(clientv3.OpPut(key, string(b))).Commit()
	if err != nil {
		return fmt.Errorf("start the scheduled switchover: %w", err)
	}
	if tr.Succeeded {
		m.log.Info("scheduled switchover due", "at", o.Switchover.At.Format(time.RFC3339Nano), "late_by", o.Now.Sub(o.Switchover.At).String())
	}
	return nil
}

// carryOutRemovals carries out the pending remove requests (planRemovals):
// it drops the departed member's replication slot, deletes a member
// record left without a lease, then deletes the request; a live or unknown
// member gets the outcome written into the request instead. Every write
// is guarded by the term and by the record's revision. It returns the
// members without the records it deleted, for the slot upkeep of the same
// round.
func (m *Manager) carryOutRemovals(ctx context.Context, term *election.Term, o observation) map[string]member {
	if len(o.Removals) == 0 {
		return o.Members
	}
	var slots []string
	ss, err := m.inst.Slots(ctx)
	if err != nil {
		m.log.Debug("list slots for remove requests", "err", err.Error())
		return o.Members
	}
	for _, s := range ss {
		slots = append(slots, s.Name)
	}
	members := maps.Clone(o.Members)
	for _, r := range planRemovals(m.cfg.Node, o.Members, o.Removals, slots) {
		key := m.layout.Remove(r.Node)
		guard := []clientv3.Cmp{term.IsOwner(), clientv3.Compare(clientv3.ModRevision(key), "=", o.Removals[r.Node].ModRev)}
		if r.Outcome != "" {
			rec := o.Removals[r.Node].Rec
			rec.Outcome, rec.Leader = r.Outcome, m.cfg.Node
			b, err := keyspace.Encode(rec)
			if err == nil {
				_, err = m.cfg.Client.Txn(ctx).If(guard...).Then(clientv3.OpPut(key, string(b))).Commit()
			}
			if err != nil {
				m.log.Warn("answer a remove request", "member", r.Node, "err", err.Error())
			}
			continue
		}
		if r.DropSlot != "" {
			if err := m.inst.DropSlot(ctx, r.DropSlot); err != nil {
				m.log.Warn("drop the slot of a removed member", "member", r.Node, "slot", r.DropSlot, "err", err.Error())
				continue // retried next round
			}
			delete(m.ownSlots, r.DropSlot)
		}
		ops := []clientv3.Op{clientv3.OpDelete(key)}
		if r.DeleteRecord {
			mk := m.layout.Member(r.Node)
			guard = append(guard, clientv3.Compare(clientv3.ModRevision(mk), "=", o.Members[r.Node].ModRev))
			ops = append(ops, clientv3.OpDelete(mk))
			delete(members, r.Node)
		}
		if _, err := m.cfg.Client.Txn(ctx).If(guard...).Then(ops...).Commit(); err != nil {
			m.log.Warn("complete a remove request", "member", r.Node, "err", err.Error())
			continue
		}
		m.log.Info("removed a departed member", "member", r.Node, "slot", r.DropSlot, "record_deleted", r.DeleteRecord)
	}
	return members
}

// maintainSlots carries out planSlots: a slot for every other member, and
// the slots this manager created dropped once their member has been gone
// for DepartedSlotTTL, so that a departed node's slot does not retain WAL
// on the leader forever.
func (m *Manager) maintainSlots(ctx context.Context, o observation) {
	p := planSlots(m.cfg.Node, slices.Collect(maps.Keys(o.Members)), m.ownSlots, o.Now, o.Policy.DepartedSlotTTL)
	for _, slot := range p.Ensure {
		if err := m.inst.EnsureSlot(ctx, slot); err != nil {
			m.log.Debug("ensure slot", "slot", slot, "err", err.Error())
			continue
		}
		p.Gone[slot] = time.Time{}
	}
	for _, slot := range p.Drop {
		if err := m.inst.DropSlot(ctx, slot); err != nil {
			m.log.Debug("drop slot of departed member", "slot", slot, "err", err.Error())
			continue
		}
		m.log.Info("dropped the replication slot of a departed member", "slot", slot, "gone_for", o.Now.Sub(p.Gone[slot]).Round(time.Second).String())
		delete(p.Gone, slot)
	}
	m.ownSlots = p.Gone
}

// maintainSync carries out planSync, which keeps the sync record a
// superset of the standbys synchronous_standby_names names (planQuorum
// in quorum mode).
func (m *Manager) maintainSync(ctx context.Context, term *election.Term, o observation) error {
	if o.Policy.SyncMode.quorum() {
		return m.maintainQuorum(ctx, term, o)
	}
	p := planSync(syncInput{Mode: o.Policy.SyncMode, N: o.Policy.SyncStandbys, Current: o.SyncSet, Present: o.SyncPresent,
		Streaming: o.Local.StreamingStandbys, Applied: o.Local.SyncStandbyNames,
		NoSyncSince: m.noSyncSince, Now: o.Now, Grace: rewindGrace(o.Policy)})
	m.noSyncSince = p.NoSyncSince
	if p.Widen != nil {
		if err := m.writeSync(ctx, term, p.Widen, 0); err != nil {
			return err
		}
	}
	if p.Apply {
		if _, err := m.inst.SetSynchronousStandbys(ctx, p.Spec); err != nil {
			return fmt.Errorf("set synchronous_standby_names: %w", err)
		}
	}
	if p.Narrow != nil {
		return m.writeSync(ctx, term, p.Narrow, 0)
	}
	return nil
}

// maintainQuorum carries out planQuorum. The applied configuration is
// read back from synchronous_standby_names; its confirmation point is the
// primary's write position in the first round after it was applied.
func (m *Manager) maintainQuorum(ctx context.Context, term *election.Term, o observation) error {
	applied, ok := parseApplied(o.Local.SyncStandbyNames)
	if !ok {
		// Not ours (set by hand?): protect nothing less than it could.
		return fmt.Errorf("synchronous_standby_names %q is not of the form pgha writes; not changing it", o.Local.SyncStandbyNames)
	}
	switch {
	case m.quorumArm:
		m.quorumPending, m.quorumArm = o.Local.WriteLSN, false
	case m.quorumPending == 0:
		// No confirmation point (this manager started after the apply):
		// take one next round; a later point is only more cautious.
		m.quorumArm = true
	}
	p := planQuorum(quorumInput{Strict: o.Policy.SyncMode == SyncQuorumStrict, K: o.Policy.SyncStandbys,
		Record: quorumSet{K: o.SyncQuorum, Voters: o.SyncSet}, Present: o.SyncPresent, Applied: applied,
		Streaming: o.Local.StreamingStandbys, Flushed: o.Local.StandbyFlush, Pending: m.quorumPending,
		NoSyncSince: m.noSyncSince, Now: o.Now, Grace: rewindGrace(o.Policy)})
	m.noSyncSince = p.NoSyncSince
	if p.Widen != nil {
		if err := m.writeSync(ctx, term, p.Widen.Voters, p.Widen.K); err != nil {
			return err
		}
	}
	if p.Apply != nil {
		spec := replicate.SyncSpec{Method: replicate.SyncAny, Num: p.Apply.K, Names: p.Apply.Voters}
		if len(p.Apply.Voters) == 0 {
			spec = replicate.SyncSpec{}
		}
		m.quorumPending, m.quorumArm = 0, true
		if _, err := m.inst.SetSynchronousStandbys(ctx, spec); err != nil {
			return fmt.Errorf("set synchronous_standby_names: %w", err)
		}
	}
	if p.Narrow != nil {
		return m.writeSync(ctx, term, p.Narrow.Voters, p.Narrow.K)
	}
	return nil
}

// syncBeforePromote carries out planSyncBeforePromote on this standby
// before it is promoted: the sync record widened first, then
// synchronous_standby_names set.
func (m *Manager) syncBeforePromote(ctx context.Context, term *election.Term, o observation) error {
	if o.Policy.SyncMode.quorum() {
		rec, spec, err := planQuorumBeforePromote(m.cfg.Node, slices.Collect(maps.Keys(o.Members)),
			quorumSet{K: o.SyncQuorum, Voters: o.SyncSet}, o.SyncPresent, o.Policy.SyncMode == SyncQuorumStrict, o.Policy.SyncStandbys)
		if err != nil || len(rec.Voters) == 0 {
			return err
		}
		if err := m.writeSync(ctx, term, rec.Voters, rec.K); err != nil {
			return err
		}
		m.quorumPending, m.quorumArm = 0, true
		if _, err := m.inst.SetSynchronousStandbys(ctx, spec); err != nil {
			return fmt.Errorf("set synchronous_standby_names before promotion: %w", err)
		}
		return nil
	}
	union, spec, err := planSyncBeforePromote(m.cfg.Node, slices.Collect(maps.Keys(o.Members)), o.SyncSet, o.Policy.SyncMode, o.Policy.SyncStandbys)
	if err != nil || union == nil {
		return err
	}
	if err := m.writeSync(ctx, term, union, 0); err != nil {
		return err
	}
	if _, err := m.inst.SetSynchronousStandbys(ctx, spec); err != nil {
		return fmt.Errorf("set synchronous_standby_names before promotion: %w", err)
	}
	return nil
}

// writeSync writes the sync record, guarded by the term: the standbys
// and, in quorum mode, k.
func (m *Manager) writeSync(ctx context.Context, term *election.Term, standbys []string, quorum int) error {
	if standbys == nil {
		standbys = []string{}
	}
	b, err := keyspace.Encode(keyspace.SyncRecord{Leader: m.cfg.Node, Standbys: standbys, Quorum: quorum})
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
