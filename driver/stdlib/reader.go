package stdlib

import (
	"context"
	"database/sql"
	sqldriver "database/sql/driver"
	"errors"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgha/pgha/driver"
)

// OpenDBFromReader returns a *sql.DB whose statements are routed by r, a
// pool's [driver.Reader] ([driver.Pool.Reader]): to replicas, or the
// primary, by the pool's ReadMode. Each statement outside a transaction
// is routed on its own (a causal token in its context is honoured); a
// transaction stays on one node and is read-only whatever its options.
// Its connections hold no server session: see the package documentation.
// Do not write through it. Closing the *sql.DB does not close the pool.
func OpenDBFromReader(r *driver.Reader, opts ...OptionOpenDB) *sql.DB {
	return sql.OpenDB(&readConnector{r: r})
}

type readConnector struct{ r *driver.Reader }

func (c *readConnector) Connect(context.Context) (sqldriver.Conn, error) {
	return &readConn{r: c.r}, nil
}

func (c *readConnector) Driver() sqldriver.Driver { return sqlDriver{} }

// readConn is a connection of OpenDBFromReader: no session of its own;
// each statement goes through the Reader, or through the transaction in
// progress.
type readConn struct {
	r  *driver.Reader
	tx pgx.Tx
}

// queryer is what a readConn runs statements on: the Reader or a Tx.
type queryer interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

func (c *readConn) on() queryer {
	if c.tx != nil {
		return c.tx
	}
	return c.r
}

func (c *readConn) Prepare(query string) (sqldriver.Stmt, error) {
	return c.PrepareContext(context.Background(), query)
}

// PrepareContext returns a statement that runs query as a new statement
// each time (pgx caches its server-side preparation per connection).
func (c *readConn) PrepareContext(_ context.Context, query string) (sqldriver.Stmt, error) {
	return &readStmt{c: c, sql: query}, nil
}

func (c *readConn) Close() error {
	if c.tx != nil {
		c.tx.Rollback(context.Background())
		c.tx = nil
	}
	return nil
}

func (c *readConn) Begin() (sqldriver.Tx, error) {
	return c.BeginTx(context.Background(), sqldriver.TxOptions{})
}

// BeginTx begins a read-only transaction on one node, at the isolation
// level asked for.
func (c *readConn) BeginTx(ctx context.Context, opts sqldriver.TxOptions) (sqldriver.Tx, error) {
	o, err := txOptions(opts)
	if err != nil {
		return nil, err
	}
	t, err := c.r.Begin(ctx)
	if err != nil {
		return nil, err
	}
	if o.IsoLevel != "" {
		if _, err := t.Exec(ctx, "set transaction isolation level "+string(o.IsoLevel)); err != nil {
			t.Rollback(ctx)
			return nil, err
		}
	}
	c.tx = t
	return &readTx{c: c, ctx: ctx}, nil
}

// ExecContext runs query as a read and returns its command tag's row
// count.
func (c *readConn) ExecContext(ctx context.Context, query string, argsV []sqldriver.NamedValue) (sqldriver.Result, error) {
	var tag pgconn.CommandTag
	var err error
	if c.tx != nil {
		tag, err = c.tx.Exec(ctx, query, namedArgs(nil, argsV)...)
	} else {
		var rows pgx.Rows
		if rows, err = c.r.Query(ctx, query, namedArgs(nil, argsV)...); err == nil {
			rows.Close()
			tag, err = rows.CommandTag(), rows.Err()
		}
	}
	if err != nil {
		return nil, err
	}
	return sqldriver.RowsAffected(tag.RowsAffected()), nil
}

// QueryContext runs query through the Reader (or the transaction).
func (c *readConn) QueryContext(ctx context.Context, query string, argsV []sqldriver.NamedValue) (sqldriver.Rows, error) {
	rows, err := c.on().Query(ctx, query, namedArgs([]any{resultFormats}, argsV)...)
	if err != nil {
		return nil, err
	}
	return newRows(rows)
}

// Ping runs an empty query through the Reader.
func (c *readConn) Ping(ctx context.Context) error {
	rows, err := c.on().Query(ctx, "select")
	if err != nil {
		return err
	}
	rows.Close()
	return rows.Err()
}

func (c *readConn) CheckNamedValue(*sqldriver.NamedValue) error { return nil }

type readTx struct {
	c   *readConn
	ctx context.Context
}

func (t *readTx) Commit() error {
	tx := t.c.tx
	if tx == nil {
		return errors.New("stdlib: transaction already ended")
	}
	t.c.tx = nil
	return tx.Commit(t.ctx)
}

func (t *readTx) Rollback() error {
	tx := t.c.tx
	if tx == nil {
		return errors.New("stdlib: transaction already ended")
	}
	t.c.tx = nil
	return tx.Rollback(t.ctx)
}

// readStmt is a statement of a readConn: its text, run anew each time.
type readStmt struct {
	c   *readConn
	sql string
}

func (s *readStmt) Close() error  { return nil }
func (s *readStmt) NumInput() int { return -1 }

func (s *readStmt) Exec([]sqldriver.Value) (sqldriver.Result, error) {
	return nil, errors.New("Stmt.Exec deprecated and not implemented")
}

func (s *readStmt) Query([]sqldriver.Value) (sqldriver.Rows, error) {
	return nil, errors.New("Stmt.Query deprecated and not implemented")
}

func (s *readStmt) ExecContext(ctx context.Context, argsV []sqldriver.NamedValue) (sqldriver.Result, error) {
	return s.c.ExecContext(ctx, s.sql, argsV)
}

func (s *readStmt) QueryContext(ctx context.Context, argsV []sqldriver.NamedValue) (sqldriver.Rows, error) {
	return s.c.QueryContext(ctx, s.sql, argsV)
}

var (
	_ sqldriver.ConnBeginTx        = (*readConn)(nil)
	_ sqldriver.ExecerContext      = (*readConn)(nil)
	_ sqldriver.QueryerContext     = (*readConn)(nil)
	_ sqldriver.ConnPrepareContext = (*readConn)(nil)
	_ sqldriver.Pinger             = (*readConn)(nil)
	_ sqldriver.NamedValueChecker  = (*readConn)(nil)
)
