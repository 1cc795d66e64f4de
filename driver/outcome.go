package driver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgha/pgha/internal/backoff"
	"github.com/pgha/pgha/internal/keyspace"
)

// This file is outcome resolution: a commit whose connection broke after
// the COMMIT was sent is looked up on the primary found afterwards (see
// "Outcome resolution" in the package documentation).

// ErrNotCommitted: the connection failed after a COMMIT (or a statement
// outside a transaction) was sent, and outcome resolution established
// that it did not commit in the cluster's surviving history. Nothing it
// did was kept: running it again from the start cannot apply it twice.
// Returned only with resolution on ([Config.ResolveOutcome],
// [WithResolveOutcome]), as an [*Error] of this Kind.
var ErrNotCommitted = errors.New("driver: not committed (outcome resolved after the connection failed)")

type resolveKey struct{}

// Outcome reports what outcome resolution did for one call. Pass one to
// [WithOutcome]; the pool fills it in before the call returns.
type Outcome struct {
	// Resolved is true when the call's connection failed after its COMMIT
	// was sent and the pool established the result: the call returned
	// nil (committed) or an error matching [ErrNotCommitted].
	Resolved bool
	// XID is the transaction id learned before the COMMIT (0: none was
	// assigned, or it was not learned).
	XID uint64
	// Err is the connection failure that made resolution necessary; nil
	// when the call's connection did not fail after sending.
	Err error
	// Reason says, for an outcome left unknown, why (no history entry,
	// the server restarted on the same timeline, ...).
	Reason string
}

// WithResolveOutcome turns outcome resolution on for the operations run
// with the returned context, whatever [Config.ResolveOutcome] says.
func WithResolveOutcome(ctx context.Context) context.Context {
	return context.WithValue(ctx, resolveKey{}, (*Outcome)(nil))
}

// WithOutcome is [WithResolveOutcome] that also reports into o what
// resolution did (o is reset at the start of each resolving call). Use
// it to tell a commit that succeeded normally from one that was resolved
// as committed after its connection failed (o.Resolved), for example to
// log or count such commits; o must not be shared by concurrent calls.
func WithOutcome(ctx context.Context, o *Outcome) context.Context {
	return context.WithValue(ctx, resolveKey{}, o)
}

// resolving reports whether calls with ctx resolve outcomes, and where to
// report (nil: nowhere).
func (p *Pool) resolving(ctx context.Context) (bool, *Outcome) {
	o, ok := ctx.Value(resolveKey{}).(*Outcome)
	if o != nil {
		*o = Outcome{}
	}
	return ok || p.cfg.ResolveOutcome, o
}

// markSQL is run in the transaction, in the same pipeline as its commit
// and answered before the commit runs: the transaction's id (NULL when
// it has none: it wrote nothing), the server's timeline (from the name
// of the WAL file being written) and the start of its postmaster, which
// tell a resolver whether the server it asks later is the same server
// life, or a new timeline whose history entry applies.
const markSQL = "SELECT pg_current_xact_id_if_assigned()::text, " + markServerSQL

// markFirstSQL is markSQL for an autocommit statement, sent before it: it
// assigns the transaction its id at once, so that the mark leaves the
// server before the statement runs, not after.
const markFirstSQL = "SELECT pg_current_xact_id()::text, " + markServerSQL

const markServerSQL = "substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8), extract(epoch from pg_postmaster_start_time())::text"

// serverMark identifies a server life: its timeline and postmaster start.
type serverMark struct {
	timeline uint32
	started  string
}

// commitMark is what the pool learned before a COMMIT was sent.
type commitMark struct {
	learned bool // the mark's row arrived
	// neverRan: the mark did not arrive, and the server ended the
	// stream in order (see endedInOrder) before it: the server never
	// sent the mark, so it never ran what comes after it (the statement
	// and its commit, or the COMMIT).
	neverRan bool
	xid      uint64 // 0: the transaction had no id (wrote nothing)
	server   serverMark
}

// endedInOrder reports whether err is the server ending the stream in
// order: end of file (its FIN, which TCP delivers after every byte the
// server wrote before it) or an error message it sent (a FATAL as its
// session ends). Then every message the server wrote before has arrived.
// A reset (RST may discard bytes in flight), a socket this process closed,
// or a timeout says nothing of the kind.
func endedInOrder(err error) bool {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return true
	}
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Severity == "FATAL" || pe.Severity == "PANIC" || pe.SeverityUnlocalized == "FATAL" || pe.SeverityUnlocalized == "PANIC")
}

