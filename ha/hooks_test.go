package ha

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgha/pgha/internal/testutil"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// lockedBuffer is a log sink safe for concurrent writers.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// hookHarness runs a roleHooks with an SDK meter and a captured log.
type hookHarness struct {
	h      *roleHooks
	log    *lockedBuffer
	reader *sdkmetric.ManualReader
}

func newHookHarness(t *testing.T, slowAfter time.Duration, fn func(context.Context, RoleChange)) *hookHarness {
	t.Helper()
	hh := &hookHarness{log: &lockedBuffer{}, reader: sdkmetric.NewManualReader()}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(hh.reader))
	log := slog.New(slog.NewTextHandler(hh.log, nil))
	h, err := newRoleHooks(fn, log, mp, "n1", slowAfter)
	if err != nil {
		t.Fatal(err)
	}
	h.start()
	hh.h = h
	t.Cleanup(func() {
		h.close()
		if t.Failed() {
			t.Logf("hook log:\n%s", hh.log.String())
		}
	})
	return hh
}

// counter returns the sum of the named int64 counter.
func counter(t testing.TB, reader *sdkmetric.ManualReader, name string) int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if sum, ok := m.Data.(metricdata.Sum[int64]); ok && m.Name == name {
				for _, dp := range sum.DataPoints {
					n += dp.Value
				}
			}
		}
	}
	return n
}

var roleCycle = []Role{RoleStarting, RoleReplica, RolePrimary, RoleFenced, RoleStopped}

// changes returns n successive role changes starting from "".
func changes(n int) []RoleChange {
	var out []RoleChange
	old := Role("")
	for i := range n {
		nw := roleCycle[i%len(roleCycle)]
		out = append(out, RoleChange{Old: old, New: nw, Timeline: uint32(i), Node: "n1", Cluster: "c"})
		old = nw
	}
	return out
}

// TestRoleChangeHookOrder: changes are delivered one call at a time, in
// order, each ctx live until the next change and cancelled by it.
func TestRoleChangeHookOrder(t *testing.T) {
	var mu sync.Mutex
	var got []RoleChange
	var ctxs []context.Context
	var inFlight, overlap atomic.Int32
	hh := newHookHarness(t, time.Minute, func(ctx context.Context, ev RoleChange) {
		if inFlight.Add(1) > 1 {
			overlap.Add(1)
		}
		defer inFlight.Add(-1)
		mu.Lock()
		got = append(got, ev)
		ctxs = append(ctxs, ctx)
		mu.Unlock()
	})
	want := changes(10)
	for i, ev := range want {
		hh.h.emit(ev)
		// Wait for delivery, then check the previous change's ctx was
		// cancelled by this one and this one's is live after its call.
		testutil.Eventually(t, 5*time.Second, fmt.Sprintf("change %d delivered", i), func() error {
			mu.Lock()
			defer mu.Unlock()
			if len(got) <= i {
				return fmt.Errorf("%d of %d delivered", len(got), i+1)
			}
			return nil
		})
		mu.Lock()
		if ctxs[i].Err() != nil {
			t.Errorf("change %d: ctx cancelled after its call returned, before the next change: %v", i, ctxs[i].Err())
		}
		if i > 0 && ctxs[i-1].Err() == nil {
			t.Errorf("change %d: the ctx of change %d (%s) is still live after the role changed to %s", i, i-1, want[i-1].New, ev.New)
		}
		mu.Unlock()
	}
	// A burst: all queued behind one another, still in order.
	burst := changes(25)[10:]
	for _, ev := range burst {
		hh.h.emit(ev)
	}
	want = append(want, burst...)
	testutil.Eventually(t, 5*time.Second, "the burst delivered", func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(got) < len(want) {
			return fmt.Errorf("%d of %d delivered", len(got), len(want))
		}
		return nil
	})
	mu.Lock()
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("call %d: got %+v; want %+v", i, got[i], want[i])
		}
	}
	last := ctxs[len(ctxs)-1]
	mu.Unlock()
	if n := overlap.Load(); n > 0 {
		t.Errorf("%d calls overlapped another", n)
	}
	if last.Err() != nil {
		t.Fatalf("the current role's ctx is cancelled: %v", last.Err())
	}
	hh.h.close()
	if last.Err() == nil {
		t.Fatalf("the current role's ctx is live after close (Run ended)")
	}
}

