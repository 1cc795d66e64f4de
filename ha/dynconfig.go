package ha

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/pgha/pgha/election"
	"github.com/pgha/pgha/internal/etcdmirror"
	"github.com/pgha/pgha/internal/keyspace"
	"github.com/pgha/pgha/replicate"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// This file is cluster-wide configuration (the config record): the HA
// settings every node must agree on and the PostgreSQL parameters, with
// per-node overrides. An operator proposes a new configuration
// (ProposeConfig, pghactl edit-config); the leader checks it against its
// PostgreSQL's own pg_settings and writes the config record, or rejects
// it with the reason, so that no node ever applies an invalid value.
// Every node applies the record each round: the HA settings override its
// Config, the parameters go to pgha-cluster.conf with a reload, and the
// settings that need a restart are published in its member record.
//
// Precedence for PostgreSQL parameters: the record's parameters < the
// record's node_parameters for this node < the node's own
// replicate.Config.Parameters (flags, local file). The HA settings in the
// record (max lag on failover, sync mode, sync standbys) override every
// node's Config: they must agree. Settings tied to one machine (ports,
// paths, listen addresses, TLS files) can only be local.

// ClusterConfig is the cluster-wide configuration in the config record.
// A nil field or an absent parameter keeps each node's own setting.
type ClusterConfig struct {
	// MaxLagOnFailover, SyncMode and SyncStandbys override every node's
	// Config fields of the same name.
	MaxLagOnFailover *int64    `json:"max_lag_on_failover,omitempty"`
	SyncMode         *SyncMode `json:"sync_mode,omitempty"`
	SyncStandbys     *int      `json:"sync_standbys,omitempty"`
	// Parameters are PostgreSQL settings for every node; NodeParameters
	// override them on one node. The node's own
	// replicate.Config.Parameters win over both.
	Parameters     map[string]string            `json:"parameters,omitempty"`
	NodeParameters map[string]map[string]string `json:"node_parameters,omitempty"`
	// LoopInterval overrides every node's Config.LoopInterval at once
	// (from 10 ms to 10 s; a node whose LeaseTTL is not more than twice
	// as long keeps its own and says why in its log).
	LoopInterval *Duration `json:"loop_interval,omitempty"`
	// DepartedSlotTTL overrides every node's Config.DepartedSlotTTL (at
	// least a minute).
	DepartedSlotTTL *Duration `json:"departed_slot_ttl,omitempty"`
}

// Duration is a time.Duration written as text ("500ms", "30m") in JSON
// and YAML.
type Duration time.Duration

// MarshalText writes d like time.Duration.String.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// UnmarshalText reads a Go duration such as "500ms" or "1h30m".
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("%q is not a duration: write e.g. 500ms, 2s or 30m", b)
	}
	*d = Duration(v)
	return nil
}

func (c ClusterConfig) record() keyspace.ConfigRecord {
	r := keyspace.ConfigRecord{MaxLagOnFailover: c.MaxLagOnFailover, SynchronousNodeCount: c.SyncStandbys,
		Parameters: c.Parameters, NodeParameters: c.NodeParameters}
	if c.SyncMode != nil {
		s := string(*c.SyncMode)
		r.SynchronousMode = &s
	}
	if c.LoopInterval != nil {
		r.LoopInterval = time.Duration(*c.LoopInterval).String()
	}
	if c.DepartedSlotTTL != nil {
		r.DepartedSlotTTL = time.Duration(*c.DepartedSlotTTL).String()
	}
	return r
}

func clusterConfigOf(r keyspace.ConfigRecord) ClusterConfig {
	c := ClusterConfig{MaxLagOnFailover: r.MaxLagOnFailover, SyncStandbys: r.SynchronousNodeCount,
		Parameters: r.Parameters, NodeParameters: r.NodeParameters}
	if r.SynchronousMode != nil {
		m := SyncMode(*r.SynchronousMode)
		c.SyncMode = &m
	}
	if loop, departed, err := r.Durations(); err == nil {
		if loop > 0 {
			d := Duration(loop)
			c.LoopInterval = &d
		}
		if departed > 0 {
			d := Duration(departed)
			c.DepartedSlotTTL = &d
		}
	}
	return c
}

