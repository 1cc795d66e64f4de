package chaos

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/pgha/pgha/internal/testutil"
)

// The fault kinds the nemesis injects.
const (
	faultKillPrimary = "kill-9-primary"     // SIGKILL of the primary's postmaster
	faultAgentKilled = "agent-killed"       // SIGKILL of an agent; its PostgreSQL keeps running
	faultAgentPaused = "agent-paused"       // SIGSTOP of an agent
	faultNodeLost    = "node-lost"          // SIGKILL of an agent and of its postmaster
	faultEtcdCut     = "node-cut-from-etcd" // a node's links to every etcd member blackholed
	faultReplCut     = "replication-cut"    // the primary's replication link blackholed
	faultClientCut   = "client-cut"         // the clients' link to the primary blackholed
	faultEtcdMember  = "etcd-member-lost"   // one etcd member stopped
	faultEtcdQuorum  = "etcd-quorum-lost"   // two of three etcd members stopped
	faultLatency     = "latency"            // 50-400 ms on a node's etcd and replication links
	faultPGPaused    = "postgres-paused"    // SIGSTOP of a postmaster and its children
	faultRecvPaused  = "receiver-paused"    // SIGSTOP of a standby's WAL receiver: it falls behind
	faultEtcdOutage  = "etcd-outage"        // every etcd member stopped for 3-20 s
)

// allFaults is every kind, in report order.
var allFaults = []string{faultKillPrimary, faultAgentKilled, faultAgentPaused, faultNodeLost, faultEtcdCut,
	faultReplCut, faultClientCut, faultEtcdMember, faultEtcdQuorum, faultLatency, faultPGPaused, faultRecvPaused, faultEtcdOutage}

// fault is one injected fault.
type fault struct {
	kind   string
	target string
	// node is the node the fault hits, "" for etcd faults.
	node   string
	at     time.Time
	healed time.Time
	heal   func() error
	// wasLeader: the target was the leader when the fault was injected.
	wasLeader bool
	// hold, when set, is how long the fault must last (the round holds
	// its faults at least this long).
	hold time.Duration
	// before is the leader when an etcd outage began (nil: none known);
	// down is when the last etcd member had stopped.
	before *leaderSnap
	down   time.Time
}

// leaderSnap identifies a leader's term: its node, its fencing token (the
// leader key's create revision) and its PostgreSQL timeline.
type leaderSnap struct {
	node     string
	token    int64
	timeline int64
}

func (f *fault) String() string { return f.kind + " " + f.target }

type nemesis struct {
	c   *cluster
	rng *rand.Rand
	bin string
	// kinds are the fault kinds to pick from (default allFaults).
	kinds []string
}

// etcdFault reports whether kind touches the etcd cluster itself.
func etcdFault(kind string) bool {
	return kind == faultEtcdMember || kind == faultEtcdQuorum || kind == faultEtcdOutage
}

// pick chooses the kinds of one round: one, or (one time in two) two
// that do not step on each other.
func (ns *nemesis) pick() []string {
	from := ns.kinds
	if len(from) == 0 {
		from = allFaults
	}
	kinds := []string{from[ns.rng.IntN(len(from))]}
	if ns.rng.IntN(2) == 0 {
		k := from[ns.rng.IntN(len(from))]
		if k != kinds[0] && !(etcdFault(k) && etcdFault(kinds[0])) {
			kinds = append(kinds, k)
		}
	}
	return kinds
}

// target picks a node: the leader with probability 0.6 (when there is
// one), else any node. In asynchronous mode an agent killed never hits
// the leader. An agent paused does: the agent's fence guard (a separate
// process, on by default) fences its PostgreSQL at the lease deadline
// while the agent is stopped, so the plain client, which does not follow
// the leader record, must lose nothing beyond what asynchronous
// replication itself loses (see the plain-client check in Run).
func (ns *nemesis) target(kind string, lead string, busy []string) string {
	var names []string
	for _, n := range ns.c.nodes {
		if !slices.Contains(busy, n.name) {
			names = append(names, n.name)
		}
	}
	if ns.c.opts.Sync == "off" && kind == faultAgentKilled {
		names = slices.DeleteFunc(names, func(s string) bool { return s == lead })
	}
	if len(names) == 0 {
		return ""
	}
	if lead != "" && slices.Contains(names, lead) && ns.rng.Float64() < 0.6 {
		return lead
	}
	return names[ns.rng.IntN(len(names))]
}

