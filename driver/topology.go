package driver

import (
	"context"
	"errors"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgha/pgha/internal/backoff"
)

// While there is no writable primary or an operation waits for one,
// nodes are probed more often than ProbeInterval: the first wait is
// fastProbeInterval, the next ones back off with full jitter up to
// maxFastProbeInterval (see internal/backoff), so that many pools that saw
// the same failover do not reconnect to a dead node or the new primary in
// lockstep. A change of the leader record (a kick) starts over at once.
const (
	fastProbeInterval    = 25 * time.Millisecond
	maxFastProbeInterval = 200 * time.Millisecond
)

// probeLoop probes the known nodes every ProbeInterval (every 25 ms while
// there is no primary or someone waits), until the pool closes. It owns the
// nodes' probe connections.
func (p *Pool) probeLoop() {
	var probed []*node
	defer func() {
		for _, n := range probed {
			if n.probeConn != nil {
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				p.closeProbe(ctx, n)
				cancel()
			}
		}
	}()
	timer := time.NewTimer(0)
	defer timer.Stop()
	fast := backoff.New(fastProbeInterval, min(p.cfg.ProbeInterval, maxFastProbeInterval))
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-timer.C:
			if p.single && p.primary.Load() != nil && p.waiters.Load() == 0 {
				// One host, serving: nothing to probe for (no replica lag,
				// no other host). Write failures kick the prober.
				timer.Reset(p.cfg.ProbeInterval)
				continue
			}
		case <-p.kick:
			fast.Reset()
		}
		p.mu.Lock()
		nodes := p.probeTargetsLocked()
		p.mu.Unlock()
		for _, n := range nodes {
			if !containsNode(probed, n) {
				probed = append(probed, n)
			}
		}
		// Close the probe connections of nodes that are not probed any
		// more: they left the topology, or the member records serve
		// instead. Their last probe is forgotten: it would age.
		kept := probed[:0]
		for _, n := range probed {
			if containsNode(nodes, n) {
				kept = append(kept, n)
				continue
			}
			if n.probeConn != nil {
				p.closeProbe(context.Background(), n)
			}
			n.probe.Store(nil)
		}
		probed = kept
		if len(nodes) > 0 {
			p.probeRound(nodes)
		}
		if p.single {
			// Probes of a single host are rare: keep no connection open.
			for _, n := range nodes {
				if n.probeConn != nil {
					p.closeProbe(p.ctx, n)
				}
			}
		}
		// Kicks (leader record changes) reach every pool at the same
		// instant: jitter the steady interval too, within its last
		// quarter, so that pools drift apart again.
		d := p.cfg.ProbeInterval
		d = d - d/4 + rand.N(d/4+1)
		if p.primary.Load() == nil || p.waiters.Load() > 0 {
			d = min(d, fast.Next())
		} else {
			fast.Reset()
		}
		timer.Reset(d)
	}
}

// probeTargetsLocked returns the nodes to probe now. In host mode, and in
// etcd mode before etcd answered or while the member watch is broken: every
// known node, each on its one probe connection. In etcd mode while etcd
// answers, the member records give every node's role, timeline and lag, so
// only the leader's node is probed, and only to confirm it: while it is
// not the primary (its record has said "not writable yet" for more than
// ProbeInterval, or it was found read-only) or an operation waits for a
// primary (one failed on it).
// Otherwise none: a settled pool holds no probe connection. Called under
// p.mu.
func (p *Pool) probeTargetsLocked() []*node {
	if !p.byRecordsLocked() {
		return p.candidatesLocked()
	}
	n := p.nodes[p.leader]
	if n == nil || (p.primary.Load() == n && p.waiters.Load() == 0) {
		return nil
	}
	if r := n.probe.Load(); r != nil && unreachable(r.err) {
		// The leader's node cannot be reached: probe the others too, in
		// case one was promoted while the watch did not tell (see
		// helpLeaderLocked).
		return p.candidatesLocked()
	}
	if n.state() == wUnknown && time.Since(p.leaderSince) < p.cfg.ProbeInterval {
		// A new leader, not writable yet: its manager proclaims it
		// writable once promoted, pushed to every pool. Probing it now
		// would have every pool of the fleet connect to it (and poll it)
		// while it promotes: in BenchmarkFleet, promotions took 4 to 10
		// times longer with 200 pools doing so. Probe it only if its
		// record stays not writable for ProbeInterval.
		return nil
	}
	return []*node{n}
}

