package stdlib

import (
	"context"
	"database/sql"
	sqldriver "database/sql/driver"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgha/pgha/driver"
	"github.com/pgha/pgha/driver/internal/connhook"
)

// OptionOpenDB configures [OpenDBFromPool] and [OpenDBFromReader].
type OptionOpenDB func(*options)

type options struct {
	resetSession func(context.Context, *pgx.Conn) error
}

// OptionResetSession sets a function run, as pgx's stdlib runs it, before
// a connection kept idle by the *sql.DB is used again (only with
// SetMaxIdleConns above zero), after the checks of its own. If it returns
// an error matching [driver.ErrBadConn], the connection is discarded.
// [OpenDBFromReader] ignores it: its connections hold no session.
func OptionResetSession(f func(ctx context.Context, c *pgx.Conn) error) OptionOpenDB {
	return func(o *options) { o.resetSession = f }
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

// Connect acquires a connection to the primary; its errors are the pool's.
func (c *connector) Connect(ctx context.Context) (sqldriver.Conn, error) {
	pc, err := c.pool.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	return &Conn{pc: pc, conn: pc.Conn(), opts: &c.opts, lastReset: time.Now(),
		psRefCounts: map[*pgconn.StatementDescription]int{}}, nil
}

func (c *connector) Driver() sqldriver.Driver { return sqlDriver{} }

// sqlDriver is the connectors' Driver. The package registers no driver
// name: a *driver.Pool cannot be described by a string for sql.Open.
type sqlDriver struct{}

func (sqlDriver) Open(string) (sqldriver.Conn, error) {
	return nil, errors.New("stdlib: open a *sql.DB over a *driver.Pool with stdlib.OpenDBFromPool, not sql.Open")
}

// Conn is a database/sql connection of [OpenDBFromPool]: a connection to
// the primary acquired from the [driver.Pool]. Reach it with
// (*sql.Conn).Raw to use pgx directly:
//
//	err := sqlConn.Raw(func(dc any) error {
//		c := dc.(*stdlib.Conn).Conn() // a *pgx.Conn
//		...
//	})
//
// Errors on the *pgx.Conn used that way are pgx's, not mapped. database/sql
// uses a Conn from one goroutine at a time.
type Conn struct {
	pc          *pgxpool.Conn
	conn        *pgx.Conn
	opts        *options
	tx          *wtx // the transaction in progress, nil outside one
	lastReset   time.Time
	psRefCounts map[*pgconn.StatementDescription]int
}

// Conn returns the underlying *pgx.Conn.
func (c *Conn) Conn() *pgx.Conn { return c.conn }

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
	if c.conn.IsClosed() {
		return badConn{&driver.Error{Kind: driver.ErrFailover, Op: "session", Err: errConnLost}}
	}
	if err := connhook.Check(c.conn); err != nil {
		return badConn{err}
	}
	return nil
}

// mapErr maps err of op at stage st. An error after which another
// connection may run the operation matches ErrBadConn, so that
// database/sql retries it (outside a transaction).
func (c *Conn) mapErr(ctx context.Context, op string, st connhook.Stage, err error) error {
	err, retry := connhook.After(ctx, c.conn, op, st, err)
	if retry {
		return badConn{err}
	}
	return err
}

// errConnLost: the connection of a database/sql session was closed by an
// earlier failure.
var errConnLost = errors.New("connection lost")

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

// PrepareContext prepares query on the connection, named by its text as
// pgx's stdlib names it.
func (c *Conn) PrepareContext(ctx context.Context, query string) (sqldriver.Stmt, error) {
	if err := c.usable(); err != nil {
		return nil, err
	}
	sd, err := c.conn.Prepare(ctx, query, query)
	if err != nil {
		return nil, c.mapErr(ctx, "prepare", connhook.NoEffect, err)
	}
	c.psRefCounts[sd]++
	return &stmt{sd: sd, conn: c}, nil
}

// Close releases the connection to the pool, which destroys it if it is
// broken or its node was deposed.
func (c *Conn) Close() error {
	if c.tx != nil {
		// database/sql closes a connection in a transaction only when it
		// is bad: never return it to the pool mid-transaction.
		c.conn.PgConn().Close(context.Background())
	}
	c.pc.Release()
	return nil
}

// Begin is BeginTx with context.Background and default options.
func (c *Conn) Begin() (sqldriver.Tx, error) {
	return c.BeginTx(context.Background(), sqldriver.TxOptions{})
}

// BeginTx begins a transaction. A BEGIN that fails on a failover matches
// ErrBadConn: database/sql retries it on a new connection.
func (c *Conn) BeginTx(ctx context.Context, opts sqldriver.TxOptions) (sqldriver.Tx, error) {
	if err := c.usable(); err != nil {
		return nil, err
	}
	pgxOpts, err := txOptions(opts)
	if err != nil {
		return nil, err
	}
	t, err := c.conn.BeginTx(ctx, pgxOpts)
	if err != nil {
		return nil, c.mapErr(ctx, "begin", connhook.NoEffect, err)
	}
	c.tx = &wtx{c: c, ctx: ctx, t: t}
	return c.tx, nil
}

// txOptions converts database/sql's options as pgx's stdlib does.
func txOptions(opts sqldriver.TxOptions) (pgx.TxOptions, error) {
	var o pgx.TxOptions
	switch sql.IsolationLevel(opts.Isolation) {
	case sql.LevelDefault:
	case sql.LevelReadUncommitted:
		o.IsoLevel = pgx.ReadUncommitted
	case sql.LevelReadCommitted:
		o.IsoLevel = pgx.ReadCommitted
	case sql.LevelRepeatableRead, sql.LevelSnapshot:
		o.IsoLevel = pgx.RepeatableRead
	case sql.LevelSerializable:
		o.IsoLevel = pgx.Serializable
	default:
		return o, fmt.Errorf("unsupported isolation: %v", opts.Isolation)
	}
	if opts.ReadOnly {
		o.AccessMode = pgx.ReadOnly
	}
	return o, nil
}

