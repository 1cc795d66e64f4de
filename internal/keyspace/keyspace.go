// Package keyspace is pgha's etcd vocabulary: the key layout of one cluster
// and the versioned JSON records stored under it. It is shared by the HA
// manager (which writes) and the driver (which reads), and defined once,
// here.
//
// Every record carries a version "v". Decoders reject a record that does
// not parse, has an unsupported version or lacks a required field, with an
// error naming the key's record type and the field; callers log such a
// record and treat it as absent. Unknown fields are ignored, so a newer
// writer can add fields without breaking older readers.
//
// Order and freshness come from etcd revisions, never from the timestamps
// in records, which are for humans only.
package keyspace

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// DefaultRoot is the default key root: clusters live under /pgha/<cluster>/.
const DefaultRoot = "/pgha"

// Version is the record version this code writes and the newest it reads,
// except where a record type says otherwise ([SwitchoverAtVersion]).
const Version = 1

// SwitchoverAtVersion is the version of a [SwitchoverRecord] with At set
// (a scheduled switchover), and the newest switchover version this code
// reads. A node that predates scheduled switchovers reads up to version
// 1: it ignores such a record (and logs it) rather than ignoring the
// unknown "at" field and performing the switchover at once.
const SwitchoverAtVersion = 2

var clusterName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$`)

// Layout is the key layout of one cluster. The zero Layout is invalid; use
// [NewLayout].
type Layout struct {
	prefix string // "<root>/<cluster>/"
}

// NewLayout returns the layout of cluster under root ("" means
// [DefaultRoot]). Cluster and node names are 1-63 characters of letters,
// digits, '_', '.', '-', starting with a letter or digit.
func NewLayout(root, cluster string) (Layout, error) {
	if root == "" {
		root = DefaultRoot
	}
	if !strings.HasPrefix(root, "/") {
		return Layout{}, fmt.Errorf("keyspace: key root %q must start with '/'", root)
	}
	if err := ValidName(cluster); err != nil {
		return Layout{}, fmt.Errorf("keyspace: cluster %w", err)
	}
	return Layout{prefix: strings.TrimRight(root, "/") + "/" + cluster + "/"}, nil
}

// ValidName checks a cluster or node name.
func ValidName(name string) error {
	if !clusterName.MatchString(name) {
		return fmt.Errorf("name %q is invalid: use 1-63 letters, digits, '_', '.', '-', starting with a letter or digit", name)
	}
	return nil
}

// Prefix is the cluster's key prefix, ending in "/".
func (l Layout) Prefix() string { return l.prefix }

// Leader is the election prefix: candidates' keys are Leader()+"/"+lease.
func (l Layout) Leader() string { return l.prefix + "leader" }

// Members is the prefix of the member records.
func (l Layout) Members() string { return l.prefix + "members/" }

// Member is the key of node's member record.
func (l Layout) Member(node string) string { return l.Members() + node }

// MemberName returns the node name of a member key, or "" if key is not a
// member key of this layout.
func (l Layout) MemberName(key string) string {
	n, ok := strings.CutPrefix(key, l.Members())
	if !ok || ValidName(n) != nil {
		return ""
	}
	return n
}

// Initialize holds the cluster's PostgreSQL system identifier, created once
// by the bootstrap winner.
func (l Layout) Initialize() string { return l.prefix + "initialize" }

// Config is the key reserved for the dynamic configuration operators will
// write (a [ConfigRecord]). No node reads it yet: writing it changes
// nothing until run-time settings are implemented.
func (l Layout) Config() string { return l.prefix + "config" }

// Sync holds the standbys allowed to be promoted in synchronous mode.
func (l Layout) Sync() string { return l.prefix + "sync" }

// Switchover holds a pending planned switchover.
func (l Layout) Switchover() string { return l.prefix + "switchover" }

// Pause, when present, disables automatic failover.
func (l Layout) Pause() string { return l.prefix + "pause" }

// Restart is the key of a restart request for node (RestartRequest).
func (l Layout) Restart(node string) string { return l.prefix + "restart/" + node }

// RestartPrefix is the prefix of every restart request.
func (l Layout) RestartPrefix() string { return l.prefix + "restart/" }

// ConfigProposal is the key of a proposed config record awaiting the
// leader's verdict (ConfigProposal).
func (l Layout) ConfigProposal() string { return l.prefix + "config-proposal" }

// Failsafe is the key of the failsafe record (FailsafeRecord): the members
// a failsafe leader asks for promises while etcd is unreachable, and the
// only nodes that may campaign while it exists.
func (l Layout) Failsafe() string { return l.prefix + "failsafe" }

// History holds the timeline history.
func (l Layout) History() string { return l.prefix + "history" }

// Reinits is the prefix of the reinit requests (ReinitRecord), one key
// per node: Reinits()+node.
func (l Layout) Reinits() string { return l.prefix + "reinit/" }

// Reinit is the key of an operator's request that node re-clone its data
// directory from the leader.
func (l Layout) Reinit(node string) string { return l.Reinits() + node }

// Removes is the prefix of the remove requests (RemoveRecord), one key per
// node: Removes()+node.
func (l Layout) Removes() string { return l.prefix + "remove/" }

// Remove is the key of an operator's request that the leader forget the
// departed member node.
func (l Layout) Remove(node string) string { return l.Removes() + node }

// RequestNode returns the node name of a key under prefix (Reinits or
// Removes), or "" if key is not one.
func RequestNode(prefix, key string) string {
	n, ok := strings.CutPrefix(key, prefix)
	if !ok || ValidName(n) != nil {
		return ""
	}
	return n
}

// Role of a member.
type Role string

// Roles a member reports.
const (
	RolePrimary  Role = "primary"  // leader, PostgreSQL writable
	RoleReplica  Role = "replica"  // streaming standby
	RoleStarting Role = "starting" // bootstrapping, cloning, rewinding
	RoleFenced   Role = "fenced"   // stopped after losing leadership
	RoleStopped  Role = "stopped"  // PostgreSQL not running
)

// LeaderRecord is the value of the leader key: who leads and how to reach
// its PostgreSQL. Written by the leader through its election term.
type LeaderRecord struct {
	V int `json:"v"`
	// Node is the leader's node name.
	Node string `json:"node"`
	// Host and Port reach the leader's PostgreSQL (no credentials).
	Host string `json:"host"`
	Port int    `json:"port"`
	// Timeline is the PostgreSQL timeline the leader writes on, 0 while it
	// is not yet promoted.
	Timeline uint32 `json:"timeline"`
	// Writable is true once the leader's PostgreSQL accepts writes.
	Writable bool `json:"writable"`
}

// Validate reports the first missing or invalid field.
func (r LeaderRecord) Validate() error {
	switch {
	case ValidName(r.Node) != nil:
		return fieldErr("leader", "node", ValidName(r.Node))
	case validHost(r.Host) != nil:
		return fieldErr("leader", "host", validHost(r.Host))
	case r.Port <= 0 || r.Port > 65535:
		return fieldErr("leader", "port", fmt.Errorf("%d is outside 1..65535", r.Port))
	}
	return nil
}

// MemberRecord is a node's view of itself, published on its own lease.
type MemberRecord struct {
	V        int    `json:"v"`
	Node     string `json:"node"`
	Role     Role   `json:"role"`
	Host     string `json:"host"`
	Port     int    `json:"port"`
	Timeline uint32 `json:"timeline"`
	// SystemID is the PostgreSQL system identifier, in decimal.
	SystemID string `json:"system_id,omitempty"`
	// WriteLSN is the primary's current WAL write position; ReceiveLSN and
	// ReplayLSN are a standby's received and replayed positions. Bytes.
	WriteLSN   uint64 `json:"write_lsn,omitempty"`
	ReceiveLSN uint64 `json:"receive_lsn,omitempty"`
	ReplayLSN  uint64 `json:"replay_lsn,omitempty"`
	// LagBytes is how far the standby's replay is behind the leader's
	// last published write position; -1 when unknown.
	LagBytes int64 `json:"lag_bytes"`
	// Healthy is false when PostgreSQL is down or not streaming.
	Healthy bool `json:"healthy"`
	// Streaming is true when a standby's WAL receiver is streaming.
	Streaming  bool              `json:"streaming,omitempty"`
	NoFailover bool              `json:"nofailover,omitempty"`
	Priority   int               `json:"priority,omitempty"`
	Tags       map[string]string `json:"tags,omitempty"`
	// APIURL is the node's HTTP endpoint (health checks), if it has one.
	APIURL string `json:"api_url,omitempty"`
	// PendingRestart names the PostgreSQL settings whose configured value
	// takes effect only after a restart of this node.
	PendingRestart []string `json:"pending_restart,omitempty"`
	// HotStandby holds the values this node's PostgreSQL runs with for the
	// settings a standby needs at least as large as its primary's
	// (max_connections, ...), to order changes of them across nodes.
	HotStandby map[string]int64 `json:"hot_standby,omitempty"`
	// Problem says why the node cannot take its part and what an operator
	// can do, e.g. a rewind that keeps failing; empty when none.
	Problem string `json:"problem,omitempty"`
	// UpdatedAt is for humans only: never compare it across machines.
	UpdatedAt time.Time `json:"updated_at"`
}

// Validate reports the first missing or invalid field.
func (r MemberRecord) Validate() error {
	switch {
	case ValidName(r.Node) != nil:
		return fieldErr("member", "node", ValidName(r.Node))
	case validRole(r.Role) != nil:
		return fieldErr("member", "role", validRole(r.Role))
	case validHost(r.Host) != nil:
		return fieldErr("member", "host", validHost(r.Host))
	case r.Port <= 0 || r.Port > 65535:
		return fieldErr("member", "port", fmt.Errorf("%d is outside 1..65535", r.Port))
	case r.SystemID != "" && validSystemID(r.SystemID) != nil:
		return fieldErr("member", "system_id", validSystemID(r.SystemID))
	case r.LagBytes < -1:
		return fieldErr("member", "lag_bytes", fmt.Errorf("%d is below -1 (-1 means unknown)", r.LagBytes))
	}
	return nil
}

// validRole checks a member's role against the roles this version knows.
func validRole(r Role) error {
	switch r {
	case RolePrimary, RoleReplica, RoleStarting, RoleFenced, RoleStopped:
		return nil
	case "":
		return errors.New("is empty")
	}
	return fmt.Errorf("%q is not %s, %s, %s, %s or %s", string(r), RolePrimary, RoleReplica, RoleStarting, RoleFenced, RoleStopped)
}

// validHost checks a host name, address or socket directory: not empty, no
// spaces or control characters (it goes into connection strings).
func validHost(h string) error {
	if h == "" {
		return errors.New("is empty")
	}
	if strings.ContainsFunc(h, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return fmt.Errorf("%q holds a space or control character", h)
	}
	return nil
}

// validSystemID checks a PostgreSQL system identifier: a decimal uint64.
func validSystemID(s string) error {
	if s == "" {
		return errors.New("is empty")
	}
	if _, err := strconv.ParseUint(s, 10, 64); err != nil || s[0] == '+' {
		return fmt.Errorf("%q is not a decimal system identifier (0..18446744073709551615)", s)
	}
	return nil
}

// InitializeRecord records the cluster's PostgreSQL system identifier.
type InitializeRecord struct {
	V        int    `json:"v"`
	SystemID string `json:"system_id"`
	// Node is the node that bootstrapped the cluster.
	Node string `json:"node"`
}

// Validate reports the first missing or invalid field.
func (r InitializeRecord) Validate() error {
	if err := validSystemID(r.SystemID); err != nil {
		return fieldErr("initialize", "system_id", err)
	}
	if r.Node != "" && ValidName(r.Node) != nil {
		return fieldErr("initialize", "node", ValidName(r.Node))
	}
	return nil
}

// SyncRecord lists the standbys that may be promoted in synchronous mode:
// the ones that confirm every acknowledged commit.
type SyncRecord struct {
	V int `json:"v"`
	// Leader is the node that wrote the record.
	Leader string `json:"leader"`
	// Standbys are node names: in FIRST modes every standby that may be
	// promoted; in quorum mode the voters.
	Standbys []string `json:"standbys"`
	// Quorum is k in quorum mode (commits wait for any k of Standbys; a
	// promotion needs len(Standbys) - k + 1 of them heard); 0 otherwise.
	Quorum int `json:"quorum,omitempty"`
}

// Validate reports the first missing or invalid field.
func (r SyncRecord) Validate() error {
	if ValidName(r.Leader) != nil {
		return fieldErr("sync", "leader", ValidName(r.Leader))
	}
	for i, s := range r.Standbys {
		if err := ValidName(s); err != nil {
			return fieldErr("sync", fmt.Sprintf("standbys[%d]", i), err)
		}
	}
	return nil
}

// HistoryEntry is one timeline switch.
type HistoryEntry struct {
	// Timeline is the new timeline; SwitchLSN is where it forked from the
	// previous one.
	Timeline  uint32 `json:"timeline"`
	SwitchLSN uint64 `json:"switch_lsn"`
	Leader    string `json:"leader"`
	Reason    string `json:"reason,omitempty"`
	// Token is the election token of the term that promoted.
	Token int64 `json:"token"`
	// Time is for humans only.
	Time time.Time `json:"time"`
	// FirstXID is the first transaction id (64-bit, with epoch, as
	// pg_current_xact_id returns) that the new timeline could assign: the
	// xmax of a snapshot taken on the promoted server right after its
	// promotion. Transaction ids at or above it that the previous
	// timeline assigned were not replayed before the fork: none of them
	// committed in the surviving history, and the new timeline assigns
	// the same ids again to other transactions. 0 means unknown (an
	// entry written before the field existed, the bootstrap entry, or a
	// promotion whose read failed). driver.Pool uses it to resolve a
	// commit whose connection broke (see driver's "Outcome resolution").
	FirstXID uint64 `json:"first_xid,omitempty"`
}

// FirstNormalXID is the lowest id PostgreSQL assigns to a transaction
// (ids 0-2 are reserved): a HistoryEntry.FirstXID, when set, is at least
// this.
const FirstNormalXID = 3

// HistoryRecord is the cluster's timeline history, oldest first.
type HistoryRecord struct {
	V       int            `json:"v"`
	Entries []HistoryEntry `json:"entries"`
}

// Validate reports the first missing or invalid field.
func (r HistoryRecord) Validate() error {
	for i, e := range r.Entries {
		if e.Timeline == 0 {
			return fieldErr("history", fmt.Sprintf("entries[%d].timeline", i), errors.New("is 0"))
		}
		if i > 0 && e.Timeline <= r.Entries[i-1].Timeline {
			return fieldErr("history", fmt.Sprintf("entries[%d].timeline", i), fmt.Errorf("%d does not increase", e.Timeline))
		}
		if e.FirstXID != 0 && e.FirstXID < FirstNormalXID {
			return fieldErr("history", fmt.Sprintf("entries[%d].first_xid", i), fmt.Errorf("%d is below %d, the first normal transaction id (omit the field when unknown)", e.FirstXID, FirstNormalXID))
		}
	}
	return nil
}

// SwitchoverRecord is a pending planned switchover, or with no From a
// manual failover, written by an operator.
type SwitchoverRecord struct {
	V int `json:"v"`
	// From is the current leader; the switchover is ignored if it has
	// changed. Empty for a manual failover (no leader).
	From string `json:"from,omitempty"`
	// To is the candidate; empty means the best eligible standby. Required
	// for a manual failover.
	To string `json:"to,omitempty"`
	// Force lets a manual failover promote To even when it is not the best
	// candidate or is outside the synchronous set (acknowledged commits
	// may be lost).
	Force bool `json:"force,omitempty"`
	// At, when set, schedules the switchover: the leader performs it once
	// its own clock reaches At (wall clock, compared on the leader only;
	// the nodes' clocks should be roughly in sync, which affects when,
	// never whether it is safe). A record with At is written as version
	// SwitchoverAtVersion. Not for a manual failover.
	At time.Time `json:"at,omitzero"`
}

// Validate reports the first missing or invalid field.
func (r SwitchoverRecord) Validate() error {
	if r.From == "" && r.To == "" {
		return fieldErr("switchover", "to", errors.New("is required when from is empty (manual failover)"))
	}
	if r.From != "" && ValidName(r.From) != nil {
		return fieldErr("switchover", "from", ValidName(r.From))
	}
	if r.To != "" && ValidName(r.To) != nil {
		return fieldErr("switchover", "to", ValidName(r.To))
	}
	if !r.At.IsZero() && r.From == "" {
		return fieldErr("switchover", "at", errors.New("is set on a manual failover (from is empty): only a switchover can be scheduled"))
	}
	if !r.At.IsZero() && r.V == Version {
		return fieldErr("switchover", "at", fmt.Errorf("is set in a version %d record: a scheduled switchover is version %d", Version, SwitchoverAtVersion))
	}
	return nil
}

// ReinitRecord is an operator's request that a standby re-clone its data
// directory from the leader ([Layout.Reinit]): its manager stops
// PostgreSQL, moves the data directory aside (never deletes it), clones
// afresh and streams again, then deletes the request. While it fails, the
// node says why in its member record's Problem and retries.
type ReinitRecord struct {
	V int `json:"v"`
	// Node is the node to re-clone; it must match the key.
	Node string `json:"node"`
	// RequestedAt is for humans only.
	RequestedAt time.Time `json:"requested_at,omitzero"`
}

// Validate reports the first missing or invalid field.
func (r ReinitRecord) Validate() error {
	if err := ValidName(r.Node); err != nil {
		return fieldErr("reinit", "node", err)
	}
	return nil
}

// Outcomes of a remove request the leader could not carry out
// (RemoveRecord.Outcome).
const (
	// RemoveLive: the node has a member record on a live lease: its
	// manager runs (or died less than a lease TTL ago).
	RemoveLive = "live"
	// RemoveUnknown: no member record and no replication slot on the
	// leader: nothing to forget.
	RemoveUnknown = "unknown"
)

// RemoveRecord is an operator's request that the leader forget a departed
// member ([Layout.Remove]): its member record, if one without a lease is
// left, and its replication slot on the leader. The leader deletes the
// request once done, or writes an Outcome saying why it did not act.
type RemoveRecord struct {
	V int `json:"v"`
	// Node is the member to forget; it must match the key.
	Node string `json:"node"`
	// RequestedAt is for humans only.
	RequestedAt time.Time `json:"requested_at,omitzero"`
	// Outcome is empty while pending; the leader sets RemoveLive or
	// RemoveUnknown when it did not act.
	Outcome string `json:"outcome,omitempty"`
	// Leader is the leader that wrote Outcome.
	Leader string `json:"leader,omitempty"`
}

// Validate reports the first missing or invalid field.
func (r RemoveRecord) Validate() error {
	if err := ValidName(r.Node); err != nil {
		return fieldErr("remove", "node", err)
	}
	switch r.Outcome {
	case "", RemoveLive, RemoveUnknown:
	default:
		return fieldErr("remove", "outcome", fmt.Errorf("%q is not empty, %s or %s", r.Outcome, RemoveLive, RemoveUnknown))
	}
	if r.Leader != "" && ValidName(r.Leader) != nil {
		return fieldErr("remove", "leader", ValidName(r.Leader))
	}
	return nil
}

// FailsafeRecord is written by a leader in failsafe mode while etcd works,
// guarded by its term: every member (the leader included) with the URL
// where it answers the leader's failsafe call. While it exists, only the
// nodes it names may campaign: they are the nodes a failsafe leader asks
// for a promise not to, so no node it did not ask can replace it.
type FailsafeRecord struct {
	V int `json:"v"`
	// Leader and Token are the term that wrote it.
	Leader  string           `json:"leader"`
	Token   int64            `json:"token"`
	Members []FailsafeMember `json:"members"`
}

// FailsafeMember is one member of a FailsafeRecord.
type FailsafeMember struct {
	Node string `json:"node"`
	// APIURL is the base URL of the member's HTTP handler; empty when it
	// publishes none (the leader then cannot get its promise).
	APIURL string `json:"api_url,omitempty"`
}

// Has reports whether node is one of the record's members.
func (r FailsafeRecord) Has(node string) bool {
	for _, m := range r.Members {
		if m.Node == node {
			return true
		}
	}
	return false
}

// Validate reports the first missing or invalid field.
func (r FailsafeRecord) Validate() error {
	if err := ValidName(r.Leader); err != nil {
		return fieldErr("failsafe", "leader", err)
	}
	if r.Token <= 0 {
		return fieldErr("failsafe", "token", fmt.Errorf("is %d, want > 0", r.Token))
	}
	for i, m := range r.Members {
		if err := ValidName(m.Node); err != nil {
			return fieldErr("failsafe", fmt.Sprintf("members[%d].node", i), err)
		}
	}
	if !r.Has(r.Leader) {
		return fieldErr("failsafe", "members", fmt.Errorf("does not name the leader %s", r.Leader))
	}
	return nil
}

// PauseRecord marks maintenance mode.
type PauseRecord struct {
	V      int    `json:"v"`
	Reason string `json:"reason,omitempty"`
}

// Validate always succeeds.
func (r PauseRecord) Validate() error { return nil }

// ConfigRecord is the record of the [Layout.Config] key: the cluster-wide
// configuration (ha.ClusterConfig), a nil field keeping each node's
// configured value. The leader writes it when it accepts a
// ConfigProposal; every node applies it each round.
type ConfigRecord struct {
	V int `json:"v"`
	// MaxLagOnFailover in bytes.
	MaxLagOnFailover *int64 `json:"max_lag_on_failover,omitempty"`
	// SynchronousMode is "off", "on" or "strict".
	SynchronousMode *string `json:"synchronous_mode,omitempty"`
	// SynchronousNodeCount is how many standbys must confirm a commit.
	SynchronousNodeCount *int `json:"synchronous_node_count,omitempty"`
	// Parameters are PostgreSQL settings for every node.
	Parameters map[string]string `json:"parameters,omitempty"`
	// NodeParameters override Parameters on one node, by node name.
	NodeParameters map[string]map[string]string `json:"node_parameters,omitempty"`
	// LoopInterval and DepartedSlotTTL are Go durations ("500ms",
	// "30m") overriding every node's own.
	LoopInterval    string `json:"loop_interval,omitempty"`
	DepartedSlotTTL string `json:"departed_slot_ttl,omitempty"`
}

// Durations returns LoopInterval and DepartedSlotTTL parsed (0 when
// unset).
func (r ConfigRecord) Durations() (loop, departed time.Duration, err error) {
	if r.LoopInterval != "" {
		if loop, err = time.ParseDuration(r.LoopInterval); err != nil || loop < 10*time.Millisecond || loop > 10*time.Second {
			return 0, 0, fieldErr("config", "loop_interval", fmt.Errorf("%q: want a duration from 10ms to 10s, e.g. 500ms", r.LoopInterval))
		}
	}
	if r.DepartedSlotTTL != "" {
		if departed, err = time.ParseDuration(r.DepartedSlotTTL); err != nil || departed < time.Minute {
			return 0, 0, fieldErr("config", "departed_slot_ttl", fmt.Errorf("%q: want a duration of at least 1m, e.g. 30m", r.DepartedSlotTTL))
		}
	}
	return loop, departed, nil
}

// RestartRequest asks one node's manager to restart its PostgreSQL (fast
// shutdown, start in the same role), or with Reload to reload its
// configuration; the manager deletes it when done.
type RestartRequest struct {
	V int `json:"v"`
	// Pending: only if a setting waits for a restart; otherwise the
	// request is just removed.
	Pending bool `json:"pending,omitempty"`
	// Reload asks for a configuration reload (pg_reload_conf: the
	// node's files are read again) instead of a restart.
	Reload bool `json:"reload,omitempty"`
	// At, when set, schedules the restart: it is not carried out before
	// At, and scheduled restarts that are due run one node at a time
	// (standbys in name order, each back and streaming before the next;
	// the primary last, in place).
	At time.Time `json:"at,omitzero"`
}

// Validate checks that a reload is not also a pending-only or scheduled
// restart.
func (r RestartRequest) Validate() error {
	if r.Reload && (r.Pending || !r.At.IsZero()) {
		return errors.New("restart request: reload cannot be combined with pending or at")
	}
	return nil
}

// ConfigProposal is a proposed ConfigRecord, written by an operator tool
// and judged by the leader against its PostgreSQL's own settings before
// any node applies it: the leader writes the config record and sets
// Verdict to "accepted", or sets "rejected" and Error.
type ConfigProposal struct {
	V int `json:"v"`
	// ID identifies the proposal: its author waits for the verdict on it.
	ID     string       `json:"id"`
	Config ConfigRecord `json:"config"`
	// Verdict is "" while pending, then "accepted" or "rejected".
	Verdict string `json:"verdict,omitempty"`
	Error   string `json:"error,omitempty"`
	// Leader is the node that judged it.
	Leader string `json:"leader,omitempty"`
}

// Validate reports the first missing or invalid field.
func (r ConfigProposal) Validate() error {
	if r.ID == "" {
		return fieldErr("config proposal", "id", errors.New("is required"))
	}
	switch r.Verdict {
	case "", "accepted", "rejected":
	default:
		return fieldErr("config proposal", "verdict", fmt.Errorf("%q is not accepted or rejected", r.Verdict))
	}
	if err := r.Config.Validate(); err != nil {
		return err
	}
	return nil
}

// Validate reports the first invalid field.
func (r ConfigRecord) Validate() error {
	if r.MaxLagOnFailover != nil && *r.MaxLagOnFailover < 0 {
		return fieldErr("config", "max_lag_on_failover", fmt.Errorf("%d is negative", *r.MaxLagOnFailover))
	}
	if r.SynchronousMode != nil {
		switch *r.SynchronousMode {
		case "off", "on", "strict", "quorum", "quorum-strict":
		default:
			return fieldErr("config", "synchronous_mode", fmt.Errorf("%q is not off, on, strict, quorum or quorum-strict", *r.SynchronousMode))
		}
	}
	if r.SynchronousNodeCount != nil && *r.SynchronousNodeCount < 1 {
		return fieldErr("config", "synchronous_node_count", fmt.Errorf("%d is below 1", *r.SynchronousNodeCount))
	}
	for node := range r.NodeParameters {
		if err := ValidName(node); err != nil {
			return fieldErr("config", "node_parameters."+node, err)
		}
	}
	_, _, err := r.Durations()
	return err
}

// Record is implemented by every record type.
type Record interface {
	LeaderRecord | MemberRecord | InitializeRecord | SyncRecord | HistoryRecord | SwitchoverRecord | PauseRecord | ConfigRecord | FailsafeRecord |
		ConfigProposal | RestartRequest | ReinitRecord | RemoveRecord
	Validate() error
}

// RecordError is a record that could not be decoded.
type RecordError struct {
	// Kind is the record type: "leader", "member", ...
	Kind string
	// Field is the offending field, or "" when the JSON did not parse.
	Field string
	Err   error
}

// Error names the record kind, the field (if any) and what is wrong.
func (e *RecordError) Error() string {
	if e.Field == "" {
		return fmt.Sprintf("keyspace: %s record: %v", e.Kind, e.Err)
	}
	return fmt.Sprintf("keyspace: %s record: field %q %v", e.Kind, e.Field, e.Err)
}

// Unwrap returns the underlying error.
func (e *RecordError) Unwrap() error { return e.Err }

func fieldErr(kind, field string, err error) error {
	return &RecordError{Kind: kind, Field: field, Err: err}
}

func kindOf(v any) string {
	switch v.(type) {
	case *LeaderRecord:
		return "leader"
	case *MemberRecord:
		return "member"
	case *InitializeRecord:
		return "initialize"
	case *SyncRecord:
		return "sync"
	case *HistoryRecord:
		return "history"
	case *SwitchoverRecord:
		return "switchover"
	case *PauseRecord:
		return "pause"
	case *ConfigRecord:
		return "config"
	case *FailsafeRecord:
		return "failsafe"
	case *ConfigProposal:
		return "config proposal"
	case *RestartRequest:
		return "restart"
	case *ReinitRecord:
		return "reinit"
	case *RemoveRecord:
		return "remove"
	}
	return "unknown"
}

// Decode parses and validates a record. It returns the zero record and a
// *[RecordError] when the JSON does not parse, a field holds a value of the
// wrong JSON type, the version is missing or newer than [Version], or a
// field is invalid.
func Decode[T Record](b []byte) (T, error) {
	var zero T
	kind := kindOf(&zero)
	var head struct {
		V *int `json:"v"`
	}
	if err := json.Unmarshal(b, &head); err != nil {
		return zero, parseErr(kind, err)
	}
	newest := Version
	if kind == "switchover" {
		newest = SwitchoverAtVersion
	}
	switch {
	case head.V == nil:
		return zero, &RecordError{Kind: kind, Field: "v", Err: errors.New("is missing")}
	case *head.V < 1 || *head.V > newest:
		return zero, &RecordError{Kind: kind, Field: "v", Err: fmt.Errorf("%d is not a supported version (1..%d): upgrade this node", *head.V, newest)}
	}
	var r T
	if err := json.Unmarshal(b, &r); err != nil {
		return zero, parseErr(kind, err)
	}
	if err := r.Validate(); err != nil {
		return zero, err
	}
	return r, nil
}

// parseErr is the RecordError for JSON that does not parse into a record:
// it names the field when the JSON holds a value of the wrong type.
func parseErr(kind string, err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field != "" {
		return &RecordError{Kind: kind, Field: te.Field, Err: fmt.Errorf("is a JSON %s, want %s", te.Value, te.Type)}
	}
	return &RecordError{Kind: kind, Err: fmt.Errorf("does not parse as JSON: %w", err)}
}

// Encode sets r's version to [Version] (a scheduled switchover:
// [SwitchoverAtVersion]), validates r and returns its JSON.
func Encode[T Record](r T) ([]byte, error) {
	setVersion(&r)
	if err := r.Validate(); err != nil {
		return nil, err
	}
	return json.Marshal(r)
}

func setVersion(v any) {
	switch r := v.(type) {
	case *LeaderRecord:
		r.V = Version
	case *MemberRecord:
		r.V = Version
	case *InitializeRecord:
		r.V = Version
	case *SyncRecord:
		r.V = Version
	case *HistoryRecord:
		r.V = Version
	case *SwitchoverRecord:
		r.V = Version
		if !r.At.IsZero() {
			r.V = SwitchoverAtVersion
		}
	case *PauseRecord:
		r.V = Version
	case *FailsafeRecord:
		r.V = Version
	case *ConfigProposal:
		r.V = Version
		r.Config.V = Version
	case *RestartRequest:
		r.V = Version
	case *ConfigRecord:
		r.V = Version
	case *ReinitRecord:
		r.V = Version
	case *RemoveRecord:
		r.V = Version
	}
}
