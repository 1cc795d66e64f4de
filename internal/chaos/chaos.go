package chaos

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/pgha/pgha/internal/testutil"
)

// Options configure a run.
type Options struct {
	// Seed drives the nemesis and the clients. The same seed gives the
	// same sequence of choices (not the same timings).
	Seed int64
	// Duration is how long faults are injected; the final heal and the
	// checks come after.
	Duration time.Duration
	// Sync is the agents' sync mode: on, strict, quorum, quorum-strict or
	// off.
	Sync string
	// Failsafe runs the agents with --failsafe (and the http token their
	// failsafe calls authenticate with): a primary that loses etcd stays
	// writable while every member promises not to campaign.
	Failsafe bool
	// NoFenceGuard runs the agents with --fence-guard=false, to measure
	// what the guard buys: in asynchronous mode an agent paused on the
	// leader then leaves a writable primary behind for the plain client
	// (expect anomalies).
	NoFenceGuard bool
	// TTL is the lease TTL. Default 2 s.
	TTL time.Duration
	// MaxLag is MaxLagOnFailover in bytes. Default 1 MiB.
	MaxLag int64
	// Faults restricts the nemesis to these fault kinds (see allFaults);
	// empty means all of them.
	Faults []string
	// Clients and Keys shape the workload. Defaults 4 and 16.
	Clients, Keys int
	// Dir receives the agents' and pools' logs, the report and, on an
	// anomaly, the linearizability visualisation.
	Dir string
	// Progress receives the timeline as it happens. Nil: silent.
	Progress io.Writer
}

func (o *Options) setDefaults() {
	if o.Sync == "" {
		o.Sync = "on"
	}
	if o.TTL == 0 {
		o.TTL = 2 * time.Second
	}
	if o.MaxLag == 0 {
		o.MaxLag = 1 << 20
	}
	if o.Clients == 0 {
		o.Clients = 4
	}
	if o.Keys == 0 {
		o.Keys = 16
	}
}

// Report is what a run found.
type Report struct {
	Seed     int64
	Sync     string
	Duration time.Duration // fault injection time
	Faults   []*fault
	Rounds   int
	// Failovers: promotions (timeline switches) during the run.
	Failovers int
	// ConvergeTimes: per round, from the heal to a converged cluster.
	ConvergeTimes []time.Duration
	// AgentRestarts: agents that exited on their own and were restarted.
	AgentRestarts int

	Ops, Writes, Reads           int
	WritesOK, WritesFailed       int
	WritesUnknown, UnknownCommit int
	ReadsOK                      int
	Lin                          linResult
	// Lost: acknowledged writes missing after the heal.
	Lost []int64
	// LostBound: in asynchronous mode, the most acknowledged writes the
	// failovers may lose (failovers × MaxLag / WAL bytes per write).
	LostBound int
	// FailedPresent: writes the pool reported as not executed that were
	// committed.
	FailedPresent []int64

	// The plain client (one pgx.Conn, multi-host, read-write): its writes,
	// acknowledged ones missing after the heal (PlainLostBy counts them
	// by the fault kinds whose windows they were acknowledged in; ""
	// outside every window), the asynchronous bound as for Lost, and
	// writes reported as not executed that were committed.
	PlainWrites, PlainOK, PlainFailed, PlainUnknown int
	PlainLost                                       []int64
	PlainLostBy                                     map[string]int
	PlainLostBound                                  int
	PlainFailedPresent                              []int64

	// Failsafe: the agents ran with --failsafe.
	Failsafe bool
	// Outages are the etcd outages that were the only fault of their
	// round and found a writable leader, with what happened to it.
	Outages []outageResult
	// Expectations lists etcd outages that did not behave as the mode
	// promises (see outageResult); they fail the run like anomalies.
	Expectations []string

	// DataChecked: the nodes converged and their data was checked; the
	// lost/linearizability figures mean nothing without it.
	DataChecked bool
	// CheckedOn names the one node (the primary) the history was checked
	// against when the nodes did not converge; "" when all agreed.
	CheckedOn string

	SamplerRounds, MultiWriter, MultiPrimary int
	Anomalies                                []string
	Timeline                                 string

	unavail map[string][]time.Duration // per fault kind
}

