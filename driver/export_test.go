package driver

import (
	"fmt"
	"time"
)

// DebugState describes the pool's view of the topology, for test failure
// messages.
func (p *Pool) DebugState() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := fmt.Sprintf("primary=%s", keyOf(p.primary.Load()))
	if r := p.replicas.Load(); r != nil {
		for _, n := range *r {
			s += fmt.Sprintf(" replica=%s(lag %d, replay %d)", n.key, n.lag.Load(), n.replay.Load())
		}
	}
	for _, n := range p.allNodesLocked() {
		pr := n.probe.Load()
		if pr != nil {
			s += fmt.Sprintf(" [%s ws=%d rec=%v ro=%v lsn=%d err=%v]", n.key, n.state(), pr.inRecovery, pr.readOnly, pr.lsn, pr.err)
		}
	}
	return s
}

// SetWatchSilenceLimit sets the etcd watch's silence bound of the pools
// created after it, until the returned func restores it.
func SetWatchSilenceLimit(d time.Duration) (restore func()) {
	old := watchSilenceLimit
	watchSilenceLimit = d
	return func() { watchSilenceLimit = old }
}
