package ha

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/pgha/pgha/election"
	"github.com/pgha/pgha/internal/keyspace"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// This file is promotion and the timeline history it appends.

// promote promotes PostgreSQL while the term is live; the leader record
// (not writable) has been visible since the campaign won, so pools have
// already stopped writing to the old primary.
func (m *Manager) promote(ctx context.Context, o observation) error {
	term := m.currentTerm()
	if term == nil || term.Err() != nil {
		return nil
	}
	if time.Until(term.ValidUntil()) < m.cfg.FenceBudget {
		return fmt.Errorf("promote: term too close to its deadline")
	}
	if o.Policy.SyncMode != SyncOff {
		// A standby carries no synchronous_standby_names: promoted as is,
		// it would acknowledge commits alone until the first heartbeat.
		// Name every other member first (and widen the sync key before
		// that), so no commit is ever acknowledged without a standby.
		if err := m.syncBeforePromote(ctx, term, o); err != nil {
			return fmt.Errorf("promote: %w", err)
		}
	}
	tl, err := m.inst.Promote(ctx)
	if err != nil {
		return fmt.Errorf("promote: %w", err)
	}
	// Read at once: the value must be below every id the new timeline
	// assigns, and pools do not write here before proclaim (below).
	firstXID, xerr := m.firstXID(ctx)
	if xerr != nil {
		m.log.Warn("read the new timeline's first transaction id; the history entry will not have it, and pools will report unresolved commits as unknown", "err", xerr.Error())
	}
	m.wasPrimary, m.following, m.crashedAt = true, "", time.Time{}
	reason := "failover"
	if sw := o.Switchover; sw != nil && sw.To == m.cfg.Node {
		reason = switchoverKind(sw)
	} else if sw != nil && sw.From != "" && sw.To == "" {
		reason = "switchover"
	}
	if err := m.appendHistory(ctx, term, keyspace.HistoryEntry{Timeline: tl, SwitchLSN: o.Local.position(), Leader: m.cfg.Node, Reason: reason, Token: term.Token(), Time: time.Now().UTC(), FirstXID: firstXID}); err != nil {
		m.log.Warn("append timeline history", "err", err.Error())
	}
	m.changeReason = "promote (" + reason + ")"
	m.tel.promotions.Add(ctx, 1)
	m.log.Info("promoted", "timeline", tl, "token", term.Token())
	return m.proclaim(ctx, term, tl, true)
}

// firstXID returns the first transaction id the just-promoted server can
// assign on its new timeline: the xmax of a fresh snapshot, which is the
// next id to assign (at the end of recovery PostgreSQL sets the last
// completed id to just below it) until a transaction of the new timeline
// ends; reading it assigns no id. Transaction ids of the old timeline at
// or above it were never replayed here (see keyspace.HistoryEntry).
func (m *Manager) firstXID(ctx context.Context) (uint64, error) {
	conn, err := m.inst.Connect(ctx)
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var x uint64
	if err := conn.QueryRow(ctx, "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint").Scan(&x); err != nil {
		return 0, fmt.Errorf("read snapshot xmax: %w", err)
	}
	return x, nil
}

// appendHistory appends e to the history key, guarded by the term.
func (m *Manager) appendHistory(ctx context.Context, term *election.Term, e keyspace.HistoryEntry) error {
	for range 5 {
		resp, err := m.cfg.Client.Get(ctx, m.layout.History())
		if err != nil {
			return err
		}
		var h keyspace.HistoryRecord
		var modRev int64
		if len(resp.Kvs) > 0 {
			modRev = resp.Kvs[0].ModRevision
			if d, err := keyspace.Decode[keyspace.HistoryRecord](resp.Kvs[0].Value); err == nil {
				h = d
			}
		}
		if n := len(h.Entries); n > 0 && h.Entries[n-1].Timeline >= e.Timeline {
			return nil
		}
		h.Entries = append(h.Entries, e)
		b, err := keyspace.Encode(h)
		if err != nil {
			return err
		}
		tr, err := m.cfg.Client.Txn(ctx).
			If(term.IsOwner(), clientv3.Compare(clientv3.ModRevision(m.layout.History()), "=", modRev)).
			Then(clientv3.OpPut(m.layout.History(), string(b))).Commit()
		if err != nil {
			return err
		}
		if tr.Succeeded {
			return nil
		}
	}
	return errors.New("history changed concurrently 5 times")
}
