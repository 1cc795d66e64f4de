package ha

import (
	"time"

	"github.com/pgha/pgha/internal/keyspace"
)

// This file is the public face of the etcd records: the types that
// Status, ClusterStatus and the HTTP endpoints return, converted from the
// internal records (internal/keyspace) at this boundary only, so that a
// program outside this module can name every type it gets. JSON field
// names are snake_case throughout.

// Role is a node's role, as its member record publishes it.
type Role string

// Roles a member reports.
const (
	RolePrimary  Role = "primary"  // the leader; PostgreSQL writable
	RoleReplica  Role = "replica"  // a standby
	RoleStarting Role = "starting" // bootstrapping, cloning or rewinding
	RoleFenced   Role = "fenced"   // PostgreSQL stopped after it lost leadership
	RoleStopped  Role = "stopped"  // PostgreSQL not running
)

// Leader is the leader record: who leads and how to reach its PostgreSQL.
type Leader struct {
	Node string `json:"node"`
	// Host and Port reach the leader's PostgreSQL (no credentials).
	Host string `json:"host"`
	Port int    `json:"port"`
	// Timeline is the timeline the leader writes on; 0 before promotion.
	Timeline uint32 `json:"timeline"`
	// Writable is true once the leader's PostgreSQL accepts writes (false
	// while it is being promoted).
	Writable bool `json:"writable"`
}

// Member is one node as its member record publishes it, with what the
// cluster's other records say of it.
type Member struct {
	Node string `json:"node"`
	Role Role   `json:"role"`
	Host string `json:"host"`
	Port int    `json:"port"`
	// Timeline is the PostgreSQL timeline the node is on.
	Timeline uint32 `json:"timeline"`
	// SystemID is the PostgreSQL system identifier, in decimal.
	SystemID string `json:"system_id,omitempty"`
	// WriteLSN is a primary's WAL write position; ReceiveLSN and
	// ReplayLSN a standby's received and replayed positions (bytes).
	WriteLSN   uint64 `json:"write_lsn,omitempty"`
	ReceiveLSN uint64 `json:"receive_lsn,omitempty"`
	ReplayLSN  uint64 `json:"replay_lsn,omitempty"`
	// LagBytes is how far a standby's replay is behind the leader's last
	// published write position; -1 when unknown.
	LagBytes int64 `json:"lag_bytes"`
	// Healthy: PostgreSQL runs and answers.
	Healthy bool `json:"healthy"`
	// Streaming: a standby's WAL receiver streams.
	Streaming  bool              `json:"streaming,omitempty"`
	NoFailover bool              `json:"nofailover,omitempty"`
	Priority   int               `json:"priority,omitempty"`
	Tags       map[string]string `json:"tags,omitempty"`
	// APIURL is the node's HTTP endpoint, if it publishes one.
	APIURL string `json:"api_url,omitempty"`
	// Problem says why the node cannot take its part and what to do about
	// it (e.g. a rewind that cannot succeed); empty when none.
	Problem string `json:"problem,omitempty"`
	// PendingRestart names the PostgreSQL settings whose configured value
	// (see ClusterConfig) takes effect only after this node restarts.
	PendingRestart []string `json:"pending_restart,omitempty"`
	// UpdatedAt is when the record was last written, by the node's clock:
	// for humans only (see docs/design.md for how fresh records are).
	UpdatedAt time.Time `json:"updated_at"`
	// Leader is true for the node holding the leader key.
	Leader bool `json:"leader"`
	// Sync is true for a member of the synchronous set.
	Sync bool `json:"sync"`
}

// HistoryEntry is one promotion in the cluster's timeline history.
type HistoryEntry struct {
	// Timeline is the new timeline; SwitchLSN where it forked off the
	// previous one.
	Timeline  uint32 `json:"timeline"`
	SwitchLSN uint64 `json:"switch_lsn"`
	// Leader is the node promoted; Reason why (bootstrap, failover,
	// switchover, manual failover).
	Leader string `json:"leader"`
	Reason string `json:"reason,omitempty"`
	// Token is the election token of the term that promoted.
	Token int64 `json:"token"`
	// Time is for humans only.
	Time time.Time `json:"time"`
}

// SwitchoverRequest is a pending planned switchover or manual failover.
type SwitchoverRequest struct {
	// From is the leader to hand over from; empty for a manual failover.
	From string `json:"from,omitempty"`
	// To is the node to promote; empty means the best eligible standby.
	To string `json:"to,omitempty"`
	// Force: a manual failover that may lose acknowledged commits.
	Force bool `json:"force,omitempty"`
	// At, when set, is when a scheduled switchover is due, by the
	// leader's clock.
	At time.Time `json:"at,omitzero"`
}

// RemoveRequest is a remove request ([Remove]) still recorded in etcd.
type RemoveRequest struct {
	Node string `json:"node"`
	// Outcome is empty while pending, else why the leader did not act:
	// "live" (the member runs) or "unknown" (no record, no slot).
	Outcome string `json:"outcome,omitempty"`
	// Leader is the leader that wrote Outcome.
	Leader string `json:"leader,omitempty"`
}

func leaderOf(r *keyspace.LeaderRecord) *Leader {
	if r == nil {
		return nil
	}
	return &Leader{Node: r.Node, Host: r.Host, Port: r.Port, Timeline: r.Timeline, Writable: r.Writable}
}

func memberOf(r keyspace.MemberRecord) Member {
	return Member{Node: r.Node, Role: Role(r.Role), Host: r.Host, Port: r.Port, Timeline: r.Timeline, SystemID: r.SystemID,
		WriteLSN: r.WriteLSN, ReceiveLSN: r.ReceiveLSN, ReplayLSN: r.ReplayLSN, LagBytes: r.LagBytes,
		Healthy: r.Healthy, Streaming: r.Streaming, NoFailover: r.NoFailover, Priority: r.Priority,
		Tags: r.Tags, APIURL: r.APIURL, Problem: r.Problem, PendingRestart: r.PendingRestart, UpdatedAt: r.UpdatedAt}
}

func historyOf(h []keyspace.HistoryEntry) []HistoryEntry {
	if h == nil {
		return nil
	}
	out := make([]HistoryEntry, len(h))
	for i, e := range h {
		out[i] = HistoryEntry{Timeline: e.Timeline, SwitchLSN: e.SwitchLSN, Leader: e.Leader, Reason: e.Reason, Token: e.Token, Time: e.Time}
	}
	return out
}

func switchoverOf(r *keyspace.SwitchoverRecord) *SwitchoverRequest {
	if r == nil {
		return nil
	}
	return &SwitchoverRequest{From: r.From, To: r.To, Force: r.Force, At: r.At}
}
