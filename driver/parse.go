package driver

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgha/pgha/internal/keyspace"
)

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
	keyWriteKeepAlive  = "pgha_write_keepalive"
	keyWriteUserTO     = "pgha_write_tcp_user_timeout"
	keySwitchoverDrain = "pgha_switchover_drain"
	keyCausalWait      = "pgha_causal_wait"
	keyResolveOutcome  = "pgha_resolve_outcome"
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
	c.Config, c.PoolConfig = pc, pc
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
		case keyWriteKeepAlive, keyWriteUserTO, keySwitchoverDrain, keyCausalWait:
			// A positive duration, or off (-1: the feature is off).
			d := time.Duration(-1)
			if v != "off" {
				var err error
				if d, err = time.ParseDuration(v); err != nil {
					return nil, perr(k, "invalid duration (or off)", err)
				}
				if d <= 0 {
					return nil, perr(k, "duration must be positive (use off to disable)", fmt.Errorf("%v", d))
				}
			}
			*map[string]*time.Duration{keyWriteKeepAlive: &c.WriteKeepAlive, keyWriteUserTO: &c.WriteTCPUserTimeout,
				keySwitchoverDrain: &c.SwitchoverDrain, keyCausalWait: &c.CausalWait}[k] = d
		case keyResolveOutcome:
			switch v {
			case "on":
				c.ResolveOutcome = true
			case "off":
				c.ResolveOutcome = false
			default:
				return nil, perr(k, "invalid value", fmt.Errorf("%q is not on or off", v))
			}
		default:
			return nil, perr(k, "unknown pgha option (known: pgha_cluster, pgha_etcd, pgha_root, pgha_read_mode, pgha_read_balance, pgha_max_replica_lag, pgha_failover_timeout, pgha_probe_interval, pgha_probe_timeout, pgha_write_keepalive, pgha_write_tcp_user_timeout, pgha_switchover_drain, pgha_causal_wait, pgha_resolve_outcome)", nil)
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
