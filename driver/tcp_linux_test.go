package driver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pgha/pgha/internal/testutil"
)

// tcpUserTimeoutOf reads TCP_USER_TIMEOUT back, for tests.
func tcpUserTimeoutOf(c *net.TCPConn) (time.Duration, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var v int
	var gerr error
	err = rc.Control(func(fd uintptr) {
		v, gerr = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, tcpUserTimeout)
	})
	if err != nil {
		return 0, err
	}
	return time.Duration(v) * time.Millisecond, gerr
}

// TestWriteConnTCPSettings: the connections of a write pool, made through
// the user's DialFunc, carry the keepalive and TCP_USER_TIMEOUT of the
// Config; probes and read pools keep the dial's own settings.
func TestWriteConnTCPSettings(t *testing.T) {
	primary := testutil.StartPostgres(t, testutil.PostgresOptions{Name: "tcp1"})
	ctx := testutil.Ctx(t, time.Minute)
	cfg, err := ParseConfig(fmt.Sprintf("postgres://postgres:%s@127.0.0.1:%d/postgres?sslmode=disable&pgha_write_keepalive=4s&pgha_write_tcp_user_timeout=7s",
		url.QueryEscape(testutil.PostgresSuperuserPassword), primary.Config().Port))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []*net.TCPConn
	var d net.Dialer
	cfg.ConnConfig.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if tc, ok := c.(*net.TCPConn); ok {
			mu.Lock()
			conns = append(conns, tc)
			mu.Unlock()
		}
		return c, err
	}
	cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), nil))
	p, err := NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c, err := p.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Release()
	local := c.Conn().PgConn().Conn().LocalAddr().String()
	mu.Lock()
	defer mu.Unlock()
	var found bool
	for _, tc := range conns {
		got, err := tcpUserTimeoutOf(tc)
		if err != nil {
			t.Fatal(err)
		}
		if tc.LocalAddr().String() == local {
			found = true
			if got != 7*time.Second {
				t.Errorf("write connection TCP_USER_TIMEOUT = %v, want 7s (pgha_write_tcp_user_timeout)", got)
			}
			ka, err := keepAliveIdleOf(tc)
			if err != nil {
				t.Fatal(err)
			}
			if ka != 4*time.Second {
				t.Errorf("write connection TCP_KEEPIDLE = %v, want 4s (pgha_write_keepalive)", ka)
			}
		} else if got != 0 {
			t.Errorf("probe connection TCP_USER_TIMEOUT = %v, want the system's (0)", got)
		}
	}
	if !found {
		t.Fatalf("the write connection (%s) was not made by the user's DialFunc (%d connections made)", local, len(conns))
	}
}

// keepAliveIdleOf reads TCP_KEEPIDLE (0 when keepalive is off).
func keepAliveIdleOf(c *net.TCPConn) (time.Duration, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var on, idle int
	var gerr error
	err = rc.Control(func(fd uintptr) {
		if on, gerr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_KEEPALIVE); gerr == nil {
			idle, gerr = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE)
		}
	})
	if err != nil || gerr != nil || on == 0 {
		return 0, errors.Join(err, gerr)
	}
	return time.Duration(idle) * time.Second, nil
}
