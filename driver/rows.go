package driver

import (
	"context"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
)

// poolRow is the pgx.Row of [Pool.QueryRow]. It runs its query when
// scanned, so that a failure before the query was sent can be retried on
// the new primary.
type poolRow struct {
	p    *Pool
	ctx  context.Context
	sql  string
	args []any
}

func (r *poolRow) Scan(dest ...any) error {
	var rep error
	err := r.p.run(r.ctx, "query row", retryIfUnapplied, func(n *node) (err error) {
		rep, err = r.p.queryRow(r.ctx, n, r.sql, r.args, dest)
		return err
	})
	if err != nil {
		return err
	}
	return rep
}

// queryRow runs sql and scans its row on n's write pool, as
// pgxpool.Pool.QueryRow does; rep as for [Pool.exec].
func (p *Pool) queryRow(ctx context.Context, n *node, sql string, args, dest []any) (rep, err error) {
	c, err := n.wp.Load().Acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer c.Release()
	pc := c.Conn().PgConn()
	clearSyncWait(pc)
	err = c.QueryRow(ctx, sql, args...).Scan(dest...)
	if err == nil {
		rep = takeSyncWait(pc, "query row", n.key)
	}
	return rep, err
}

// errRows is the pgx.Rows of a failed Query, as pgxpool returns.
type errRows struct{ err error }

func (errRows) Close()                                       {}
func (e errRows) Err() error                                 { return e.err }
func (errRows) CommandTag() pgconn.CommandTag                { return pgconn.CommandTag{} }
func (errRows) FieldDescriptions() []pgconn.FieldDescription { return nil }
func (errRows) Next() bool                                   { return false }
func (e errRows) Scan(dest ...any) error                     { return e.err }
func (e errRows) Values() ([]any, error)                     { return nil, e.err }
func (e errRows) RawValues() [][]byte                        { return nil }
func (e errRows) Conn() *pgx.Conn                            { return nil }
func (e errRows) TypeMap() *pgtype.Map                       { return nil }
