package chaos

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// timeline records what happened during a run, relative to its start on
// the monotonic clock: faults, heals, leader changes, anomalies.
type timeline struct {
	start time.Time
	mu    sync.Mutex
	evs   []event
	echo  io.Writer // each event is also written here when set
}

type event struct {
	at   time.Duration
	kind string // "fault", "heal", "leader", "note", "anomaly", "round"
	text string
}

func newTimeline(echo io.Writer) *timeline {
	return &timeline{start: time.Now(), echo: echo}
}

// now is the time since the start, for humans.
func (tl *timeline) now() string { return fmtDur(time.Since(tl.start)) }

// since is the monotonic offset of t from the start, in nanoseconds: the
// histories' clock.
func (tl *timeline) since(t time.Time) int64 { return int64(t.Sub(tl.start)) }

func (tl *timeline) add(kind, format string, args ...any) {
	e := event{at: time.Since(tl.start), kind: kind, text: fmt.Sprintf(format, args...)}
	tl.mu.Lock()
	tl.evs = append(tl.evs, e)
	w := tl.echo
	tl.mu.Unlock()
	if w != nil {
		fmt.Fprintf(w, "%9s %-7s %s\n", fmtDur(e.at), e.kind, e.text)
	}
}

func (tl *timeline) events() []event {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	return append([]event(nil), tl.evs...)
}

// String is the whole timeline, one event a line.
func (tl *timeline) String() string {
	var b strings.Builder
	for _, e := range tl.events() {
		fmt.Fprintf(&b, "%9s %-7s %s\n", fmtDur(e.at), e.kind, e.text)
	}
	return b.String()
}

func fmtDur(d time.Duration) string {
	return fmt.Sprintf("%.3fs", d.Seconds())
}