// ErrConfigRejected: the leader judged a proposed configuration invalid;
// the error says which setting and why.
var ErrConfigRejected = errors.New("ha: configuration rejected")

// ShowConfig returns the cluster-wide configuration in effect (the zero
// ClusterConfig when none was ever set) and the etcd revision it was
// written at (0 if none).
func ShowConfig(ctx context.Context, cli *clientv3.Client, cluster string, opts ...OpOption) (ClusterConfig, int64, error) {
	l, err := layoutFor(cluster, opts)
	if err != nil {
		return ClusterConfig{}, 0, err
	}
	resp, err := cli.Get(ctx, l.Config())
	if err != nil {
		return ClusterConfig{}, 0, fmt.Errorf("ha: read the config record: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return ClusterConfig{}, 0, nil
	}
	r, err := keyspace.Decode[keyspace.ConfigRecord](resp.Kvs[0].Value)
	if err != nil {
		return ClusterConfig{}, 0, fmt.Errorf("ha: the config record: %w", err)
	}
	return clusterConfigOf(r), resp.Kvs[0].ModRevision, nil
}

// ProposeConfig asks the leader to make c the cluster-wide configuration
// (the whole of it: what c leaves out is unset) and waits for its verdict.
// The leader checks every parameter against its PostgreSQL's pg_settings
// (names, types, ranges, enum values, units) and the HA settings against
// their rules; on success every node applies c within a loop. A rejection
// returns an error wrapping ErrConfigRejected that names each bad setting
// and why; without a leader, ctx's deadline ends the wait (the proposal is
// then withdrawn).
func ProposeConfig(ctx context.Context, cli *clientv3.Client, cluster string, c ClusterConfig, opts ...OpOption) error {
	l, err := layoutFor(cluster, opts)
	if err != nil {
		return err
	}
	var id [8]byte
	rand.Read(id[:])
	p := keyspace.ConfigProposal{ID: hex.EncodeToString(id[:]), Config: c.record()}
	b, err := keyspace.Encode(p)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrConfigRejected, err)
	}
	put, err := cli.Put(ctx, l.ConfigProposal(), string(b))
	if err != nil {
		return fmt.Errorf("ha: write the config proposal: %w", err)
	}
	mr, err := etcdmirror.New(etcdmirror.Config{Client: cli, Key: l.ConfigProposal(), MaxBackoff: time.Second})
	if err != nil {
		return err
	}
	errVerdict := errors.New("verdict")
	var verdict keyspace.ConfigProposal
	err = mr.Run(ctx, func(u etcdmirror.Update) error {
		kvs := u.KVs
		for _, ev := range u.Events {
			if ev.Type == clientv3.EventTypePut {
				kvs = append(kvs, ev.Kv)
			}
		}
		for _, kv := range kvs {
			if r, err := keyspace.Decode[keyspace.ConfigProposal](kv.Value); err == nil && r.ID == p.ID && r.Verdict != "" {
				verdict = r
				return errVerdict
			}
		}
		return nil
	})
	if !errors.Is(err, errVerdict) {
		// Withdraw our proposal if it is still there, unjudged.
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		cli.Txn(wctx).If(clientv3.Compare(clientv3.ModRevision(l.ConfigProposal()), "=", put.Header.Revision)).
			Then(clientv3.OpDelete(l.ConfigProposal())).Commit()
		cancel()
		return fmt.Errorf("ha: no leader judged the configuration (is there a leader?): %w", err)
	}
	if verdict.Verdict == "rejected" {
		return fmt.Errorf("%w by leader %s: %s", ErrConfigRejected, verdict.Leader, verdict.Error)
	}
	return nil
}

