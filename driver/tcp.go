package driver

import (
	"context"
	"net"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// Defaults of the TCP settings of write connections.
const (
	// DefaultWriteKeepAlive is the default [Config.WriteKeepAlive].
	DefaultWriteKeepAlive = 3 * time.Second
	// DefaultWriteTCPUserTimeout is the default [Config.WriteTCPUserTimeout].
	DefaultWriteTCPUserTimeout = 10 * time.Second
)

// keepAliveProbes is how many unanswered keepalive probes drop a write
// connection.
const keepAliveProbes = 3

// tcpDial wraps dial (the template's DialFunc: pgx's default dialer or the
// user's) so that the TCP connections it returns get keepalive (idle
// time and probe interval keepAlive, 3 probes) and, on Linux,
// TCP_USER_TIMEOUT userTimeout: a peer that stops answering without
// resetting the connection (a black-holed network, a powered-off host)
// is then detected within seconds, not after TCP's retransmission
// timeout (about 15 minutes). With userTimeout set, the dial itself is
// bounded by it too. A setting that is not positive is left as
// dial made it. Connections that are not TCP (Unix sockets, a user's
// tunnel) are returned untouched.
func tcpDial(dial pgconn.DialFunc, keepAlive, userTimeout time.Duration) pgconn.DialFunc {
	if keepAlive <= 0 && userTimeout <= 0 {
		return dial
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		if userTimeout > 0 {
			// TCP_USER_TIMEOUT applies once connected: a handshake with
			// a host whose packets vanish is bounded the same way (the
			// kernel's SYN retries last about two minutes).
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, userTimeout)
			defer cancel()
		}
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		tc, ok := c.(*net.TCPConn)
		if !ok {
			return c, nil
		}
		if keepAlive > 0 {
			if err := tc.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true, Idle: keepAlive, Interval: keepAlive, Count: keepAliveProbes}); err != nil {
				c.Close()
				return nil, &net.OpError{Op: "set keepalive", Net: network, Addr: c.RemoteAddr(), Err: err}
			}
		}
		if userTimeout > 0 {
			if err := setTCPUserTimeout(tc, userTimeout); err != nil {
				c.Close()
				return nil, &net.OpError{Op: "set tcp_user_timeout", Net: network, Addr: c.RemoteAddr(), Err: err}
			}
		}
		return c, nil
	}
}
