package replicate

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
)

// replayTimeline returns the timeline a standby replays on when its WAL
// receiver is not running: the highest timeline whose history file is in
// pg_wal and whose switch point the standby has replayed past, or cur when
// there is none.
//
// Without a WAL receiver PostgreSQL 15 exposes only the timeline of the
// latest restartpoint, which lags behind the WAL actually replayed: a
// standby killed right after following a new primary comes back reporting
// the timeline before the promotion although it replays WAL of the new one,
// and would be judged too old to be promoted (the chaos harness hit this:
// with the sync standby reporting an old timeline no node was eligible and
// the cluster stayed without a primary).
func replayTimeline(ctx context.Context, conn *pgx.Conn, replay LSN, cur uint32) (uint32, error) {
	rows, err := conn.Query(ctx, `SELECT name FROM pg_ls_waldir() WHERE name ~ '^[0-9A-F]{8}\.history$'`)
	if err != nil {
		return cur, err
	}
	var tls []uint32
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			rows.Close()
			return cur, err
		}
		tl, err := parseTimeline(name[:8], 16)
		if err == nil && tl > cur {
			tls = append(tls, tl)
		}
	}
	if err := rows.Err(); err != nil {
		return cur, err
	}
	slices.Sort(tls)
	for i := len(tls) - 1; i >= 0; i-- {
		var content string
		name := fmt.Sprintf("pg_wal/%08X.history", tls[i])
		if err := conn.QueryRow(ctx, "SELECT pg_read_file($1)", name).Scan(&content); err != nil {
			return cur, fmt.Errorf("read %s: %w", name, err)
		}
		switchAt, err := parseHistorySwitch(content, tls[i])
		if err != nil {
			return cur, fmt.Errorf("%s: %w", name, err)
		}
		if replay >= switchAt {
			return tls[i], nil
		}
	}
	return cur, nil
}

// parseHistorySwitch returns the point where timeline tl forked from its
// parent, from tl's history file: the last entry, "parentTLI<tab>X/Y<tab>
// reason", whose parent must be below tl.
func parseHistorySwitch(content string, tl uint32) (LSN, error) {
	var last string
	for _, line := range strings.Split(content, "\n") {
		if l := strings.TrimSpace(line); l != "" && !strings.HasPrefix(l, "#") {
			last = l
		}
	}
	f := strings.Fields(last)
	if len(f) < 2 {
		return 0, fmt.Errorf("timeline history has no entry (want \"parent<TAB>X/Y<TAB>reason\"), got %q", truncate(last, 80))
	}
	parent, err := parseTimeline(f[0], 10)
	if err != nil {
		return 0, fmt.Errorf("timeline history entry %q: parent timeline: %w", truncate(last, 80), err)
	}
	if parent >= tl {
		return 0, fmt.Errorf("timeline history entry %q: parent timeline %d is not below %d", truncate(last, 80), parent, tl)
	}
	lsn, err := ParseLSN(f[1])
	if err != nil {
		return 0, fmt.Errorf("timeline history entry %q: switch point: %w", truncate(last, 80), err)
	}
	return lsn, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
