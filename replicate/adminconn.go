package replicate

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// The admin connection: one persistent superuser session to the local
// server over its unix socket, used by the frequent, short queries the HA
// loop runs every round (Status, EnsureSlot, DropSlot, Slots,
// SetSynchronousStandbys). Opening a connection per query costs a backend
// fork and a password handshake each time; on a healthy cluster the loop
// must make no new logins at all (an idle cluster stays idle).
//
// The session is opened lazily, bound to the postmaster it was opened to
// (a new postmaster, after a restart or a crash, gets a new session), and
// dropped on any error that is not a server-side SQL error (a broken or
// timed-out connection). A call that fails on a reused session because it
// had silently broken (the server restarted between two rounds) is retried
// once on a fresh one, so callers never see a stale session's error.
// Calls are serialised (a pgx.Conn is not safe for concurrent use); the
// wait honours ctx.

// adminCloseTimeout bounds the polite close of the admin session.
const adminCloseTimeout = time.Second

// adminConn is the state of the admin connection; its methods are
// called with admin's semaphore held.
type adminConn struct {
	conn *pgx.Conn
	pid  int // postmaster the session belongs to
}

// withAdmin runs f on the admin connection to the running postmaster,
// opening one if needed. op names the operation in errors.
func (i *Instance) withAdmin(ctx context.Context, op string, f func(*pgx.Conn) error) error {
	select {
	case i.adminSem <- struct{}{}:
	case <-ctx.Done():
		return opErr(op, ctx.Err())
	}
	defer func() { <-i.adminSem }()
	p := i.running()
	if p == nil {
		i.admin.close()
		return opErr(op, ErrNotRunning)
	}
	if i.admin.conn != nil && (i.admin.pid != p.pid || i.admin.conn.IsClosed()) {
		i.admin.close()
	}
	reused := i.admin.conn != nil
	for {
		if i.admin.conn == nil {
			conn, err := i.Connect(ctx)
			if err != nil {
				return opErr(op, err)
			}
			i.admin = adminConn{conn: conn, pid: p.pid}
		}
		err := f(i.admin.conn)
		if err == nil {
			return nil
		}
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && !i.admin.conn.IsClosed() {
			return err // an SQL error: the session is fine
		}
		i.admin.close()
		if !reused || ctx.Err() != nil {
			return err
		}
		reused = false // once more, on a fresh session
	}
}

// closeAdmin closes the admin connection, if open, waiting for a call in
// progress at most until ctx ends (then the session is left to the
// shutdown, which ends it from the server side).
func (i *Instance) closeAdmin(ctx context.Context) {
	select {
	case i.adminSem <- struct{}{}:
	case <-ctx.Done():
		return
	}
	i.admin.close()
	<-i.adminSem
}

// Close closes the persistent superuser session this Instance keeps to
// its running server for status queries (see [Instance.Status]). It does
// not stop the server, and the Instance stays usable: a later call opens a
// new session. Call it when the Instance is no longer used while its
// server keeps running (Stop, Restart and Rewind close the session
// themselves). It is safe for concurrent use and returns nil.
func (i *Instance) Close() error {
	i.closeAdmin(context.Background())
	return nil
}

func (a *adminConn) close() {
	if a.conn == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), adminCloseTimeout)
	a.conn.Close(ctx)
	cancel()
	*a = adminConn{}
}