// judgeConfig is the leader's verdict on a pending proposal: the HA
// settings by their rules, the parameters (cluster-wide merged with each
// node's overrides) against this leader's pg_settings. Accepted, the
// config record is written in the same transaction, guarded by the term
// and by the proposal still being the one judged.
func (m *Manager) judgeConfig(ctx context.Context, term *election.Term, o observation) {
	p := o.ConfigProposal
	if p == nil || p.Verdict != "" || !o.Local.Running {
		return
	}
	verdict := *p
	verdict.Leader = m.cfg.Node
	if err := m.checkConfig(ctx, p.Config); err != nil {
		verdict.Verdict, verdict.Error = "rejected", err.Error()
	} else {
		verdict.Verdict = "accepted"
	}
	vb, err := keyspace.Encode(verdict)
	if err != nil {
		return
	}
	ops := []clientv3.Op{clientv3.OpPut(m.layout.ConfigProposal(), string(vb))}
	if verdict.Verdict == "accepted" {
		cb, err := keyspace.Encode(p.Config)
		if err != nil {
			return
		}
		ops = append(ops, clientv3.OpPut(m.layout.Config(), string(cb)))
	}
	resp, err := m.cfg.Client.Txn(ctx).If(term.IsOwner(),
		clientv3.Compare(clientv3.ModRevision(m.layout.ConfigProposal()), "=", o.ConfigProposalRev)).Then(ops...).Commit()
	if err != nil || !resp.Succeeded {
		return // judged again next round
	}
	m.log.Info("configuration proposal judged", "id", p.ID, "verdict", verdict.Verdict, "error", verdict.Error)
}

// checkConfig checks a proposed configuration.
func (m *Manager) checkConfig(ctx context.Context, r keyspace.ConfigRecord) error {
	if err := r.Validate(); err != nil {
		return err
	}
	if r.SynchronousNodeCount != nil && *r.SynchronousNodeCount > 16 {
		return fmt.Errorf("sync_standbys %d: at most 16", *r.SynchronousNodeCount)
	}
	if loop, _, _ := r.Durations(); loop >= m.cfg.LeaseTTL/2 {
		return fmt.Errorf("loop_interval %v: must be under half the lease TTL (%v on the leader %s): the loop renews and checks the lease", loop, m.cfg.LeaseTTL, m.cfg.Node)
	}
	settings, err := m.inst.Settings(ctx)
	if err != nil {
		return fmt.Errorf("the leader could not read its pg_settings to check the parameters: %w", err)
	}
	var errs []error
	if err := replicate.CheckParameters(settings, r.Parameters); err != nil {
		errs = append(errs, err)
	}
	for _, node := range slices.Sorted(maps.Keys(r.NodeParameters)) {
		if err := replicate.CheckParameters(settings, r.NodeParameters[node]); err != nil {
			errs = append(errs, fmt.Errorf("node_parameters.%s: %w", node, err))
		}
	}
	return errors.Join(errs...)
}

// applyClusterPolicy makes the config record's HA settings override the
// node's own (they must agree across nodes). A loop interval this node's
// lease TTL cannot take is left out, with the reason returned.
func applyClusterPolicy(p *policy, r *keyspace.ConfigRecord, leaseTTL time.Duration) (held string) {
	if r == nil {
		return ""
	}
	if loop, departed, err := r.Durations(); err == nil {
		if loop > 0 && loop < leaseTTL/2 {
			p.LoopInterval = loop
		} else if loop > 0 {
			held = fmt.Sprintf("loop_interval %v from the config record is not under half this node's lease TTL (%v): keeping %v", loop, leaseTTL, p.LoopInterval)
		}
		if departed > 0 {
			p.DepartedSlotTTL = departed
		}
	}
	if r.MaxLagOnFailover != nil {
		p.MaxLagOnFailover = *r.MaxLagOnFailover
	}
	if r.SynchronousMode != nil {
		p.SyncMode = SyncMode(*r.SynchronousMode)
	}
	if r.SynchronousNodeCount != nil {
		p.SyncStandbys = *r.SynchronousNodeCount
	}
	return held
}

