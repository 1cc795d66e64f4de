package ha

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	"github.com/pgha/pgha/election"
	"github.com/pgha/pgha/internal/keyspace"
	"github.com/pgha/pgha/replicate"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
)

// SyncMode is the cluster's replication durability mode.
type SyncMode string

// Synchronous modes.
const (
	// SyncOff: asynchronous replication. Fast; a failover may lose the
	// commits the promoted standby had not received, at most
	// MaxLagOnFailover bytes.
	SyncOff SyncMode = "off"
	// SyncOn: commits wait for SyncStandbys standbys while enough are
	// connected; with none left, the primary falls back to asynchronous so
	// that writes continue (and the sync set is emptied first, so no
	// standby can then be promoted automatically).
	SyncOn SyncMode = "on"
	// SyncStrict: commits always wait for SyncStandbys standbys; writes
	// stop when none is connected. No acknowledged commit is ever lost.
	SyncStrict SyncMode = "strict"
	// SyncQuorum: quorum commit. Commits wait for any SyncStandbys of the
	// streaming standbys (synchronous_standby_names = 'ANY k (...)'), so
	// one slow standby does not slow every commit. A standby may be
	// promoted only once the positions of N - k + 1 of the N voters are
	// known after the leader was lost, and only the most advanced: no
	// acknowledged commit is lost. With fewer than SyncStandbys standbys
	// streaming, k is lowered to their number, and with none, commits fall
	// back to asynchronous (as SyncOn).
	SyncQuorum SyncMode = "quorum"
	// SyncQuorumStrict: SyncQuorum that never lowers k: writes wait when
	// fewer than SyncStandbys standbys stream.
	SyncQuorumStrict SyncMode = "quorum-strict"
)

// quorum reports whether m is a quorum commit mode.
func (m SyncMode) quorum() bool { return m == SyncQuorum || m == SyncQuorumStrict }

// Defaults for zero fields of [Config].
const (
	DefaultLeaseTTL            = election.DefaultLeaseTTL
	DefaultLoopInterval        = 500 * time.Millisecond
	DefaultMaxLagOnFailover    = 1 << 20 // 1 MiB
	DefaultDepartedSlotTTL     = 30 * time.Minute
	DefaultPrimaryStartTimeout = 30 * time.Second
	DefaultSwitchoverDrain     = 2 * time.Second
)

