package driver

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/exaring/otelpgx"
	"github.com/jackc/pgx/v5"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
)

// scope is the instrumentation scope: the import path.
const scope = "github.com/pgha/pgha/driver"

// newQueryTracer returns the pgx tracer for TracerProvider: otelpgx, which
// makes one span per query, batch and copy (with the server's address).
func newQueryTracer(tp trace.TracerProvider) pgx.QueryTracer {
	return otelpgx.NewTracer(otelpgx.WithTracerProvider(tp), otelpgx.WithTrimSQLInSpanName())
}

// telemetry holds the pool's metrics. With no MeterProvider every method is
// a cheap no-op: the query path pays one predictable branch.
type telemetry struct {
	on          bool
	failovers   metric.Int64Counter
	wait        metric.Float64Histogram
	causalWait  metric.Float64Histogram
	reg         metric.Registration
	everPrimary atomic.Bool
	lastPrimary string // guarded by Pool.mu
}

func newTelemetry(p *Pool, cfg *Config) (*telemetry, error) {
	t := &telemetry{}
	if cfg.MeterProvider == nil {
		return t, nil
	}
	m := cfg.MeterProvider.Meter(scope)
	var err error
	if t.failovers, err = m.Int64Counter("pgha.driver.failovers",
		metric.WithDescription("Changes of the primary the pool writes to, to a different node.")); err != nil {
		return nil, err
	}
	if t.wait, err = m.Float64Histogram("pgha.driver.primary_wait.duration", metric.WithUnit("s"),
		metric.WithDescription("Time operations spent waiting for a writable primary.")); err != nil {
		return nil, err
	}
	if t.causalWait, err = m.Float64Histogram("pgha.driver.causal_wait.duration", metric.WithUnit("s"),
		metric.WithDescription("Time reads with a causal token spent waiting for a replica to replay past it (Config.CausalWait); they then go to the replica, or to the primary when none caught up.")); err != nil {
		return nil, err
	}
	ops, err := m.Int64ObservableCounter("pgha.driver.operations",
		metric.WithDescription("Operations routed, by node and by the node's role when routed."))
	if err != nil {
		return nil, err
	}
	lag, err := m.Int64ObservableGauge("pgha.driver.replica.lag", metric.WithUnit("By"),
		metric.WithDescription("Replay lag of each replica, in bytes of WAL, as last seen by the pool."))
	if err != nil {
		return nil, err
	}
	t.reg, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		p.mu.Lock()
		nodes := p.allNodesLocked()
		p.mu.Unlock()
		for _, n := range nodes {
			node := attribute.String("pgha.node", n.key)
			if v := n.routedPrimary.Load(); v > 0 {
				o.ObserveInt64(ops, v, metric.WithAttributes(node, attribute.String("pgha.role", "primary")))
			}
			if v := n.routedReplica.Load(); v > 0 {
				o.ObserveInt64(ops, v, metric.WithAttributes(node, attribute.String("pgha.role", "replica")))
			}
			if l := n.lag.Load(); l >= 0 {
				o.ObserveInt64(lag, l, metric.WithAttributes(node))
			}
		}
		return nil
	}, ops, lag)
	if err != nil {
		return nil, err
	}
	t.on = true
	return t, nil
}

func (t *telemetry) routed(n *node, primary bool) {
	if !t.on {
		return
	}
	if primary {
		n.routedPrimary.Add(1)
	} else {
		n.routedReplica.Add(1)
	}
}

func (t *telemetry) failover(ctx context.Context, to string) {
	if t.on {
		t.failovers.Add(ctx, 1, metric.WithAttributes(attribute.String("pgha.node", to)))
	}
}

func (t *telemetry) waited(ctx context.Context, d time.Duration) {
	if t.on {
		t.wait.Record(ctx, d.Seconds())
	}
}

func (t *telemetry) causalWaited(ctx context.Context, d time.Duration) {
	if t.on {
		t.causalWait.Record(ctx, d.Seconds())
	}
}

func (t *telemetry) close() {
	if t.reg != nil {
		t.reg.Unregister()
	}
}
