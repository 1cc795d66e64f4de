package driver

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"reflect"
	"slices"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/pgha/pgha/internal/keyspace"
)

// Defaults for zero fields of [Config].
const (
	DefaultFailoverTimeout = 15 * time.Second
	// DefaultSwitchoverDrain is how long new operations wait for a
	// planned switchover to complete (Config.SwitchoverDrain).
	DefaultSwitchoverDrain = 2 * time.Second
	// DefaultCausalWait is how long a read with a causal token waits for a
	// replica (Config.CausalWait).
	DefaultCausalWait    = 50 * time.Millisecond
	DefaultProbeInterval = time.Second
	DefaultProbeTimeout  = 2 * time.Second
	DefaultMaxReplicaLag = 16 << 20 // bytes
)

// ReadMode says where [Reader] sends reads.
type ReadMode int

// Read modes.
const (
	// ReadPrimary sends every read to the primary (the default).
	ReadPrimary ReadMode = iota
	// ReadReplicas sends reads only to replicas within MaxReplicaLag; with
	// none, reads fail with [ErrNoReplica].
	ReadReplicas
	// ReadPreferReplicas sends reads to a replica within MaxReplicaLag, or
	// to the primary when there is none.
	ReadPreferReplicas
)

// String returns the connection string spelling: "primary", "replicas" or
// "prefer-replicas".
func (m ReadMode) String() string {
	switch m {
	case ReadPrimary:
		return "primary"
	case ReadReplicas:
		return "replicas"
	case ReadPreferReplicas:
		return "prefer-replicas"
	}
	return "ReadMode(" + strconv.Itoa(int(m)) + ")"
}

// ParseReadMode parses "primary", "replicas" or "prefer-replicas".
func ParseReadMode(s string) (ReadMode, error) {
	for _, m := range []ReadMode{ReadPrimary, ReadReplicas, ReadPreferReplicas} {
		if s == m.String() {
			return m, nil
		}
	}
	return 0, fmt.Errorf("read mode %q is not primary, replicas or prefer-replicas", s)
}

// Balance says how [Reader] picks among eligible replicas.
type Balance int

// Balancing policies.
const (
	// RoundRobin takes eligible replicas in turn (the default).
	RoundRobin Balance = iota
	// LeastBusy takes the replica with the fewest connections in use.
	LeastBusy
)

// String returns the connection string spelling: "round-robin" or
// "least-busy".
func (b Balance) String() string {
	switch b {
	case RoundRobin:
		return "round-robin"
	case LeastBusy:
		return "least-busy"
	}
	return "Balance(" + strconv.Itoa(int(b)) + ")"
}