// Config configures a [Manager]. Zero optional fields take the documented
// defaults; [Config.Validate] rejects invalid values with a *[ConfigError]
// naming the field. Config holds no context.
type Config struct {
	// Cluster is the cluster name: keys live under KeyRoot/Cluster/.
	// Required; 1-63 letters, digits, '_', '.', '-'.
	Cluster string
	// Node is this node's name, unique in the cluster. Required; same
	// alphabet as Cluster. It must equal Instance's Config().Name, which is
	// the application_name this node streams with.
	Node string
	// Client is the etcd client. Required. The Manager does not close it.
	Client *clientv3.Client
	// KeyRoot is the etcd key root. Default "/pgha".
	KeyRoot string
	// Instance is this node's PostgreSQL. Required.
	Instance *replicate.Instance
	// Host and Port are the address other nodes and clients use to reach
	// this node's PostgreSQL. Default Host "127.0.0.1"; default Port the
	// Instance's port.
	Host string
	Port int

	// LeaseTTL is the leader and member lease TTL. Whole seconds, at least
	// 2 s. Default 5 s. A dead primary is replaced within about LeaseTTL +
	// LoopInterval.
	LeaseTTL time.Duration
	// LoopInterval is how often the loop observes and acts. Default 500 ms;
	// must be below LeaseTTL/2.
	LoopInterval time.Duration
	// FenceBudget is how long before the leader's [election.Term.ValidUntil]
	// it fences its PostgreSQL when renewals have not succeeded, so that the
	// fence completes before any other node can be elected. Default
	// min(LeaseTTL/4, 1 s); must be below LeaseTTL/2.
	FenceBudget time.Duration
	// MaxLagOnFailover is the most WAL (bytes) a standby may lack, against
	// the last position the leader published, and still be promoted
	// automatically. Default 1 MiB. Zero means the default; use 1 for "no
	// lag at all".
	MaxLagOnFailover int64
	// SyncMode is off (default), on or strict.
	SyncMode SyncMode
	// SyncStandbys is how many standbys confirm each commit in synchronous
	// mode. Default 1.
	SyncStandbys int
	// NoFailover keeps this node from ever being promoted automatically.
	NoFailover bool
	// Priority breaks ties between equally advanced candidates: higher
	// wins. Default 0.
	Priority int
	// PrimaryStartTimeout bounds how long, in asynchronous mode, the leader
	// tries to restart its crashed PostgreSQL in place before it gives up
	// leadership. Default 30 s. In synchronous modes the leader fails over
	// at once.
	PrimaryStartTimeout time.Duration
	// SwitchoverDrain bounds how long a leader handing over in a planned
	// switchover waits for the client transactions open on it to end
	// before it stops; those still open then are terminated (their
	// clients see the connection end). driver.Pool holds new work for
	// its own drain time (pgha_switchover_drain) when it sees the
	// switchover request, so that short transactions finish and nothing
	// reaches a primary that is about to stop. Default 2 s; negative: no
	// wait (the shutdown ends every session at once).
	SwitchoverDrain time.Duration

	// DepartedSlotTTL is how long the leader keeps the replication slot it
	// created for a member after that member's record is gone (its lease
	// expired: the node is down, or was removed for good). A slot keeps
	// every WAL segment its member has not received, so the slot of a node
	// that never comes back would fill the leader's disk. Default 30 min;
	// negative: never drop. A member that comes back later than this may
	// find the WAL it needs gone and must be cloned anew (see
	// replicate.Config.ReplaceDataDir). Only slots this manager created
	// while leading are ever dropped, never slots made by anyone else.
	DepartedSlotTTL time.Duration

	// Watchdog arms a Linux watchdog device while this node leads, so that
	// a frozen or dead manager whose PostgreSQL still accepts writes gets
	// its machine reset before its lease can expire: off (default),
	// automatic (use it when available) or required (never lead without
	// it). The leader arms it when it wins, before promoting, with a
	// timeout that ends no later than its term's ValidUntil, pets it only
	// after a renewal that keeps that true, and disarms it (magic close)
	// after its PostgreSQL has stopped accepting writes.
	Watchdog WatchdogMode
	// WatchdogDevice is the watchdog device. Default /dev/watchdog.
	WatchdogDevice string

	// Logger receives the manager's log lines, with cluster and node
	// attributes. Nil means slog.Default().
	Logger *slog.Logger
	// TracerProvider and MeterProvider receive spans and metrics. Nil means
	// no-op.
	TracerProvider trace.TracerProvider
	MeterProvider  metric.MeterProvider

	// RecloneOnRewindFailure lets a node whose pg_rewind cannot succeed
	// (pg_rewind says only a new clone helps, or it failed
	// MaxRewindFailures times in a row) move its data directory aside
	// (never deleted) and clone afresh from the leader. Off (the default,
	// like Patroni's remove_data_directory_on_rewind_failure), the node
	// waits and publishes the problem and the fix in its member record
	// (Member.Problem, pghactl list).
	RecloneOnRewindFailure bool

	// FenceGuard runs a fence guard while this node leads: a small
	// separate process (this executable, re-executed) that fences
	// PostgreSQL when the lease deadline passes without renewal, so that
	// a frozen manager (SIGSTOP, a debugger, a stall on a dead mount)
	// cannot leave a writable primary behind for clients that do not use
	// driver.Pool. The program's main must call
	// [RunFenceGuardIfRequested] first thing (pgha-agent does); Run fails
	// with an error saying so when the guard does not start. If the guard
	// exits while this node leads, the manager fences at once. It does not
	// help when the whole machine or container freezes (the guard freezes
	// too): that is Watchdog's job. Default off.
	FenceGuard bool

	// Failsafe keeps the primary writable while etcd is unreachable, as
	// long as every member that could replace it promises not to. Its
	// exact guarantee: when the leader cannot renew its lease, it asks
	// every member named in the failsafe record (which it keeps current
	// while etcd works: itself and every member without NoFailover) over
	// a direct call to their [Manager.Handler] (POST /failsafe, bearer
	// PeerToken). A member promises only if it cannot reach etcd itself
	// and the caller leads its own last view; it then neither campaigns
	// nor promotes for LeaseTTL. The leader stays writable until the
	// earliest promise runs out (counted from when it sent the request,
	// minus the election's safety margin); if any member cannot be
	// reached or says no, it fences by its lease deadline as without
	// Failsafe. While the record exists, only the nodes it names may
	// campaign. So a primary cut from etcd while the others reach it is
	// still replaced within one lease TTL; a whole-etcd outage no longer
	// stops writes. When etcd returns, the leader renews the same lease:
	// no new term, no timeline change. Needs APIURL and PeerToken on
	// every member, and the same Failsafe setting on all of them (a
	// member with it off says no). Default off.
	Failsafe bool
	// APIURL is the base URL (e.g. http://10.0.0.1:8008) where the other
	// members reach this node's [Manager.Handler]. It is published in the
	// member record. Required with Failsafe.
	APIURL string
	// PeerToken authenticates failsafe calls between members: the bearer
	// token a leader sends and a member requires, the same on every
	// member, at least MinAdminTokenBytes long. Required with Failsafe.
	PeerToken string
	// PeerClient makes the failsafe calls (set its Transport for TLS).
	// Default: a client without proxy; each call is bounded by the
	// leader's deadline.
	PeerClient *http.Client

	// OnRoleChange, when set, is called after this node's role, as its
	// member record publishes it, changes, and once for its first role
	// after Run starts (Old is then ""). Its contract, after client-go's
	// LeaderCallbacks:
	//
	//   - It is called on a goroutine of its own, never on the loop's,
	//     one call at a time, in the order of the changes.
	//   - It never delays the loop's safety actions (fence, resign,
	//     promote): a slow hook delays only later calls. Up to 16 changes
	//     wait for it; when the queue is full, the newest waiting change
	//     absorbs the next one (RoleChange.Coalesced counts the changes it
	//     stands for), which is logged and counted (pgha.ha.hook.coalesced).
	//   - Its ctx is cancelled when the role it announces ends (at the
	//     next change, which may come before the call begins) or when Run
	//     ends. Work tied to the role stops then; the ctx stays live after
	//     the call returns until then.
	//   - A panic is recovered, logged with its stack and counted
	//     (pgha.ha.hook.panics); the manager carries on. A call still
	//     running after LeaseTTL is logged and counted (pgha.ha.hook.slow).
	//   - When Run ends, it first leaves the cluster, then cancels the
	//     ctx, drops the changes not yet delivered and waits for the call
	//     in progress: a hook that ignores its ctx delays Run's return,
	//     never the leave.
	//
	// Default nil: no hook.
	OnRoleChange func(ctx context.Context, ev RoleChange)

	now func() time.Time // tests may replace the clock
	// replaceDataDir mirrors the Instance's ReplaceDataDir: a data
	// directory left unusable by an interrupted rewind is re-cloned.
	replaceDataDir bool
}

