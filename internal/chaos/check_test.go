package chaos

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgha/pgha/driver"
)

func w(client, key int, v, call, ret int64, out outcome) op {
	return op{client: client, kind: opWrite, key: key, value: v, call: call, ret: ret, outcome: out}
}

func r(client, key int, v, call, ret int64) op {
	return op{client: client, kind: opRead, key: key, value: v, call: call, ret: ret, outcome: outOK}
}

// The checker must reject the anomalies a broken failover produces, and
// accept what unknown outcomes allow.
func TestLinearizabilityChecker(t *testing.T) {
	cases := []struct {
		name      string
		ops       []op
		committed []int64
		want      porcupine.CheckResult
	}{
		{"sequential", []op{w(0, 1, 5, 0, 10, outOK), r(1, 1, 5, 20, 30)}, []int64{5}, porcupine.Ok},
		{"stale read after an acknowledged write", []op{w(0, 1, 5, 0, 10, outOK), r(1, 1, 0, 20, 30)}, []int64{5}, porcupine.Illegal},
		{"lost write read back as the older value", []op{w(0, 1, 5, 0, 10, outOK), w(0, 1, 6, 11, 15, outOK), r(1, 1, 5, 20, 30)}, []int64{5, 6}, porcupine.Illegal},
		{"concurrent read may see either", []op{w(0, 1, 5, 0, 10, outOK), r(1, 1, 0, 5, 30)}, []int64{5}, porcupine.Ok},
		{"unknown committed write applies later", []op{w(0, 1, 5, 0, 10, outUnknown), r(1, 1, 0, 20, 30), r(1, 1, 5, 40, 50)}, []int64{5}, porcupine.Ok},
		{"unknown write cannot be undone", []op{w(0, 1, 5, 0, 10, outUnknown), r(1, 1, 5, 20, 30), r(1, 1, 0, 40, 50)}, []int64{5}, porcupine.Illegal},
		{"read of a write that never committed", []op{w(0, 1, 5, 0, 10, outUnknown), r(1, 1, 5, 20, 30)}, nil, porcupine.Illegal},
		{"read of a failed write", []op{w(0, 1, 5, 0, 10, outFailed), r(1, 1, 5, 20, 30)}, []int64{5}, porcupine.Illegal},
		{"keys are independent", []op{w(0, 1, 5, 0, 10, outOK), r(1, 2, 0, 20, 30)}, []int64{5}, porcupine.Ok},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			committed := map[int64]bool{}
			for _, v := range tc.committed {
				committed[v] = true
			}
			res := checkLinearizable(tc.ops, committed, 10*time.Second, "")
			if res.result != tc.want {
				t.Fatalf("check = %s, want %s", res.result, tc.want)
			}
		})
	}
}

// An illegal history produces the visualisation.
func TestLinearizabilityVisualisation(t *testing.T) {
	path := t.TempDir() + "/lin.html"
	res := checkLinearizable([]op{w(0, 1, 5, 0, 10, outOK), r(1, 1, 0, 20, 30)}, map[int64]bool{5: true}, 10*time.Second, path)
	if res.result != porcupine.Illegal || res.visual != path {
		t.Fatalf("result %s, visual %q", res.result, res.visual)
	}
}

func TestClassifyWrite(t *testing.T) {
	cases := []struct {
		err  error
		want outcome
	}{
		{nil, outOK},
		{&driver.Error{Kind: driver.ErrNoPrimary, Op: "exec"}, outFailed},
		{&driver.Error{Kind: driver.ErrFailover, Op: "exec"}, outFailed},
		{&driver.Error{Kind: driver.ErrOutcomeUnknown, Op: "exec", Err: io.ErrUnexpectedEOF}, outUnknown},
		{&pgconn.PgError{Severity: "ERROR", Code: "25006", Message: "cannot execute INSERT in a read-only transaction"}, outFailed},
		{&pgconn.PgError{Severity: "FATAL", Code: "57P01", Message: "terminating connection due to administrator command"}, outUnknown},
		{fmt.Errorf("exec: %w", errors.New("context deadline exceeded")), outUnknown},
	}
	for _, tc := range cases {
		if got := classifyWrite(tc.err); got != tc.want {
			t.Errorf("classifyWrite(%v) = %s, want %s", tc.err, got, tc.want)
		}
	}
}