// TestRoleChangeHookSlowDoesNotBlock: a hook that blocks does not block
// emit; waiting changes beyond the queue fold into the newest waiting one;
// the slow call is logged and counted; close cancels the blocked call's
// ctx and waits for it.
func TestRoleChangeHookSlowDoesNotBlock(t *testing.T) {
	entered := make(chan RoleChange, 100)
	release := make(chan struct{})
	var mu sync.Mutex
	var got []RoleChange
	hh := newHookHarness(t, 50*time.Millisecond, func(ctx context.Context, ev RoleChange) {
		mu.Lock()
		got = append(got, ev)
		mu.Unlock()
		entered <- ev
		if ev.Old == "" {
			<-release // ignores ctx: the worst case
		}
	})
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	t.Cleanup(unblock) // before the harness's close, which waits for the call
	all := changes(1 + roleChangeQueue + 5)
	emitted := make(chan struct{})
	go func() {
		defer close(emitted)
		hh.h.emit(all[0])
		<-entered // the first call has begun, and blocks
		for _, ev := range all[1:] {
			hh.h.emit(ev)
		}
	}()
	select {
	case <-emitted:
	case <-time.After(10 * time.Second):
		unblock()
		t.Fatalf("emit blocked behind a blocked hook")
	}
	testutil.Eventually(t, 5*time.Second, "the slow call logged and counted", func() error {
		if !strings.Contains(hh.log.String(), "role-change hook is slow") {
			return errors.New("no slow-hook log line")
		}
		if n := counter(t, hh.reader, "pgha.ha.hook.slow"); n != 1 {
			return fmt.Errorf("pgha.ha.hook.slow = %d; want 1", n)
		}
		return nil
	})
	if n := counter(t, hh.reader, "pgha.ha.hook.coalesced"); n != 5 {
		t.Errorf("pgha.ha.hook.coalesced = %d; want 5", n)
	}
	unblock()
	testutil.Eventually(t, 5*time.Second, "the waiting changes delivered", func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(got) < 1+roleChangeQueue {
			return fmt.Errorf("%d of %d delivered", len(got), 1+roleChangeQueue)
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 1+roleChangeQueue {
		t.Fatalf("%d calls; want %d", len(got), 1+roleChangeQueue)
	}
	for i := 0; i < roleChangeQueue; i++ {
		if got[i] != all[i] {
			t.Errorf("call %d: got %+v; want %+v", i, got[i], all[i])
		}
	}
	// The last call stands for the last queued change and the 5 folded.
	lastQueued, newest := all[roleChangeQueue], all[len(all)-1]
	want := newest
	want.Old, want.Coalesced = lastQueued.Old, 5
	if g := got[roleChangeQueue]; g != want {
		t.Errorf("folded call: got %+v; want %+v", g, want)
	}
}

// TestRoleChangeHookPanics: a panicking hook is recovered, logged with
// its stack and counted, and the next change is still delivered.
func TestRoleChangeHookPanics(t *testing.T) {
	var calls atomic.Int32
	hh := newHookHarness(t, time.Minute, func(ctx context.Context, ev RoleChange) {
		calls.Add(1)
		if ev.New == RoleStarting {
			panic("hook bug " + string(ev.New))
		}
	})
	for _, ev := range changes(3) {
		hh.h.emit(ev)
	}
	testutil.Eventually(t, 5*time.Second, "every change delivered after the panic", func() error {
		if n := calls.Load(); n != 3 {
			return fmt.Errorf("%d calls", n)
		}
		return nil
	})
	testutil.Eventually(t, 5*time.Second, "the panic logged and counted", func() error {
		l := hh.log.String()
		if !strings.Contains(l, "role-change hook panicked") || !strings.Contains(l, "hook bug starting") || !strings.Contains(l, "hooks_test.go") {
			return fmt.Errorf("log lacks the panic, its value or its stack:\n%s", l)
		}
		if n := counter(t, hh.reader, "pgha.ha.hook.panics"); n != 1 {
			return fmt.Errorf("pgha.ha.hook.panics = %d; want 1", n)
		}
		return nil
	})
}