// DefaultConfig returns a Config with the defaults filled in; set Cluster,
// Node, Client and Instance.
func DefaultConfig() Config {
	var c Config
	c.setDefaults()
	return c
}

// LocalConfig returns [DefaultConfig] tuned for a cluster on one machine or
// one LAN, as in the demo and the tests: lease TTL 2 s and a loop every
// 200 ms, so a dead primary is replaced in about 2 s. Set Cluster, Node,
// Client and Instance. On a network with round trips of more than a few
// milliseconds, keep the defaults.
func LocalConfig() Config {
	c := Config{LeaseTTL: 2 * time.Second, LoopInterval: 200 * time.Millisecond}
	c.setDefaults()
	return c
}

func (c *Config) setDefaults() {
	if c.KeyRoot == "" {
		c.KeyRoot = keyspace.DefaultRoot
	}
	if c.Host == "" {
		c.Host = "127.0.0.1"
	}
	if c.Port == 0 && c.Instance != nil {
		c.Port = c.Instance.Config().Port
	}
	if c.Instance != nil {
		c.replaceDataDir = c.Instance.Config().ReplaceDataDir
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = DefaultLeaseTTL
	}
	if c.LoopInterval == 0 {
		c.LoopInterval = DefaultLoopInterval
	}
	if c.FenceBudget == 0 {
		c.FenceBudget = min(c.LeaseTTL/4, time.Second)
	}
	if c.MaxLagOnFailover == 0 {
		c.MaxLagOnFailover = DefaultMaxLagOnFailover
	}
	if c.SyncMode == "" {
		c.SyncMode = SyncOff
	}
	if c.SyncStandbys == 0 {
		c.SyncStandbys = 1
	}
	if c.PrimaryStartTimeout == 0 {
		c.PrimaryStartTimeout = DefaultPrimaryStartTimeout
	}
	if c.SwitchoverDrain == 0 {
		c.SwitchoverDrain = DefaultSwitchoverDrain
	}
	if c.DepartedSlotTTL == 0 {
		c.DepartedSlotTTL = DefaultDepartedSlotTTL
	}
	if c.Watchdog == "" {
		c.Watchdog = WatchdogOff
	}
	if c.WatchdogDevice == "" {
		c.WatchdogDevice = DefaultWatchdogDevice
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.now == nil {
		c.now = time.Now
	}
	if c.PeerClient == nil {
		c.PeerClient = &http.Client{Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 2, IdleConnTimeout: time.Minute}}
	}
}