// inject injects a fault of kind; nil when it does not apply now (no
// leader, no free target).
func (ns *nemesis) inject(ctx context.Context, kind string, busy []string) (*fault, error) {
	c := ns.c
	lead := ""
	if n := c.leader(ctx); n != nil {
		lead = n.name
	}
	f := &fault{kind: kind, at: time.Now(), heal: func() error { return nil }}
	switch kind {
	case faultKillPrimary, faultReplCut, faultClientCut:
		if lead == "" || slices.Contains(busy, lead) {
			return nil, nil
		}
		n := c.node(lead)
		f.target, f.node, f.wasLeader = lead, lead, true
		switch kind {
		case faultKillPrimary:
			pid := n.postmasterPID()
			if pid == 0 {
				return nil, nil
			}
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
				return nil, fmt.Errorf("kill -9 %s's postmaster %d: %w", lead, pid, err)
			}
		case faultReplCut:
			n.repl.Blackhole()
			f.heal = func() error { n.repl.Pass(); return nil }
		case faultClientCut:
			n.client.Blackhole()
			f.heal = func() error { n.client.Pass(); return nil }
		}
	case faultAgentKilled, faultAgentPaused, faultNodeLost, faultEtcdCut, faultLatency, faultPGPaused:
		name := ns.target(kind, lead, busy)
		if name == "" {
			return nil, nil
		}
		n := c.node(name)
		f.target, f.node, f.wasLeader = name, name, name == lead
		switch kind {
		case faultAgentKilled:
			if !n.killAgent() {
				return nil, nil
			}
			f.heal = func() error { return c.startAgent(n, ns.bin) }
		case faultAgentPaused:
			if err := n.signalAgent(syscall.SIGSTOP); err != nil {
				return nil, nil
			}
			f.heal = func() error { return n.signalAgent(syscall.SIGCONT) }
		case faultNodeLost:
			pid := n.postmasterPID()
			n.killAgent()
			if pid != 0 {
				syscall.Kill(pid, syscall.SIGKILL)
			}
			f.heal = func() error { return c.startAgent(n, ns.bin) }
		case faultEtcdCut:
			for _, p := range n.etcd {
				p.Blackhole()
			}
			f.heal = func() error {
				for _, p := range n.etcd {
					p.Pass()
				}
				return nil
			}
		case faultLatency:
			ms := 50 + ns.rng.IntN(350)
			f.target = fmt.Sprintf("%s %d ms", name, ms)
			links := append([]*testutil.Proxy{n.repl}, n.etcd...)
			for _, p := range links {
				p.Latency(ms)
			}
			f.heal = func() error {
				for _, p := range links {
					p.Pass()
				}
				return nil
			}
		case faultPGPaused:
			pids := n.postgresPIDs()
			if len(pids) == 0 {
				return nil, nil
			}
			for _, pid := range pids {
				syscall.Kill(pid, syscall.SIGSTOP)
			}
			f.heal = func() error {
				for _, pid := range pids {
					syscall.Kill(pid, syscall.SIGCONT)
				}
				return nil
			}
		}
	case faultRecvPaused:
		var names []string
		for _, n := range c.nodes {
			if n.name != lead && !slices.Contains(busy, n.name) {
				names = append(names, n.name)
			}
		}
		if len(names) == 0 {
			return nil, nil
		}
		n := c.node(names[ns.rng.IntN(len(names))])
		pid := n.walReceiverPID()
		if pid == 0 {
			return nil, nil
		}
		f.target, f.node = n.name, n.name
		if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
			return nil, nil
		}
		f.heal = func() error { syscall.Kill(pid, syscall.SIGCONT); return nil }
	case faultEtcdMember:
		i := ns.rng.IntN(3)
		f.target = c.etcd.Members()[i].Name
		c.etcd.Stop(i)
		f.heal = func() error { c.etcd.Restart(i); return nil }
	case faultEtcdQuorum:
		keep := ns.rng.IntN(3)
		var stopped []int
		var wg sync.WaitGroup
		for i := range 3 {
			if i != keep {
				stopped = append(stopped, i)
				// Together: stopping the etcd leader waits for a
				// leadership transfer that cannot succeed.
				wg.Add(1)
				// A crash, not a graceful stop: a member that stops
				// gracefully keeps its quorum (and expires leases) for
				// seconds while the others stop.
				go func() { defer wg.Done(); c.etcd.Kill(i) }()
			}
		}
		wg.Wait()
		f.target = fmt.Sprintf("members %v stopped", stopped)
		f.heal = func() error {
			var errs []error
			var chans []<-chan error
			for _, i := range stopped {
				chans = append(chans, c.etcd.RestartAsync(i))
			}
			for _, ch := range chans {
				errs = append(errs, <-ch)
			}
			return errors.Join(errs...)
		}
	case faultEtcdOutage:
		// 3-20 s, and at least a lease TTL and 2 s: without failsafe
		// the primaries must have fenced before etcd returns.
		f.hold = max(time.Duration(3000+ns.rng.IntN(17000))*time.Millisecond, c.opts.TTL+2*time.Second)
		if lead != "" {
			f.before = c.snapLeader(ctx)
		}
		// etcd's graceful stop keeps serving open streams (the agents'
		// lease keep-alives) for seconds, so the outage starts by
		// resetting every agent's etcd links, as a dead server would; the
		// members stop in the background (together: the Raft leader's
		// stop waits for a leadership transfer that cannot succeed), and
		// the links pass again once they are down (connection refused).
		// The heal waits for the stop, then restarts every member.
		var links []*testutil.Proxy
		for _, n := range c.nodes {
			links = append(links, n.etcd...)
		}
		for _, p := range links {
			p.Reset()
		}
		f.down = time.Now()
		stopped := make(chan struct{})
		go func() {
			defer close(stopped)
			var wg sync.WaitGroup
			for i := range 3 {
				wg.Add(1)
				go func() { defer wg.Done(); c.etcd.Stop(i) }()
			}
			wg.Wait()
			for _, p := range links {
				p.Pass()
			}
		}()
		f.target = fmt.Sprintf("all members stopped for at least %v", f.hold)
		f.heal = func() error {
			<-stopped
			var chans []<-chan error
			for i := range 3 {
				chans = append(chans, c.etcd.RestartAsync(i))
			}
			var errs []error
			for _, ch := range chans {
				errs = append(errs, <-ch)
			}
			return errors.Join(errs...)
		}
	default:
		return nil, fmt.Errorf("unknown fault kind %q", kind)
	}
	return f, nil
}
