package driver

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgha/pgha/driver/internal/connhook"
)

// This file answers driver/stdlib (through driver/internal/connhook)
// about the connections it acquires: database/sql keeps a connection
// across calls and must be told when its node stopped being the primary,
// and its errors must be mapped as the pool's own methods map theirs.

// connRefKey holds, in a write connection's CustomData, its connRef. It
// is set when the connection is opened (AfterConnect), before any other
// goroutine can see the connection.
const connRefKey = "pgha.conn"

// connRef is the node and write term a write connection belongs to.
type connRef struct {
	p *Pool
	n *node
	t *writeTerm
}

func refOf(c *pgx.Conn) *connRef {
	if c == nil {
		return nil
	}
	r, _ := c.PgConn().CustomData()[connRefKey].(*connRef)
	return r
}

// errDeposedConn: a connection kept across calls belongs to a node that
// stopped being the primary.
var errDeposedConn = errors.New("connection to a node that stopped being the primary")

func init() {
	connhook.Check = checkConn
	connhook.Before = func(c *pgx.Conn) { clearSyncWait(c.PgConn()) }
	connhook.After = afterConn
	connhook.Acquire = acquireHook
	connhook.Read = readHook
}

// readHook runs f as Reader.Query runs a query: on the pool of the node
// picked for ctx, once more elsewhere after a connection error.
func readHook(ctx context.Context, reader any, f func(context.Context, *pgxpool.Pool) error) error {
	r := reader.(*Reader)
	n, pool, primary, err := r.pick(ctx, nil)
	if err != nil {
		return err
	}
	r.p.tel.routed(n, primary)
	err = f(ctx, pool)
	if err == nil || !r.readFailed(ctx, n, primary, err) {
		return err
	}
	if n, pool, primary, err = r.pick(ctx, n); err != nil {
		return err
	}
	r.p.tel.routed(n, primary)
	return f(ctx, pool)
}

// acquireHook acquires as Pool.Acquire does (the funnel: wait for a
// primary, retry on the new one if its node is deposed meanwhile), with
// the acquisition itself done by acquire on the primary's write pool.
func acquireHook(ctx context.Context, pool any, acquire func(context.Context, *pgxpool.Pool) error) error {
	p := pool.(*Pool)
	return p.run(ctx, "acquire", retryAlways, func(n *node) error {
		return p.acquireWriteWith(ctx, n, acquire)
	})
}

func checkConn(c *pgx.Conn) error {
	r := refOf(c)
	if r == nil {
		return nil
	}
	if r.t.ctx.Err() != nil || r.p.primary.Load() != r.n {
		return &Error{Kind: ErrFailover, Op: "session", Node: r.n.key, Err: errDeposedConn}
	}
	return nil
}

func afterConn(ctx context.Context, c *pgx.Conn, op string, st connhook.Stage, err error) (error, bool) {
	r := refOf(c)
	if r == nil {
		return err, false
	}
	if err == nil {
		if st == connhook.Statement || st == connhook.Commit {
			if rep := takeSyncWait(c.PgConn(), op, r.n.key); rep != nil {
				return rep, false
			}
		}
		return nil, false
	}
	class := classify(ctx, err)
	switch class {
	case classReadOnly:
		r.p.markReadOnly(r.n, err)
	case classConn:
		r.p.connFailed(r.n, err)
	case classUnsent:
		if st == connhook.InTx && !c.IsClosed() {
			return err, false // e.g. a busy connection: not a failover
		}
		if !errors.Is(err, errNotPrimary) {
			r.p.connFailed(r.n, err)
		}
	default:
		return err, false
	}
	e := &Error{Kind: ErrFailover, Op: op, Node: r.n.key, Err: err}
	switch st {
	case connhook.Statement:
		if class == classConn {
			e.Kind = ErrOutcomeUnknown
			return e, isIdempotent(ctx)
		}
		return e, true
	case connhook.NoEffect:
		return e, true
	case connhook.Commit:
		if class == classConn {
			e.Kind = ErrOutcomeUnknown
		}
	}
	return e, false
}