func containsNode(ns []*node, n *node) bool {
	for _, m := range ns {
		if m == n {
			return true
		}
	}
	return false
}

// probeRound probes nodes concurrently and applies the results.
func (p *Pool) probeRound(nodes []*node) {
	var wg sync.WaitGroup
	results := make([]*probeResult, len(nodes))
	for i, n := range nodes {
		wg.Go(func() { results[i] = p.probeNode(n) })
	}
	wg.Wait()
	if p.ctx.Err() != nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	var primaryLSN uint64
	for i, n := range nodes {
		r := results[i]
		if prev := n.probe.Load(); r.err != nil && (prev == nil || prev.err == nil) {
			// The node is down: its idle write connections are dead too.
			if wp := n.wp.Load(); wp != nil {
				wp.Reset()
			}
		}
		n.probe.Store(r)
		switch {
		case r.writable():
			n.ws.Store(int32(wWritable))
			n.confirmed.Store(true)
			primaryLSN = max(primaryLSN, r.lsn)
		case r.err == nil:
			n.ws.Store(int32(wReadOnly))
			if r.inRecovery {
				n.noteReplay(r.lsn)
			}
		case !p.etcdMode || !p.etcdAnswered:
			// Host mode: a node that cannot be reached is not a primary.
			n.ws.Store(int32(wUnknown))
			p.lastErr = r.err
		case unreachable(r.err):
			// etcd mode: the leader record names the primary, but not one
			// that cannot be reached (the prober checks it only when an
			// operation failed on it or waits for it). Withdrawn, it is
			// deposed: operations in flight on it are cut and calls wait
			// for it (or a new leader) up to FailoverTimeout. A probe that
			// finds it writable again restores it.
			if n.state() == wWritable {
				p.log.Warn("primary unreachable: withdrawn until a probe reaches it", "node", n.key, "err", r.err)
			}
			n.ws.Store(int32(wUnknown))
			p.lastErr = r.err
		}
	}
	p.helpLeaderLocked(nodes, results)
	for i, n := range nodes {
		r := results[i]
		if p.byRecordsLocked() {
			break // the member records give the lag (applyMembers)
		}
		if r.err != nil || !r.inRecovery {
			n.lag.Store(-1)
			continue
		}
		if primaryLSN == 0 {
			n.lag.Store(n.recordLag.Load())
			continue
		}
		lag := int64(0)
		if primaryLSN > r.lsn {
			lag = int64(primaryLSN - r.lsn)
		}
		n.lag.Store(lag)
	}
	if primaryLSN == 0 && (!p.etcdMode || !p.etcdAnswered) {
		// No host accepts writes: say why, for ErrNoPrimary.
		var why []string
		for i, n := range nodes {
			switch r := results[i]; {
			case r.err != nil:
				why = append(why, n.key+": "+r.err.Error())
			case r.inRecovery:
				why = append(why, n.key+": in recovery")
			default:
				why = append(why, n.key+": read-only")
			}
		}
		if len(nodes) == 1 && results[0].err != nil {
			p.lastErr = results[0].err // as is, for errors.As
		} else if len(why) > 0 {
			p.lastErr = errors.New("no host accepts writes (" + strings.Join(why, "; ") + ")")
		}
	}
	p.probeRounds++
	p.publishLocked("probe")
}

// unreachable reports whether a probe's error says the node could not be
// reached (dial, timeout, broken connection), rather than a refusal by a
// server that answered (authentication, too many clients, ...).
func unreachable(err error) bool {
	if err == nil {
		return false
	}
	var pe *pgconn.PgError
	return !errors.As(err, &pe)
}

