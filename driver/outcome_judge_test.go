package driver

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgha/pgha/internal/keyspace"
)

// TestJudgeFork is the decision table of outcome resolution before the
// current primary is asked (pure logic; the real-cluster tests are in
// outcome_test.go).
func TestJudgeFork(t *testing.T) {
	life1 := serverMark{timeline: 1, started: "100.5"}
	marked := func(xid uint64) commitMark { return commitMark{learned: true, xid: xid, server: life1} }
	hist := func(entries ...keyspace.HistoryEntry) *keyspace.HistoryRecord {
		return &keyspace.HistoryRecord{V: 1, Entries: entries}
	}
	boot := keyspace.HistoryEntry{Timeline: 1}
	for _, tc := range []struct {
		name   string
		mk     commitMark
		cur    serverMark
		hist   *keyspace.HistoryRecord
		want   verdict
		reason string // substring of the reason, for vUnknown
	}{
		{"id never received", commitMark{}, life1, nil, vUnknown, "not received"},
		{"server ended the stream before the id", commitMark{neverRan: true}, serverMark{timeline: 2}, nil, vNotCommitted, ""},
		{"no id: wrote nothing", commitMark{learned: true, server: life1}, serverMark{timeline: 2}, nil, vCommitted, ""},
		{"same server life", marked(900), life1, nil, vAsk, ""},
		{"restart on the same timeline", marked(900), serverMark{timeline: 1, started: "200"}, hist(boot), vUnknown, "restarted on timeline 1"},
		{"older timeline", commitMark{learned: true, xid: 900, server: serverMark{timeline: 3}}, serverMark{timeline: 2}, hist(boot), vUnknown, "older"},
		{"new timeline, host mode", marked(900), serverMark{timeline: 2}, nil, vUnknown, "no timeline history"},
		{"below the fork's first id", marked(900), serverMark{timeline: 2}, hist(boot, keyspace.HistoryEntry{Timeline: 2, FirstXID: 901}), vAsk, ""},
		{"at the fork's first id", marked(901), serverMark{timeline: 2}, hist(boot, keyspace.HistoryEntry{Timeline: 2, FirstXID: 901}), vNotCommitted, ""},
		{"above the fork's first id", marked(950), serverMark{timeline: 2}, hist(boot, keyspace.HistoryEntry{Timeline: 2, FirstXID: 901}), vNotCommitted, ""},
		{"entry without first_xid", marked(900), serverMark{timeline: 2}, hist(boot, keyspace.HistoryEntry{Timeline: 2}), vUnknown, "no first_xid"},
		{"no entry after the timeline", marked(900), serverMark{timeline: 2}, hist(boot), vUnknown, "no entry after timeline 1"},
		{"two forks: the lower first id decides", marked(905), serverMark{timeline: 3},
			hist(boot, keyspace.HistoryEntry{Timeline: 2, FirstXID: 910}, keyspace.HistoryEntry{Timeline: 3, FirstXID: 903}), vNotCommitted, ""},
		{"fork before the transaction's timeline is ignored", commitMark{learned: true, xid: 905, server: serverMark{timeline: 2, started: "1"}}, serverMark{timeline: 3},
			hist(boot, keyspace.HistoryEntry{Timeline: 2, FirstXID: 800}, keyspace.HistoryEntry{Timeline: 3, FirstXID: 950}), vAsk, ""},
		{"fork beyond the current timeline is ignored", marked(905), serverMark{timeline: 2},
			hist(boot, keyspace.HistoryEntry{Timeline: 2, FirstXID: 950}, keyspace.HistoryEntry{Timeline: 3, FirstXID: 800}), vAsk, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, reason := judgeFork(tc.mk, tc.cur, tc.hist)
			if got != tc.want {
				t.Fatalf("judgeFork = %s (%s); want %s", verdictName(got), reason, verdictName(tc.want))
			}
			if !strings.Contains(reason, tc.reason) {
				t.Fatalf("reason %q; want it to mention %q", reason, tc.reason)
			}
		})
	}
}

// TestEndedInOrder: only an end of file or a message from the server
// proves that everything it wrote before has arrived.
func TestEndedInOrder(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{io.ErrUnexpectedEOF, true},
		{fmt.Errorf("receive: %w", io.EOF), true},
		{&pgconn.PgError{Severity: "FATAL", Code: "57P01"}, true},
		{&pgconn.PgError{Severity: "ERROR", Code: "23505"}, false},
		{syscall.ECONNRESET, false},
		{net.ErrClosed, false},
		{context.DeadlineExceeded, false},
	} {
		if got := endedInOrder(tc.err); got != tc.want {
			t.Errorf("endedInOrder(%v) = %v; want %v", tc.err, got, tc.want)
		}
	}
}

// TestParseMark reads markSQL's row, with and without a transaction id.
func TestParseMark(t *testing.T) {
	m, err := parseMark([][]byte{[]byte("4294967303"), []byte("0000000A"), []byte("1765000000.123456")})
	if err != nil || !m.learned || m.xid != 1<<32+7 || m.server != (serverMark{timeline: 10, started: "1765000000.123456"}) {
		t.Fatalf("parseMark = %+v, %v", m, err)
	}
	m, err = parseMark([][]byte{nil, []byte("00000001"), []byte("1")})
	if err != nil || !m.learned || m.xid != 0 {
		t.Fatalf("parseMark without an id = %+v, %v", m, err)
	}
	for _, bad := range [][][]byte{
		{[]byte("x"), []byte("00000001"), []byte("1")},
		{nil, []byte("zz"), []byte("1")},
		{nil, nil, []byte("1")},
		{nil},
	} {
		if m, err := parseMark(bad); err == nil || m.learned {
			t.Errorf("parseMark(%q) = %+v, nil; want an error", bad, m)
		}
	}
}