// Config configures a [Pool]. Build it with [ParseConfig], then change
// any field, as with [pgxpool.ParseConfig]: Config embeds the
// [pgxpool.Config] it parsed, so every pgxpool.Config field and method
// (MaxConns, BeforeConnect, AfterConnect, PrepareConn, ConnConfig,
// ConnString, ...) is reachable on it with the same name and type; code
// written for *pgxpool.Config compiles unchanged once pgxpool.ParseConfig
// is renamed driver.ParseConfig. [Config.Copy] copies the pgha settings
// too. The pgha settings below take the defaults documented on each when
// zero. A Config must not be modified after it is passed to
// [NewWithConfig].
//
// [DefaultConfig] and [LocalConfig] return a Config without the pgxpool
// part: set it (cfg.Config, from [pgxpool.ParseConfig]) before use. A
// Config whose pgxpool part is missing or was not made by a ParseConfig
// (a &driver.Config{} literal) is an error, never a panic.
type Config struct {
	// Config is the template of the per-node pools: database, user,
	// password, TLS, pool sizes, hooks and tracer. Its host and port (and
	// fallbacks) are replaced per node; pool sizes (MaxConns, ...) apply to
	// each node's pool. Required; it must come from [pgxpool.ParseConfig]
	// (or [ParseConfig]). Its fields and methods are promoted, except Copy,
	// which [Config.Copy] replaces.
	*pgxpool.Config

	// PoolConfig is the former name of the embedded Config, kept so that
	// code written for it still compiles: [ParseConfig] sets both to the
	// same *pgxpool.Config, so either reaches the same settings, and a
	// Config that sets only PoolConfig is read as if it had set Config.
	// Setting both to different values is an error.
	//
	// Deprecated: use the promoted fields (cfg.MaxConns) or cfg.Config.
	PoolConfig *pgxpool.Config

	// Hosts are "host:port" addresses of the cluster's PostgreSQL servers,
	// probed with pg_is_in_recovery() every ProbeInterval: the one writable
	// host is the primary, the others are replicas. With Etcd or
	// EtcdEndpoints too, the hosts are used only until etcd first answers.
	// [ParseConfig] fills Hosts from the hosts of the connection string
	// (with pgha_etcd, only when the string names hosts itself).
	Hosts []string

	// Etcd is an etcd client used to watch the cluster's leader and member
	// records (pushed: no polling delay). The pool does not close it.
	// Takes precedence over EtcdEndpoints.
	Etcd *clientv3.Client
	// EtcdEndpoints are etcd client URLs; the pool creates (and closes) its
	// own client for them when Etcd is nil, with EtcdTLS, EtcdUsername and
	// EtcdPassword. For other client settings, build the client yourself
	// and set Etcd.
	EtcdEndpoints []string
	// EtcdTLS is the TLS configuration of the pool's own etcd client (CA
	// roots, client certificate), for https:// EtcdEndpoints. Nil means
	// plain http. Ignored when Etcd is set.
	EtcdTLS *tls.Config
	// EtcdUsername and EtcdPassword authenticate the pool's own etcd client
	// when etcd authentication is on; both or neither. The pool needs only
	// read access to the cluster's prefix (see ha.EtcdRoles). Ignored when
	// Etcd is set. The password never appears in errors or logs.
	EtcdUsername string
	EtcdPassword string
	// Cluster is the cluster name: keys live under KeyRoot/Cluster/.
	// Required with etcd.
	Cluster string
	// KeyRoot is the etcd key root. Default "/pgha".
	KeyRoot string

	// FailoverTimeout is how long an operation waits for a writable primary
	// when there is none (during a failover) before it fails with
	// [ErrNoPrimary]. Default 15 s; must be positive.
	FailoverTimeout time.Duration
	// SwitchoverDrain: in etcd mode, when a planned switchover of the
	// primary is requested (pghactl switchover, ha.Switchover), new
	// operations wait up to this long for the new primary instead of
	// starting on the old one, which lets the transactions in flight
	// finish (the leader waits for them, up to ha.Config.SwitchoverDrain)
	// and keeps new ones off a server that is about to stop: a client sees
	// a pause, not an error. It counts within FailoverTimeout. Default 2
	// s; negative disables (connection string: pgha_switchover_drain, a
	// duration or off).
	SwitchoverDrain time.Duration

	// ProbeInterval is how often the pool checks each known node's role
	// and WAL position with one query on a dedicated connection. While there
	// is no writable primary, nodes are probed every 25 ms instead. Default
	// 1 s; at least 10 ms.
	ProbeInterval time.Duration
	// ProbeTimeout bounds one probe, connection included. Default 2 s;
	// positive.
	ProbeTimeout time.Duration

	// WriteKeepAlive is the TCP keepalive of the connections to the
	// primary: idle time before the first probe and interval between
	// probes; 3 unanswered probes drop the connection, so a black-holed
	// primary is noticed by a connection waiting for a result after about
	// 4 × WriteKeepAlive (12 s by default) instead of TCP's ~15 minutes.
	// Default 3 s; negative leaves the dial function's own setting.
	// Connection string: pgha_write_keepalive (a duration, or off).
	WriteKeepAlive time.Duration
	// WriteTCPUserTimeout is TCP_USER_TIMEOUT (Linux only) of the
	// connections to the primary: how long data sent on one may stay
	// unacknowledged before the kernel drops it. Default 10 s; negative
	// leaves the system's. Connection string: pgha_write_tcp_user_timeout
	// (a duration, or off).
	WriteTCPUserTimeout time.Duration

	// ResolveOutcome turns on outcome resolution for every [Pool.Exec] and
	// transaction COMMIT: the pool learns the transaction's id before
	// its COMMIT runs (in the same round trip) and, when the connection
	// fails after the COMMIT was sent, asks the primary found afterwards
	// whether it committed, instead of returning [ErrOutcomeUnknown] at
	// once (see "Outcome resolution" in the package documentation).
	// [WithResolveOutcome] turns it on per call. Default false.
	// Connection string: pgha_resolve_outcome (on or off).
	ResolveOutcome bool

	// ReadMode is where [Pool.Reader] sends reads. Default [ReadPrimary].
	ReadMode ReadMode
	// ReadBalance picks among eligible replicas. Default [RoundRobin].
	ReadBalance Balance
	// MaxReplicaLag is the largest replay lag, in bytes of WAL behind the
	// primary, of a replica that may serve reads. Default 16 MiB; negative
	// means no limit.
	MaxReplicaLag int64
	// CausalWait is how long a read with a causal token
	// ([ContextWithCausalToken]) waits for a replica to replay past the
	// token, asking the eligible replicas every 5 ms, before it goes to the
	// primary instead. Default 50 ms; negative: no wait (the primary at
	// once). Connection string: pgha_causal_wait (a duration, or off).
	CausalWait time.Duration

	// Logger receives the pool's log lines (topology changes, failovers,
	// records that do not parse). Nil means slog.Default().
	Logger *slog.Logger
	// TracerProvider, when set and ConnConfig.Tracer is nil,
	// traces every query with an OpenTelemetry pgx tracer. Nil means no
	// tracing.
	TracerProvider trace.TracerProvider
	// MeterProvider receives the pool's metrics. Nil means none.
	MeterProvider metric.MeterProvider
}

