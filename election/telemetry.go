package election

import (
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
)

const instrumentationName = "github.com/pgha/pgha/election"

type telemetry struct {
	tracer      trace.Tracer
	transitions metric.Int64Counter
	acquire     metric.Float64Histogram
	renewal     metric.Float64Histogram
}

func newTelemetry(tp trace.TracerProvider, mp metric.MeterProvider) (*telemetry, error) {
	if tp == nil {
		tp = tracenoop.NewTracerProvider()
	}
	if mp == nil {
		mp = metricnoop.NewMeterProvider()
	}
	m := mp.Meter(instrumentationName)
	tel := &telemetry{tracer: tp.Tracer(instrumentationName)}
	var err error
	if tel.transitions, err = m.Int64Counter("pgha.election.transitions",
		metric.WithDescription("Leadership transitions of this process by event: won, lost, resigned.")); err != nil {
		return nil, err
	}
	if tel.acquire, err = m.Float64Histogram("pgha.election.acquire.duration",
		metric.WithUnit("s"),
		metric.WithDescription("Time from the start of a campaign to winning it.")); err != nil {
		return nil, err
	}
	if tel.renewal, err = m.Float64Histogram("pgha.election.renewal.duration",
		metric.WithUnit("s"),
		metric.WithDescription("Round trip of each successful lease renewal (send to answer); over a tenth of the TTL makes a false fence likely.")); err != nil {
		return nil, err
	}
	return tel, nil
}

func eventAttr(ev string) metric.MeasurementOption {
	return metric.WithAttributes(attribute.String("event", ev))
}
