package driver

import (
	"context"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
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
	c, err := p.acquireWrite(ctx, n)
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

// query runs sql on n's write pool as pgxpool.Pool.Query does: the rows
// hold the connection until they are closed or read to the end.
func (p *Pool) query(ctx context.Context, n *node, sql string, args []any) (pgx.Rows, error) {
	c, err := p.acquireWrite(ctx, n)
	if err != nil {
		return nil, err
	}
	rows, err := c.Query(ctx, sql, args...)
	if err != nil {
		c.Release()
		return nil, err
	}
	return &poolRows{r: rows, c: c}, nil
}

// poolRows are the rows of [Pool.Query]: pgxpool's, which release their
// connection when closed or read to the end.
type poolRows struct {
	r pgx.Rows
	c *pgxpool.Conn
}

func (rows *poolRows) Close() {
	rows.r.Close()
	if rows.c != nil {
		rows.c.Release()
		rows.c = nil
	}
}

func (rows *poolRows) Err() error                    { return rows.r.Err() }
func (rows *poolRows) CommandTag() pgconn.CommandTag { return rows.r.CommandTag() }
func (rows *poolRows) FieldDescriptions() []pgconn.FieldDescription {
	return rows.r.FieldDescriptions()
}
func (rows *poolRows) RawValues() [][]byte  { return rows.r.RawValues() }
func (rows *poolRows) Conn() *pgx.Conn      { return rows.r.Conn() }
func (rows *poolRows) TypeMap() *pgtype.Map { return rows.r.TypeMap() }

func (rows *poolRows) Next() bool {
	n := rows.r.Next()
	if !n {
		rows.Close()
	}
	return n
}

func (rows *poolRows) Scan(dest ...any) error {
	err := rows.r.Scan(dest...)
	if err != nil {
		rows.Close()
	}
	return err
}

func (rows *poolRows) Values() ([]any, error) {
	values, err := rows.r.Values()
	if err != nil {
		rows.Close()
	}
	return values, err
}
