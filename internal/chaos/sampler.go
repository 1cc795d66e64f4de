package chaos

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// sampler checks, every 50 ms, how many nodes can acknowledge writes.
//
// In asynchronous mode a node can when its PostgreSQL is not in recovery.
// In synchronous modes a primary acknowledges a commit only once a
// synchronous standby has it, so a node can when it is not in recovery
// and either has no synchronous_standby_names or has a standby connected
// in state sync or quorum. A frozen or dead manager cannot fence its
// primary; in synchronous mode that primary stays out of recovery but can
// no longer acknowledge anything once its synchronous standby was promoted
// (DESIGN.md invariant 1). Rounds with more than one primary out of
// recovery are counted apart (primaries), for the report.
type sampler struct {
	c    *cluster
	tl   *timeline
	sync bool

	mu        sync.Mutex
	rounds    int
	multi     int // rounds with more than one node able to acknowledge writes
	primaries int // rounds with more than one node out of recovery
	lastMulti string
	stop      func()
}

const sampleSQL = `SELECT pg_is_in_recovery(), current_setting('synchronous_standby_names') = '',
	EXISTS (SELECT 1 FROM pg_stat_replication WHERE sync_state IN ('sync', 'quorum'))`

func startSampler(c *cluster, tl *timeline) *sampler {
	s := &sampler{c: c, tl: tl, sync: c.opts.Sync != "off"}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	conns := make([]*pgx.Conn, len(c.nodes))
	go func() {
		defer close(done)
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
			type res struct{ primary, acks bool }
			out := make([]res, len(c.nodes))
			var wg sync.WaitGroup
			for i, n := range c.nodes {
				wg.Add(1)
				go func() {
					defer wg.Done()
					qctx, qcancel := context.WithTimeout(ctx, 300*time.Millisecond)
					defer qcancel()
					if conns[i] == nil {
						conn, err := n.connect(qctx)
						if err != nil {
							return
						}
						conns[i] = conn
					}
					var rec, noSync, syncConnected bool
					if err := conns[i].QueryRow(qctx, sampleSQL).Scan(&rec, &noSync, &syncConnected); err != nil {
						conns[i].Close(context.Background())
						conns[i] = nil
						return
					}
					out[i].primary = !rec
					out[i].acks = !rec && (!s.sync || noSync || syncConnected)
				}()
			}
			wg.Wait()
			if ctx.Err() != nil {
				return
			}
			var prim, acks []string
			for i, r := range out {
				if r.primary {
					prim = append(prim, c.nodes[i].name)
				}
				if r.acks {
					acks = append(acks, c.nodes[i].name)
				}
			}
			s.mu.Lock()
			s.rounds++
			if len(prim) > 1 {
				s.primaries++
			}
			if len(acks) > 1 {
				s.multi++
				if s.multi == 1 || s.lastMulti == "" {
					s.tl.add("anomaly", "%s can all acknowledge writes", strings.Join(acks, " and "))
				}
				s.lastMulti = strings.Join(acks, ",")
			} else {
				s.lastMulti = ""
			}
			s.mu.Unlock()
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	s.stop = func() { cancel(); <-done }
	return s
}

func (s *sampler) counts() (rounds, multi, primaries int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rounds, s.multi, s.primaries
}

// watchLeader records every change of the leader record in the timeline.
func watchLeader(c *cluster, tl *timeline) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		last := ""
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			st, err := c.state(ctx)
			cur := "etcd unavailable"
			if err == nil {
				cur = "no leader"
				if st.Leader != nil {
					cur = st.Leader.Node + " (not writable yet)"
					if st.Leader.Writable {
						cur = st.Leader.Node + " writable"
					}
				}
			}
			if cur != last && ctx.Err() == nil {
				tl.add("leader", "%s", cur)
				last = cur
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return func() { cancel(); <-done }
}
