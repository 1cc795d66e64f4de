package stdlib

import (
	"context"
	"database/sql"
	sqldriver "database/sql/driver"
	"errors"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	pgxstdlib "github.com/jackc/pgx/v5/stdlib"

	"github.com/pgha/pgha/driver"
	"github.com/pgha/pgha/driver/internal/connhook"
)

// OptionOpenDB configures [OpenDBFromPool] and [GetPoolConnector].
type OptionOpenDB func(*options)

type options struct {
	pgx []pgxstdlib.OptionOpenDB // passed to pgx's stdlib.GetPoolConnector
}

// OptionResetSession sets a function run, as pgx's stdlib runs it
// (pgx's stdlib.OptionResetSession), before a connection kept idle by the
// *sql.DB is used again (only with SetMaxIdleConns above zero), after the
// checks of its own. If it returns an error matching
// [sqldriver.ErrBadConn], the connection is discarded.
// [OpenDBFromReader] ignores it: its connections hold no session.
func OptionResetSession(f func(ctx context.Context, c *pgx.Conn) error) OptionOpenDB {
	return func(o *options) { o.pgx = append(o.pgx, pgxstdlib.OptionResetSession(f)) }
}

// OpenDBFromPool returns a *sql.DB whose connections are acquired from
// pool, so that every statement goes to the cluster's primary. It sets the
// *sql.DB's maximum number of idle connections to zero: the pool keeps
// them. Closing the *sql.DB does not close pool. See the package
// documentation for the errors and the behaviour under failover.
func OpenDBFromPool(pool *driver.Pool, opts ...OptionOpenDB) *sql.DB {
	db := sql.OpenDB(GetPoolConnector(pool, opts...))
	db.SetMaxIdleConns(0)
	return db
}

// GetPoolConnector returns the [sqldriver.Connector] that [OpenDBFromPool]
// uses, for sql.OpenDB. Set the maximum of idle connections of the
// *sql.DB to zero, as OpenDBFromPool does, unless you mean the *sql.DB to
// keep connections of pool acquired.
func GetPoolConnector(pool *driver.Pool, opts ...OptionOpenDB) sqldriver.Connector {
	c := &connector{pool: pool}
	for _, o := range opts {
		o(&c.opts)
	}
	return c
}

type connector struct {
	pool *driver.Pool
	opts options
}

// Connect acquires a connection to the primary, through pgx's stdlib
// connector over the primary's node pool; its errors are the pool's.
func (c *connector) Connect(ctx context.Context) (sqldriver.Conn, error) {
	var dc sqldriver.Conn
	err := connhook.Acquire(ctx, c.pool, func(ctx context.Context, wp *pgxpool.Pool) (err error) {
		dc, err = pgxstdlib.GetPoolConnector(wp, c.opts.pgx...).Connect(ctx)
		return err
	})
	if err != nil {
		return nil, err
	}
	return &Conn{sc: dc.(*pgxstdlib.Conn)}, nil
}

func (c *connector) Driver() sqldriver.Driver { return sqlDriver{} }

// sqlDriver is the connectors' Driver. The package registers no driver
// name: a *driver.Pool cannot be described by a string for sql.Open.
type sqlDriver struct{}

func (sqlDriver) Open(string) (sqldriver.Conn, error) {
	return nil, errors.New("stdlib: open a *sql.DB over a *driver.Pool with stdlib.OpenDBFromPool, not sql.Open")
}

// Conn is a database/sql connection of [OpenDBFromPool]: pgx's stdlib
// connection (*pgxstdlib.Conn) over a connection to the primary acquired
// from the [driver.Pool], which it runs every call on, adding the checks
// and the error mapping of a [driver.Pool]. Reach it with (*sql.Conn).Raw
// to use pgx directly:
//
//	err := sqlConn.Raw(func(dc any) error {
//		c := dc.(*stdlib.Conn).Conn() // a *pgx.Conn
//		...
//	})
//
// Errors on the *pgx.Conn used that way are pgx's, not mapped. database/sql
// uses a Conn from one goroutine at a time.
type Conn struct {
	sc     *pgxstdlib.Conn
	tx     *wtx // the transaction in progress, nil outside one
	closed bool // sc was closed (released to the pool)
}

// Conn returns the underlying *pgx.Conn.
func (c *Conn) Conn() *pgx.Conn { return c.sc.Conn() }

// stage is the stage of a statement run now on c.
func (c *Conn) stage() connhook.Stage {
	if c.tx != nil {
		return connhook.InTx
	}
	return connhook.Statement
}

// usable returns an error matching ErrBadConn and [driver.ErrFailover]
// when c must not be used: closed (its connection was lost), or its node
// stopped being the primary.
func (c *Conn) usable() error {
	if c.closed || c.Conn().IsClosed() {
		return badConn{&driver.Error{Kind: driver.ErrFailover, Op: "session", Err: errConnLost}}
	}
	if err := connhook.Check(c.Conn()); err != nil {
		return badConn{err}
	}
	return nil
}

