package driver

import (
	"net"
	"syscall"
	"time"
)

// tcpUserTimeout is Linux's TCP_USER_TIMEOUT socket option
// (include/uapi/linux/tcp.h), which package syscall does not name.
const tcpUserTimeout = 0x12

// setTCPUserTimeout sets TCP_USER_TIMEOUT: how long sent data may stay
// unacknowledged before the kernel drops the connection.
func setTCPUserTimeout(c *net.TCPConn, d time.Duration) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, tcpUserTimeout, int(d.Milliseconds()))
	})
	if err != nil {
		return err
	}
	return serr
}

// peekSocket looks, without blocking or consuming anything, at what the
// server of c sent and nobody read yet: closed reports that it closed the
// connection (or reset it); first is the first byte pending (0: none).
// It runs beside any read in progress (rc.Control takes no read lock:
// pgconn may have a background read pending). A connection that is not
// a socket reports nothing.
func peekSocket(c net.Conn) (closed bool, first byte) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false, 0
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false, 0
	}
	var buf [1]byte
	rc.Control(func(fd uintptr) {
		n, _, err := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		switch {
		case err == syscall.EAGAIN || err == syscall.EINTR:
		case err != nil || n == 0:
			closed = true
		default:
			first = buf[0]
		}
	})
	return closed, first
}