// DefaultConfig returns a Config with every pgha default filled in, no
// pgxpool part and no topology: set Config (from [pgxpool.ParseConfig])
// and Hosts or etcd. [ParseConfig] is usually simpler.
func DefaultConfig() *Config {
	return &Config{
		FailoverTimeout: DefaultFailoverTimeout,
		SwitchoverDrain: DefaultSwitchoverDrain,
		CausalWait:      DefaultCausalWait,
		ProbeInterval:   DefaultProbeInterval,
		ProbeTimeout:    DefaultProbeTimeout,
		MaxReplicaLag:   DefaultMaxReplicaLag,
		KeyRoot:         keyspace.DefaultRoot,

		WriteKeepAlive:      DefaultWriteKeepAlive,
		WriteTCPUserTimeout: DefaultWriteTCPUserTimeout,
	}
}

// LocalConfig returns [DefaultConfig] tuned for a cluster on one machine or
// one LAN, as in the demo and the tests: nodes probed every 100 ms with a
// 500 ms timeout, and operations waiting up to 10 s for a primary.
func LocalConfig() *Config {
	c := DefaultConfig()
	c.ProbeInterval = 100 * time.Millisecond
	c.ProbeTimeout = 500 * time.Millisecond
	c.FailoverTimeout = 10 * time.Second
	return c
}

// Copy returns a deep copy of c: the pgxpool part (as
// [pgxpool.Config.Copy] copies it), the host and endpoint lists and the
// etcd TLS configuration. Values that are shared by nature are shared:
// the Etcd client, the Logger, the providers and hook functions. It
// replaces the promoted pgxpool.Config.Copy, still reachable as
// c.Config.Copy(). The copy may be modified and passed to
// [NewWithConfig].
func (c *Config) Copy() *Config {
	n := *c
	n.Hosts = slices.Clone(c.Hosts)
	n.EtcdEndpoints = slices.Clone(c.EtcdEndpoints)
	if c.EtcdTLS != nil {
		n.EtcdTLS = c.EtcdTLS.Clone()
	}
	if c.Config != nil {
		n.Config = c.Config.Copy()
	}
	if c.PoolConfig != nil {
		if c.PoolConfig == c.Config {
			n.PoolConfig = n.Config
		} else {
			n.PoolConfig = c.PoolConfig.Copy()
		}
	}
	return &n
}

// poolConfig returns the pgxpool part: Config, or the deprecated
// PoolConfig when only that is set.
func (c *Config) poolConfig() *pgxpool.Config {
	if c.Config == nil {
		return c.PoolConfig
	}
	return c.Config
}

func (c *Config) setDefaults() {
	if c.FailoverTimeout == 0 {
		c.FailoverTimeout = DefaultFailoverTimeout
	}
	if c.SwitchoverDrain == 0 {
		c.SwitchoverDrain = DefaultSwitchoverDrain
	}
	if c.CausalWait == 0 {
		c.CausalWait = DefaultCausalWait
	}
	if c.ProbeInterval == 0 {
		c.ProbeInterval = DefaultProbeInterval
	}
	if c.ProbeTimeout == 0 {
		c.ProbeTimeout = DefaultProbeTimeout
	}
	if c.MaxReplicaLag == 0 {
		c.MaxReplicaLag = DefaultMaxReplicaLag
	}
	if c.WriteKeepAlive == 0 {
		c.WriteKeepAlive = DefaultWriteKeepAlive
	}
	if c.WriteTCPUserTimeout == 0 {
		c.WriteTCPUserTimeout = DefaultWriteTCPUserTimeout
	}
	if c.KeyRoot == "" {
		c.KeyRoot = keyspace.DefaultRoot
	}
}

// usesEtcd reports whether the config names an etcd topology.
func (c *Config) usesEtcd() bool { return c.Etcd != nil || len(c.EtcdEndpoints) > 0 }