// hotStandbySettings are the settings a standby needs at least as large
// as its primary's, or it cannot run hot standby after the primary's
// change reaches it (PostgreSQL's CheckRequiredParameterValues).
var hotStandbySettings = []string{"max_connections", "max_worker_processes", "max_wal_senders", "max_prepared_transactions", "max_locks_per_transaction"}

// wantParameters is the parameters this node should have in
// pgha-cluster.conf: the record's, with its node overrides, and for the
// hot-standby settings the order PostgreSQL requires: a standby never
// takes a value below what the leader runs with (lowering: the primary
// first), and the leader never takes a value above what a member runs
// with (raising: the standbys first). Those held back are returned with
// the reason.
func wantParameters(o observation, leading bool) (map[string]string, map[string]string) {
	want := map[string]string{}
	if o.Config == nil {
		return want, nil
	}
	maps.Copy(want, o.Config.Parameters)
	maps.Copy(want, o.Config.NodeParameters[o.Node])
	held := map[string]string{}
	for _, name := range hotStandbySettings {
		v, ok := want[name]
		if !ok {
			continue
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			continue // checked by the leader; a unit-less integer
		}
		if leading {
			for node, mem := range o.Members {
				if node == o.Node {
					continue
				}
				if run, ok := mem.Rec.HotStandby[name]; ok && run < n {
					n = run
					held[name] = fmt.Sprintf("%s waits for %s to run with %s (now %d): standbys first", name, node, v, run)
				}
			}
		} else if o.Leader != nil {
			if lm, ok := o.Members[o.Leader.Node]; ok {
				if run, ok := lm.Rec.HotStandby[name]; ok && run > n {
					n = run
					held[name] = fmt.Sprintf("%s waits for the primary %s to run with %s (now %d): the primary first", name, o.Leader.Node, v, run)
				}
			}
		}
		want[name] = strconv.FormatInt(n, 10)
	}
	return want, held
}

// applyConfig writes the parameters this node should have and reloads
// when they changed or PostgreSQL restarted since the last apply; it
// records what is pending a restart and the hot-standby values running,
// for the member record.
func (m *Manager) applyConfig(ctx context.Context, o observation) {
	want, held := wantParameters(o, o.Leading)
	pid := m.inst.PID()
	if maps.Equal(want, m.dyn.applied) && pid == m.dyn.pid && maps.Equal(held, m.dyn.held) {
		return
	}
	actx, cancel := context.WithTimeout(ctx, m.loopInterval())
	defer cancel()
	pending, err := m.inst.ApplyParameters(actx, want)
	if err != nil {
		if !errors.Is(err, replicate.ErrNotRunning) {
			m.log.Warn("apply the cluster parameters", "err", err.Error())
		}
		return
	}
	for name, why := range held {
		if m.dyn.held[name] != why {
			m.log.Info("cluster parameter held back", "why", why)
		}
	}
	hs := map[string]int64{}
	if pid > 0 {
		if s, err := m.inst.Settings(actx); err == nil {
			for _, name := range hotStandbySettings {
				if n, err := strconv.ParseInt(s[name].Value, 10, 64); err == nil {
					hs[name] = n
				}
			}
		} else {
			return
		}
	}
	if !slices.Equal(pending, m.dyn.pending) && len(pending) > 0 {
		m.log.Warn("PostgreSQL settings pending a restart", "settings", pending)
	}
	m.dyn = dynState{applied: want, pid: pid, held: held, pending: pending, hotStandby: hs}
}

// dynState is what applyConfig last did (loop-owned).
type dynState struct {
	applied    map[string]string
	held       map[string]string
	pid        int
	pending    []string
	hotStandby map[string]int64
}
