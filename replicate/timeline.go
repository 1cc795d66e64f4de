package replicate

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
)

// walTimelines is what a standby's pg_wal says about timelines: the
// timelines it holds a history file for, and those it holds WAL segments
// of (WAL it received or replayed on that timeline).
type walTimelines struct {
	history  []uint32 // ascending
	segments map[uint32]bool
}

func readWALTimelines(ctx context.Context, conn *pgx.Conn) (walTimelines, error) {
	w := walTimelines{segments: map[uint32]bool{}}
	rows, err := conn.Query(ctx, `SELECT name FROM pg_ls_waldir() WHERE name ~ '^[0-9A-F]{8}(\.history|[0-9A-F]{16})$'`)
	if err != nil {
		return w, err
	}
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			rows.Close()
			return w, err
		}
		tl, err := parseTimeline(name[:8], 16)
		if err != nil {
			continue
		}
		if strings.HasSuffix(name, ".history") {
			w.history = append(w.history, tl)
		} else {
			w.segments[tl] = true
		}
	}
	if err := rows.Err(); err != nil {
		return w, err
	}
	slices.Sort(w.history)
	return w, nil
}

func readHistoryFile(ctx context.Context, conn *pgx.Conn, tl uint32) ([]HistoryEntry, error) {
	var content string
	name := fmt.Sprintf("pg_wal/%08X.history", tl)
	if err := conn.QueryRow(ctx, "SELECT pg_read_file($1)", name).Scan(&content); err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	h, err := ParseHistory(content, tl)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return h, nil
}

// replayTimeline returns the timeline a standby replays on when its WAL
// receiver is not streaming, and whether it has diverged from a newer
// timeline it knows of.
//
// Without a streaming WAL receiver PostgreSQL 15 exposes only the timeline
// of the latest restartpoint, which lags behind the WAL actually replayed:
// a standby killed right after following a new primary comes back
// reporting the timeline before the promotion although it replays WAL of
// the new one, and would be judged too old to be promoted (the chaos
// harness hit this: with the sync standby reporting an old timeline no
// node was eligible and the cluster stayed without a primary). So the
// timeline is the highest one whose history file is in pg_wal, whose
// switch point the standby has replayed up to, and of which it holds WAL
// segments: proof that it switched to it.
//
// A history file alone is no such proof. A standby that replayed WAL of
// its old timeline past the point where the new timeline forked (an async
// standby ahead of the promoted one) fetches the new history file and then
// waits for good ("new timeline N forked off current database system
// timeline M before current recovery point"); it must be reported on its
// old timeline, and diverged, so that it is rewound. Reporting the new
// timeline there hid the divergence and the standby never followed again.
func replayTimeline(ctx context.Context, conn *pgx.Conn, replay LSN, cur uint32) (uint32, bool, error) {
	w, err := readWALTimelines(ctx, conn)
	if err != nil {
		return cur, false, err
	}
	// Each history file is read at most once.
	read := map[uint32][]HistoryEntry{}
	history := func(t uint32) ([]HistoryEntry, error) {
		if h, ok := read[t]; ok {
			return h, nil
		}
		h, err := readHistoryFile(ctx, conn, t)
		read[t] = h
		return h, err
	}
	tl := cur
	for i := len(w.history) - 1; i >= 0; i-- {
		t := w.history[i]
		if t <= cur {
			break
		}
		if !w.segments[t] {
			continue
		}
		h, err := history(t)
		if err != nil {
			return cur, false, err
		}
		if replay >= h[len(h)-1].Switch {
			tl = t
			break
		}
	}
	// Diverged: the newest timeline known forked off ours at a point we
	// have replayed past.
	if n := len(w.history); n > 0 && w.history[n-1] > tl {
		h, err := history(w.history[n-1])
		if err != nil {
			return tl, false, err
		}
		if at, ok := forkPoint(h, tl); ok && replay > at {
			return tl, true, nil
		}
	}
	return tl, false, nil
}

// HistoryEntry is one line of a timeline history file
// (pg_wal/<timeline>.history): timeline Parent ended at Switch, the first
// WAL position of the next timeline.
type HistoryEntry struct {
	// Parent is an ancestor timeline.
	Parent uint32
	// Switch is where Parent ended.
	Switch LSN
}

// forkPoint returns where timeline tl ended in history h (the history of a
// newer timeline), and false when tl is not one of its ancestors.
func forkPoint(h []HistoryEntry, tl uint32) (LSN, bool) {
	for _, e := range h {
		if e.Parent == tl {
			return e.Switch, true
		}
	}
	return 0, false
}

// ParseHistory parses the content of timeline tl's history file
// (pg_wal/%08X.history, as pg_read_file returns it): one entry per
// ancestor, "parentTLI<TAB>X/Y<TAB>reason", parents increasing and below
// tl; blank lines and "#" comments are skipped. It returns the entries in
// file order, the last one being where tl's parent ended. Its errors start
// with "timeline history", quote the offending line and say what the line
// should look like; a history without an entry is an error.
func ParseHistory(content string, tl uint32) ([]HistoryEntry, error) {
	var h []HistoryEntry
	for _, line := range strings.Split(content, "\n") {
		l := strings.TrimSpace(line)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		f := strings.Fields(l)
		if len(f) < 2 {
			return nil, fmt.Errorf("timeline history entry %q has no switch point (want \"parent<TAB>X/Y<TAB>reason\")", truncate(l, 80))
		}
		parent, err := parseTimeline(f[0], 10)
		if err != nil {
			return nil, fmt.Errorf("timeline history entry %q: parent timeline: %w", truncate(l, 80), err)
		}
		if parent >= tl {
			return nil, fmt.Errorf("timeline history entry %q: parent timeline %d is not below %d", truncate(l, 80), parent, tl)
		}
		if n := len(h); n > 0 && parent <= h[n-1].Parent {
			return nil, fmt.Errorf("timeline history entry %q: parent timeline %d does not increase", truncate(l, 80), parent)
		}
		lsn, err := ParseLSN(f[1])
		if err != nil {
			return nil, fmt.Errorf("timeline history entry %q: switch point: %w", truncate(l, 80), err)
		}
		h = append(h, HistoryEntry{Parent: parent, Switch: lsn})
	}
	if len(h) == 0 {
		return nil, fmt.Errorf("timeline history has no entry (want \"parent<TAB>X/Y<TAB>reason\")")
	}
	return h, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
