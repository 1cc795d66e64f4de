package chaos

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/pgha/pgha/replicate"
)

// regInput is a register operation's input.
type regInput struct {
	key   int
	write bool
	value int64
}

// registerModel is a set of integer registers, one per key, starting at 0
// (no row): a write sets the value, a read returns it.
var registerModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[int][]porcupine.Operation{}
		var keys []int
		for _, o := range history {
			k := o.Input.(regInput).key
			if _, ok := byKey[k]; !ok {
				keys = append(keys, k)
			}
			byKey[k] = append(byKey[k], o)
		}
		slices.Sort(keys)
		var out [][]porcupine.Operation
		for _, k := range keys {
			out = append(out, byKey[k])
		}
		return out
	},
	Init: func() any { return int64(0) },
	Step: func(state, input, output any) (bool, any) {
		in := input.(regInput)
		if in.write {
			return true, in.value
		}
		return output.(int64) == state.(int64), state
	},
	DescribeOperation: func(input, output any) string {
		in := input.(regInput)
		if in.write {
			if output == nil {
				return fmt.Sprintf("write(k%d, %d) ?", in.key, in.value)
			}
			return fmt.Sprintf("write(k%d, %d)", in.key, in.value)
		}
		return fmt.Sprintf("read(k%d) → %d", in.key, output.(int64))
	},
	DescribeState: func(state any) string { return fmt.Sprint(state.(int64)) },
}

// linResult is the outcome of the linearizability check.
type linResult struct {
	result  porcupine.CheckResult
	checked int
	elapsed time.Duration
	visual  string // path of the HTML visualisation, when written
}

// toPorcupine turns the history into porcupine operations. Failed
// operations are left out (they had no effect); unknown writes that
// committed (committed[v]) may take effect at any point after their call
// (their return is after every other operation); unknown writes that did
// not commit are left out.
func toPorcupine(ops []op, committed map[int64]bool) []porcupine.Operation {
	var end int64
	for _, o := range ops {
		end = max(end, o.ret)
	}
	var h []porcupine.Operation
	for _, o := range ops {
		in := regInput{key: o.key, write: o.kind == opWrite, value: o.value}
		switch {
		case o.outcome == outOK && o.kind == opWrite:
			h = append(h, porcupine.Operation{ClientId: o.client, Input: in, Call: o.call, Output: true, Return: o.ret})
		case o.outcome == outOK:
			h = append(h, porcupine.Operation{ClientId: o.client, Input: in, Call: o.call, Output: o.value, Return: o.ret})
		case o.outcome == outUnknown && o.kind == opWrite && committed[o.value]:
			h = append(h, porcupine.Operation{ClientId: o.client, Input: in, Call: o.call, Output: nil, Return: end + 1})
		}
	}
	return h
}

// checkLinearizable runs porcupine on the history; it writes the
// visualisation to visualPath when the history is not linearizable or the
// check timed out.
func checkLinearizable(ops []op, committed map[int64]bool, timeout time.Duration, visualPath string) linResult {
	h := toPorcupine(ops, committed)
	start := time.Now()
	res, info := porcupine.CheckOperationsVerbose(registerModel, h, timeout)
	r := linResult{result: res, checked: len(h), elapsed: time.Since(start)}
	if res != porcupine.Ok && visualPath != "" {
		if err := porcupine.VisualizePath(registerModel, info, visualPath); err == nil {
			r.visual = visualPath
		}
	}
	return r
}

// nodeData is what one node holds after the heal.
type nodeData struct {
	timeline int64
	history  string // the current timeline's history file, "" on timeline 1
	logVals  map[int64]bool
	regSum   string
	// plainVals are the plain client's ids.
	plainVals map[int64]bool
}

func (n *node) data(ctx context.Context) (nodeData, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	s, err := n.pgState(ctx)
	if err != nil {
		return nodeData{}, err
	}
	conn, err := n.connect(ctx)
	if err != nil {
		return nodeData{}, err
	}
	defer conn.Close(context.Background())
	d := nodeData{timeline: s.timeline, logVals: map[int64]bool{}, plainVals: map[int64]bool{}}
	if s.timeline > 1 {
		name := fmt.Sprintf("pg_wal/%08X.history", s.timeline)
		if err := conn.QueryRow(ctx, "SELECT pg_read_file($1)", name).Scan(&d.history); err != nil {
			return d, fmt.Errorf("read %s: %w", name, err)
		}
	}
	rows, err := conn.Query(ctx, "SELECT v FROM chaos_log")
	if err != nil {
		return d, err
	}
	for rows.Next() {
		var v int64
		if err := rows.Scan(&v); err != nil {
			return d, err
		}
		d.logVals[v] = true
	}
	if err := rows.Err(); err != nil {
		return d, err
	}
	rows, err = conn.Query(ctx, "SELECT id FROM chaos_plain")
	if err != nil {
		return d, err
	}
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return d, err
		}
		d.plainVals[id] = true
	}
	if err := rows.Err(); err != nil {
		return d, err
	}
	err = conn.QueryRow(ctx, "SELECT coalesce(md5(string_agg(k || '=' || v, ',' ORDER BY k)), '') FROM chaos_reg").Scan(&d.regSum)
	return d, err
}

// historyMatches checks timeline tl's history file against the
// promotions recorded in etcd: for each entry (timeline T, promoted after
// replaying up to L) the file must have a line for parent T-1 whose switch
// point is at or after L (the promoted node stops replaying at the switch
// point, which is no earlier than what it had published). It returns what
// does not match; a file that does not parse matches nothing.
func historyMatches(file string, tl uint32, entries []historyEntry) []string {
	lines := map[uint32]replicate.LSN{}
	if tl > 1 { // timeline 1 has no history file
		h, err := replicate.ParseHistory(file, tl)
		if err != nil {
			return []string{fmt.Sprintf("the history file of timeline %d does not parse: %v", tl, err)}
		}
		for _, e := range h {
			lines[e.Parent] = e.Switch
		}
	}
	var bad []string
	for _, e := range entries {
		if e.timeline <= 1 {
			continue // the bootstrap: no parent
		}
		got, ok := lines[e.timeline-1]
		switch {
		case !ok:
			bad = append(bad, fmt.Sprintf("timeline %d (promoted by %s, etcd history) is missing from the history file", e.timeline, e.leader))
		case got < replicate.LSN(e.switchLSN):
			bad = append(bad, fmt.Sprintf("timeline %d forked at %s in the history file, before the %s %s had published (etcd history)",
				e.timeline, got, replicate.LSN(e.switchLSN), e.leader))
		}
	}
	return bad
}

type historyEntry struct {
	timeline  uint32
	switchLSN uint64
	leader    string
}
