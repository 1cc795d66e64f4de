package driver

import (
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// ErrNotReplicated: a commit waiting for the synchronous standbys was
// cancelled on the server (statement_timeout, pg_cancel_backend, a
// cancel request) after it had committed locally. PostgreSQL then reports
// success with only a WARNING ("canceling wait for synchronous
// replication"), although the commit may exist on the primary alone and
// be lost if it fails over now. The pool returns such a "success" as an
// [*Error] of kind [ErrOutcomeUnknown] that also matches ErrNotReplicated.
var ErrNotReplicated = errors.New("driver: committed on the primary, not confirmed by its synchronous standbys")

// syncWaitKey marks, in a connection's CustomData, the warning that a wait
// for synchronous replication was cancelled during its last statement.
const syncWaitKey = "pgha.syncwait"

// syncWaitCancelled reports whether n is PostgreSQL's warning that it
// cancelled a commit's wait for synchronous replication (the commit
// stays, locally). The messages are PostgreSQL's, SyncRepWaitForLSN in
// src/backend/replication/syncrep.c; they are not translated when
// lc_messages is C or English, which the check assumes, and the detail
// is checked too where present.
func syncWaitCancelled(n *pgconn.Notice) bool {
	if n.Severity != "WARNING" && n.SeverityUnlocalized != "WARNING" {
		return false
	}
	return strings.Contains(n.Message, "wait for synchronous replication") ||
		strings.Contains(n.Detail, "committed locally, but might not have been replicated")
}

// noticeHook records a cancelled synchronous-replication wait on the
// connection, then calls the user's handler. pgx calls it on the goroutine
// running the statement, so the caller sees the mark once the statement
// returns.
func noticeHook(user pgconn.NoticeHandler) pgconn.NoticeHandler {
	return func(c *pgconn.PgConn, n *pgconn.Notice) {
		if syncWaitCancelled(n) {
			c.CustomData()[syncWaitKey] = n
		}
		if user != nil {
			user(c, n)
		}
	}
}

// clearSyncWait forgets any earlier mark on c, before a statement.
func clearSyncWait(c *pgconn.PgConn) { delete(c.CustomData(), syncWaitKey) }

// takeSyncWait returns the error for a statement that "succeeded" on c
// while its commit's wait for the synchronous standbys was cancelled, and
// clears the mark; nil when there was no such warning.
func takeSyncWait(c *pgconn.PgConn, op, node string) error {
	v, ok := c.CustomData()[syncWaitKey]
	if !ok {
		return nil
	}
	delete(c.CustomData(), syncWaitKey)
	n, _ := v.(*pgconn.Notice)
	msg := "canceling wait for synchronous replication"
	if n != nil {
		msg = n.Message
		if n.Detail != "" {
			msg += " (" + n.Detail + ")"
		}
	}
	return &Error{Kind: ErrOutcomeUnknown, Op: op, Node: node, Err: fmt.Errorf("%w: PostgreSQL warned: %s", ErrNotReplicated, msg)}
}
