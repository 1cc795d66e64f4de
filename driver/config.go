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
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/pgha/pgha/internal/keyspace"
)

// Defaults for zero fields of [Config].
const (
	DefaultFailoverTimeout = 15 * time.Second
	DefaultProbeInterval   = time.Second
	DefaultProbeTimeout    = 2 * time.Second
	DefaultMaxReplicaLag   = 16 << 20 // bytes
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

// Config configures a [Pool]. Build it with [ParseConfig] (or start from
// [DefaultConfig] and set PoolConfig); zero fields take the defaults
// documented on each. A Config must not be modified after it is passed to
// [NewWithConfig].
type Config struct {
	// PoolConfig is the template of the per-node pools: database, user,
	// password, TLS, pool sizes, pgx hooks and tracer. Its host and port
	// (and fallbacks) are replaced per node. Required; it must come from
	// [pgxpool.ParseConfig] (or [ParseConfig]). Pool sizes (MaxConns, ...)
	// apply to each node's pool.
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

	// ProbeInterval is how often the pool checks each known node's role
	// and WAL position with one query on a dedicated connection. While there
	// is no writable primary, nodes are probed every 25 ms instead. Default
	// 1 s; at least 10 ms.
	ProbeInterval time.Duration
	// ProbeTimeout bounds one probe, connection included. Default 2 s;
	// positive.
	ProbeTimeout time.Duration

	// ReadMode is where [Pool.Reader] sends reads. Default [ReadPrimary].
	ReadMode ReadMode
	// ReadBalance picks among eligible replicas. Default [RoundRobin].
	ReadBalance Balance
	// MaxReplicaLag is the largest replay lag, in bytes of WAL behind the
	// primary, of a replica that may serve reads. Default 16 MiB; negative
	// means no limit.
	MaxReplicaLag int64

	// Logger receives the pool's log lines (topology changes, failovers,
	// records that do not parse). Nil means slog.Default().
	Logger *slog.Logger
	// TracerProvider, when set and PoolConfig.ConnConfig.Tracer is nil,
	// traces every query with an OpenTelemetry pgx tracer. Nil means no
	// tracing.
	TracerProvider trace.TracerProvider
	// MeterProvider receives the pool's metrics. Nil means none.
	MeterProvider metric.MeterProvider
}

// DefaultConfig returns a Config with every default filled in and no
// PoolConfig or topology: set PoolConfig and Hosts or etcd.
func DefaultConfig() *Config {
	return &Config{
		FailoverTimeout: DefaultFailoverTimeout,
		ProbeInterval:   DefaultProbeInterval,
		ProbeTimeout:    DefaultProbeTimeout,
		MaxReplicaLag:   DefaultMaxReplicaLag,
		KeyRoot:         keyspace.DefaultRoot,
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

func (c *Config) copy() *Config {
	n := *c
	n.Hosts = slices.Clone(c.Hosts)
	n.EtcdEndpoints = slices.Clone(c.EtcdEndpoints)
	if c.EtcdTLS != nil {
		n.EtcdTLS = c.EtcdTLS.Clone()
	}
	if c.PoolConfig != nil {
		n.PoolConfig = c.PoolConfig.Copy()
	}
	return &n
}

func (c *Config) setDefaults() {
	if c.FailoverTimeout == 0 {
		c.FailoverTimeout = DefaultFailoverTimeout
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
	if c.PoolConfig == nil || c.PoolConfig.ConnConfig == nil {
		return &ConfigError{"PoolConfig", nil, "is nil: build it with pgxpool.ParseConfig(connString) or use driver.ParseConfig"}
	}
	if !createdByParseConfig(c.PoolConfig) {
		return &ConfigError{"PoolConfig", "(literal)", "was not created by pgxpool.ParseConfig: build it with pgxpool.ParseConfig(connString) and modify the result"}
	}
	if pc := c.PoolConfig; pc.MaxConns < 1 || pc.MinConns < 0 || pc.MinConns > pc.MaxConns {
		return &ConfigError{"PoolConfig.MaxConns/MinConns", fmt.Sprintf("%d/%d", pc.MaxConns, pc.MinConns), "are invalid: MaxConns must be at least 1 and MinConns between 0 and MaxConns"}
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

// The connection string keys of the driver.
const (
	keyCluster         = "pgha_cluster"
	keyEtcd            = "pgha_etcd"
	keyRoot            = "pgha_root"
	keyReadMode        = "pgha_read_mode"
	keyReadBalance     = "pgha_read_balance"
	keyMaxReplicaLag   = "pgha_max_replica_lag"
	keyFailoverTimeout = "pgha_failover_timeout"
	keyProbeInterval   = "pgha_probe_interval"
	keyProbeTimeout    = "pgha_probe_timeout"
)

// ParseConfig builds a Config from a connection string: everything
// [pgxpool.ParseConfig] accepts, plus the pgha_* keys described in the
// package documentation (each removed from the runtime parameters sent to
// the server). A multi-host string gives [Config.Hosts]. Malformed values
// and unknown pgha_* keys are *[pgconn.ParseConfigError]s naming the key;
// passwords are redacted from them.
func ParseConfig(connString string) (*Config, error) {
	pc, err := pgxpool.ParseConfig(connString)
	if err != nil {
		return nil, err
	}
	c := DefaultConfig()
	c.PoolConfig = pc
	params := pc.ConnConfig.RuntimeParams
	perr := func(key, msg string, err error) error {
		return pgconn.NewParseConfigError(connString, key+": "+msg, err)
	}
	var keys []string
	for k := range params {
		if strings.HasPrefix(k, "pgha_") {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		v := params[k]
		delete(params, k)
		switch k {
		case keyCluster:
			if err := keyspace.ValidName(v); err != nil {
				return nil, perr(k, "invalid cluster name", err)
			}
			c.Cluster = v
		case keyEtcd:
			for _, ep := range strings.Split(v, ",") {
				ep = strings.TrimSpace(ep)
				if ep == "" {
					return nil, perr(k, "empty endpoint in comma-separated list", nil)
				}
				c.EtcdEndpoints = append(c.EtcdEndpoints, ep)
			}
		case keyRoot:
			if !strings.HasPrefix(v, "/") {
				return nil, perr(k, "key root must start with '/'", nil)
			}
			c.KeyRoot = v
		case keyReadMode:
			m, err := ParseReadMode(v)
			if err != nil {
				return nil, perr(k, "invalid read mode", err)
			}
			c.ReadMode = m
		case keyReadBalance:
			switch v {
			case "round-robin":
				c.ReadBalance = RoundRobin
			case "least-busy":
				c.ReadBalance = LeastBusy
			default:
				return nil, perr(k, "invalid balance", fmt.Errorf("%q is not round-robin or least-busy", v))
			}
		case keyMaxReplicaLag:
			n, err := parseBytes(v)
			if err != nil {
				return nil, perr(k, "invalid byte count", err)
			}
			c.MaxReplicaLag = n
		case keyFailoverTimeout, keyProbeInterval, keyProbeTimeout:
			d, err := time.ParseDuration(v)
			if err != nil {
				return nil, perr(k, "invalid duration", err)
			}
			if d <= 0 {
				return nil, perr(k, "duration must be positive", fmt.Errorf("%v", d))
			}
			switch k {
			case keyFailoverTimeout:
				c.FailoverTimeout = d
			case keyProbeInterval:
				if d < 10*time.Millisecond {
					return nil, perr(k, "duration must be at least 10ms", fmt.Errorf("%v", d))
				}
				c.ProbeInterval = d
			case keyProbeTimeout:
				c.ProbeTimeout = d
			}
		default:
			return nil, perr(k, "unknown pgha option (known: pgha_cluster, pgha_etcd, pgha_root, pgha_read_mode, pgha_read_balance, pgha_max_replica_lag, pgha_failover_timeout, pgha_probe_interval, pgha_probe_timeout)", nil)
		}
	}
	if len(c.EtcdEndpoints) > 0 && c.Cluster == "" {
		return nil, perr(keyCluster, "is required with pgha_etcd", nil)
	}
	if len(c.EtcdEndpoints) == 0 && c.Cluster != "" {
		return nil, perr(keyEtcd, "is required with pgha_cluster", nil)
	}
	// The hosts of the string are the host list; with etcd, only hosts
	// written in the string count (not pgx's defaults), as the list used
	// until etcd first answers.
	if len(c.EtcdEndpoints) == 0 || explicitHosts(connString) {
		c.Hosts = connHosts(pc)
	}
	return c, nil
}

// explicitHosts reports whether connString names its hosts itself, rather
// than leaving pgx to default them (PGHOST, a Unix socket or localhost).
func explicitHosts(connString string) bool {
	if rest, ok := strings.CutPrefix(connString, "postgres://"); ok || strings.HasPrefix(connString, "postgresql://") {
		if !ok {
			rest = strings.TrimPrefix(connString, "postgresql://")
		}
		if i := strings.IndexAny(rest, "/?"); i >= 0 {
			rest = rest[:i]
		}
		if i := strings.LastIndex(rest, "@"); i >= 0 {
			rest = rest[i+1:]
		}
		if rest != "" {
			return true
		}
		// postgres:///db?host=h1
		if _, q, ok := strings.Cut(connString, "?"); ok {
			for _, kv := range strings.Split(q, "&") {
				if k, v, _ := strings.Cut(kv, "="); k == "host" && v != "" {
					return true
				}
			}
		}
		return false
	}
	for _, f := range strings.Fields(connString) {
		if k, v, ok := strings.Cut(f, "="); ok && strings.TrimSpace(k) == "host" && v != "" {
			return true
		}
	}
	return false
}

// parseBytes parses a byte count: an integer with an optional kB, MB, GB
// suffix (powers of 1024, as in postgresql.conf), or -1 for no limit.
func parseBytes(s string) (int64, error) {
	mult := int64(1)
	num := s
	for _, u := range []struct {
		suffix string
		m      int64
	}{{"kB", 1 << 10}, {"MB", 1 << 20}, {"GB", 1 << 30}, {"B", 1}} {
		if n, ok := strings.CutSuffix(s, u.suffix); ok {
			num, mult = n, u.m
			break
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(num), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not a byte count like 16MB, 1048576 or -1", s)
	}
	if n < 0 {
		if n == -1 && mult == 1 {
			return -1, nil
		}
		return 0, fmt.Errorf("%q is negative (use -1 for no limit)", s)
	}
	if n > (1<<62)/mult {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return n * mult, nil
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
