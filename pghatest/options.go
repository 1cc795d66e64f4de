package pghatest

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/pgha/pgha/ha"
)

// Defaults for zero fields of [Options]. The lease TTL and loop interval are
// shorter than ha's production defaults so that a failover in a test takes
// about two seconds, not five.
const (
	DefaultNodes        = 3
	DefaultCluster      = "pghatest"
	DefaultLeaseTTL     = 2 * time.Second
	DefaultLoopInterval = 200 * time.Millisecond
	DefaultStartTimeout = 2 * time.Minute
	// MaxNodes is the largest cluster [Start] brings up: each node is a
	// PostgreSQL server and a manager on the test machine.
	MaxNodes = 9
)

// Options configure [Start]. The zero value is a three-node asynchronous
// cluster named "pghatest" with a 2 s lease.
type Options struct {
	// Nodes is the number of PostgreSQL nodes, each with its own
	// ha.Manager. Default 3; 1 to MaxNodes. The nodes are named n1, n2, ...
	Nodes int
	// Sync runs the cluster in synchronous mode (ha.SyncOn): a commit is
	// acknowledged only once a standby has it, and only that standby may
	// be promoted automatically, so a failover loses no acknowledged
	// commit. Needs Nodes >= 2. Default false (asynchronous: a failover
	// may lose up to ha.DefaultMaxLagOnFailover bytes of recent commits).
	Sync bool
	// LeaseTTL is the leader lease TTL: a dead primary is replaced within
	// about LeaseTTL + LoopInterval. Whole seconds, at least 2 s. Default
	// 2 s.
	LeaseTTL time.Duration
	// LoopInterval is how often each manager observes and acts. Default
	// 200 ms; must be below LeaseTTL/2.
	LoopInterval time.Duration
	// Cluster is the cluster name in etcd and in the DSN's pgha_cluster
	// key. Default "pghatest"; 1-63 letters, digits, '_', '.', '-'.
	Cluster string
	// Parameters are PostgreSQL settings for every node (for example
	// "max_connections": "200"). Default none.
	Parameters map[string]string
	// StartTimeout bounds how long [Start] waits for a writable primary
	// and every standby streaming. Default 2 min; must be positive when
	// set.
	StartTimeout time.Duration
	// Logger receives the managers' log lines. Nil means the test's own
	// output (t.Output(), shown when the test fails or with -v), at
	// level Info.
	Logger *slog.Logger
}

// OptionsError is an invalid [Options] field: [Options.Validate] returns
// it and [Start] fails the test with it.
type OptionsError struct {
	Field  string // the Options field, e.g. "Nodes"
	Value  any    // the value given
	Reason string // what is wrong and how to fix it
}

// Error returns "pghatest: Options.Field value reason".
func (e *OptionsError) Error() string {
	return fmt.Sprintf("pghatest: Options.%s %v %s", e.Field, e.Value, e.Reason)
}

// withDefaults returns o with zero fields set to their defaults.
func (o Options) withDefaults() Options {
	if o.Nodes == 0 {
		o.Nodes = DefaultNodes
	}
	if o.Cluster == "" {
		o.Cluster = DefaultCluster
	}
	if o.LeaseTTL == 0 {
		o.LeaseTTL = DefaultLeaseTTL
	}
	if o.LoopInterval == 0 {
		o.LoopInterval = DefaultLoopInterval
	}
	if o.StartTimeout == 0 {
		o.StartTimeout = DefaultStartTimeout
	}
	return o
}

// Validate reports the first invalid field of o (after defaults) as an
// *[OptionsError] naming the field, the value and the fix; nil when o is
// usable.
func (o Options) Validate() error {
	o = o.withDefaults()
	switch {
	case o.Nodes < 1 || o.Nodes > MaxNodes:
		return &OptionsError{"Nodes", o.Nodes, fmt.Sprintf("must be between 1 and %d (0 means %d)", MaxNodes, DefaultNodes)}
	case o.Sync && o.Nodes < 2:
		return &OptionsError{"Sync", o.Sync, fmt.Sprintf("needs a standby to confirm commits: set Nodes to 2 or more (it is %d)", o.Nodes)}
	case o.LeaseTTL < 2*time.Second || o.LeaseTTL%time.Second != 0:
		return &OptionsError{"LeaseTTL", o.LeaseTTL, "must be whole seconds, at least 2s (etcd leases have a one-second resolution)"}
	case o.LoopInterval < 0 || o.LoopInterval >= o.LeaseTTL/2:
		return &OptionsError{"LoopInterval", o.LoopInterval, fmt.Sprintf("must be positive and below LeaseTTL/2 (%v)", o.LeaseTTL/2)}
	case o.StartTimeout < 0:
		return &OptionsError{"StartTimeout", o.StartTimeout, "must be positive (0 means 2m)"}
	}
	if err := ha.ValidName(o.Cluster); err != nil {
		return &OptionsError{"Cluster", fmt.Sprintf("%q", o.Cluster), "is not a valid cluster name: " + err.Error()}
	}
	return nil
}
