package replicate

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
)

// openTransactions counts the client sessions, other than the caller's,
// that are inside a transaction (an idle pooled connection is not).
const openTransactions = `SELECT count(*) FROM pg_stat_activity
	WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() AND xact_start IS NOT NULL`

// drainQuiet is how long DrainTransactions must see no open transaction
// before it returns: a request a client sent just before it learnt of the
// switchover may still be on its way to a backend (not yet a transaction
// when sampled).
const drainQuiet = 20 * time.Millisecond

// drainNotice is the least DrainTransactions waits: the time for every
// client to learn of the switchover (its etcd watch) before an empty
// server counts as drained. A client that has not learnt of it yet may be
// opening a connection, not yet in a transaction.
const drainNotice = 100 * time.Millisecond

// DrainResult is what DrainTransactions saw.
type DrainResult struct {
	// Waited is how long it waited for the open transactions to end.
	Waited time.Duration
	// Open is how many client transactions were open when it started.
	Open int
	// Terminated is how many sessions it ended at the bound because
	// their transaction was still open.
	Terminated int
}

// DrainTransactions waits, up to within, until no client session has had
// a transaction open for 20 ms (and at least 100 ms in all), then terminates the sessions whose transaction is
// still open (pg_terminate_backend). A primary about to hand over calls it
// before its shutdown: transactions shorter than within finish, and their
// clients see no error. It does not stop new transactions from starting:
// clients that follow the leader record hold their new work meanwhile
// (driver.Pool does). It returns ErrNotRunning when the server is down.
func (i *Instance) DrainTransactions(ctx context.Context, within time.Duration) (DrainResult, error) {
	if i.running() == nil {
		return DrainResult{}, ErrNotRunning
	}
	var r DrainResult
	start := time.Now()
	err := i.withAdmin(ctx, "drain transactions", func(c *pgx.Conn) error {
		tick := time.NewTicker(5 * time.Millisecond) // the poll's pace
		defer tick.Stop()
		var quietSince time.Time
		for first := true; ; first = false {
			var n int
			if err := c.QueryRow(ctx, openTransactions).Scan(&n); err != nil {
				return err
			}
			if first {
				r.Open = n
			}
			now := time.Now()
			switch {
			case n > 0:
				quietSince = time.Time{}
			case quietSince.IsZero():
				quietSince = now
			case now.Sub(quietSince) >= drainQuiet && now.Sub(start) >= drainNotice:
				return nil
			}
			if now.Sub(start) >= within {
				if n == 0 {
					return nil
				}
				break
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-tick.C:
			}
		}
		rows, err := c.Query(ctx, `SELECT pg_terminate_backend(pid), pid, usename, application_name, state,
				now() - xact_start, left(query, 60)
			FROM pg_stat_activity
			WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() AND xact_start IS NOT NULL`)
		if err != nil {
			return err
		}
		for rows.Next() {
			var ok bool
			var pid int
			var user, app, state, query *string
			var age time.Duration
			if err := rows.Scan(&ok, &pid, &user, &app, &state, &age, &query); err != nil {
				return err
			}
			if ok {
				r.Terminated++
			}
			i.log.Warn("terminated a session whose transaction outlasted the drain", "pid", pid, "user", deref(user),
				"application_name", deref(app), "state", deref(state), "transaction_age", age.Round(time.Millisecond), "query", deref(query))
		}
		return rows.Err()
	})
	r.Waited = time.Since(start)
	if err == nil && (r.Open > 0 || r.Terminated > 0) {
		i.log.Info("client transactions drained", "open", r.Open, "waited", r.Waited.Round(time.Millisecond), "terminated", r.Terminated)
	}
	return r, err
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
