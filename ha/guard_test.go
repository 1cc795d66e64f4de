package ha

import (
	"context"
	"fmt"
	"log/slog"
	"syscall"
	"testing"
	"time"

	"github.com/pgha/pgha/internal/testutil"
	"github.com/pgha/pgha/replicate"
)

// startGuardFor starts a fence guard (this test binary, re-executed; see
// TestMain) for inst's data directory.
func startGuardFor(t *testing.T, inst *replicate.Instance) *fenceGuard {
	t.Helper()
	g, err := startFenceGuard(inst.Config().DataDir, inst.Config().FenceTimeout, slog.New(slog.NewTextHandler(t.Output(), nil)))
	if err != nil {
		t.Fatalf("start the fence guard: %v", err)
	}
	t.Cleanup(g.stop)
	return g
}

// TestFenceGuardFencesAtTheDeadline: armed and never extended (the
// manager frozen), the guard fences PostgreSQL once the deadline has
// passed, and not before.
func TestFenceGuardFencesAtTheDeadline(t *testing.T) {
	inst := testutil.StartPostgres(t, testutil.PostgresOptions{})
	g := startGuardFor(t, inst)
	exited := inst.Exited()
	deadline := time.Now().Add(700 * time.Millisecond)
	if err := g.arm(deadline); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
		if at := time.Now(); at.Before(deadline) {
			t.Fatalf("PostgreSQL exited %v before the guard's deadline", deadline.Sub(at))
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("PostgreSQL still runs 30 s after the guard's deadline passed")
	}
	t.Logf("postmaster exit: %v", inst.ExitErr())
}

// TestFenceGuardExtended: a guard whose deadline keeps moving (renewals)
// fences nothing, also when the guard was stopped (SIGSTOP) meanwhile and
// wakes after the deadline it last read: it re-reads the shared deadline
// before it acts.
func TestFenceGuardExtended(t *testing.T) {
	inst := testutil.StartPostgres(t, testutil.PostgresOptions{})
	g := startGuardFor(t, inst)
	exited := inst.Exited()
	if err := g.arm(time.Now().Add(400 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	// Several rounds: on waking, the guard sees its timer fired and a
	// poke at once, in either order; a guard that acted on the deadline
	// it read before it was stopped would fence in one of them.
	for round := range 4 {
		if err := g.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		// Renewals while the guard is stopped: the deadline moves on, in
		// the shared memory only (its pokes queue in the pipe).
		for end := time.Now().Add(time.Second); time.Now().Before(end); <-tick.C {
			if err := g.arm(time.Now().Add(400 * time.Millisecond)); err != nil {
				t.Fatal(err)
			}
		}
		// The guard wakes long after the deadline it last read.
		if err := g.cmd.Process.Signal(syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
		for end := time.Now().Add(500 * time.Millisecond); time.Now().Before(end); <-tick.C {
			if err := g.arm(time.Now().Add(400 * time.Millisecond)); err != nil {
				t.Fatal(err)
			}
			select {
			case <-exited:
				t.Fatalf("round %d: the guard fenced PostgreSQL although every deadline was extended in time: %v", round, inst.ExitErr())
			default:
			}
		}
	}
	if err := g.disarm(); err != nil {
		t.Fatal(err)
	}
	// Disarmed: past the last deadline, still nothing.
	wait := time.NewTimer(800 * time.Millisecond)
	defer wait.Stop()
	select {
	case <-exited:
		t.Fatalf("the guard fenced PostgreSQL after it was disarmed: %v", inst.ExitErr())
	case <-wait.C:
	}
	if !g.alive() {
		t.Fatalf("the guard exited")
	}
}

// TestFenceGuardManagerGone: when the manager dies (the guard's stdin
// closes) with the guard armed, the guard fences at the deadline and
// exits; disarmed, it just exits.
func TestFenceGuardManagerGone(t *testing.T) {
	inst := testutil.StartPostgres(t, testutil.PostgresOptions{})
	g := startGuardFor(t, inst)
	exited := inst.Exited()
	if err := g.arm(time.Now().Add(300 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	g.notify.Close() // as the death of the manager's process would
	testutil.Eventually(t, 30*time.Second, "the guard to fence and exit", func() error {
		select {
		case <-exited:
		default:
			return fmt.Errorf("PostgreSQL still runs")
		}
		if g.alive() {
			return fmt.Errorf("the guard still runs")
		}
		return nil
	})

	inst2 := testutil.StartPostgres(t, testutil.PostgresOptions{})
	g2 := startGuardFor(t, inst2)
	g2.notify.Close()
	testutil.Eventually(t, 10*time.Second, "a disarmed guard to exit", func() error {
		if g2.alive() {
			return fmt.Errorf("the guard still runs")
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if st, err := inst2.Status(ctx); err != nil || !st.Running {
		t.Fatalf("a disarmed guard's PostgreSQL: running %v, %v", st.Running, err)
	}
}

// TestFenceGuardLeader: a leader with FenceGuard on whose guard dies
// fences its PostgreSQL at once (fail safe) and another node takes over;
// a leader whose guard is stopped (SIGSTOP) while renewals succeed goes on
// leading.
func TestFenceGuardLeader(t *testing.T) {
	c := startCluster(t, clusterOpts{configure: func(_ string, cfg *Config) { cfg.FenceGuard = true }})
	lead := c.waitHealthy(60 * time.Second)
	g := lead.mgr.currentGuard()
	if g == nil || !g.alive() {
		t.Fatalf("leader %s has no running fence guard", lead.name)
	}
	token := lead.mgr.currentTerm().Token()

	// Stopped guard, healthy manager: nothing changes for 3 TTLs.
	if err := g.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	exited := lead.inst.Exited()
	hold := time.NewTimer(3 * c.opts.ttl)
	select {
	case <-exited:
		g.cmd.Process.Signal(syscall.SIGCONT)
		t.Fatalf("PostgreSQL on %s exited while its guard was stopped and renewals succeeded: %v", lead.name, lead.inst.ExitErr())
	case <-hold.C:
	}
	if err := g.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	// Woken past the deadline it last read: it must re-read, not fence.
	hold.Reset(2 * c.opts.ttl)
	select {
	case <-exited:
		t.Fatalf("the woken guard fenced %s: %v", lead.name, lead.inst.ExitErr())
	case <-hold.C:
	}
	if t2 := lead.mgr.currentTerm(); t2 == nil || t2.Token() != token {
		t.Fatalf("the leader's term changed while only its guard was stopped")
	}

	// The guard dies: the leader fences at once.
	if err := g.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	case <-time.After(c.opts.ttl):
		t.Fatalf("%s's PostgreSQL still runs %v after its fence guard was killed", lead.name, c.opts.ttl)
	}
	c.waitNewLeader(lead.name, 30*time.Second, "a new leader after the guard of "+lead.name+" died")
	c.waitHealthy(90 * time.Second)
}
