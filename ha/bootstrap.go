package ha

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/pgha/pgha/election"
	"github.com/pgha/pgha/internal/keyspace"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// This file is the bootstrap of a new cluster and the leader record.

// bootstrap: with no leader and no initialize key, win the election, then
// initdb, start, and record the system identifier, all guarded by the term.
func (m *Manager) bootstrap(ctx context.Context, o observation) error {
	if o.Leader != nil {
		return nil
	}
	if err := m.campaign(ctx, o); err != nil {
		return err
	}
	term := m.currentTerm()
	if term == nil {
		return nil
	}
	resp, err := m.cfg.Client.Get(ctx, m.layout.Initialize())
	if err != nil {
		return fmt.Errorf("bootstrap: read initialize: %w", err)
	}
	if len(resp.Kvs) > 0 {
		m.disarmWatchdog()
		m.dropTerm(ctx) // someone else initialized the cluster meanwhile
		return nil
	}
	if err := m.inst.Init(ctx); err != nil {
		m.disarmWatchdog()
		m.dropTerm(ctx)
		return fmt.Errorf("bootstrap: %w", err)
	}
	if err := m.inst.Start(ctx); err != nil {
		m.dropTerm(ctx)
		return fmt.Errorf("bootstrap: start: %w", err)
	}
	st, err := m.inst.Status(ctx)
	if err != nil {
		return fmt.Errorf("bootstrap: status: %w", err)
	}
	m.wasPrimary = true
	rec, err := keyspace.Encode(keyspace.InitializeRecord{SystemID: strconv.FormatUint(st.SystemID, 10), Node: m.cfg.Node})
	if err != nil {
		return err
	}
	hist, _ := keyspace.Encode(keyspace.HistoryRecord{Entries: []keyspace.HistoryEntry{{Timeline: st.Timeline, Leader: m.cfg.Node, Reason: "bootstrap", Token: term.Token(), Time: time.Now().UTC()}}})
	tr, err := m.cfg.Client.Txn(ctx).
		If(term.IsOwner(), clientv3.Compare(clientv3.CreateRevision(m.layout.Initialize()), "=", 0)).
		Then(clientv3.OpPut(m.layout.Initialize(), string(rec)), clientv3.OpPut(m.layout.History(), string(hist))).
		Commit()
	if err != nil {
		return fmt.Errorf("bootstrap: write initialize: %w", err)
	}
	if !tr.Succeeded {
		return m.fence(ctx, "bootstrap: lost leadership or the cluster was initialized by another node")
	}
	m.log.Info("bootstrapped the cluster", "system_id", st.SystemID, "timeline", st.Timeline)
	return m.proclaim(ctx, term, st.Timeline, true)
}

func (m *Manager) proclaim(ctx context.Context, term *election.Term, tl uint32, writable bool) error {
	b, err := keyspace.Encode(keyspace.LeaderRecord{Node: m.cfg.Node, Host: m.cfg.Host, Port: m.cfg.Port, Timeline: tl, Writable: writable})
	if err != nil {
		return err
	}
	return term.Proclaim(ctx, b)
}
