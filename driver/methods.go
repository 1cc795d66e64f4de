package driver

import (
	"context"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// The methods of pgxpool.Pool. Each says what to run on the primary and
// how it may be retried; [Pool.run] does the rest.

// Acquire returns a connection to the primary, waiting up to
// FailoverTimeout for one. Release it as with pgxpool; a connection to a
// node that stopped being the primary is destroyed on release.
func (p *Pool) Acquire(ctx context.Context) (*pgxpool.Conn, error) {
	var c *pgxpool.Conn
	err := p.run(ctx, "acquire", retryAlways, func(n *node) (err error) {
		c, err = p.acquireWrite(ctx, n)
		return err
	})
	return c, err
}

// AcquireFunc acquires a connection to the primary, calls f with it and
// releases it. ctx affects only the acquisition.
func (p *Pool) AcquireFunc(ctx context.Context, f func(*pgxpool.Conn) error) error {
	c, err := p.Acquire(ctx)
	if err != nil {
		return err
	}
	defer c.Release()
	return f(c)
}

// AcquireAllIdle acquires every idle connection to the primary (none while
// there is no primary). Like pgxpool's, it is meant for health checks.
func (p *Pool) AcquireAllIdle(ctx context.Context) []*pgxpool.Conn {
	n := p.primary.Load()
	if n == nil {
		return []*pgxpool.Conn{}
	}
	return n.wp.Load().AcquireAllIdle(ctx)
}

// Reset closes every idle connection of every node and makes in-use ones
// close on release, leaving the pool open.
func (p *Pool) Reset() {
	p.mu.Lock()
	nodes := p.allNodesLocked()
	p.mu.Unlock()
	for _, n := range nodes {
		for _, pp := range []*pgxpool.Pool{n.wp.Load(), n.rp.Load()} {
			if pp != nil {
				pp.Reset()
			}
		}
	}
}

// Config returns a copy of the pgxpool part of the pool's configuration:
// the template the node pools are built from (host and port are set per
// node), as [pgxpool.Pool.Config] does. It lacks the pgha settings. To
// build another driver pool like this one, keep the *[Config] given to
// [NewWithConfig] (which copied it) and pass its [Config.Copy]; or wrap
// this result: c := driver.LocalConfig(); c.Config = p.Config(); then set
// c.Hosts (or c.Etcd and c.Cluster) and call driver.NewWithConfig(ctx, c).
func (p *Pool) Config() *pgxpool.Config { return p.cfg.Config.Copy() }

// Stat returns the statistics of the primary's pool; while there is no
// primary, all-zero statistics.
func (p *Pool) Stat() *pgxpool.Stat {
	if n := p.primary.Load(); n != nil {
		return n.wp.Load().Stat()
	}
	s := *p.emptyStat
	return &s
}

// Exec runs sql on the primary. See the package documentation for retries
// and errors, and its "Outcome resolution" for what [WithResolveOutcome]
// (or [Config.ResolveOutcome]) changes.
func (p *Pool) Exec(ctx context.Context, sql string, arguments ...any) (pgconn.CommandTag, error) {
	if on, o := p.resolving(ctx); on {
		return p.execResolving(ctx, o, sql, arguments)
	}
	return p.execPlain(ctx, sql, arguments)
}

// execPlain is Exec without outcome resolution.
func (p *Pool) execPlain(ctx context.Context, sql string, arguments []any) (pgconn.CommandTag, error) {
	var tag pgconn.CommandTag
	var rep error
	err := p.run(ctx, "exec", retryIfUnapplied, func(n *node) (err error) {
		tag, rep, err = p.exec(ctx, n, sql, arguments)
		return err
	})
	if err != nil {
		return tag, err
	}
	return tag, rep
}

// exec runs sql on n's write pool as pgxpool.Pool.Exec does (acquire,
// exec, release). rep is the [ErrNotReplicated] error for a statement
// that succeeded while PostgreSQL cancelled its commit's wait for the
// synchronous standbys.
func (p *Pool) exec(ctx context.Context, n *node, sql string, args []any) (tag pgconn.CommandTag, rep, err error) {
	c, err := p.acquireWrite(ctx, n)
	if err != nil {
		return tag, nil, err
	}
	defer c.Release()
	pc := c.Conn().PgConn()
	clearSyncWait(pc)
	tag, err = c.Exec(ctx, sql, args...)
	if err == nil {
		rep = takeSyncWait(pc, "exec", n.key)
	}
	return tag, rep, err
}

// Query runs sql on the primary. Errors returned by Query itself are
// handled as for [Pool.Exec]; errors met while reading rows are pgx's.
func (p *Pool) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	var rows pgx.Rows
	err := p.run(ctx, "query", retryIfUnapplied, func(n *node) (err error) {
		rows, err = p.query(ctx, n, sql, args)
		return err
	})
	if err != nil {
		return errRows{err}, err
	}
	return rows, nil
}

