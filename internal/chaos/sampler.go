package chaos

import (
	"context"
	"strings"
	"time"

	"github.com/pgha/pgha/internal/testutil"
)

// startSampler starts the one-writer sampler (testutil.WriterSampler) on
// every node, over its unix socket; each run of rounds with more than one
// node able to acknowledge writes is recorded in the timeline.
func startSampler(c *cluster, tl *timeline) *testutil.WriterSampler {
	var nodes []testutil.SampledNode
	for _, n := range c.nodes {
		nodes = append(nodes, testutil.SampledNode{Name: n.name, Connect: n.connect})
	}
	return testutil.StartWriterSampler(nodes, c.opts.Sync != "off", func(names []string) {
		tl.add("anomaly", "%s can all acknowledge writes", strings.Join(names, " and "))
	})
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
