package driver

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgha/pgha/internal/lsn"
	"go.opentelemetry.io/otel/baggage"
)

// Reader sends reads by [Config.ReadMode]: to the primary, to replicas
// within [Config.MaxReplicaLag] (balanced by [Config.ReadBalance]), or to a
// replica when there is one and the primary otherwise. A context carrying a
// token from [WithCausalToken] is served by a replica only if it has
// replayed past the token, and by the primary otherwise. Get it with
// [Pool.Reader]. It is safe for concurrent use.
//
// Reads on a replica may not see the latest writes: use a causal token
// where that matters. Do not write through a Reader; replicas reject writes.
type Reader struct {
	p *Pool
}

// Reader returns the pool's read router.
func (p *Pool) Reader() *Reader { return &p.reader }

// CausalToken is a WAL position of the primary. Reads with a context from
// [WithCausalToken] see every transaction committed before the token was
// taken. The zero token imposes nothing.
type CausalToken struct{ lsn uint64 }

// String returns the token in PostgreSQL's pg_lsn form, e.g. "0/16B3748",
// to pass it between processes. [ParseCausalToken] reads it back.
func (t CausalToken) String() string { return lsn.Format(t.lsn) }

// IsZero reports whether t is the zero token.
func (t CausalToken) IsZero() bool { return t.lsn == 0 }

// ParseCausalToken parses the form [CausalToken.String] returns.
func ParseCausalToken(s string) (CausalToken, error) {
	l, err := lsn.Parse(s)
	if err != nil {
		return CausalToken{}, fmt.Errorf("driver: causal token %q is not a WAL position like 0/16B3748", s)
	}
	return CausalToken{l}, nil
}

type causalKey struct{}

// BaggageKey is the OpenTelemetry baggage member that carries a causal
// token between services: [ContextWithCausalToken] sets it, and
// [CausalTokenFromContext] reads it when the context has no token of its
// own, so a token crosses any service that propagates baggage (the W3C
// baggage header) without code of its own.
const BaggageKey = "pgha.causal_token"

// WithCausalToken returns a context whose reads through [Reader] see at
// least the writes committed before tok was taken. It is
// [ContextWithCausalToken].
func WithCausalToken(ctx context.Context, tok CausalToken) context.Context {
	return ContextWithCausalToken(ctx, tok)
}

// ContextWithCausalToken returns a context whose reads through [Reader]
// see at least the writes committed before tok was taken. The token also
// goes into the context's OpenTelemetry baggage ([BaggageKey]), so that an
// outgoing request propagating baggage carries it to the next service.
// The zero token imposes nothing and is not added.
func ContextWithCausalToken(ctx context.Context, tok CausalToken) context.Context {
	ctx = context.WithValue(ctx, causalKey{}, tok)
	if tok.IsZero() {
		return ctx
	}
	m, err := baggage.NewMemberRaw(BaggageKey, tok.String())
	if err != nil {
		return ctx
	}
	b, err := baggage.FromContext(ctx).SetMember(m)
	if err != nil {
		return ctx // a full or invalid baggage: the context value still carries it
	}
	return baggage.ContextWithBaggage(ctx, b)
}

// CausalTokenFromContext returns the causal token of ctx: the one given to
// [ContextWithCausalToken], or else the one in its OpenTelemetry baggage
// ([BaggageKey]); ok is false when there is none (or the baggage's does
// not parse).
func CausalTokenFromContext(ctx context.Context) (tok CausalToken, ok bool) {
	if t, ok := ctx.Value(causalKey{}).(CausalToken); ok {
		return t, !t.IsZero()
	}
	v := baggage.FromContext(ctx).Member(BaggageKey).Value()
	if v == "" {
		return CausalToken{}, false
	}
	t, err := ParseCausalToken(v)
	return t, err == nil && !t.IsZero()
}

func causalFrom(ctx context.Context) uint64 {
	t, _ := CausalTokenFromContext(ctx)
	return t.lsn
}

// CausalToken returns the primary's current WAL position
// (pg_current_wal_lsn()): call it after your writes committed and pass it to
// [WithCausalToken] for the reads that must see them.
func (p *Pool) CausalToken(ctx context.Context) (CausalToken, error) {
	var lsn int64
	err := p.QueryRow(ctx, "select (pg_current_wal_lsn() - '0/0'::pg_lsn)::int8").Scan(&lsn)
	if err != nil {
		return CausalToken{}, err
	}
	return CausalToken{uint64(lsn)}, nil
}

// eligible reports whether replica n may serve a read now, lag-wise.
func (p *Pool) eligible(n *node) bool {
	if p.cfg.MaxReplicaLag < 0 {
		return true
	}
	lag := n.lag.Load()
	return lag >= 0 && lag <= p.cfg.MaxReplicaLag
}

// pick returns the node for a read and its pool; primary says whether it is
// the primary. skip is a replica to avoid (it just failed).
func (r *Reader) pick(ctx context.Context, skip *node) (n *node, pool *pgxpool.Pool, primary bool, err error) {
	p := r.p
	if p.cfg.ReadMode != ReadPrimary {
		if n := r.pickReplica(ctx, skip); n != nil {
			if pool := p.readPool(n); pool != nil {
				return n, pool, false, nil
			}
		}
		if p.cfg.ReadMode == ReadReplicas && causalFrom(ctx) == 0 {
			return nil, nil, false, ErrNoReplica
		}
	}
	n, err = p.writer(ctx, time.Now().Add(p.cfg.FailoverTimeout))
	if err != nil {
		return nil, nil, false, err
	}
	return n, n.wp.Load(), true, nil
}