// mapErr maps err of op at stage st. An error after which another
// connection may run the operation matches ErrBadConn, so that
// database/sql retries it (outside a transaction).
func (c *Conn) mapErr(ctx context.Context, op string, st connhook.Stage, err error) error {
	if errors.Is(err, sqldriver.ErrBadConn) {
		// pgx's stdlib reports an error that pgconn.SafeToRetry accepts (the
		// request was not sent) as a bare ErrBadConn.
		if ctx.Err() != nil {
			return ctx.Err()
		}
		err = errNotSent{}
	}
	err, retry := connhook.After(ctx, c.Conn(), op, st, err)
	if retry {
		return badConn{err}
	}
	return err
}

// errConnLost: the connection of a database/sql session was closed by an
// earlier failure.
var errConnLost = errors.New("connection lost")

// errNotSent stands for the error that pgx's stdlib replaced with
// [sqldriver.ErrBadConn]: the connection failed (or was busy) before the
// request was sent.
type errNotSent struct{}

func (errNotSent) Error() string {
	return "request not sent: the connection failed or was busy (pgx stdlib: driver: bad connection)"
}

// SafeToRetry reports, as pgconn's errors do, that nothing was sent.
func (errNotSent) SafeToRetry() bool { return true }

// badConn is an error that also matches [sqldriver.ErrBadConn]: database/sql
// then discards the connection (and retries, where it does).
type badConn struct{ err error }

func (e badConn) Error() string        { return e.err.Error() }
func (e badConn) Unwrap() error        { return e.err }
func (e badConn) Is(target error) bool { return target == sqldriver.ErrBadConn }

// Prepare is PrepareContext with context.Background.
func (c *Conn) Prepare(query string) (sqldriver.Stmt, error) {
	return c.PrepareContext(context.Background(), query)
}

// PrepareContext prepares query as pgx's stdlib does.
func (c *Conn) PrepareContext(ctx context.Context, query string) (sqldriver.Stmt, error) {
	if err := c.usable(); err != nil {
		return nil, err
	}
	s, err := c.sc.PrepareContext(ctx, query)
	if err != nil {
		return nil, c.mapErr(ctx, "prepare", connhook.NoEffect, err)
	}
	return &stmt{s: s.(*pgxstdlib.Stmt), c: c}, nil
}

// Close releases the connection to the pool, which destroys it if it is
// broken or its node was deposed.
func (c *Conn) Close() error {
	if c.closed {
		return nil
	}
	c.closed = true
	if c.tx != nil {
		// database/sql closes a connection in a transaction only when it
		// is bad: never return it to the pool mid-transaction.
		c.Conn().PgConn().Close(context.Background())
	}
	return c.sc.Close()
}

// Begin is BeginTx with context.Background and default options.
func (c *Conn) Begin() (sqldriver.Tx, error) {
	return c.BeginTx(context.Background(), sqldriver.TxOptions{})
}

// BeginTx begins a transaction as pgx's stdlib does. A BEGIN that fails
// on a failover matches ErrBadConn: database/sql retries it on a new
// connection.
func (c *Conn) BeginTx(ctx context.Context, opts sqldriver.TxOptions) (sqldriver.Tx, error) {
	if err := c.usable(); err != nil {
		return nil, err
	}
	t, err := c.sc.BeginTx(ctx, opts)
	if err != nil {
		return nil, c.mapErr(ctx, "begin", connhook.NoEffect, err)
	}
	c.tx = &wtx{c: c, ctx: ctx, t: t}
	return c.tx, nil
}

// ExecContext runs query. See the package documentation for its errors.
func (c *Conn) ExecContext(ctx context.Context, query string, args []sqldriver.NamedValue) (sqldriver.Result, error) {
	return c.exec(ctx, func() (sqldriver.Result, error) { return c.sc.ExecContext(ctx, query, args) })
}

// exec runs f, an exec of pgx's stdlib on c, with c's checks and mapping.
func (c *Conn) exec(ctx context.Context, f func() (sqldriver.Result, error)) (sqldriver.Result, error) {
	if err := c.usable(); err != nil {
		return nil, err
	}
	st := c.stage()
	if st == connhook.Statement {
		connhook.Before(c.Conn())
	}
	res, err := f()
	if err = c.mapErr(ctx, "exec", st, err); err != nil {
		c.brokeTx(err)
		return nil, err
	}
	return res, nil
}

// QueryContext runs query. See the package documentation for its errors;
// the rows are pgx's stdlib's, and errors met while reading them are
// pgx's.
func (c *Conn) QueryContext(ctx context.Context, query string, args []sqldriver.NamedValue) (sqldriver.Rows, error) {
	return c.query(ctx, func() (sqldriver.Rows, error) { return c.sc.QueryContext(ctx, query, args) })
}

// query runs f, a query of pgx's stdlib on c, with c's checks and mapping.
func (c *Conn) query(ctx context.Context, f func() (sqldriver.Rows, error)) (sqldriver.Rows, error) {
	if err := c.usable(); err != nil {
		return nil, err
	}
	st := c.stage()
	rows, err := f()
	if err == nil {
		return rows, nil
	}
	err = c.mapErr(ctx, "query", st, err)
	c.brokeTx(err)
	return nil, err
}

