//go:build !linux

package driver

import (
	"net"
	"time"
)

// setTCPUserTimeout does nothing: TCP_USER_TIMEOUT is Linux's.
func setTCPUserTimeout(*net.TCPConn, time.Duration) error { return nil }

// peekSocket reports nothing: the check is Linux's.
func peekSocket(net.Conn) (closed bool, first byte) { return false, 0 }
