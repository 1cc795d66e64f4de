package pghatest_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/pgha/pgha/driver"
	"github.com/pgha/pgha/pghatest"
)

// This file is the package documentation's example, verbatim between the
// markers (TestDocExample checks that the two agree).

// --- example start ---

// OrderService is the service under test: it stores orders through a
// driver.Pool.
type OrderService struct{ Pool *driver.Pool }

// Place stores order id. The insert is idempotent (the id is the primary
// key), so Place may retry it whatever the failure: also when a failover
// left the outcome of the first attempt unknown.
func (s *OrderService) Place(ctx context.Context, id int64, item string) error {
	for {
		_, err := s.Pool.Exec(ctx, "INSERT INTO orders (id, item) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING", id, item)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, driver.ErrOutcomeUnknown), errors.Is(err, driver.ErrFailover),
			errors.Is(err, driver.ErrNoPrimary), driver.SafeToRetry(err):
			// A failover: try again on the new primary.
		default:
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("place order %d: %w (last error: %w)", id, ctx.Err(), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// TestOrdersSurviveFailover places orders while the primary is killed, and
// checks that every order Place acknowledged is stored.
func TestOrdersSurviveFailover(t *testing.T) {
	c := pghatest.Start(t, pghatest.Options{Nodes: 3, Sync: true})
	pool, err := driver.New(t.Context(), c.DSN())
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if _, err := pool.Exec(t.Context(), "CREATE TABLE orders (id bigint PRIMARY KEY, item text NOT NULL)"); err != nil {
		t.Fatal(err)
	}
	svc := &OrderService{Pool: pool}

	// The service's load: orders 1, 2, 3, ... until stopped.
	var mu sync.Mutex
	var acked []int64
	ctx, stop := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		for id := int64(1); ctx.Err() == nil; id++ {
			octx, cancel := context.WithTimeout(ctx, 30*time.Second)
			err := svc.Place(octx, id, "book")
			cancel()
			if err != nil && ctx.Err() == nil {
				done <- err
				return
			}
			if err == nil {
				mu.Lock()
				acked = append(acked, id)
				mu.Unlock()
			}
		}
		done <- nil
	}()
	placed := func(n int) func() error {
		return func() error {
			mu.Lock()
			defer mu.Unlock()
			if len(acked) < n {
				return fmt.Errorf("%d orders placed, want %d", len(acked), n)
			}
			return nil
		}
	}

	pghatest.Eventually(t, 30*time.Second, "orders before the failover", placed(20))
	old := c.KillPrimary()
	mu.Lock()
	before := len(acked)
	mu.Unlock()
	if now := c.WaitHealthy(time.Minute); now == old {
		t.Fatalf("%s still the primary after it was killed", old)
	}
	pghatest.Eventually(t, time.Minute, "orders after the failover", placed(before+20))
	stop()
	if err := <-done; err != nil {
		t.Fatalf("the service failed: %v", err)
	}

	// Every acknowledged order is on the new primary.
	rows, err := pool.Query(t.Context(), "SELECT id FROM orders")
	if err != nil {
		t.Fatal(err)
	}
	stored := map[int64]bool{}
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		stored[id] = true
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	var lost []int64
	for _, id := range acked {
		if !stored[id] {
			lost = append(lost, id)
		}
	}
	if len(lost) > 0 {
		t.Fatalf("%d of %d acknowledged orders lost across the failover: %v", len(lost), len(acked), lost)
	}
	t.Logf("%d orders acknowledged, %d before the primary was killed, none lost", len(acked), before)
}

// --- example end ---