// noMark fills in mk after a pipeline that failed with err before the
// mark arrived.
func noMark(mk *commitMark, err error) {
	if !mk.learned && err != nil && endedInOrder(err) {
		mk.neverRan = true
	}
}

// parseMark reads markSQL's row.
func parseMark(row [][]byte) (commitMark, error) {
	if len(row) != 3 || row[1] == nil || row[2] == nil {
		return commitMark{}, fmt.Errorf("driver: unexpected transaction mark row %q", row)
	}
	var m commitMark
	if row[0] != nil {
		x, err := strconv.ParseUint(string(row[0]), 10, 64)
		if err != nil {
			return m, fmt.Errorf("driver: transaction id %q: %w", row[0], err)
		}
		m.xid = x
	}
	tl, err := strconv.ParseUint(string(row[1]), 16, 32)
	if err != nil {
		return m, fmt.Errorf("driver: timeline %q: %w", row[1], err)
	}
	m.server = serverMark{timeline: uint32(tl), started: string(row[2])}
	m.learned = true
	return m, nil
}

// errClosedBeforeSend: the server had closed the connection (or sent an
// error that closes it, such as a FATAL at shutdown) before a resolving
// call sent anything: nothing ran.
var errClosedBeforeSend = errors.New("driver: the server closed the connection before the statement was sent")

// checkBeforeSend returns errClosedBeforeSend when pc's server has
// already closed it, or sent an unsolicited error (a FATAL: the session is
// ending), so that nothing is sent to a server that will not answer.
// Without it, a call sent on a pooled connection whose server just died
// gets no answer, its transaction id is never learned, and its outcome
// would stay unknown although the server never saw it. It costs one
// non-blocking peek at the socket (Linux; elsewhere it checks nothing).
// Under TLS only a closed connection is seen.
func checkBeforeSend(ctx context.Context, pc *pgconn.PgConn) error {
	conn := pc.Conn()
	tlsConn := false
	if u, ok := conn.(interface{ NetConn() net.Conn }); ok {
		conn, tlsConn = u.NetConn(), true
	}
	closed, first := peekSocket(conn)
	if !closed && (tlsConn || first != 'E') {
		return nil
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 100*time.Millisecond)
	defer cancel()
	pc.Close(cctx)
	return errClosedBeforeSend
}

// pipelined sends queries (sql and encoded arguments) in one pipeline on
// pc, with a Flush request after the first flushAt of them and one Sync at
// the end, and reads the results. It returns the results read until the
// first failure and that failure (a statement's *pgconn.PgError or a
// connection error); the connection is back in normal mode on return.
func pipelined(ctx context.Context, pc *pgconn.PgConn, queries []pipeQuery, flushAt int) ([]*pgconn.Result, error) {
	pl := pc.StartPipeline(ctx)
	for i, q := range queries {
		if i == flushAt {
			pl.SendFlushRequest()
		}
		pl.SendQueryParams(q.sql, q.params, nil, q.formats, q.results)
	}
	pl.SendPipelineSync()
	if err := pl.Flush(); err != nil {
		pl.Close()
		return nil, err
	}
	var out []*pgconn.Result
	var ferr error
	for range queries {
		res, err := pl.GetResults()
		if err != nil {
			ferr = err
			break
		}
		rr, ok := res.(*pgconn.ResultReader)
		if !ok {
			ferr = fmt.Errorf("driver: pipeline returned %T, want a result", res)
			break
		}
		r := rr.Read()
		if r.Err != nil {
			ferr = r.Err
			break
		}
		out = append(out, r)
	}
	if err := pl.Close(); err != nil && ferr == nil {
		ferr = err
	}
	return out, ferr
}

type pipeQuery struct {
	sql              string
	params           [][]byte
	formats, results []int16
}

