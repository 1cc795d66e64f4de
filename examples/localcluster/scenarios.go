package main

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"time"

	"github.com/pgha/pgha/ha"
)

// result is what one failure did.
type result struct {
	name          string
	before, after string // leaders
	pause         time.Duration
	lost          int
	recovered     bool
	note          string
}

type scenario struct {
	name    string
	explain string
	// failover: the primary must change (else it may restart in place).
	failover bool
	inject   func(ctx context.Context, d *demo, primary *node) error
	heal     func(ctx context.Context, d *demo, primary *node) error
}

func scenarios(o options) []scenario {
	crashNote := "In synchronous mode the manager fails over at once to the synchronous standby."
	if o.sync == "off" {
		crashNote = "In asynchronous mode the manager first restarts PostgreSQL in place (a failover could lose the last commits)."
	}
	return []scenario{
		{
			name:     "kill -9 the primary's PostgreSQL",
			explain:  "The postmaster dies; its manager sees the exit at once. " + crashNote,
			failover: o.sync != "off",
			inject: func(ctx context.Context, d *demo, p *node) error {
				pid := p.inst.PID()
				if pid <= 0 {
					return fmt.Errorf("%s has no postmaster", p.name)
				}
				return syscall.Kill(pid, syscall.SIGKILL)
			},
		},
		{
			name:     "lose the primary node",
			failover: true,
			explain: "The node's network to etcd goes dark and its PostgreSQL stops, as when a host dies. " +
				"Nobody can tell a dead node from a slow one until its lease expires (TTL), then the most advanced eligible standby is promoted.",
			inject: func(ctx context.Context, d *demo, p *node) error {
				p.proxy.Toxics.AddToxicJson(strings.NewReader(`{"name":"down","type":"timeout","stream":"downstream","attributes":{"timeout":0}}`))
				p.proxy.Toxics.AddToxicJson(strings.NewReader(`{"name":"up","type":"timeout","stream":"upstream","attributes":{"timeout":0}}`))
				if pid := p.inst.PID(); pid > 0 {
					syscall.Kill(pid, syscall.SIGKILL)
				}
				// Stop its manager: it cannot reach etcd, so it cannot resign;
				// its lease expires on its own.
				p.stopped = make(chan struct{})
				go func() { d.stopManager(p); close(p.stopped) }()
				return nil
			},
			heal: func(ctx context.Context, d *demo, p *node) error {
				select {
				case <-p.stopped:
				case <-ctx.Done():
					return ctx.Err()
				}
				clearToxics(p)
				d.say(p.name + " comes back: its manager restarts, finds its data directory ran as a primary, rewinds it with pg_rewind and follows the new primary")
				return d.startManager(p)
			},
		},
		{
			name:     "cut the primary off from etcd",
			failover: true,
			explain: "The primary keeps running but its manager can no longer renew its lease. " +
				"It fences its own PostgreSQL before the lease can expire, so there is never a second writer; then a standby takes over.",
			inject: func(ctx context.Context, d *demo, p *node) error {
				p.proxy.Toxics.AddToxicJson(strings.NewReader(`{"name":"down","type":"timeout","stream":"downstream","attributes":{"timeout":0}}`))
				p.proxy.Toxics.AddToxicJson(strings.NewReader(`{"name":"up","type":"timeout","stream":"upstream","attributes":{"timeout":0}}`))
				return nil
			},
			heal: func(ctx context.Context, d *demo, p *node) error {
				clearToxics(p)
				d.say(p.name + " reaches etcd again: it learns it is no longer the leader, rewinds and follows")
				return nil
			},
		},
		{
			name:     "planned switchover",
			failover: true,
			explain:  "An operator hands the primary role over: the old primary stops with a fast shutdown, which sends its last WAL to the standbys, then the chosen standby promotes. Nothing is lost.",
			inject: func(ctx context.Context, d *demo, p *node) error {
				sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				defer cancel()
				_, err := ha.Switchover(sctx, d.cli, cluster, "")
				return err
			},
		},
	}
}

func clearToxics(p *node) {
	for _, name := range []string{"down", "up"} {
		p.proxy.Toxics.RemoveToxic(context.Background(), name)
	}
}

// runScenarios runs every failure in turn; next is called before each and
// returns false to stop.
func (d *demo) runScenarios(ctx context.Context, next func() bool) ([]result, error) {
	var results []result
	for i, s := range scenarios(d.o) {
		if !next() {
			return results, ctx.Err()
		}
		r, err := d.runOne(ctx, i+1, s)
		results = append(results, r)
		if err != nil {
			return results, err
		}
	}
	return results, nil
}

