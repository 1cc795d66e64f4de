package driver

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// tx is a transaction on the primary. It maps failover errors: a
// statement broken by a failover fails with ErrFailover, a COMMIT whose
// outcome cannot be known with ErrOutcomeUnknown.
type tx struct {
	p *Pool
	n *node
	t pgx.Tx
	// c is the pool connection of an outermost transaction, released
	// when it ends (nil for a savepoint).
	c      *pgxpool.Conn
	nested bool // a savepoint: its "commit" is RELEASE, not a real commit
	// broken is the failover error that broke the transaction, if any.
	broken error
	// resolve: the transaction was begun with outcome resolution on,
	// reporting to outcome (may be nil).
	resolve bool
	outcome *Outcome
}

// stmtErr maps a statement's error.
func (t *tx) stmtErr(ctx context.Context, op string, err error) error {
	if err == nil {
		return nil
	}
	switch classify(ctx, err) {
	case classReadOnly:
		t.p.markReadOnly(t.n, err)
	case classConn:
		t.p.connFailed(t.n, err)
	case classUnsent:
		if c := t.t.Conn(); c != nil && !c.IsClosed() {
			return err // e.g. a busy connection: not a failover
		}
		t.p.connFailed(t.n, err)
	default:
		return err
	}
	e := &Error{Kind: ErrFailover, Op: op, Node: t.n.key, Err: err}
	t.broken = e
	return e
}

func (t *tx) Begin(ctx context.Context) (pgx.Tx, error) {
	nt, err := t.t.Begin(ctx)
	if err != nil {
		return nil, t.stmtErr(ctx, "savepoint", err)
	}
	return &tx{p: t.p, n: t.n, t: nt, nested: true}, nil
}

// release returns an outermost transaction's connection to its pool, as
// pgxpool.Tx does when it ends; idempotent.
func (t *tx) release() {
	if t.c != nil {
		t.c.Release()
		t.c = nil
	}
}

func (t *tx) Commit(ctx context.Context) error {
	var pc *pgconn.PgConn
	if t.c != nil {
		pc = t.c.Conn().PgConn()
		clearSyncWait(pc)
	}
	resolve, o := t.p.resolving(ctx)
	resolve = resolve || t.resolve
	if o == nil && t.outcome != nil {
		o = t.outcome // reported where Begin's ctx asked
		*o = Outcome{}
	}
	var mk commitMark
	var err error
	if resolve && pc != nil && t.broken == nil && pc.TxStatus() == 'T' {
		// Learn the transaction id in the COMMIT's round trip; pgx's Tx
		// is ended by hand, as its Commit would.
		mk, err = t.commitMarked(ctx, pc)
		t.t = endedTx{}
	} else {
		err = t.t.Commit(ctx)
	}
	var rep error
	if err == nil && pc != nil {
		rep = takeSyncWait(pc, "commit", t.n.key)
	}
	t.release()
	if err == nil {
		return rep
	}
	if errors.Is(err, pgx.ErrTxClosed) || errors.Is(err, pgx.ErrTxCommitRollback) {
		if t.broken != nil {
			return &Error{Kind: ErrFailover, Op: "commit", Node: t.n.key, Err: err}
		}
		return err
	}
	c := classify(ctx, err)
	switch {
	case c == classCaller || c == classOther:
		return err
	case t.nested || c == classUnsent || c == classReadOnly || t.broken != nil:
		// The COMMIT was not sent, or the transaction was already lost:
		// nothing was committed.
		if c == classReadOnly {
			t.p.markReadOnly(t.n, err)
		} else {
			t.p.connFailed(t.n, err)
		}
		return &Error{Kind: ErrFailover, Op: "commit", Node: t.n.key, Err: err}
	}
	t.p.connFailed(t.n, err)
	e := &Error{Kind: ErrOutcomeUnknown, Op: "commit", Node: t.n.key, Err: err}
	if resolve && pc != nil {
		return t.p.resolve(ctx, o, t.n, mk, e)
	}
	return e
}

