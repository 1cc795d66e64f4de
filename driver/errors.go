package driver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/puddle/v2"
)

// Errors returned by the pool. Match them with [errors.Is]; the pgx error
// that caused them stays reachable with [errors.As] and [errors.Unwrap].
var (
	// ErrFailover: a transaction was broken by a failover or by the loss of
	// its connection before its COMMIT was sent. Nothing it did was
	// committed; run it again from the start. Package driver/stdlib
	// returns it too for a database/sql statement on a connection whose
	// node stopped being the primary (nothing of it was applied).
	ErrFailover = errors.New("driver: transaction broken by failover")

	// ErrOutcomeUnknown: the connection failed after a COMMIT (or a
	// statement outside a transaction, which commits on its own) was sent
	// and before its result came back. It may or may not have been
	// committed; only the application can tell (for example by reading
	// back what it wrote). With outcome resolution on (see
	// [Config.ResolveOutcome]) the pool asks the primary first, and
	// returns this only when it could not tell.
	ErrOutcomeUnknown = errors.New("driver: commit outcome unknown")

	// ErrNoPrimary: no writable primary was found within
	// [Config.FailoverTimeout].
	ErrNoPrimary = errors.New("driver: no writable primary")

	// ErrNoReplica: [ReadReplicas] mode found no replica within
	// [Config.MaxReplicaLag] (and, with a causal token, none that had
	// replayed past it).
	ErrNoReplica = errors.New("driver: no eligible replica")

	// ErrClosed: the pool was closed.
	ErrClosed = errors.New("driver: pool closed")
)

// Error is the error the pool returns for a failed operation that it
// classified: it matches [ErrFailover], [ErrOutcomeUnknown],
// [ErrNotCommitted] or [ErrNoPrimary] through Kind, and unwraps to the pgx
// error (or the last error seen while waiting for a primary).
type Error struct {
	// Kind is ErrFailover, ErrOutcomeUnknown, ErrNotCommitted or
	// ErrNoPrimary.
	Kind error
	// Op is the operation: "exec", "query", "commit", ...
	Op string
	// Node is the node the operation was routed to; "" when none.
	Node string
	// Err is the underlying error; may be nil for ErrNoPrimary.
	Err error
}

// Error returns "op: kind (node n): underlying error".
func (e *Error) Error() string {
	s := "driver: error"
	if e.Kind != nil {
		s = e.Kind.Error()
	}
	if e.Op != "" {
		s = e.Op + ": " + s
	}
	if e.Node != "" {
		s += " (node " + e.Node + ")"
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns the kind and the underlying error, so [errors.Is] matches
// both the sentinel and, say, io.ErrUnexpectedEOF.
func (e *Error) Unwrap() []error {
	var errs []error
	for _, err := range []error{e.Kind, e.Err} {
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// ConfigError is an invalid [Config] field, returned by [Config.Validate]
// and [NewWithConfig].
type ConfigError struct {
	// Field names the field, e.g. "FailoverTimeout" or "Hosts[1]".
	Field string
	// Value is the offending value (never a password).
	Value any
	// Reason says what is wrong and how to fix it.
	Reason string
}

// Error returns "driver: Field value reason".
func (e *ConfigError) Error() string {
	return fmt.Sprintf("driver: %s %v %s", e.Field, e.Value, e.Reason)
}

// SafeToRetry reports whether err is guaranteed to have happened before
// anything was sent to the server (so running the operation again cannot
// apply it twice). It extends [pgconn.SafeToRetry] with failed connection
// attempts, a node that turned out not to be the primary, an acquire
// from a node pool that was closed (pgxpool's "closed pool"), and a
// connection that a resolving call (see "Outcome resolution") found
// closed by its server before sending anything.
func SafeToRetry(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, errNotPrimary) || errors.Is(err, puddle.ErrClosedPool) || errors.Is(err, errClosedBeforeSend) {
		return true
	}
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) {
		return true
	}
	return pgconn.SafeToRetry(err)
}

// errNotPrimary is returned by the write pools' PrepareConn hook when the
// node stopped being the primary: nothing was sent.
var errNotPrimary = errors.New("driver: node is no longer the primary")

type idempotentKey struct{}

// WithIdempotent marks the operations run with the returned context as
// idempotent: outside a transaction, one that fails on a connection error
// after it was sent is retried once on the (new) primary instead of
// returning [ErrOutcomeUnknown]. Use it only for statements that are safe
// to apply twice.
func WithIdempotent(ctx context.Context) context.Context {
	return context.WithValue(ctx, idempotentKey{}, true)
}

func isIdempotent(ctx context.Context) bool {
	v, _ := ctx.Value(idempotentKey{}).(bool)
	return v
}

// errClass is what the pool does about an error.
type errClass int

const (
	classOther    errClass = iota // the statement's own error: return it as is
	classCaller                   // the caller's ctx ended: return as is, never blame the node
	classUnsent                   // nothing was sent: retry is safe
	classReadOnly                 // the node refused a write: it is not (or no longer) the primary
	classConn                     // the connection failed after the request was sent
)

// classify sorts err. ctx is the caller's context.
func classify(ctx context.Context, err error) errClass {
	if ctx.Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || pgconn.Timeout(err)) {
		return classCaller
	}
	if ctx.Err() != nil {
		// The caller's context is done: whatever broke is the caller's doing.
		return classCaller
	}
	if errors.Is(err, errReadOnlyConn) {
		return classReadOnly // a new write connection found a standby: nothing was sent
	}
	if errors.Is(err, puddle.ErrClosedPool) {
		// A node pool closed under an Acquire (the node left the topology,
		// or the pool is closing): nothing was sent.
		return classUnsent
	}
	var pe *pgconn.PgError
	isPg := errors.As(err, &pe)
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) {
		// A failed connection attempt sent no statement, whatever the
		// server said (authentication, missing database, too many
		// clients), except that a server in recovery or starting up
		// (57P03) is not the primary.
		if isPg && pe.Code == "57P03" {
			return classReadOnly
		}
		return classUnsent
	}
	if isPg {
		switch pe.Code {
		case "25006": // read_only_sql_transaction: the write was refused, nothing ran
			return classReadOnly
		case "57P03": // cannot_connect_now: starting up, shutting down, or in recovery
			return classReadOnly
		case "57P01", "57P02", "57P05": // admin_shutdown, crash_shutdown, idle_session_timeout
			return classConn
		}
		if len(pe.Code) == 5 && pe.Code[:2] == "08" { // connection_exception
			return classConn
		}
		return classOther
	}
	if SafeToRetry(err) {
		return classUnsent
	}
	var ne net.Error
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || errors.As(err, &ne) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.Is(err, net.ErrClosed) ||
		pgconn.Timeout(err) {
		return classConn
	}
	return classOther
}
