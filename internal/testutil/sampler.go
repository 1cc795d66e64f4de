package testutil

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// SampledNode is one PostgreSQL server a [WriterSampler] asks.
type SampledNode struct {
	// Name identifies the node in reports.
	Name string
	// Connect opens a connection that no injected fault affects (a unix
	// socket): the sampler observes every node whatever the faults.
	Connect func(ctx context.Context) (*pgx.Conn, error)
}

// WriterSampler checks, every 50 ms, how many nodes can acknowledge
// writes: the one-writer invariant (DESIGN.md invariant 1) as a client
// would meet it.
//
// In asynchronous mode a node can when its PostgreSQL is not in recovery.
// In synchronous modes a primary acknowledges a commit only once a
// synchronous standby has it, so a node can when it is not in recovery and
// either has no synchronous_standby_names or has a standby connected in
// state sync or quorum. A frozen or dead manager cannot fence its primary;
// in synchronous mode that primary stays out of recovery but can no longer
// acknowledge anything once its synchronous standby was promoted. Rounds
// with more than one primary out of recovery are counted apart. Its
// methods are safe for concurrent use; Stop must be called.
type WriterSampler struct {
	nodes   []SampledNode
	sync    bool
	onMulti func(names []string)

	mu        sync.Mutex
	rounds    int
	multi     int // rounds with more than one node able to acknowledge writes
	primaries int // rounds with more than one node out of recovery
	inMulti   bool
	first     string
	stop      func()
}

const writerSampleSQL = `SELECT pg_is_in_recovery(), current_setting('synchronous_standby_names') = '',
	EXISTS (SELECT 1 FROM pg_stat_replication WHERE sync_state IN ('sync', 'quorum'))`

// StartWriterSampler starts sampling nodes (synchronous: the cluster runs a
// synchronous mode). onMulti, if not nil, is called from the sampler's
// goroutine with the nodes' names at the start of each run of rounds in
// which more than one node can acknowledge writes.
func StartWriterSampler(nodes []SampledNode, synchronous bool, onMulti func(names []string)) *WriterSampler {
	s := &WriterSampler{nodes: nodes, sync: synchronous, onMulti: onMulti}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.run(ctx)
	}()
	var once sync.Once
	s.stop = func() { once.Do(func() { cancel(); <-done }) }
	return s
}

func (s *WriterSampler) run(ctx context.Context) {
	conns := make([]*pgx.Conn, len(s.nodes))
	defer func() {
		for _, conn := range conns {
			if conn != nil {
				conn.Close(context.Background())
			}
		}
	}()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		prim := make([]bool, len(s.nodes))
		acks := make([]bool, len(s.nodes))
		var wg sync.WaitGroup
		for i, n := range s.nodes {
			wg.Go(func() {
				qctx, qcancel := context.WithTimeout(ctx, 300*time.Millisecond)
				defer qcancel()
				if conns[i] == nil {
					conn, err := n.Connect(qctx)
					if err != nil {
						return
					}
					conns[i] = conn
				}
				var rec, noSync, syncConnected bool
				if err := conns[i].QueryRow(qctx, writerSampleSQL).Scan(&rec, &noSync, &syncConnected); err != nil {
					conns[i].Close(context.Background())
					conns[i] = nil
					return
				}
				prim[i] = !rec
				acks[i] = !rec && (!s.sync || noSync || syncConnected)
			})
		}
		wg.Wait()
		if ctx.Err() != nil {
			return
		}
		var p, a []string
		for i, n := range s.nodes {
			if prim[i] {
				p = append(p, n.Name)
			}
			if acks[i] {
				a = append(a, n.Name)
			}
		}
		s.mu.Lock()
		s.rounds++
		if len(p) > 1 {
			s.primaries++
		}
		startMulti := len(a) > 1 && !s.inMulti
		if len(a) > 1 {
			s.multi++
			if s.first == "" {
				s.first = strings.Join(a, " and ") + " at " + time.Now().Format("15:04:05.000")
			}
		}
		s.inMulti = len(a) > 1
		s.mu.Unlock()
		if startMulti && s.onMulti != nil {
			s.onMulti(a)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// Stop stops the sampler and waits for it; it may be called more than once.
func (s *WriterSampler) Stop() { s.stop() }

// Counts returns the rounds sampled, those in which more than one node
// could acknowledge writes, and those with more than one node out of
// recovery.
func (s *WriterSampler) Counts() (rounds, multi, primaries int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rounds, s.multi, s.primaries
}

// FirstMulti describes the first round in which more than one node could
// acknowledge writes ("n1 and n2 at 15:04:05.000"), "" if none.
func (s *WriterSampler) FirstMulti() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.first
}