// helpLeaderLocked lets the probes help etcd (etcd mode): when the leader
// record's node cannot be reached and another node answers writable, a
// new leader may have been elected while the pool's watch sits on a dead
// or cut-off etcd member, which can take seconds to notice. It asks the
// re-reader for the leader key at once (rereadLeader). Called under p.mu
// with a probe round's results.
func (p *Pool) helpLeaderLocked(nodes []*node, results []*probeResult) {
	if !p.etcdMode || !p.etcdAnswered || p.leader == "" {
		return
	}
	leaderDown, otherWritable := false, false
	for i, n := range nodes {
		switch {
		case n.key == p.leader:
			leaderDown = unreachable(results[i].err)
		case results[i].writable():
			otherWritable = true
		}
	}
	if leaderDown && otherWritable {
		select {
		case p.reread <- struct{}{}:
		default:
		}
	}
}

// probeAppName is the application_name of the probe connections, so that
// operators can tell them from the application's sessions.
const probeAppName = "pgha-driver-probe"

const probeSQL = `select pg_is_in_recovery(), current_setting('transaction_read_only')::bool,
 coalesce((case when pg_is_in_recovery() then pg_last_wal_replay_lsn() else pg_current_wal_lsn() end - '0/0'::pg_lsn)::int8, 0)`

// probeNode checks n's role and WAL position on its probe connection,
// connecting first if needed. Called by the prober goroutine only.
func (p *Pool) probeNode(n *node) *probeResult {
	r := &probeResult{at: time.Now()}
	ctx, cancel := context.WithTimeout(p.ctx, p.cfg.ProbeTimeout)
	defer cancel()
	if n.probeConn != nil && n.probeConn.IsClosed() {
		p.closeProbe(ctx, n)
	}
	if n.probeConn == nil {
		c, err := p.connectProbe(ctx, n)
		if err != nil {
			r.err = err
			return r
		}
		n.probeConn = c
	}
	var lsn int64
	err := n.probeConn.QueryRow(ctx, probeSQL, pgx.QueryExecModeSimpleProtocol).Scan(&r.inRecovery, &r.readOnly, &lsn)
	if err != nil {
		r.err = err
		cctx, ccancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		p.closeProbe(cctx, n)
		ccancel()
		if errors.Is(err, context.DeadlineExceeded) {
			r.err = errors.New("probe timed out after " + p.cfg.ProbeTimeout.String())
		}
		return r
	}
	r.lsn = uint64(lsn)
	return r
}

// connectProbe opens n's probe connection as the node pools open theirs:
// with the template's dial settings (DialFunc, LookupFunc, TLS, connect
// timeout) and through the user's BeforeConnect hook, so that a password
// or token it supplies reaches the probe too; ctx carries the values of
// the ctx given to NewWithConfig. AfterConnect is not called: the probe
// runs one query of its own and serves no application work. Its
// application_name is probeAppName and no tracer sees it. The probe
// connections are counted in [Pool.ProbeStat], not in [Pool.Stat].
func (p *Pool) connectProbe(ctx context.Context, n *node) (*pgx.Conn, error) {
	cc := n.connConfig(p.cfg.ConnConfig)
	cc.Tracer = nil
	cc.RuntimeParams["application_name"] = probeAppName
	if bc := p.cfg.BeforeConnect; bc != nil {
		if err := bc(ctx, cc); err != nil {
			return nil, err
		}
	}
	p.probeConnects.Add(1)
	c, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		return nil, err
	}
	p.probeConns.Add(1)
	return c, nil
}

// closeProbe closes n's probe connection. Called by the prober only.
func (p *Pool) closeProbe(ctx context.Context, n *node) {
	n.probeConn.Close(ctx)
	n.probeConn = nil
	p.probeConns.Add(-1)
}

// ProbeStat counts the connections the pool opens for its own use: at
// most one per node, to probe its role and WAL position (application_name
// pgha-driver-probe); in etcd mode none once the pool settled (see the
// package documentation, "Probes and fleet cost"). They are outside
// MaxConns and outside [Pool.Stat], which, as pgxpool's, reports the
// connections the application can use.
type ProbeStat struct {
	// OpenConns is the number of probe connections open now.
	OpenConns int32
	// Connects is the number of probe connection attempts since the pool
	// was created, failed ones included.
	Connects int64
}

// ProbeStat returns the counts of the pool's probe connections. It is
// safe for concurrent use.
func (p *Pool) ProbeStat() ProbeStat {
	return ProbeStat{OpenConns: p.probeConns.Load(), Connects: p.probeConnects.Load()}
}
