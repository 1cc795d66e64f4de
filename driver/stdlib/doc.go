// Package stdlib opens a database/sql *sql.DB over a [driver.Pool], as
// pgx's stdlib.OpenDBFromPool does over a *pgxpool.Pool, for code written
// against database/sql (sqlx, gorm, ent, bun, sqlc's database/sql mode).
//
// Quick start:
//
//	pool, err := driver.New(ctx, "postgres://app:secret@/app?pgha_cluster=main&pgha_etcd=http://10.0.0.1:2379")
//	defer pool.Close()
//	db := stdlib.OpenDBFromPool(pool) // writes (and reads) on the primary
//	defer db.Close()
//	_, err = db.ExecContext(ctx, "insert into t values ($1)", 42)
//
// # Connections
//
// Each connection of the *sql.DB is pgx's own stdlib connection
// (github.com/jackc/pgx/v5/stdlib, through its GetPoolConnector) over a
// connection acquired from the [driver.Pool]'s pool of the primary node,
// wrapped to add the checks and the error mapping below. Opening one
// waits, as [driver.Pool.Acquire] does, up to the pool's FailoverTimeout
// for a primary, and fails with the pool's errors ([driver.ErrNoPrimary],
// [driver.ErrClosed]). Closing it releases it to the pool.
// [OpenDBFromPool] sets the *sql.DB's maximum of idle connections to zero,
// as pgx does: the [driver.Pool] keeps the idle connections, and every
// call of the *sql.DB (outside a transaction or an *sql.Conn) goes to the
// primary of the moment. Arguments, results, rows and column types are
// pgx's stdlib's own (TestContract runs the same script through both).
// Importing this package imports pgx's stdlib, which registers the
// database/sql driver names "pgx" and "pgx/v5".
//
// # Failover
//
// A connection to a node that stopped being the primary (the leader
// record moved, or the node was found dead or read-only) is never reused:
// IsValid reports false and ResetSession returns [driver.ErrBadConn], so
// database/sql discards it (this matters when the *sql.DB keeps idle
// connections: SetMaxIdleConns above zero). The pool cuts such a
// connection too, so that a call in flight on it fails at once.
//
// The errors are the [driver.Pool]'s, matched with [errors.Is]:
//
//   - a statement outside a transaction that cannot have been applied
//     (not sent, or refused by a node that is no longer the primary) is
//     retried by database/sql on a new connection, hence on the new
//     primary (database/sql tries three times); its error, when the
//     retries run out, matches [driver.ErrFailover] and [driver.ErrBadConn];
//   - one whose connection broke after it was sent fails with
//     [driver.ErrOutcomeUnknown], unless its context was marked with
//     [driver.WithIdempotent]: then database/sql retries it;
//   - in a transaction (*sql.Tx) or on an *sql.Conn, a statement broken
//     by a failover fails with [driver.ErrFailover] (database/sql does not
//     retry there); so does the COMMIT of such a transaction, and a COMMIT
//     whose connection broke after it was sent fails with
//     [driver.ErrOutcomeUnknown];
//   - a commit that PostgreSQL reports as a success although it cancelled
//     its wait for the synchronous standbys is [driver.ErrOutcomeUnknown]
//     and [driver.ErrNotReplicated], as with [driver.Pool.Exec];
//   - no primary within FailoverTimeout is [driver.ErrNoPrimary].
//
// # Reads on replicas
//
// [OpenDBFromReader] opens a *sql.DB whose statements go through the
// pool's [driver.Reader]: each statement is routed on its own by the
// pool's ReadMode (a replica within MaxReplicaLag, or the primary), with a
// causal token from the context ([driver.WithCausalToken]) honoured, and a
// transaction stays on one node and is read-only. Its connections hold no
// server session: session state (SET, temporary tables, prepared
// statements on the server) does not carry from one statement to the next
// outside a transaction. Each statement (or transaction) runs on a
// connection of pgx's stdlib acquired for it from the picked node's pool.
// Its errors are pgx's and the Reader's, not mapped. Do not write through
// it.
//
// # Concurrency
//
// The *sql.DB is safe for concurrent use, as always; database/sql uses
// each connection from one goroutine at a time. Closing the *sql.DB does
// not close the [driver.Pool].
package stdlib