func TestUnavailability(t *testing.T) {
	ms := int64(time.Millisecond)
	acks := []int64{10 * ms, 20 * ms, 500 * ms, 510 * ms}
	cases := []struct {
		from, to int64
		want     time.Duration
	}{
		{0, 30 * ms, 10 * time.Millisecond},          // 0→10, 10→20, 20→30
		{15 * ms, 600 * ms, 480 * time.Millisecond},  // 20→500
		{600 * ms, 900 * ms, 300 * time.Millisecond}, // nothing acknowledged
	}
	for _, tc := range cases {
		if got := unavailability(acks, tc.from, tc.to); got != tc.want {
			t.Errorf("unavailability(%d, %d) = %v, want %v", tc.from/ms, tc.to/ms, got, tc.want)
		}
	}
}

func TestHistoryMatches(t *testing.T) {
	file := "1\t0/5000A0\tno recovery target specified\n\n2\t0/7000000\tno recovery target specified\n"
	ok := []historyEntry{{1, 0, "a"}, {2, 0x500000, "b"}, {3, 0x7000000, "c"}}
	if bad := historyMatches(file, 3, ok); len(bad) != 0 {
		t.Errorf("consistent history: %v", bad)
	}
	bad := historyMatches(file, 3, []historyEntry{{2, 0x600000, "b"}, {4, 0x8000000, "d"}})
	if len(bad) != 2 || !strings.Contains(bad[0], "before the 0/600000") || !strings.Contains(bad[1], "timeline 4") {
		t.Errorf("inconsistent history: %q", bad)
	}
	if bad := historyMatches("", 1, []historyEntry{{1, 0, "a"}}); len(bad) != 0 {
		t.Errorf("timeline 1, no history file: %v", bad)
	}
	if bad := historyMatches("1\tnot-an-lsn\tr\n", 2, ok[:2]); len(bad) != 1 || !strings.Contains(bad[0], "does not parse") {
		t.Errorf("a corrupt history file: %q; want it reported", bad)
	}
}

func TestClassifyPlain(t *testing.T) {
	cases := []struct {
		err  error
		want outcome
	}{
		{nil, outOK},
		{&pgconn.PgError{Severity: "ERROR", Code: "25006", Message: "cannot execute INSERT in a read-only transaction"}, outFailed},
		{&pgconn.PgError{Severity: "FATAL", Code: "57P01", Message: "terminating connection due to administrator command"}, outUnknown},
		{io.ErrUnexpectedEOF, outUnknown},
		{fmt.Errorf("exec: %w", errors.New("context deadline exceeded")), outUnknown},
	}
	for _, tc := range cases {
		if got := classifyPlain(tc.err); got != tc.want {
			t.Errorf("classifyPlain(%v) = %s, want %s", tc.err, got, tc.want)
		}
	}
}

// Every acknowledged plain-client id missing from the final primary is
// lost, counted once per fault kind whose window holds its
// acknowledgement ("" when none does); ids not acknowledged are not.
func TestPlainLossesByFault(t *testing.T) {
	paused := &fault{kind: faultAgentPaused}
	lat := &fault{kind: faultLatency}
	windows := []window{{paused, 100, 200}, {lat, 150, 300}}
	plain := []plainWrite{
		{id: 1, ret: 50, outcome: outOK},       // committed
		{id: 2, ret: 120, outcome: outOK},      // lost in agent-paused
		{id: 3, ret: 160, outcome: outOK},      // lost in both windows
		{id: 4, ret: 400, outcome: outOK},      // lost outside every window
		{id: 5, ret: 170, outcome: outFailed},  // committed although failed
		{id: 6, ret: 180, outcome: outUnknown}, // not committed: no loss
		{id: 7, ret: 190, outcome: outUnknown}, // committed
	}
	committed := map[int64]bool{1: true, 5: true, 7: true}
	var r Report
	r.checkPlain(plain, committed, windows)
	if fmt.Sprint(r.PlainLost) != "[2 3 4]" {
		t.Errorf("lost %v, want [2 3 4]", r.PlainLost)
	}
	if want := map[string]int{faultAgentPaused: 2, faultLatency: 1, "": 1}; fmt.Sprint(r.PlainLostBy) != fmt.Sprint(want) {
		t.Errorf("lost by fault kind %v, want %v", r.PlainLostBy, want)
	}
	if fmt.Sprint(r.PlainFailedPresent) != "[5]" {
		t.Errorf("failed but present %v, want [5]", r.PlainFailedPresent)
	}
	if r.PlainWrites != 7 || r.PlainOK != 4 || r.PlainFailed != 1 || r.PlainUnknown != 2 {
		t.Errorf("writes %d ok %d failed %d unknown %d, want 7 4 1 2", r.PlainWrites, r.PlainOK, r.PlainFailed, r.PlainUnknown)
	}
}