func (d *demo) runOne(ctx context.Context, i int, s scenario) (result, error) {
	r := result{name: s.name}
	before, err := d.waitHealthy(ctx, time.Minute)
	if err != nil {
		return r, fmt.Errorf("cluster not healthy before %q: %w", s.name, err)
	}
	r.before = before
	p := d.node(before)
	d.say(fmt.Sprintf("── %d. %s (primary: %s)", i, s.name, before))
	d.say(s.explain)
	start := time.Now()
	if err := s.inject(ctx, d, p); err != nil {
		return r, fmt.Errorf("%s: %w", s.name, err)
	}
	// Writes resume: on a new primary when the failure calls for a
	// failover, then steadily (50 acknowledged writes).
	if s.failover {
		if err := d.waitFor(ctx, time.Minute, func() bool { l := d.leader(ctx); return l != "" && l != before }); err != nil {
			return r, fmt.Errorf("%s: no new primary: %w", s.name, err)
		}
	}
	mark := time.Now()
	if err := d.waitFor(ctx, time.Minute, func() bool { return d.w.countSince(mark) >= 50 }); err != nil {
		return r, fmt.Errorf("%s: writes did not resume: %w", s.name, err)
	}
	r.pause = d.w.pauseSince(start)
	r.after = d.leader(ctx)
	if r.after == before {
		d.say(fmt.Sprintf("writes resumed on %s (same primary); longest write pause %v", r.after, r.pause.Round(time.Millisecond)))
	} else {
		d.say(fmt.Sprintf("failover: %s is the new primary; longest write pause %v", r.after, r.pause.Round(time.Millisecond)))
	}
	if s.heal != nil {
		if err := s.heal(ctx, d, p); err != nil {
			return r, fmt.Errorf("%s: heal: %w", s.name, err)
		}
	}
	lead, err := d.waitHealthy(ctx, 2*time.Minute)
	if err != nil {
		return r, fmt.Errorf("%s: cluster did not recover: %w", s.name, err)
	}
	r.recovered = true
	r.after = lead
	lost, err := d.lostRows(ctx)
	if err != nil {
		return r, err
	}
	r.lost = len(lost) - d.lostBefore
	d.lostBefore = len(lost)
	if r.lost > 0 {
		d.say(fmt.Sprintf("lost acknowledged ids: %v", lost[max(0, len(lost)-10):]))
	}
	d.say(fmt.Sprintf("recovered: %s primary, every standby streaming; acknowledged rows lost: %d", lead, r.lost))
	if d.o.scripted {
		fmt.Fprint(d.out, d.table(ctx))
	}
	return r, nil
}

func (d *demo) waitFor(ctx context.Context, timeout time.Duration, cond func() bool) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	return nil
}

// lostRows returns the acknowledged ids missing on the primary.
func (d *demo) lostRows(ctx context.Context) ([]int64, error) {
	ids := d.w.ackedIDs()
	rows, err := d.pool.Query(ctx, "SELECT id FROM demo_writes")
	if err != nil {
		return nil, fmt.Errorf("read rows back: %w", err)
	}
	have := map[int64]bool{}
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, err
		}
		have[id] = true
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	var lost []int64
	for _, id := range ids {
		if !have[id] {
			lost = append(lost, id)
		}
	}
	return lost, nil
}

// summary prints the results and returns the exit status.
func (d *demo) summary(results []result, err error) int {
	fmt.Fprintf(d.out, "\nSummary (synchronous mode %s, TTL %v):\n", d.o.sync, d.o.ttl)
	fmt.Fprintf(d.out, "  %-34s %-10s %-12s %-11s %s\n", "failure", "primary", "write pause", "rows lost", "recovered")
	ok := err == nil && len(results) == len(scenarios(d.o))
	for _, r := range results {
		fmt.Fprintf(d.out, "  %-34s %-10s %-12v %-11d %v\n", r.name, r.before+"→"+r.after, r.pause.Round(time.Millisecond), r.lost, r.recovered)
		if !r.recovered || (d.o.sync != "off" && r.lost > 0) {
			ok = false
		}
	}
	if d.w != nil {
		n, errs, _ := d.w.stats()
		fmt.Fprintf(d.out, "  writes acknowledged: %d, failed: %d\n", n, errs)
	}
	if ok {
		fmt.Fprintln(d.out, "RESULT: ok — the cluster recovered from every failure")
		return 0
	}
	fmt.Fprintln(d.out, "RESULT: failed")
	return 1
}
