// Package connhook lets driver/stdlib ask package driver about a
// connection it acquired from a driver.Pool: whether it may still be used
// for writes, and what an error met on it means. Package driver sets the
// functions in its init, so they are set in any program that can hold a
// driver.Pool.
package connhook

import (
	"context"

	"github.com/jackc/pgx/v5"
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
)
