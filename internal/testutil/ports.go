package testutil

import (
	"fmt"
	"net"
	"sync"
)

// handedOut holds every loopback port this process has given a test. The
// kernel may hand the same ephemeral port to two listen(":0") calls in a
// row once the first listener is closed (CI saw an etcd member get the same
// port for its client and peer URLs), so a port is never given twice.
var (
	portsMu   sync.Mutex
	handedOut = map[int]bool{}
)

// pickPort returns a loopback TCP port that was free when chosen and that
// this process has not handed out before.
func pickPort() (int, error) {
	portsMu.Lock()
	defer portsMu.Unlock()
	// Listeners on ports already handed out stay open until a new port is
	// found, so the kernel cannot offer the same port again.
	var held []net.Listener
	defer func() {
		for _, l := range held {
			l.Close()
		}
	}()
	for range 64 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("pick a free port: %w", err)
		}
		held = append(held, l)
		p := l.Addr().(*net.TCPAddr).Port
		if !handedOut[p] {
			handedOut[p] = true
			return p, nil
		}
	}
	return 0, fmt.Errorf("pick a free port: 64 tries gave only ports this process already uses")
}
