package election

import (
	"fmt"
	"log/slog"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
)

// Defaults used by [DefaultConfig] and for zero fields of [Config].
const (
	DefaultLeaseTTL = 5 * time.Second
)

// Config configures an [Elector]. The zero value of every field but Client
// and Prefix means "use the default"; [Config.Validate] rejects the rest.
type Config struct {
	// Client is the etcd client. Required. The Elector does not close it.
	Client *clientv3.Client

	// Prefix is the election's key prefix, e.g. "/pgha/main/leader". Each
	// candidate's key is Prefix + "/" + its lease ID in hex, the layout of
	// etcd's concurrency.Election. Required; a trailing "/" is ignored.
	Prefix string

	// LeaseTTL is the etcd lease TTL: how long after its last renewal a
	// leader that went silent keeps its key. Whole seconds, at least 1 s
	// (etcd grants TTLs in seconds). Default 5 s.
	LeaseTTL time.Duration

	// SafetyMargin is subtracted from the lease deadline to get
	// [Term.ValidUntil]. It covers the difference in clock rate between this
	// process and the etcd leader, and scheduling delays before a fence
	// takes effect. Default max(LeaseTTL/10, 100 ms). Must be below
	// LeaseTTL/2.
	SafetyMargin time.Duration

	// RenewInterval is how often a candidate or leader renews its lease.
	// Default LeaseTTL/5. Must leave room for two renewals before
	// ValidUntil: at most (LeaseTTL-SafetyMargin)/2.
	RenewInterval time.Duration

	// Logger receives the election's log lines. Nil means slog.Default().
	Logger *slog.Logger

	// TracerProvider and MeterProvider receive spans and metrics. Nil means
	// no-op.
	TracerProvider trace.TracerProvider
	MeterProvider  metric.MeterProvider
}

// DefaultConfig returns a Config with every default filled in. Set Client
// and Prefix before use.
func DefaultConfig() Config {
	c := Config{}
	c.setDefaults()
	return c
}

func (c *Config) setDefaults() {
	if c.LeaseTTL == 0 {
		c.LeaseTTL = DefaultLeaseTTL
	}
	if c.SafetyMargin == 0 {
		c.SafetyMargin = max(c.LeaseTTL/10, 100*time.Millisecond)
	}
	if c.RenewInterval == 0 {
		c.RenewInterval = c.LeaseTTL / 5
	}
}

// ConfigError reports an invalid [Config] field: its name, its value and
// what to do instead.
type ConfigError struct {
	Field  string
	Value  any
	Reason string
}

// Error returns "election: <field> <value> <reason>".
func (e *ConfigError) Error() string {
	return fmt.Sprintf("election: %s %v %s", e.Field, e.Value, e.Reason)
}

// Validate reports the first invalid field as a *[ConfigError], after
// filling in defaults for zero fields of a copy of c.
func (c Config) Validate() error {
	c.setDefaults()
	switch {
	case c.Client == nil:
		return &ConfigError{"Client", "<nil>", "is required: pass a *clientv3.Client connected to the etcd cluster"}
	case strings.TrimRight(c.Prefix, "/") == "":
		return &ConfigError{"Prefix", fmt.Sprintf("%q", c.Prefix), `is required: use a key prefix such as "/pgha/<cluster>/leader"`}
	case c.LeaseTTL < time.Second:
		return &ConfigError{"LeaseTTL", c.LeaseTTL, "must be at least 1s (etcd grants TTLs in whole seconds)"}
	case c.LeaseTTL%time.Second != 0:
		return &ConfigError{"LeaseTTL", c.LeaseTTL, "must be a whole number of seconds (etcd grants TTLs in whole seconds)"}
	case c.SafetyMargin < 0 || c.SafetyMargin >= c.LeaseTTL/2:
		return &ConfigError{"SafetyMargin", c.SafetyMargin, fmt.Sprintf("must be in [0, LeaseTTL/2 (%v))", c.LeaseTTL/2)}
	case c.RenewInterval <= 0 || c.RenewInterval > (c.LeaseTTL-c.SafetyMargin)/2:
		return &ConfigError{"RenewInterval", c.RenewInterval, fmt.Sprintf("must be in (0, (LeaseTTL-SafetyMargin)/2 (%v)] so that two renewals fit before ValidUntil", (c.LeaseTTL-c.SafetyMargin)/2)}
	}
	return nil
}