// An etcd outage is held to what the mode promises: with failsafe, the
// leader keeps running, the plain client keeps being acknowledged and the
// same term leads afterwards; without, the leader fences within TTL + 1 s.
func TestOutageExpectations(t *testing.T) {
	tl := newTimeline(nil)
	at := func(d time.Duration) time.Time { return tl.start.Add(d) }
	term := &leaderSnap{node: "c1", token: 20, timeline: 2}
	// The plain client is acknowledged every 100 ms from 0 to 20 s,
	// except (gap) from 5 s to 8 s.
	plain := func(gap bool) []plainWrite {
		var ps []plainWrite
		for ms := int64(0); ms <= 20000; ms += 100 {
			if gap && ms > 5000 && ms < 8000 {
				continue
			}
			ps = append(ps, plainWrite{id: ms, ret: ms * int64(time.Millisecond), outcome: outOK})
		}
		return ps
	}
	outage := func(fenced time.Duration, after *leaderSnap) outageResult {
		f := &fault{kind: faultEtcdOutage, at: at(time.Second), down: at(time.Second), healed: at(11 * time.Second), hold: 10 * time.Second}
		return outageResult{f: f, at: time.Second, before: term, after: after, fenced: fenced > 0, fencedAfter: fenced, converged: time.Second}
	}
	// An outage that began 0.5 s after etcd came back from an earlier
	// etcd fault is reported, not held to the promise.
	flap := func(o outageResult) outageResult { o.flap = 500 * time.Millisecond; return o }
	cases := []struct {
		name     string
		failsafe bool
		o        outageResult
		gap      bool
		want     string // "" or a substring of the one expectation not met
	}{
		{"failsafe holds", true, outage(0, term), false, ""},
		{"failsafe fenced", true, outage(1300*time.Millisecond, term), false, "fenced 1.300s"},
		{"failsafe failed over", true, outage(0, &leaderSnap{node: "c2", token: 31, timeline: 3}), false, "the leader changed"},
		{"failsafe new term, same node and timeline", true, outage(0, &leaderSnap{node: "c1", token: 31, timeline: 2}), false, ""},
		{"failsafe same node, new timeline", true, outage(0, &leaderSnap{node: "c1", token: 31, timeline: 3}), false, "the leader changed"},
		{"failsafe no leader after", true, outage(0, nil), false, "no writable leader"},
		{"failsafe writes stall", true, outage(0, term), true, "waited 3.000s"},
		{"no failsafe fences", false, outage(1300*time.Millisecond, nil), true, ""},
		{"no failsafe keeps running", false, outage(0, term), false, "kept running"},
		{"no failsafe fences late", false, outage(3500*time.Millisecond, nil), true, "later than the TTL"},
		{"failsafe fenced in an etcd flap", true, flap(outage(200*time.Millisecond, nil)), true, ""},
		{"no failsafe kept running in an etcd flap", false, flap(outage(0, term)), false, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := Report{Outages: []outageResult{tc.o}}
			r.checkOutages(Options{Failsafe: tc.failsafe, TTL: 2 * time.Second}, plain(tc.gap), tl)
			switch {
			case tc.want == "" && len(r.Expectations) != 0:
				t.Errorf("expectations not met: %q; want none", r.Expectations)
			case tc.want != "" && (len(r.Expectations) != 1 || !strings.Contains(r.Expectations[0], tc.want)):
				t.Errorf("expectations not met: %q; want one with %q", r.Expectations, tc.want)
			}
		})
	}
}