// execMarked is exec for a resolving call: sql runs in one pipeline after
// markFirstSQL and a Flush, then the Sync that commits, so the mark
// leaves the server before the statement runs (the statement's id is
// assigned by the mark, even for a statement that writes nothing). Arguments are encoded as pgx's
// QueryExecModeExec does (types from the Go values, no prepare).
func (p *Pool) execMarked(ctx context.Context, n *node, sql string, args []any) (tag pgconn.CommandTag, rep error, mk commitMark, err error) {
	c, err := p.acquireWrite(ctx, n)
	if err != nil {
		return tag, nil, mk, err
	}
	defer c.Release()
	conn := c.Conn()
	if len(args) > 0 {
		if _, ok := args[0].(pgx.QueryExecMode); ok {
			args = args[1:] // the resolving path has its own mode
		}
	}
	if len(args) > 0 {
		if rw, ok := args[0].(pgx.QueryRewriter); ok {
			if sql, args, err = rw.RewriteQuery(ctx, conn, sql, args[1:]); err != nil {
				return tag, nil, mk, fmt.Errorf("rewrite query: %w", err)
			}
		}
	}
	var eqb pgx.ExtendedQueryBuilder
	if err := eqb.Build(conn.TypeMap(), nil, args); err != nil {
		return tag, nil, mk, err
	}
	pc := conn.PgConn()
	if err := checkBeforeSend(ctx, pc); err != nil {
		return tag, nil, mk, err
	}
	clearSyncWait(pc)
	res, err := pipelined(ctx, pc, []pipeQuery{
		{sql: markFirstSQL},
		{sql: sql, params: eqb.ParamValues, formats: eqb.ParamFormats, results: eqb.ResultFormats},
	}, 1)
	if len(res) > 0 && len(res[0].Rows) == 1 {
		var perr error
		if mk, perr = parseMark(res[0].Rows[0]); perr != nil && err == nil {
			err = perr
		}
	}
	if len(res) > 1 {
		tag = res[1].CommandTag
	}
	noMark(&mk, err)
	if err == nil {
		rep = takeSyncWait(pc, "exec", n.key)
	}
	return tag, rep, mk, err
}

// execResolving is [Pool.Exec] with outcome resolution.
func (p *Pool) execResolving(ctx context.Context, o *Outcome, sql string, args []any) (pgconn.CommandTag, error) {
	var tag pgconn.CommandTag
	var rep error
	var mk commitMark
	var last *node
	err := p.run(ctx, "exec", retryIfUnapplied, func(n *node) (err error) {
		last = n
		tag, rep, mk, err = p.execMarked(ctx, n, sql, args)
		return err
	})
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "25001" && !errors.As(err, new(*Error)) {
		// active_sql_transaction: the statement refuses to run in a
		// transaction block (VACUUM, CREATE DATABASE, ...), as the
		// pipeline with the mark is one; nothing ran. Run it alone:
		// it commits nothing a resolution could look up.
		return p.execPlain(ctx, sql, args)
	}
	var e *Error
	if errors.As(err, &e) && e.Kind == ErrOutcomeUnknown && last != nil {
		// The command tag (rows affected) went with the connection.
		return pgconn.CommandTag{}, p.resolve(ctx, o, last, mk, e)
	}
	if err != nil {
		return tag, err
	}
	return tag, rep
}

// commitMarked commits t's transaction in one pipeline with markSQL, with
// a Flush between them so that the mark arrives before the COMMIT runs.
// It returns what pgx's Commit would: nil, pgx.ErrTxCommitRollback (the
// transaction had failed) or the failure.
func (t *tx) commitMarked(ctx context.Context, pc *pgconn.PgConn) (commitMark, error) {
	var mk commitMark
	if err := checkBeforeSend(ctx, pc); err != nil {
		return mk, err
	}
	res, err := pipelined(ctx, pc, []pipeQuery{{sql: markSQL}, {sql: "commit"}}, 1)
	if len(res) > 0 && len(res[0].Rows) == 1 {
		var perr error
		if mk, perr = parseMark(res[0].Rows[0]); perr != nil && err == nil {
			err = perr
		}
	}
	noMark(&mk, err)
	if err == nil && len(res) == 2 && res[1].CommandTag.String() == "ROLLBACK" {
		err = pgx.ErrTxCommitRollback
	}
	return mk, err
}

// verdict is a resolution's answer.
type verdict int

const (
	vUnknown      verdict = iota
	vCommitted            // in the surviving history
	vNotCommitted         // not in the surviving history
	vAsk                  // pg_xact_status on the current primary is the answer
)