// ExecContext runs query. See the package documentation for its errors.
func (c *Conn) ExecContext(ctx context.Context, query string, argsV []sqldriver.NamedValue) (sqldriver.Result, error) {
	if err := c.usable(); err != nil {
		return nil, err
	}
	st := c.stage()
	if st == connhook.Statement {
		connhook.Before(c.conn)
	}
	tag, err := c.conn.Exec(ctx, query, namedArgs(nil, argsV)...)
	if err = c.mapErr(ctx, "exec", st, err); err != nil {
		c.brokeTx(err)
		return nil, err
	}
	return sqldriver.RowsAffected(tag.RowsAffected()), nil
}

// QueryContext runs query. See the package documentation for its errors;
// errors met while reading the rows are pgx's.
func (c *Conn) QueryContext(ctx context.Context, query string, argsV []sqldriver.NamedValue) (sqldriver.Rows, error) {
	if err := c.usable(); err != nil {
		return nil, err
	}
	st := c.stage()
	rows, err := c.conn.Query(ctx, query, namedArgs([]any{resultFormats}, argsV)...)
	if err == nil {
		var r *Rows
		if r, err = newRows(rows); err == nil {
			return r, nil
		}
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

// Ping checks the connection; it fails matching ErrBadConn.
func (c *Conn) Ping(ctx context.Context) error {
	if err := c.usable(); err != nil {
		return err
	}
	if err := c.conn.Ping(ctx); err != nil {
		err, _ = connhook.After(ctx, c.conn, "ping", connhook.NoEffect, err)
		c.conn.PgConn().Close(ctx)
		return badConn{err}
	}
	return nil
}

// CheckNamedValue accepts every value: pgx converts them itself
// (sql.Scanner and driver.Valuer included), as with pgx's stdlib.
func (c *Conn) CheckNamedValue(*sqldriver.NamedValue) error { return nil }

// ResetSession is called by database/sql before it reuses an idle
// connection: it returns [sqldriver.ErrBadConn] for a connection that is
// closed, in a transaction, to a node that stopped being the primary, or
// that fails a ping after a second idle; then it runs the
// [OptionResetSession] function.
func (c *Conn) ResetSession(ctx context.Context) error {
	if err := c.usable(); err != nil {
		return sqldriver.ErrBadConn
	}
	if c.conn.PgConn().TxStatus() != 'I' {
		return sqldriver.ErrBadConn
	}
	now := time.Now()
	if now.Sub(c.lastReset) > time.Second {
		if err := c.conn.PgConn().Ping(ctx); err != nil {
			return sqldriver.ErrBadConn
		}
	}
	c.lastReset = now
	if c.opts.resetSession != nil {
		return c.opts.resetSession(ctx, c.conn)
	}
	return nil
}

// IsValid is called by database/sql before it keeps a connection idle:
// false for a closed connection or one to a node that stopped being the
// primary.
func (c *Conn) IsValid() bool { return c.usable() == nil }

// namedArgs appends the values of argsV to args.
func namedArgs(args []any, argsV []sqldriver.NamedValue) []any {
	for _, v := range argsV {
		args = append(args, v.Value)
	}
	return args
}

// wtx is a transaction on a Conn.
type wtx struct {
	c      *Conn
	ctx    context.Context
	t      pgx.Tx
	broken error // the failover error that broke it, if any
}

func (t *wtx) Commit() error {
	defer func() { t.c.tx = nil }()
	connhook.Before(t.c.conn)
	err := t.t.Commit(t.ctx)
	if t.broken != nil && err != nil && t.ctx.Err() == nil {
		return &driver.Error{Kind: driver.ErrFailover, Op: "commit", Node: nodeOf(t.broken), Err: err}
	}
	return t.c.mapErr(t.ctx, "commit", connhook.Commit, err)
}

func (t *wtx) Rollback() error {
	defer func() { t.c.tx = nil }()
	err := t.t.Rollback(t.ctx)
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

// stmt is a prepared statement on a Conn, named by its text; statements
// with the same text share one server-side statement, counted in
// psRefCounts, as in pgx's stdlib.
type stmt struct {
	sd   *pgconn.StatementDescription
	conn *Conn
}

func (s *stmt) Close() error {
	if s.conn.psRefCounts[s.sd] > 1 {
		s.conn.psRefCounts[s.sd]--
		return nil
	}
	delete(s.conn.psRefCounts, s.sd)
	if s.conn.conn.IsClosed() {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return s.conn.conn.Deallocate(ctx, s.sd.SQL)
}

func (s *stmt) NumInput() int { return len(s.sd.ParamOIDs) }

func (s *stmt) Exec([]sqldriver.Value) (sqldriver.Result, error) {
	return nil, errors.New("Stmt.Exec deprecated and not implemented")
}

func (s *stmt) Query([]sqldriver.Value) (sqldriver.Rows, error) {
	return nil, errors.New("Stmt.Query deprecated and not implemented")
}

func (s *stmt) ExecContext(ctx context.Context, argsV []sqldriver.NamedValue) (sqldriver.Result, error) {
	return s.conn.ExecContext(ctx, s.sd.SQL, argsV)
}

func (s *stmt) QueryContext(ctx context.Context, argsV []sqldriver.NamedValue) (sqldriver.Rows, error) {
	return s.conn.QueryContext(ctx, s.sd.SQL, argsV)
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