// brokeTx records a failover error that broke the transaction in progress.
func (c *Conn) brokeTx(err error) {
	if c.tx != nil && errors.Is(err, driver.ErrFailover) {
		c.tx.broken = err
	}
}

// Ping checks the connection; it fails matching ErrBadConn. It pings the
// *pgx.Conn itself rather than through pgx's stdlib, which releases the
// connection to the pool on failure and reports only ErrBadConn: the pool
// is told what the failure shows, and the connection is closed.
func (c *Conn) Ping(ctx context.Context) error {
	if err := c.usable(); err != nil {
		return err
	}
	if err := c.Conn().Ping(ctx); err != nil {
		err, _ = connhook.After(ctx, c.Conn(), "ping", connhook.NoEffect, err)
		c.Conn().PgConn().Close(ctx)
		return badConn{err}
	}
	return nil
}

// CheckNamedValue is pgx's stdlib's: every value is accepted.
func (c *Conn) CheckNamedValue(v *sqldriver.NamedValue) error { return c.sc.CheckNamedValue(v) }

// ResetSession is called by database/sql before it reuses an idle
// connection: it returns [sqldriver.ErrBadConn] for a connection that is
// closed or to a node that stopped being the primary; then it runs pgx's
// stdlib's (ErrBadConn in a transaction or after a failed ping, then the
// [OptionResetSession] function).
func (c *Conn) ResetSession(ctx context.Context) error {
	if err := c.usable(); err != nil {
		return sqldriver.ErrBadConn
	}
	return c.sc.ResetSession(ctx)
}

// IsValid is called by database/sql before it keeps a connection idle:
// false for a closed connection or one to a node that stopped being the
// primary.
func (c *Conn) IsValid() bool { return c.usable() == nil }

// wtx is a transaction on a Conn: pgx's stdlib's, with the mapping.
type wtx struct {
	c      *Conn
	ctx    context.Context
	t      sqldriver.Tx
	broken error // the failover error that broke it, if any
}

func (t *wtx) Commit() error {
	defer func() { t.c.tx = nil }()
	connhook.Before(t.c.Conn())
	err := t.t.Commit()
	if t.broken != nil && err != nil && t.ctx.Err() == nil {
		return &driver.Error{Kind: driver.ErrFailover, Op: "commit", Node: nodeOf(t.broken), Err: err}
	}
	return t.c.mapErr(t.ctx, "commit", connhook.Commit, err)
}

func (t *wtx) Rollback() error {
	defer func() { t.c.tx = nil }()
	err := t.t.Rollback()
	if err == nil {
		return nil
	}
	if errors.Is(err, pgx.ErrTxClosed) && t.broken == nil {
		return err
	}
	return t.c.mapErr(t.ctx, "rollback", connhook.InTx, err)
}

// nodeOf is the node named by a *driver.Error in err, if any.
func nodeOf(err error) string {
	var e *driver.Error
	if errors.As(err, &e) {
		return e.Node
	}
	return ""
}

// stmt is a prepared statement of pgx's stdlib on a Conn, run with the
// Conn's checks and mapping.
type stmt struct {
	s *pgxstdlib.Stmt
	c *Conn
}

func (s *stmt) Close() error {
	if s.c.closed || s.c.Conn().IsClosed() {
		return nil // the server-side statement went with the connection
	}
	return s.s.Close()
}

func (s *stmt) NumInput() int { return s.s.NumInput() }

func (s *stmt) Exec(args []sqldriver.Value) (sqldriver.Result, error) { return s.s.Exec(args) }

func (s *stmt) Query(args []sqldriver.Value) (sqldriver.Rows, error) { return s.s.Query(args) }

func (s *stmt) ExecContext(ctx context.Context, args []sqldriver.NamedValue) (sqldriver.Result, error) {
	return s.c.exec(ctx, func() (sqldriver.Result, error) { return s.s.ExecContext(ctx, args) })
}

func (s *stmt) QueryContext(ctx context.Context, args []sqldriver.NamedValue) (sqldriver.Rows, error) {
	return s.c.query(ctx, func() (sqldriver.Rows, error) { return s.s.QueryContext(ctx, args) })
}

var (
	_ sqldriver.Connector          = (*connector)(nil)
	_ sqldriver.ConnBeginTx        = (*Conn)(nil)
	_ sqldriver.ExecerContext      = (*Conn)(nil)
	_ sqldriver.QueryerContext     = (*Conn)(nil)
	_ sqldriver.ConnPrepareContext = (*Conn)(nil)
	_ sqldriver.Pinger             = (*Conn)(nil)
	_ sqldriver.SessionResetter    = (*Conn)(nil)
	_ sqldriver.Validator          = (*Conn)(nil)
	_ sqldriver.NamedValueChecker  = (*Conn)(nil)
	_ sqldriver.StmtExecContext    = (*stmt)(nil)
	_ sqldriver.StmtQueryContext   = (*stmt)(nil)
)