// outageResult is what an etcd outage did to the leader it found. With
// failsafe on, the leader's PostgreSQL must keep running through the
// outage, the plain client must never wait more than a TTL for an
// acknowledgement, and after etcd returns the same term (node, fencing
// token, timeline) must lead. With failsafe off, the leader must have
// fenced within a TTL (+1 s of scheduling slack) of etcd going down, and
// a leader must return after etcd does (the round converges).
type outageResult struct {
	f             *fault
	at            time.Duration // since the run's start
	before, after *leaderSnap
	// fenced: the leader's postmaster was seen gone (or replaced) during
	// the outage, fencedAfter after etcd went down.
	fenced      bool
	fencedAfter time.Duration
	// converged: from etcd's return to a converged cluster (-1: never).
	converged time.Duration
	// plainGap: the plain client's longest wait for an acknowledgement
	// while etcd was down.
	plainGap time.Duration
	// flap, when set, is how long etcd had been back from an earlier
	// etcd fault (less than a TTL) when this outage began: the leader
	// may not have renewed its lease yet while the members already
	// reached etcd and so refused to promise. Such an outage is
	// reported, not held to the mode's promise.
	flap time.Duration
}

// watchFence polls n's postmaster every 50 ms until the returned stop is
// called, and returns when it was first seen gone or replaced (zero: it
// ran throughout).
func watchFence(n *node) (stop func() time.Time) {
	pid := n.postmasterPID()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var at time.Time
	go func() {
		defer close(done)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			if p := n.postmasterPID(); p == 0 || p != pid {
				at = time.Now()
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return func() time.Time { cancel(); <-done; return at }
}

// Run runs the harness: a cluster, clients, Options.Duration of faults,
// a final heal, the checks. It fails t on any anomaly, with the seed, the
// timeline and where the logs and the visualisation are.
func Run(t testing.TB, opts Options) *Report {
	t.Helper()
	opts.setDefaults()
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	tl := newTimeline(opts.Progress)
	rep := &Report{Seed: opts.Seed, Sync: opts.Sync, Failsafe: opts.Failsafe}
	fail := func(format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		rep.Anomalies = append(rep.Anomalies, msg)
		tl.add("anomaly", "%s", msg)
	}
	defer func() {
		rep.Timeline = tl.String()
		os.WriteFile(filepath.Join(opts.Dir, "report.txt"), []byte(rep.String()+"\n--- timeline ---\n"+rep.Timeline), 0o644)
		if len(rep.Anomalies) > 0 || len(rep.Expectations) > 0 || t.Failed() {
			t.Errorf("chaos: seed %d (rerun: make chaos SEED=%d DURATION=%v SYNC=%s FAILSAFE=%s)\n%s\n--- timeline ---\n%s\nlogs, report and visualisation in %s",
				opts.Seed, opts.Seed, opts.Duration, opts.Sync, onOff(opts.Failsafe), rep, rep.Timeline, opts.Dir)
		}
	}()

	c := startCluster(t, opts, tl)
	ctx := context.Background()
	if err := waitConverged(c, tl, 120*time.Second); err != nil {
		t.Fatalf("the cluster did not bootstrap: %v", err)
	}
	startTL := int64(0)
	if lead := c.leader(ctx); lead != nil {
		s, _ := lead.pgState(ctx)
		startTL = s.timeline
	}
	tl.add("note", "bootstrapped: seed %d, sync %s, failsafe %s, fence guard %s, TTL %v", opts.Seed, opts.Sync, onOff(opts.Failsafe), onOff(!opts.NoFenceGuard), opts.TTL)

	poolLog, err := os.OpenFile(filepath.Join(opts.Dir, "pools.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer poolLog.Close()
	w := startWorkload(t, c, tl, opts.Clients, opts.Keys, opts.Seed, poolLog)
	stopped := false
	stopWorkload := func() {
		if !stopped {
			stopped = true
			w.stop()
		}
	}
	defer stopWorkload()
	smp := startSampler(c, tl)
	defer smp.Stop()
	stopWatch := watchLeader(c, tl)
	defer stopWatch()

	ns := &nemesis{c: c, rng: rand.New(rand.NewPCG(uint64(opts.Seed), 0x9e3779b97f4a7c15)), bin: agentBinary(t), kinds: opts.Faults}
	injectStart := time.Now()
	var windows []window
	// etcdBack is when the last fault that touched the etcd cluster
	// itself was healed.
	var etcdBack time.Time
	for time.Since(injectStart) < opts.Duration && !t.Failed() {
		rep.Rounds++
		var busy []string
		var round []*fault
		for _, kind := range ns.pick() {
			f, err := ns.inject(ctx, kind, busy)
			if err != nil {
				t.Fatalf("inject %s: %v", kind, err)
			}
			if f == nil {
				tl.add("note", "%s does not apply now", kind)
				continue
			}
			tl.add("fault", "%s (leader: %v)", f, f.wasLeader)
			round = append(round, f)
			rep.Faults = append(rep.Faults, f)
			if f.node != "" {
				busy = append(busy, f.node)
			}
		}
		// An etcd outage alone in its round: follow what it does to the
		// leader it found.
		var outage *outageResult
		var stopWatch func() time.Time
		if len(round) == 1 && round[0].kind == faultEtcdOutage && round[0].before != nil {
			outage = &outageResult{f: round[0], at: time.Duration(tl.since(round[0].at)), before: round[0].before, converged: -1}
			if !etcdBack.IsZero() && round[0].at.Sub(etcdBack) < opts.TTL {
				outage.flap = round[0].at.Sub(etcdBack)
			}
			stopWatch = watchFence(c.node(outage.before.node))
		}
		hold := time.Second + time.Duration(ns.rng.IntN(3000))*time.Millisecond
		for _, f := range round {
			hold = max(hold, f.hold)
		}
		waitFor(hold)
		if stopWatch != nil {
			if at := stopWatch(); !at.IsZero() {
				outage.fenced, outage.fencedAfter = true, at.Sub(outage.f.down)
				tl.add("note", "etcd outage: the leader %s fenced %s after etcd went down", outage.before.node, fmtDur(outage.fencedAfter))
			}
		}
		for i := len(round) - 1; i >= 0; i-- {
			f := round[i]
			if err := f.heal(); err != nil {
				t.Fatalf("heal %s: %v", f, err)
			}
			f.healed = time.Now()
			if etcdFault(f.kind) {
				etcdBack = f.healed
			}
			tl.add("heal", "%s", f)
		}
		healed := time.Now()
		err := waitConverged(c, tl, 90*time.Second)
		if err == nil {
			rep.ConvergeTimes = append(rep.ConvergeTimes, time.Since(healed))
			if outage != nil {
				outage.converged = time.Since(healed)
				outage.after = c.snapLeader(ctx)
			}
			waitFor(time.Duration(200+ns.rng.IntN(600)) * time.Millisecond)
		}
		if outage != nil {
			rep.Outages = append(rep.Outages, *outage)
		}
		end := tl.since(time.Now())
		for _, f := range round {
			windows = append(windows, window{f, tl.since(f.at), end})
		}
		if err != nil {
			fail("round %d: not converged 90 s after the heal of %v: %v", rep.Round(), round, err)
			break
		}
	}
	rep.Duration = time.Since(injectStart)
	tl.add("note", "faults stop after %d rounds; final heal", rep.Rounds)

	// Everything is healed (each round heals its faults); let the clients
	// see the converged cluster, then stop them and wait for the standbys
	// to replay everything.
	if err := waitConverged(c, tl, 120*time.Second); err != nil {
		fail("final heal: not converged within 120 s: %v", err)
	}
	waitFor(time.Second)
	stopWorkload()
	smp.Stop()
	stopWatch()
	rep.SamplerRounds, rep.MultiWriter, rep.MultiPrimary = smp.Counts()
	if rep.MultiWriter > 0 {
		fail("one-writer invariant: %d sampler rounds saw more than one node able to acknowledge writes", rep.MultiWriter)
	}
	rep.AgentRestarts = restarts(tl)
	ops := w.history()
	plain := w.plainHistory()
	rep.unavail = map[string][]time.Duration{}
	acks := ackTimes(ops)
	for _, wd := range windows {
		rep.unavail[wd.f.kind] = append(rep.unavail[wd.f.kind], unavailability(acks, wd.from, wd.to))
	}
	for _, o := range ops {
		rep.Ops++
		if o.kind == opRead {
			rep.Reads++
			if o.outcome == outOK {
				rep.ReadsOK++
			}
			continue
		}
		rep.Writes++
		switch o.outcome {
		case outOK:
			rep.WritesOK++
		case outFailed:
			rep.WritesFailed++
		case outUnknown:
			rep.WritesUnknown++
		}
	}

	// Final state of every node.
	var datas []nodeData
	err = testutil.Poll(60*time.Second, func() error {
		datas = datas[:0]
		for _, n := range c.nodes {
			d, err := n.data(ctx)
			if err != nil {
				return fmt.Errorf("%s: %w", n.name, err)
			}
			datas = append(datas, d)
		}
		for i := 1; i < len(datas); i++ {
			if len(datas[i].logVals) != len(datas[0].logVals) || datas[i].regSum != datas[0].regSum || datas[i].timeline != datas[0].timeline ||
				len(datas[i].plainVals) != len(datas[0].plainVals) {
				return fmt.Errorf("%s: timeline %d, %d log rows, %d plain rows, registers %s; %s: timeline %d, %d log rows, %d plain rows, registers %s",
					c.nodes[0].name, datas[0].timeline, len(datas[0].logVals), len(datas[0].plainVals), datas[0].regSum,
					c.nodes[i].name, datas[i].timeline, len(datas[i].logVals), len(datas[i].plainVals), datas[i].regSum)
			}
		}
		return nil
	})
	if err != nil {
		fail("after the heal the nodes differ: %v", err)
		// Still check the history against what the primary holds: that
		// is what the clients will read from now on.
		lead := c.leader(ctx)
		if lead == nil {
			return rep
		}
		d, err := lead.data(ctx)
		if err != nil {
			return rep
		}
		datas, rep.CheckedOn = []nodeData{d}, lead.name
	}
	for i := 1; i < len(datas); i++ {
		for v := range datas[0].logVals {
			if !datas[i].logVals[v] {
				fail("value %d is on %s but not on %s", v, c.nodes[0].name, c.nodes[i].name)
				break
			}
		}
		for id := range datas[0].plainVals {
			if !datas[i].plainVals[id] {
				fail("plain-client id %d is on %s but not on %s", id, c.nodes[0].name, c.nodes[i].name)
				break
			}
		}
		if datas[i].history != datas[0].history {
			fail("timeline history differs: %s has\n%s\n%s has\n%s", c.nodes[0].name, datas[0].history, c.nodes[i].name, datas[i].history)
		}
	}
	rep.Failovers = int(datas[0].timeline - startTL)
	if st, err := c.state(ctx); err != nil {
		fail("read the etcd history: %v", err)
	} else {
		var hs []historyEntry
		for _, h := range st.History {
			hs = append(hs, historyEntry{timeline: h.Timeline, switchLSN: h.SwitchLSN, leader: h.Leader})
		}
		for _, b := range historyMatches(datas[0].history, uint32(datas[0].timeline), hs) {
			fail("timeline history: %s", b)
		}
	}

	// The history against the final state.
	rep.DataChecked = true
	committed := datas[0].logVals
	for _, o := range ops {
		if o.kind != opWrite {
			continue
		}
		switch {
		case o.outcome == outOK && !committed[o.value]:
			rep.Lost = append(rep.Lost, o.value)
		case o.outcome == outFailed && committed[o.value]:
			rep.FailedPresent = append(rep.FailedPresent, o.value)
		case o.outcome == outUnknown && committed[o.value]:
			rep.UnknownCommit++
		}
	}
	if len(rep.FailedPresent) > 0 {
		fail("%d writes the pool reported as not executed were committed: %v", len(rep.FailedPresent), head(rep.FailedPresent))
	}
	rep.checkPlain(plain, datas[0].plainVals, windows)
	if len(rep.PlainFailedPresent) > 0 {
		fail("%d plain-client writes pgx reported as not executed were committed: %v", len(rep.PlainFailedPresent), head(rep.PlainFailedPresent))
	}
	if opts.Sync == "off" {
		bpw := walPerWrite(ctx, c, writeSQL, func(i int) []any { return []any{-int64(i + 1), 0} })
		if bpw > 0 {
			rep.LostBound = int(int64(rep.Failovers) * opts.MaxLag / bpw)
		}
		if len(rep.Lost) > rep.LostBound {
			fail("asynchronous mode lost %d acknowledged writes, more than the %d that %d failovers × MaxLagOnFailover %d B allow (%d WAL bytes a write)",
				len(rep.Lost), rep.LostBound, rep.Failovers, opts.MaxLag, bpw)
		}
		// The same rule for the plain client: what asynchronous
		// replication may lose at a failover, in its writes' WAL size.
		pbpw := walPerWrite(ctx, c, plainSQL, func(i int) []any { return []any{-int64(i + 1)} })
		if pbpw > 0 {
			rep.PlainLostBound = int(int64(rep.Failovers) * opts.MaxLag / pbpw)
		}
		if len(rep.PlainLost) > rep.PlainLostBound {
			fail("asynchronous mode lost %d acknowledged plain-client writes, more than the %d that %d failovers × MaxLagOnFailover %d B allow (%d WAL bytes a write)",
				len(rep.PlainLost), rep.PlainLostBound, rep.Failovers, opts.MaxLag, pbpw)
		}
	} else {
		if len(rep.Lost) > 0 {
			fail("synchronous mode lost %d acknowledged writes: %v", len(rep.Lost), head(rep.Lost))
		}
		if len(rep.PlainLost) > 0 {
			fail("synchronous mode lost %d acknowledged plain-client writes (by fault kind: %v): %v", len(rep.PlainLost), rep.PlainLostBy, head(rep.PlainLost))
		}
		rep.Lin = checkLinearizable(ops, committed, 5*time.Minute, filepath.Join(opts.Dir, "linearizability.html"))
		switch rep.Lin.result {
		case porcupine.Illegal:
			fail("the history is not linearizable (visualisation: %s)", rep.Lin.visual)
		case porcupine.Unknown:
			fail("the linearizability check did not finish within 5 minutes (%d operations)", rep.Lin.checked)
		}
	}
	rep.checkOutages(opts, plain, tl)
	for _, e := range rep.Expectations {
		tl.add("anomaly", "expectation: %s", e)
	}
	rep.Timeline = tl.String()
	return rep
}

// checkPlain counts the plain client's writes against the final primary's
// ids, and attributes each acknowledged id that is missing to the fault
// windows it was acknowledged in.
func (r *Report) checkPlain(plain []plainWrite, committed map[int64]bool, windows []window) {
	r.PlainLostBy = map[string]int{}
	for _, p := range plain {
		r.PlainWrites++
		switch p.outcome {
		case outOK:
			r.PlainOK++
			if committed[p.id] {
				continue
			}
			r.PlainLost = append(r.PlainLost, p.id)
			in := false
			for _, wd := range windows {
				if wd.from <= p.ret && p.ret <= wd.to {
					r.PlainLostBy[wd.f.kind]++
					in = true
				}
			}
			if !in {
				r.PlainLostBy[""]++
			}
		case outFailed:
			r.PlainFailed++
			if committed[p.id] {
				r.PlainFailedPresent = append(r.PlainFailedPresent, p.id)
			}
		case outUnknown:
			r.PlainUnknown++
		}
	}
}

// checkOutages holds each etcd outage of r.Outages to what the mode
// promises (see outageResult) and lists what did not hold in
// r.Expectations.
func (r *Report) checkOutages(opts Options, plain []plainWrite, tl *timeline) {
	var acks []int64
	for _, p := range plain {
		if p.outcome == outOK {
			acks = append(acks, p.ret)
		}
	}
	slices.Sort(acks)
	for i := range r.Outages {
		o := &r.Outages[i]
		o.plainGap = unavailability(acks, tl.since(o.f.down), tl.since(o.f.healed))
		at := fmtDur(o.at)
		if o.flap > 0 {
			continue
		}
		if opts.Failsafe {
			switch {
			case o.fenced:
				r.Expectations = append(r.Expectations, fmt.Sprintf("failsafe on: etcd outage at %s: the leader %s fenced %s after etcd went down", at, o.before.node, fmtDur(o.fencedAfter)))
			case o.after == nil:
				r.Expectations = append(r.Expectations, fmt.Sprintf("failsafe on: etcd outage at %s: no writable leader known after the heal", at))
			case o.after.node != o.before.node || o.after.timeline != o.before.timeline:
				// A new term of the same node on the same timeline is
				// expected when etcd expired its lease while the promises
				// held (ha's failsafeHold): it kept writing throughout.
				r.Expectations = append(r.Expectations, fmt.Sprintf("failsafe on: etcd outage at %s: the leader changed: %s → %s", at, o.before, o.after))
			}
			if !o.fenced && o.plainGap > opts.TTL {
				r.Expectations = append(r.Expectations, fmt.Sprintf("failsafe on: etcd outage at %s: the plain client waited %s for an acknowledgement (more than the TTL %v)", at, fmtDur(o.plainGap), opts.TTL))
			}
			continue
		}
		switch {
		case !o.fenced:
			r.Expectations = append(r.Expectations, fmt.Sprintf("failsafe off: etcd outage at %s: the leader %s kept running through the %s outage", at, o.before.node, fmtDur(o.f.healed.Sub(o.f.down))))
		case o.fencedAfter > opts.TTL+time.Second:
			r.Expectations = append(r.Expectations, fmt.Sprintf("failsafe off: etcd outage at %s: the leader %s fenced %s after etcd went down, later than the TTL %v + 1 s", at, o.before.node, fmtDur(o.fencedAfter), opts.TTL))
		}
	}
}

func (s *leaderSnap) String() string {
	if s == nil {
		return "none"
	}
	return fmt.Sprintf("%s (token %d, timeline %d)", s.node, s.token, s.timeline)
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

// window is the time a fault was in effect, from its injection to the end
// of its round (converged again, plus a pause), on the histories' clock.
type window struct {
	f        *fault
	from, to int64
}

// Round is the number of the round in progress (for messages).
func (r *Report) Round() int { return r.Rounds }

// waitConverged polls until the cluster has converged, restarting agents
// that exited on their own.
func waitConverged(c *cluster, tl *timeline, timeout time.Duration) error {
	return testutil.Poll(timeout, func() error {
		for _, n := range c.nodes {
			n.mu.Lock()
			a := n.agent
			n.mu.Unlock()
			if a == nil {
				continue // killed by a fault not healed yet: not ours to restart
			}
			select {
			case <-a.done:
				tl.add("note", "agent %s exited on its own (%v); restarted", n.name, a.cmd.ProcessState)
				n.mu.Lock()
				n.agent = nil
				n.mu.Unlock()
				if err := c.startAgent(n, agentBin); err != nil {
					return err
				}
			default:
			}
		}
		return c.converged(context.Background())
	})
}

func restarts(tl *timeline) int {
	n := 0
	for _, e := range tl.events() {
		if e.kind == "note" && strings.Contains(e.text, "exited on its own") {
			n++
		}
	}
	return n
}

// walPerWrite measures the WAL one write (sql with args(i), i in 0..49)
// produces on the primary, in bytes (the average of 50).
func walPerWrite(ctx context.Context, c *cluster, sql string, args func(i int) []any) int64 {
	lead := c.leader(ctx)
	if lead == nil {
		return 0
	}
	conn, err := lead.connect(ctx)
	if err != nil {
		return 0
	}
	defer conn.Close(context.Background())
	var start, end string
	conn.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&start)
	for i := range 50 {
		if _, err := conn.Exec(ctx, sql, args(i)...); err != nil {
			return 0
		}
	}
	var d int64
	conn.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&end)
	if err := conn.QueryRow(ctx, "SELECT pg_wal_lsn_diff($1::pg_lsn, $2::pg_lsn)::bigint", end, start).Scan(&d); err != nil {
		return 0
	}
	return d / 50
}

func waitFor(d time.Duration) {
	t := time.NewTimer(d)
	<-t.C
}

func head(vs []int64) []int64 {
	if len(vs) > 20 {
		return vs[:20]
	}
	return vs
}

// String is the report: faults by kind, failovers, write unavailability
// per fault kind, operations checked, anomalies.
func (r *Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "chaos report: seed %d, sync %s, failsafe %s, %v of faults in %d rounds\n", r.Seed, r.Sync, onOff(r.Failsafe), r.Duration.Round(time.Second), r.Rounds)
	counts := map[string]int{}
	for _, f := range r.Faults {
		counts[f.kind]++
	}
	fmt.Fprintf(&b, "faults injected: %d\n", len(r.Faults))
	fmt.Fprintf(&b, "  %-20s %5s  %-35s %s\n", "kind", "count", "write unavailability median / max", "plain-client acks lost")
	for _, k := range allFaults {
		u := slices.Clone(r.unavail[k])
		sort.Slice(u, func(i, j int) bool { return u[i] < u[j] })
		med, mx := "-", "-"
		if len(u) > 0 {
			med, mx = fmtDur(u[len(u)/2]), fmtDur(u[len(u)-1])
		}
		lost := "-"
		if r.DataChecked {
			lost = fmt.Sprint(r.PlainLostBy[k])
		}
		fmt.Fprintf(&b, "  %-20s %5d  %-35s %s\n", k, counts[k], med+" / "+mx, lost)
	}
	fmt.Fprintf(&b, "failovers (timeline switches): %d; agents restarted after exiting on their own: %d\n", r.Failovers, r.AgentRestarts)
	if len(r.ConvergeTimes) > 0 {
		ct := slices.Clone(r.ConvergeTimes)
		slices.Sort(ct)
		fmt.Fprintf(&b, "heal → converged: median %s, max %s\n", fmtDur(ct[len(ct)/2]), fmtDur(ct[len(ct)-1]))
	}
	fmt.Fprintf(&b, "operations: %d (%d reads, %d ok; %d writes: %d ok, %d failed, %d unknown of which %d committed)\n",
		r.Ops, r.Reads, r.ReadsOK, r.Writes, r.WritesOK, r.WritesFailed, r.WritesUnknown, r.UnknownCommit)
	switch {
	case !r.DataChecked:
		fmt.Fprintf(&b, "acknowledged writes lost, linearizability: not checked (the nodes did not converge)\n")
	case r.Sync == "off":
		fmt.Fprintf(&b, "acknowledged writes lost: %d (bound from MaxLagOnFailover: %d)\n", len(r.Lost), r.LostBound)
	default:
		if r.CheckedOn != "" {
			fmt.Fprintf(&b, "(the nodes differ: the history is checked against the primary %s only)\n", r.CheckedOn)
		}
		fmt.Fprintf(&b, "acknowledged writes lost: %d; linearizability (porcupine, register per key): %s, %d operations checked in %v\n",
			len(r.Lost), r.Lin.result, r.Lin.checked, r.Lin.elapsed.Round(time.Millisecond))
	}
	if r.DataChecked {
		fmt.Fprintf(&b, "plain client (pgx, multi-host, target_session_attrs=read-write): %d writes: %d acknowledged, %d failed, %d unknown; acknowledged lost: %d",
			r.PlainWrites, r.PlainOK, r.PlainFailed, r.PlainUnknown, len(r.PlainLost))
		if r.Sync == "off" {
			fmt.Fprintf(&b, " (bound from MaxLagOnFailover: %d)", r.PlainLostBound)
		}
		fmt.Fprintf(&b, "; outside any fault window: %d\n", r.PlainLostBy[""])
	}
	for _, o := range r.Outages {
		fmt.Fprintf(&b, "etcd outage at %s, down %s: leader before %s; ", fmtDur(o.at), fmtDur(o.f.healed.Sub(o.f.down)), o.before)
		if o.flap > 0 {
			fmt.Fprintf(&b, "etcd flap (back only %s after an earlier etcd fault: not held to the mode's promise); ", fmtDur(o.flap))
		}
		if o.fenced {
			fmt.Fprintf(&b, "fenced %s after etcd went down; ", fmtDur(o.fencedAfter))
		} else {
			fmt.Fprintf(&b, "kept running; ")
		}
		fmt.Fprintf(&b, "plain client's longest wait %s; ", fmtDur(o.plainGap))
		if o.converged >= 0 {
			fmt.Fprintf(&b, "converged %s after etcd returned, leader after %s\n", fmtDur(o.converged), o.after)
		} else {
			fmt.Fprintf(&b, "did not converge\n")
		}
	}
	fmt.Fprintf(&b, "one-writer sampler: %d rounds, %d with more than one node able to acknowledge writes, %d with more than one primary out of recovery\n",
		r.SamplerRounds, r.MultiWriter, r.MultiPrimary)
	fmt.Fprintf(&b, "anomalies: %d\n", len(r.Anomalies))
	for _, a := range r.Anomalies {
		fmt.Fprintf(&b, "  - %s\n", a)
	}
	if len(r.Outages) > 0 || len(r.Expectations) > 0 {
		fmt.Fprintf(&b, "etcd-outage expectations not met: %d\n", len(r.Expectations))
		for _, e := range r.Expectations {
			fmt.Fprintf(&b, "  - %s\n", e)
		}
	}
	return b.String()
}