// judgeFork decides, before asking the current primary, what its
// pg_xact_status can say about the transaction mk marked. cur is the
// current primary's server life; hist is the cluster's timeline history
// (nil when there is none: host mode, or it could not be read). It
// returns vAsk, vNotCommitted or vUnknown, with the reason for the last.
//
// The rule (see docs/design.md, "Outcome resolution"): on the same server
// life the transaction's status is the server's. After a fork (a higher
// timeline), ids from the old timeline's first unreplicated id upward
// were not replayed by the new timeline, which assigns them again: an id
// at or above the first id of a timeline that forked after the marked
// one did not commit in the surviving history, whatever pg_xact_status
// says of it now (it may be another transaction's). Below it, the new
// primary has the id's final status.
func judgeFork(mk commitMark, cur serverMark, hist *keyspace.HistoryRecord) (verdict, string) {
	switch {
	case mk.neverRan:
		return vNotCommitted, ""
	case !mk.learned:
		return vUnknown, "the transaction id was not received before the connection failed"
	case mk.xid == 0:
		return vCommitted, "" // wrote nothing: its commit has nothing to lose
	case cur.timeline == mk.server.timeline && cur.started == mk.server.started:
		return vAsk, ""
	case cur.timeline == mk.server.timeline:
		return vUnknown, fmt.Sprintf("the primary restarted on timeline %d: transaction ids not flushed before the crash are assigned again", cur.timeline)
	case cur.timeline < mk.server.timeline:
		return vUnknown, fmt.Sprintf("the primary is on timeline %d, older than the transaction's %d", cur.timeline, mk.server.timeline)
	case hist == nil:
		return vUnknown, fmt.Sprintf("the primary moved from timeline %d to %d and there is no timeline history (host mode) to tell which transaction ids the new timeline reuses", mk.server.timeline, cur.timeline)
	}
	var first uint64
	found := false
	for _, e := range hist.Entries {
		if e.Timeline <= mk.server.timeline || e.Timeline > cur.timeline {
			continue
		}
		if e.FirstXID == 0 {
			return vUnknown, fmt.Sprintf("the history entry of timeline %d has no first_xid (written by an older pgha, or its read failed)", e.Timeline)
		}
		if !found || e.FirstXID < first {
			first, found = e.FirstXID, true
		}
	}
	if !found {
		return vUnknown, fmt.Sprintf("the timeline history has no entry after timeline %d (up to %d)", mk.server.timeline, cur.timeline)
	}
	if mk.xid >= first {
		return vNotCommitted, ""
	}
	return vAsk, ""
}

// judgeStatus maps pg_xact_status (NULL: "") to a verdict; "in progress"
// is vAsk (ask again).
func judgeStatus(status string) (verdict, string) {
	switch status {
	case "committed":
		return vCommitted, ""
	case "aborted":
		return vNotCommitted, ""
	case "in progress":
		return vAsk, ""
	}
	return vUnknown, "pg_xact_status has no status for the transaction id (too old)"
}

// resolve establishes the outcome of the operation that failed with
// cause, an [*Error] of kind ErrOutcomeUnknown, after mk was learned on
// node from. It waits (up to FailoverTimeout) for a primary, asks it, and
// returns nil (committed), an [*Error] of kind [ErrNotCommitted], or
// cause with the reason it stays unknown.
func (p *Pool) resolve(ctx context.Context, o *Outcome, from *node, mk commitMark, cause *Error) error {
	if o != nil {
		o.XID, o.Err = mk.xid, cause.Err
	}
	v, reason := p.resolveVerdict(ctx, from, mk)
	p.log.Info("commit outcome resolved", "op", cause.Op, "node", cause.Node, "xid", mk.xid, "outcome", verdictName(v), "reason", reason, "cause", cause.Err.Error())
	switch v {
	case vCommitted:
		if o != nil {
			o.Resolved = true
		}
		return nil
	case vNotCommitted:
		if o != nil {
			o.Resolved = true
		}
		return &Error{Kind: ErrNotCommitted, Op: cause.Op, Node: cause.Node, Err: cause.Err}
	}
	if o != nil {
		o.Reason = reason
	}
	return &Error{Kind: ErrOutcomeUnknown, Op: cause.Op, Node: cause.Node, Err: fmt.Errorf("%w (unresolved: %s)", cause.Err, reason)}
}

