package stdlib

import (
	"context"
	"database/sql"
	sqldriver "database/sql/driver"
	"errors"

	"github.com/jackc/pgx/v5/pgxpool"
	pgxstdlib "github.com/jackc/pgx/v5/stdlib"

	"github.com/pgha/pgha/driver"
	"github.com/pgha/pgha/driver/internal/connhook"
)

// OpenDBFromReader returns a *sql.DB whose statements are routed by r, a
// pool's [driver.Reader] ([driver.Pool.Reader]): to replicas, or the
// primary, by the pool's ReadMode. Each statement outside a transaction
// is routed on its own (a causal token in its context is honoured); a
// transaction stays on one node and is read-only whatever its options.
// Its connections hold no server session: see the package documentation.
// Do not write through it. Closing the *sql.DB does not close the pool.
func OpenDBFromReader(r *driver.Reader, _ ...OptionOpenDB) *sql.DB {
	return sql.OpenDB(&readConnector{r: r})
}

type readConnector struct{ r *driver.Reader }

func (c *readConnector) Connect(context.Context) (sqldriver.Conn, error) {
	return &readConn{r: c.r}, nil
}

func (c *readConnector) Driver() sqldriver.Driver { return sqlDriver{} }

// readConn is a connection of OpenDBFromReader: no session of its own.
// Each statement outside a transaction runs on a connection of pgx's
// stdlib acquired, for that statement, from the pool of the node the
// Reader picks; a transaction holds one such connection to its end.
type readConn struct {
	r  *driver.Reader
	tx *pgxstdlib.Conn // the connection of the transaction in progress
}

// run runs f on a connection of pgx's stdlib over the pool of the node
// that the Reader picks for ctx (once more elsewhere after a connection
// error, as [driver.Reader.Query]). f owns the connection: it closes it,
// unless it succeeds and keeps it.
func (c *readConn) run(ctx context.Context, f func(dc *pgxstdlib.Conn) error) error {
	return connhook.Read(ctx, c.r, func(ctx context.Context, pool *pgxpool.Pool) error {
		dc, err := pgxstdlib.GetPoolConnector(pool).Connect(ctx)
		if err != nil {
			return err
		}
		err = f(dc.(*pgxstdlib.Conn))
		if errors.Is(err, sqldriver.ErrBadConn) && ctx.Err() == nil {
			err = errNotSent{} // tried once more elsewhere
		}
		return err
	})
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
		// database/sql closes a connection in a transaction only when it
		// is bad: never return it to the pool mid-transaction.
		c.tx.Conn().PgConn().Close(context.Background())
		c.tx.Close()
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
	opts.ReadOnly = true
	var t sqldriver.Tx
	err := c.run(ctx, func(dc *pgxstdlib.Conn) (err error) {
		if t, err = dc.BeginTx(ctx, opts); err != nil {
			dc.Close()
			return err
		}
		c.tx = dc
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &readTx{c: c, t: t}, nil
}

// ExecContext runs query as a read.
func (c *readConn) ExecContext(ctx context.Context, query string, args []sqldriver.NamedValue) (sqldriver.Result, error) {
	if c.tx != nil {
		return c.tx.ExecContext(ctx, query, args)
	}
	var res sqldriver.Result
	err := c.run(ctx, func(dc *pgxstdlib.Conn) (err error) {
		defer dc.Close()
		res, err = dc.ExecContext(ctx, query, args)
		return err
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

// QueryContext runs query through the Reader (or the transaction).
func (c *readConn) QueryContext(ctx context.Context, query string, args []sqldriver.NamedValue) (sqldriver.Rows, error) {
	if c.tx != nil {
		return c.tx.QueryContext(ctx, query, args)
	}
	var rows sqldriver.Rows
	err := c.run(ctx, func(dc *pgxstdlib.Conn) error {
		r, err := dc.QueryContext(ctx, query, args)
		if err != nil {
			dc.Close()
			return err
		}
		rows = readRows{r.(*pgxstdlib.Rows), dc}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return rows, nil
}

// readRows are pgx's stdlib's rows of a statement outside a transaction:
// closing them releases their connection.
type readRows struct {
	*pgxstdlib.Rows
	dc *pgxstdlib.Conn
}

func (r readRows) Close() error {
	err := r.Rows.Close()
	r.dc.Close()
	return err
}

// Ping pings a node that the Reader picks (or the transaction's).
func (c *readConn) Ping(ctx context.Context) error {
	if c.tx != nil {
		return c.tx.Ping(ctx)
	}
	return c.run(ctx, func(dc *pgxstdlib.Conn) error {
		defer dc.Close()
		return dc.Ping(ctx)
	})
}

// CheckNamedValue accepts every value, as pgx's stdlib does: pgx converts
// them.
func (c *readConn) CheckNamedValue(*sqldriver.NamedValue) error { return nil }

type readTx struct {
	c *readConn
	t sqldriver.Tx
}

// end ends the transaction with f (Commit or Rollback) and releases its
// connection.
func (t *readTx) end(f func() error) error {
	dc := t.c.tx
	if dc == nil {
		return errors.New("stdlib: transaction already ended")
	}
	t.c.tx = nil
	err := f()
	dc.Close()
	return err
}

func (t *readTx) Commit() error   { return t.end(t.t.Commit) }
func (t *readTx) Rollback() error { return t.end(t.t.Rollback) }

// readStmt is a statement of a readConn: its text, run anew each time.
type readStmt struct {
	c   *readConn
	sql string
}

func (s *readStmt) Close() error  { return nil }
func (s *readStmt) NumInput() int { return -1 }

// Exec and Query are never called by database/sql, which uses
// ExecContext and QueryContext.
func (s *readStmt) Exec([]sqldriver.Value) (sqldriver.Result, error) { return nil, errNoContext }

func (s *readStmt) Query([]sqldriver.Value) (sqldriver.Rows, error) { return nil, errNoContext }

var errNoContext = errors.New("stdlib: statement methods without a context are not supported")

func (s *readStmt) ExecContext(ctx context.Context, args []sqldriver.NamedValue) (sqldriver.Result, error) {
	return s.c.ExecContext(ctx, s.sql, args)
}

func (s *readStmt) QueryContext(ctx context.Context, args []sqldriver.NamedValue) (sqldriver.Rows, error) {
	return s.c.QueryContext(ctx, s.sql, args)
}

var (
	_ sqldriver.ConnBeginTx                    = (*readConn)(nil)
	_ sqldriver.ExecerContext                  = (*readConn)(nil)
	_ sqldriver.QueryerContext                 = (*readConn)(nil)
	_ sqldriver.ConnPrepareContext             = (*readConn)(nil)
	_ sqldriver.Pinger                         = (*readConn)(nil)
	_ sqldriver.NamedValueChecker              = (*readConn)(nil)
	_ sqldriver.RowsColumnTypeDatabaseTypeName = readRows{}
	_ sqldriver.RowsColumnTypeScanType         = readRows{}
)
