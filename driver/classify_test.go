package driver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/puddle/v2"
)

// safeErr is an error that says it was raised before sending, as pgconn's
// own pre-send errors do through their SafeToRetry method.
type safeErr struct{}

func (safeErr) Error() string     { return "not sent" }
func (safeErr) SafeToRetry() bool { return true }

// TestClassify has one case per error class and per way an error reaches
// each class: the pool's retry-safety policy.
func TestClassify(t *testing.T) {
	live := context.Background()
	done, cancel := context.WithCancel(live)
	cancel()
	_, refused := pgconn.Connect(live, "postgres://u@127.0.0.1:1/db?sslmode=disable&connect_timeout=2")
	pg := func(code string) error { return &pgconn.PgError{Code: code, Message: "m"} }
	wrap := func(err error) error { return fmt.Errorf("exec: %w", err) }
	for _, tc := range []struct {
		name string
		ctx  context.Context
		err  error
		want errClass
	}{
		// The caller's context ended: the caller's doing, never the node's.
		{"caller cancelled", done, context.Canceled, classCaller},
		{"caller deadline, pgconn timeout", done, wrap(context.DeadlineExceeded), classCaller},
		{"caller cancelled, connection broke meanwhile", done, io.ErrUnexpectedEOF, classCaller},
		// Nothing was sent.
		{"node no longer primary (PrepareConn)", live, wrap(errNotPrimary), classUnsent},
		{"connect error", live, &pgconn.ConnectError{}, classUnsent},
		{"connect error: refused", live, refused, classUnsent},
		{"pgconn SafeToRetry", live, wrap(safeErr{}), classUnsent},
		{"node pool closed under Acquire", live, wrap(puddle.ErrClosedPool), classUnsent},
		// The node refused a write.
		{"new write connection found a standby", live, wrap(errReadOnlyConn), classReadOnly},
		{"read_only_sql_transaction", live, pg("25006"), classReadOnly},
		{"cannot_connect_now", live, pg("57P03"), classReadOnly},
		// The connection failed after sending.
		{"admin_shutdown", live, pg("57P01"), classConn},
		{"crash_shutdown", live, pg("57P02"), classConn},
		{"idle_session_timeout", live, pg("57P05"), classConn},
		{"connection_failure", live, pg("08006"), classConn},
		{"unexpected EOF", live, wrap(io.ErrUnexpectedEOF), classConn},
		{"EOF", live, io.EOF, classConn},
		{"connection reset", live, wrap(syscall.ECONNRESET), classConn},
		{"broken pipe", live, wrap(syscall.EPIPE), classConn},
		{"use of closed connection", live, wrap(net.ErrClosed), classConn},
		{"net.Error", live, &net.OpError{Op: "read", Err: errors.New("x")}, classConn},
		// The statement's own error.
		{"unique_violation", live, pg("23505"), classOther},
		{"no rows", live, pgx.ErrNoRows, classOther},
		{"anything else", live, errors.New("boom"), classOther},
	} {
		if got := classify(tc.ctx, tc.err); got != tc.want {
			t.Errorf("%s: classify(%T) = %d, want %d", tc.name, tc.err, got, tc.want)
		}
	}
}