// ConfigError reports an invalid [Config] field, its value and the fix.
type ConfigError struct {
	Field  string
	Value  any
	Reason string
}

// Error returns "ha: <field> <value> <reason>".
func (e *ConfigError) Error() string { return fmt.Sprintf("ha: %s %v %s", e.Field, e.Value, e.Reason) }

// Validate reports the first invalid field, after applying defaults to a
// copy of c.
func (c Config) Validate() error {
	c.setDefaults()
	switch {
	case keyspace.ValidName(c.Cluster) != nil:
		return &ConfigError{"Cluster", fmt.Sprintf("%q", c.Cluster), "is invalid: use 1-63 letters, digits, '_', '.', '-'"}
	case keyspace.ValidName(c.Node) != nil:
		return &ConfigError{"Node", fmt.Sprintf("%q", c.Node), "is invalid: use 1-63 letters, digits, '_', '.', '-'"}
	case c.Client == nil:
		return &ConfigError{"Client", "<nil>", "is required: pass a *clientv3.Client connected to etcd"}
	case c.Instance == nil:
		return &ConfigError{"Instance", "<nil>", "is required: pass the *replicate.Instance of this node's PostgreSQL"}
	case c.Instance.Config().Name != c.Node:
		return &ConfigError{"Node", fmt.Sprintf("%q", c.Node), fmt.Sprintf("must equal the Instance's Name %q (the application_name it streams with)", c.Instance.Config().Name)}
	case c.Port <= 0 || c.Port > 65535:
		return &ConfigError{"Port", c.Port, "must be in 1..65535"}
	case c.LeaseTTL < 2*time.Second || c.LeaseTTL%time.Second != 0:
		return &ConfigError{"LeaseTTL", c.LeaseTTL, "must be a whole number of seconds, at least 2s"}
	case c.LoopInterval <= 0 || c.LoopInterval >= c.LeaseTTL/2:
		return &ConfigError{"LoopInterval", c.LoopInterval, fmt.Sprintf("must be in (0, LeaseTTL/2 (%v))", c.LeaseTTL/2)}
	case c.FenceBudget <= 0 || c.FenceBudget >= c.LeaseTTL/2:
		return &ConfigError{"FenceBudget", c.FenceBudget, fmt.Sprintf("must be in (0, LeaseTTL/2 (%v))", c.LeaseTTL/2)}
	case c.MaxLagOnFailover < 0:
		return &ConfigError{"MaxLagOnFailover", c.MaxLagOnFailover, "must not be negative"}
	case c.SyncMode != SyncOff && c.SyncMode != SyncOn && c.SyncMode != SyncStrict && !c.SyncMode.quorum():
		return &ConfigError{"SyncMode", fmt.Sprintf("%q", c.SyncMode), `must be "off", "on", "strict", "quorum" or "quorum-strict"`}
	case c.SyncStandbys < 1:
		return &ConfigError{"SyncStandbys", c.SyncStandbys, "must be at least 1"}
	case c.PrimaryStartTimeout < 0:
		return &ConfigError{"PrimaryStartTimeout", c.PrimaryStartTimeout, "must not be negative"}
	case c.Watchdog != WatchdogOff && c.Watchdog != WatchdogAutomatic && c.Watchdog != WatchdogRequired:
		return &ConfigError{"Watchdog", fmt.Sprintf("%q", c.Watchdog), `must be "off", "automatic" or "required"`}
	case c.Failsafe && c.APIURL == "":
		return &ConfigError{"APIURL", `""`, "is required with Failsafe: the URL where the other members reach this node's Handler, e.g. http://10.0.0.1:8008"}
	case c.APIURL != "" && !validAPIURL(c.APIURL):
		return &ConfigError{"APIURL", fmt.Sprintf("%q", c.APIURL), "must be an absolute http:// or https:// URL with a host, e.g. http://10.0.0.1:8008"}
	case c.Failsafe && len(c.PeerToken) < MinAdminTokenBytes:
		return &ConfigError{"PeerToken", "(hidden)", "is required with Failsafe and must be at least 16 bytes, the same on every member (e.g. openssl rand -hex 32)"}
	case c.Watchdog != WatchdogOff && c.LeaseTTL-c.FenceBudget < 2*time.Second:
		return &ConfigError{"Watchdog", c.Watchdog, fmt.Sprintf("needs LeaseTTL - FenceBudget (%v) of at least 2s: the device counts whole seconds", c.LeaseTTL-c.FenceBudget)}
	}
	return nil
}

func validAPIURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != ""
}