func verdictName(v verdict) string {
	return [...]string{"unknown", "committed", "not committed", "ask"}[v]
}

// resolveVerdict does resolve's work.
func (p *Pool) resolveVerdict(ctx context.Context, from *node, mk commitMark) (verdict, string) {
	if v, reason := judgeFork(mk, serverMark{timeline: mk.server.timeline, started: mk.server.started}, nil); v != vAsk {
		return v, reason // not learned, or nothing to commit
	}
	deadline := time.Now().Add(p.cfg.FailoverTimeout)
	failed, since := from, time.Now()
	bo := backoff.New(10*time.Millisecond, 200*time.Millisecond)
	reason := "no primary answered within FailoverTimeout"
	for time.Now().Before(deadline) {
		n, err := p.await(ctx, failed, since, deadline)
		if err != nil {
			return vUnknown, "waiting for a primary: " + err.Error()
		}
		v, r, err := p.ask(ctx, n, mk)
		switch {
		case err != nil && ctx.Err() != nil:
			return vUnknown, "asking the primary: " + err.Error()
		case err != nil:
			// The new primary failed too: wait for the next one.
			reason = fmt.Sprintf("asking node %s: %v", n.key, err)
			failed, since = n, time.Now()
			p.connFailed(n, err)
			continue
		case v != vAsk:
			return v, r
		}
		// Still in progress on the same server (its backend has not
		// noticed the broken connection yet): ask again shortly.
		reason = "the transaction was still in progress at FailoverTimeout"
		failed, since = nil, time.Now()
		select {
		case <-ctx.Done():
			return vUnknown, "asking the primary: " + ctx.Err().Error()
		case <-time.After(bo.Next()):
		}
	}
	return vUnknown, reason
}

// ask asks node n, the primary, about mk's transaction.
func (p *Pool) ask(ctx context.Context, n *node, mk commitMark) (verdict, string, error) {
	c, err := p.acquireWrite(ctx, n)
	if err != nil {
		return vUnknown, "", err
	}
	defer c.Release()
	var tl, started string
	if err := c.QueryRow(ctx, "SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8), extract(epoch from pg_postmaster_start_time())::text").Scan(&tl, &started); err != nil {
		return vUnknown, "", err
	}
	t, err := strconv.ParseUint(tl, 16, 32)
	if err != nil {
		return vUnknown, "", fmt.Errorf("timeline %q: %w", tl, err)
	}
	cur := serverMark{timeline: uint32(t), started: started}
	var hist *keyspace.HistoryRecord
	if cur != mk.server && p.etcd != nil {
		if hist, err = p.readHistory(ctx); err != nil {
			return vUnknown, "reading the timeline history: " + err.Error(), nil
		}
	}
	v, reason := judgeFork(mk, cur, hist)
	if v != vAsk {
		return v, reason, nil
	}
	return p.askStatus(ctx, c, mk.xid)
}

// askStatus runs pg_xact_status on c.
func (p *Pool) askStatus(ctx context.Context, c *pgxpool.Conn, xid uint64) (verdict, string, error) {
	var status *string
	if err := c.QueryRow(ctx, "SELECT pg_xact_status($1::text::xid8)", strconv.FormatUint(xid, 10)).Scan(&status); err != nil {
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code == "22023" { // "transaction ID ... is in the future"
			return vUnknown, "pg_xact_status: " + pe.Message, nil
		}
		return vUnknown, "", err
	}
	if status == nil {
		v, r := judgeStatus("")
		return v, r, nil
	}
	v, r := judgeStatus(*status)
	return v, r, nil
}

// readHistory reads the cluster's timeline history record from etcd.
func (p *Pool) readHistory(ctx context.Context) (*keyspace.HistoryRecord, error) {
	ctx, cancel := context.WithTimeout(ctx, leaderReadTimeout)
	defer cancel()
	resp, err := p.etcd.Get(ctx, p.layout.History())
	if err != nil {
		return nil, err
	}
	if len(resp.Kvs) == 0 {
		return nil, errors.New("no history key")
	}
	h, err := keyspace.Decode[keyspace.HistoryRecord](resp.Kvs[0].Value)
	if err != nil {
		return nil, err
	}
	return &h, nil
}