func (r *Reader) pickReplica(ctx context.Context, skip *node) *node {
	p := r.p
	rp := p.replicas.Load()
	if rp == nil || len(*rp) == 0 {
		return nil
	}
	reps := *rp
	tok := causalFrom(ctx)
	if p.cfg.ReadBalance == LeastBusy {
		var best *node
		var bestBusy int32
		for _, n := range reps {
			if n == skip || !p.eligible(n) || (tok != 0 && n.replay.Load() < tok) {
				continue
			}
			busy := int32(0)
			if pool := n.rp.Load(); pool != nil {
				busy = pool.Stat().AcquiredConns()
			}
			if best == nil || busy < bestBusy {
				best, bestBusy = n, busy
			}
		}
		if best != nil || tok == 0 {
			return best
		}
	} else {
		start := int(p.rr.Add(1))
		for i := range reps {
			n := reps[(start+i)%len(reps)]
			if n == skip || !p.eligible(n) {
				continue
			}
			if tok == 0 || n.replay.Load() >= tok {
				return n
			}
		}
		if tok == 0 {
			return nil
		}
	}
	// With a causal token no replica is known to have replayed far enough:
	// ask each eligible one, again every causalPoll for up to CausalWait,
	// then leave the read to the primary.
	start := time.Now()
	defer func() { p.tel.causalWaited(ctx, time.Since(start)) }()
	for {
		asked := false
		for _, n := range reps {
			if n == skip || !p.eligible(n) {
				continue
			}
			pool := p.readPool(n)
			if pool == nil {
				continue
			}
			var lsn int64
			err := pool.QueryRow(ctx, "select coalesce((pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::int8, 0)",
				pgx.QueryExecModeSimpleProtocol).Scan(&lsn)
			if err != nil {
				continue
			}
			asked = true
			n.noteReplay(uint64(lsn))
			if uint64(lsn) >= tok {
				return n
			}
		}
		left := p.cfg.CausalWait - time.Since(start)
		if !asked || left <= 0 {
			return nil
		}
		t := time.NewTimer(min(causalPoll, left))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// causalPoll is how often a read with a causal token asks the replicas
// their replay position while it waits for one (Config.CausalWait).
const causalPoll = 5 * time.Millisecond

// readFailed reports whether a read that failed with err on n should be
// tried once more elsewhere.
func (r *Reader) readFailed(ctx context.Context, n *node, primary bool, err error) bool {
	switch classify(ctx, err) {
	case classUnsent, classConn:
		if primary {
			r.p.connFailed(n, err)
		} else {
			r.p.kickProber()
		}
		return true
	case classReadOnly:
		return false
	}
	return false
}

// Query runs a read. A read that fails on a connection error is tried once
// more, on another replica or the primary.
func (r *Reader) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	n, pool, primary, err := r.pick(ctx, nil)
	if err != nil {
		return errRows{err}, err
	}
	r.p.tel.routed(n, primary)
	rows, err := pool.Query(ctx, sql, args...)
	if err == nil || !r.readFailed(ctx, n, primary, err) {
		return rows, err
	}
	if n, pool, primary, err = r.pick(ctx, n); err != nil {
		return errRows{err}, err
	}
	r.p.tel.routed(n, primary)
	return pool.Query(ctx, sql, args...)
}

// QueryRow runs a read expected to return at most one row; errors are
// deferred to Scan, which retries as [Reader.Query] does.
func (r *Reader) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	return &readerRow{r: r, ctx: ctx, sql: sql, args: args}
}

type readerRow struct {
	r    *Reader
	ctx  context.Context
	sql  string
	args []any
}

func (rr *readerRow) Scan(dest ...any) error {
	r, ctx := rr.r, rr.ctx
	n, pool, primary, err := r.pick(ctx, nil)
	if err != nil {
		return err
	}
	r.p.tel.routed(n, primary)
	err = pool.QueryRow(ctx, rr.sql, rr.args...).Scan(dest...)
	if err == nil || errors.Is(err, pgx.ErrNoRows) || !r.readFailed(ctx, n, primary, err) {
		return err
	}
	if n, pool, primary, err = r.pick(ctx, n); err != nil {
		return err
	}
	r.p.tel.routed(n, primary)
	return pool.QueryRow(ctx, rr.sql, rr.args...).Scan(dest...)
}

// SendBatch sends a batch of reads to one node.
func (r *Reader) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	n, pool, primary, err := r.pick(ctx, nil)
	if err != nil {
		return pgx.FailedBatchResults(b, err)
	}
	r.p.tel.routed(n, primary)
	return pool.SendBatch(ctx, b)
}

// Begin starts a read-only transaction on one node.
func (r *Reader) Begin(ctx context.Context) (pgx.Tx, error) {
	n, pool, primary, err := r.pick(ctx, nil)
	if err != nil {
		return nil, err
	}
	r.p.tel.routed(n, primary)
	opts := pgx.TxOptions{AccessMode: pgx.ReadOnly}
	t, err := pool.BeginTx(ctx, opts)
	if err != nil {
		if !r.readFailed(ctx, n, primary, err) {
			return nil, err
		}
		if n, pool, primary, err = r.pick(ctx, n); err != nil {
			return nil, err
		}
		r.p.tel.routed(n, primary)
		if t, err = pool.BeginTx(ctx, opts); err != nil {
			return nil, err
		}
	}
	return &tx{p: r.p, n: n, t: t}, nil
}
