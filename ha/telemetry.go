package ha

import (
	"context"
	"sync/atomic"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
)

const instrumentationName = "github.com/pgha/pgha/ha"

// telemetry holds the manager's instruments; all are no-op without
// providers.
type telemetry struct {
	tracer     trace.Tracer
	promotions metric.Int64Counter
	fences     metric.Int64Counter
	// failsafeRounds counts promise rounds that kept this leader.
	failsafeRounds metric.Int64Counter
	loop           metric.Float64Histogram
	// memberWrites counts writes of this node's member record.
	memberWrites metric.Int64Counter
	// role and lag are read by observable gauges.
	role atomic.Value // Role
	lag  atomic.Int64
	reg  metric.Registration
}

var roleValues = map[Role]int64{
	RoleStarting: 0, RoleReplica: 1, RolePrimary: 2,
	RoleFenced: 3, RoleStopped: 4,
}

func newTelemetry(tp trace.TracerProvider, mp metric.MeterProvider, node string) (*telemetry, error) {
	if tp == nil {
		tp = tracenoop.NewTracerProvider()
	}
	if mp == nil {
		mp = metricnoop.NewMeterProvider()
	}
	m := mp.Meter(instrumentationName)
	tel := &telemetry{tracer: tp.Tracer(instrumentationName)}
	tel.role.Store(RoleStarting)
	tel.lag.Store(-1)
	var err error
	if tel.promotions, err = m.Int64Counter("pgha.ha.promotions", metric.WithDescription("Promotions of this node to primary (failovers and switchovers).")); err != nil {
		return nil, err
	}
	if tel.fences, err = m.Int64Counter("pgha.ha.fences", metric.WithDescription("Times this node fenced its PostgreSQL.")); err != nil {
		return nil, err
	}
	if tel.failsafeRounds, err = m.Int64Counter("pgha.ha.failsafe.rounds", metric.WithDescription("Failsafe promise rounds that kept this leader writable while its lease could not be renewed (etcd unreachable).")); err != nil {
		return nil, err
	}
	if tel.memberWrites, err = m.Int64Counter("pgha.ha.member.writes", metric.WithDescription("Writes of this node's member record to etcd (on a change that matters to other nodes or pools, else one per heartbeat).")); err != nil {
		return nil, err
	}
	if tel.loop, err = m.Float64Histogram("pgha.ha.loop.duration", metric.WithUnit("s"), metric.WithDescription("Duration of one observe-decide-act round.")); err != nil {
		return nil, err
	}
	role, err := m.Int64ObservableGauge("pgha.ha.role", metric.WithDescription("Role of this node: 0 starting, 1 replica, 2 primary, 3 fenced, 4 stopped."))
	if err != nil {
		return nil, err
	}
	lag, err := m.Int64ObservableGauge("pgha.ha.replica.lag", metric.WithUnit("By"), metric.WithDescription("Replay lag of this standby behind the leader's last published position; -1 when unknown."))
	if err != nil {
		return nil, err
	}
	attrs := metric.WithAttributes(attribute.String("pgha.node", node))
	tel.reg, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		o.ObserveInt64(role, roleValues[tel.role.Load().(Role)], attrs)
		o.ObserveInt64(lag, tel.lag.Load(), attrs)
		return nil
	}, role, lag)
	if err != nil {
		return nil, err
	}
	return tel, nil
}

// span starts a span for a role change; end it with endSpan.
func (m *Manager) span(ctx context.Context, name string, o observation) (context.Context, trace.Span) {
	return m.tel.tracer.Start(ctx, "ha."+name, trace.WithAttributes(
		attribute.String("pgha.cluster", m.cfg.Cluster),
		attribute.String("pgha.node", m.cfg.Node),
		attribute.Int64("pgha.timeline", int64(o.Local.Timeline)),
	))
}

func endSpan(s trace.Span, err error) {
	if err != nil {
		s.RecordError(err)
		s.SetStatus(codes.Error, err.Error())
	}
	s.End()
}