// QueryRow runs sql on the primary; errors are deferred to Scan, which
// retries as [Pool.Exec] does.
func (p *Pool) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	return &poolRow{p: p, ctx: ctx, sql: sql, args: args}
}

// SendBatch sends b to the primary, waiting up to FailoverTimeout for one.
// It is not retried: its errors, met while reading the results, are pgx's.
// (It acquires with pgxpool's SendBatch: a call waiting for a connection
// to a primary that is deposed gets pgxpool's "closed pool" once a
// connection is released, as operations in flight there are cut.)
func (p *Pool) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	var br pgx.BatchResults
	err := p.run(ctx, "batch", retryNever, func(n *node) error {
		br = n.wp.Load().SendBatch(ctx, b)
		return nil
	})
	if err != nil {
		return pgx.FailedBatchResults(b, err)
	}
	return br
}

// Begin starts a transaction on the primary. See [Pool.BeginTx].
func (p *Pool) Begin(ctx context.Context) (pgx.Tx, error) {
	return p.BeginTx(ctx, pgx.TxOptions{})
}

// BeginTx starts a transaction on the primary, waiting up to
// FailoverTimeout for one; a BEGIN that fails on a failover is retried
// once. Statements of a transaction broken by a failover fail with
// [ErrFailover]; a COMMIT whose outcome is unknown fails with
// [ErrOutcomeUnknown]. With outcome resolution on for ctx (or for the
// Commit's own context), the COMMIT is resolved instead when it can be
// (see "Outcome resolution" in the package documentation).
func (p *Pool) BeginTx(ctx context.Context, txOptions pgx.TxOptions) (pgx.Tx, error) {
	var t *tx
	// BEGIN has no effect of its own: repeat it after any failover error.
	err := p.run(ctx, "begin", retryAlways, func(n *node) (err error) {
		t, err = p.beginTx(ctx, n, txOptions)
		return err
	})
	if err != nil {
		return nil, err
	}
	return t, nil
}

// beginTx begins a transaction on a connection of n's write pool, as
// pgxpool.Pool.BeginTx does, but keeps the connection until the
// transaction ends: its commit's warnings must be read before another
// goroutine can acquire it.
func (p *Pool) beginTx(ctx context.Context, n *node, opts pgx.TxOptions) (*tx, error) {
	c, err := p.acquireWrite(ctx, n)
	if err != nil {
		return nil, err
	}
	t, err := c.BeginTx(ctx, opts)
	if err != nil {
		c.Release()
		return nil, err
	}
	resolve, o := p.resolving(ctx)
	return &tx{p: p, n: n, t: t, c: c, resolve: resolve, outcome: o}, nil
}

// CopyFrom copies rows into tableName on the primary. Only a failure
// before anything was sent is retried.
func (p *Pool) CopyFrom(ctx context.Context, tableName pgx.Identifier, columnNames []string, rowSrc pgx.CopyFromSource) (int64, error) {
	var cnt int64
	err := p.run(ctx, "copy", retryIfUnsent, func(n *node) (err error) {
		c, err := p.acquireWrite(ctx, n)
		if err != nil {
			return err
		}
		defer c.Release()
		cnt, err = c.Conn().CopyFrom(ctx, tableName, columnNames, rowSrc)
		return err
	})
	return cnt, err
}

// Ping checks the primary with an empty statement, waiting up to
// FailoverTimeout for one and retrying once after a failover error.
func (p *Pool) Ping(ctx context.Context) error {
	return p.run(ctx, "ping", retryAlways, func(n *node) error {
		c, err := p.acquireWrite(ctx, n)
		if err != nil {
			return err
		}
		defer c.Release()
		return c.Ping(ctx)
	})
}