func (t *tx) Rollback(ctx context.Context) error {
	err := t.t.Rollback(ctx)
	t.release()
	if err != nil && !errors.Is(err, pgx.ErrTxClosed) && t.broken != nil {
		// Rolling back a transaction that a failover broke: it is gone anyway.
		return &Error{Kind: ErrFailover, Op: "rollback", Node: t.n.key, Err: err}
	}
	return err
}

func (t *tx) CopyFrom(ctx context.Context, tableName pgx.Identifier, columnNames []string, rowSrc pgx.CopyFromSource) (int64, error) {
	n, err := t.t.CopyFrom(ctx, tableName, columnNames, rowSrc)
	return n, t.stmtErr(ctx, "copy", err)
}

func (t *tx) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	return t.t.SendBatch(ctx, b)
}

func (t *tx) LargeObjects() pgx.LargeObjects { return t.t.LargeObjects() }

func (t *tx) Prepare(ctx context.Context, name, sql string) (*pgconn.StatementDescription, error) {
	sd, err := t.t.Prepare(ctx, name, sql)
	return sd, t.stmtErr(ctx, "prepare", err)
}

func (t *tx) Exec(ctx context.Context, sql string, arguments ...any) (pgconn.CommandTag, error) {
	tag, err := t.t.Exec(ctx, sql, arguments...)
	return tag, t.stmtErr(ctx, "exec", err)
}

func (t *tx) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	rows, err := t.t.Query(ctx, sql, args...)
	if err != nil {
		err = t.stmtErr(ctx, "query", err)
	}
	return rows, err
}

func (t *tx) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	return txRow{t: t, ctx: ctx, r: t.t.QueryRow(ctx, sql, args...)}
}

func (t *tx) Conn() *pgx.Conn { return t.t.Conn() }

// endedTx is the pgx.Tx of a transaction that [tx.commitMarked] ended:
// like pgx's after Commit, every method fails with pgx.ErrTxClosed.
type endedTx struct{}

func (endedTx) Begin(context.Context) (pgx.Tx, error) { return nil, pgx.ErrTxClosed }
func (endedTx) Commit(context.Context) error          { return pgx.ErrTxClosed }
func (endedTx) Rollback(context.Context) error        { return pgx.ErrTxClosed }
func (endedTx) CopyFrom(context.Context, pgx.Identifier, []string, pgx.CopyFromSource) (int64, error) {
	return 0, pgx.ErrTxClosed
}
func (endedTx) SendBatch(_ context.Context, b *pgx.Batch) pgx.BatchResults {
	return pgx.FailedBatchResults(b, pgx.ErrTxClosed)
}
func (endedTx) LargeObjects() pgx.LargeObjects { return pgx.LargeObjects{} }
func (endedTx) Prepare(context.Context, string, string) (*pgconn.StatementDescription, error) {
	return nil, pgx.ErrTxClosed
}
func (endedTx) Exec(context.Context, string, ...any) (pgconn.CommandTag, error) {
	return pgconn.CommandTag{}, pgx.ErrTxClosed
}
func (endedTx) Query(context.Context, string, ...any) (pgx.Rows, error) {
	return errRows{pgx.ErrTxClosed}, pgx.ErrTxClosed
}
func (endedTx) QueryRow(context.Context, string, ...any) pgx.Row { return errRows{pgx.ErrTxClosed} }
func (endedTx) Conn() *pgx.Conn                                  { return nil }

type txRow struct {
	t   *tx
	ctx context.Context
	r   pgx.Row
}

func (r txRow) Scan(dest ...any) error {
	err := r.r.Scan(dest...)
	if err == nil || errors.Is(err, pgx.ErrNoRows) {
		return err
	}
	return r.t.stmtErr(r.ctx, "query row", err)
}