// Validate reports the first invalid field as a *[ConfigError] naming the
// field, the value and the fix. Zero fields are valid (they take defaults).
func (c *Config) Validate() error {
	if c == nil {
		return &ConfigError{"Config", nil, "is nil: build it with driver.ParseConfig(connString)"}
	}
	if c.Config != nil && c.PoolConfig != nil && c.Config != c.PoolConfig {
		return &ConfigError{"PoolConfig", "(set)", "differs from Config: PoolConfig is the deprecated name of the embedded *pgxpool.Config; set only Config"}
	}
	pc := c.poolConfig()
	if pc == nil || pc.ConnConfig == nil {
		return &ConfigError{"Config", nil, "(the embedded *pgxpool.Config) is nil: build the whole Config with driver.ParseConfig(connString) and modify the result, or set cfg.Config from pgxpool.ParseConfig"}
	}
	if !createdByParseConfig(pc) {
		return &ConfigError{"Config", "(literal)", "(the embedded *pgxpool.Config) was not created by a ParseConfig: build it with driver.ParseConfig(connString) (or pgxpool.ParseConfig) and modify the result"}
	}
	if pc.MaxConns < 1 || pc.MinConns < 0 || pc.MinConns > pc.MaxConns {
		return &ConfigError{"MaxConns/MinConns", fmt.Sprintf("%d/%d", pc.MaxConns, pc.MinConns), "are invalid: MaxConns must be at least 1 and MinConns between 0 and MaxConns"}
	}
	if !c.usesEtcd() && len(c.Hosts) == 0 {
		return &ConfigError{"Hosts", "[]", "is empty and no etcd is set: list the servers (host:port) or set Etcd/EtcdEndpoints and Cluster"}
	}
	for i, h := range c.Hosts {
		if _, _, err := splitHostPort(h); err != nil {
			return &ConfigError{fmt.Sprintf("Hosts[%d]", i), strconv.Quote(h), "is not host:port: " + err.Error()}
		}
	}
	if c.usesEtcd() {
		if c.Cluster == "" {
			return &ConfigError{"Cluster", `""`, "is required with etcd: set the cluster name (pgha_cluster)"}
		}
		if (c.EtcdUsername == "") != (c.EtcdPassword == "") && c.Etcd == nil {
			return &ConfigError{"EtcdUsername/EtcdPassword", strconv.Quote(c.EtcdUsername) + " (password redacted)", "must be set together: etcd authenticates a user with its password"}
		}
		if _, err := keyspace.NewLayout(c.KeyRoot, c.Cluster); err != nil {
			return &ConfigError{"Cluster/KeyRoot", strconv.Quote(c.KeyRoot) + " " + strconv.Quote(c.Cluster), "is invalid: " + err.Error()}
		}
	}
	switch {
	case c.FailoverTimeout < 0:
		return &ConfigError{"FailoverTimeout", c.FailoverTimeout, "is negative: use a positive duration such as 15s"}
	case c.ProbeInterval < 0 || (c.ProbeInterval > 0 && c.ProbeInterval < 10*time.Millisecond):
		return &ConfigError{"ProbeInterval", c.ProbeInterval, "is below 10ms: use at least 10ms (default 1s)"}
	case c.ProbeTimeout < 0:
		return &ConfigError{"ProbeTimeout", c.ProbeTimeout, "is negative: use a positive duration such as 2s"}
	case c.ReadMode < ReadPrimary || c.ReadMode > ReadPreferReplicas:
		return &ConfigError{"ReadMode", int(c.ReadMode), "is unknown: use ReadPrimary, ReadReplicas or ReadPreferReplicas"}
	case c.ReadBalance < RoundRobin || c.ReadBalance > LeastBusy:
		return &ConfigError{"ReadBalance", int(c.ReadBalance), "is unknown: use RoundRobin or LeastBusy"}
	}
	return nil
}

// createdByParseConfig reads pgxpool.Config's unexported flag: pgxpool
// panics on a Config it did not build, and we return an error instead.
func createdByParseConfig(pc *pgxpool.Config) bool {
	f := reflect.ValueOf(pc).Elem().FieldByName("createdByParseConfig")
	if !f.IsValid() || f.Kind() != reflect.Bool {
		return true // pgx changed: let pgxpool judge
	}
	return f.Bool()
}

// connHosts lists the distinct host:port pairs of a parsed connection
// string, in order.
func connHosts(pc *pgxpool.Config) []string {
	cc := pc.ConnConfig
	var out []string
	add := func(host string, port uint16) {
		a := joinHostPort(host, port)
		if !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	add(cc.Host, cc.Port)
	for _, f := range cc.Fallbacks {
		add(f.Host, f.Port)
	}
	return out
}

func joinHostPort(host string, port uint16) string {
	return net.JoinHostPort(host, strconv.Itoa(int(port)))
}

func splitHostPort(a string) (string, uint16, error) {
	h, p, err := net.SplitHostPort(a)
	if err != nil {
		return "", 0, err
	}
	if h == "" {
		return "", 0, errors.New("empty host")
	}
	n, err := strconv.ParseUint(p, 10, 16)
	if err != nil || n == 0 {
		return "", 0, fmt.Errorf("port %q is not in 1..65535", p)
	}
	return h, uint16(n), nil
}
