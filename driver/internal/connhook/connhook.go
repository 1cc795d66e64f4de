// Package connhook lets driver/stdlib acquire connections of a
// driver.Pool's node pools (for pgx's stdlib to run over them), and ask
// package driver about a connection it acquired: whether it may still be
// used for writes, and what an error met on it means. Package driver sets the
// functions in its init, so they are set in any program that can hold a
// driver.Pool.
package connhook

import (
	"context"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Stage is where in a session an operation ran.
type Stage int

const (
	// Statement is a statement outside a transaction: it commits on its own.
	Statement Stage = iota
	// NoEffect is an operation with no effect of its own: BEGIN, Prepare,
	// Ping.
	NoEffect
	// InTx is a statement inside a transaction, or its ROLLBACK.
	InTx
	// Commit is the COMMIT of a transaction.
	Commit
)

var (
	// Check returns nil when c, a connection acquired from a
	// driver.Pool, may still be used: its node is still the primary and
	// it was not cut. Otherwise it returns a *driver.Error of kind
	// ErrFailover saying why.
	Check func(c *pgx.Conn) error

	// Before is called before a Statement or a Commit on c.
	Before func(c *pgx.Conn)

	// After maps err, the outcome of operation op (e.g. "exec") at stage
	// st on c, as driver.Pool maps its own errors, and tells the pool what
	// it shows (a node that refused a write, a broken connection). A nil
	// err can become ErrNotReplicated for a Statement or a Commit. retry
	// reports that nothing was applied and that the operation may run
	// again on another connection (for a Statement, also when ctx was
	// marked with driver.WithIdempotent).
	After func(ctx context.Context, c *pgx.Conn, op string, st Stage, err error) (mapped error, retry bool)

	// Acquire acquires a connection to the primary of pool, a
	// *driver.Pool, as its Acquire method does (waiting up to its
	// FailoverTimeout for a primary, trying again on the new primary when
	// the node is deposed meanwhile), except that the acquisition itself
	// is done by acquire, given the primary's own *pgxpool.Pool and a ctx
	// that ends when that node stops being the primary. Its errors are
	// the pool's.
	Acquire func(ctx context.Context, pool any, acquire func(ctx context.Context, wp *pgxpool.Pool) error) error

	// Read runs f, a read, with the *pgxpool.Pool of the node that r, a
	// *driver.Reader, picks for ctx (a replica, or the primary, by the
	// pool's ReadMode; a causal token in ctx honoured), as Reader.Query
	// does: after an error that shows a failed connection, f runs once
	// more on another node. Its errors are f's, or the Reader's.
	Read func(ctx context.Context, r any, f func(ctx context.Context, pool *pgxpool.Pool) error) error
)
