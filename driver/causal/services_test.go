package causal_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/pgha/pgha/driver"
	"github.com/pgha/pgha/driver/causal"
	"github.com/pgha/pgha/internal/testutil"
)

// TestTwoServices is read-your-writes across services: an orders service
// writes through the primary and hands the causal token back in its
// response; a caller passes it on (causal.Transport) to a status service
// that reads from a replica (causal.Middleware). With the replica's replay
// paused, a read without the token misses the order; with it, it waits up
// to CausalWait and then reads the primary; with the replica catching up
// during the wait, the replica serves it. The waits are printed.
func TestTwoServices(t *testing.T) {
	primary := testutil.StartPostgres(t, testutil.PostgresOptions{Name: "cs1"})
	standby := testutil.StartPostgres(t, testutil.PostgresOptions{Name: "cs2", CloneFrom: primary})
	ctx := testutil.Ctx(t, 2*time.Minute)
	if err := standby.WaitStreaming(ctx); err != nil {
		t.Fatal(err)
	}
	if err := testutil.PostgresExec(ctx, primary, "CREATE TABLE orders (id bigint PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "the table on the standby", func() error {
		n, err := testutil.PostgresQueryInt(ctx, standby, "SELECT count(*) FROM pg_class WHERE relname = 'orders'")
		if err == nil && n != 1 {
			err = fmt.Errorf("%d tables", n)
		}
		return err
	})
	dsn := fmt.Sprintf("postgres://postgres:%s@127.0.0.1:%d,127.0.0.1:%d/postgres?sslmode=disable&pgha_read_mode=prefer-replicas&pgha_max_replica_lag=-1&pgha_probe_interval=50ms&pgha_causal_wait=300ms",
		url.QueryEscape(testutil.PostgresSuperuserPassword), primary.Config().Port, standby.Config().Port)
	p, err := driver.New(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()

	orders := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, _ := strconv.ParseInt(r.URL.Query().Get("id"), 10, 64)
		if _, err := p.Exec(r.Context(), "INSERT INTO orders VALUES ($1)", id); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		tok, err := p.CausalToken(r.Context())
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		causal.SetHeader(w.Header(), tok)
	}))
	defer orders.Close()
	status := httptest.NewServer(causal.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var replica, found bool
		err := p.Reader().QueryRow(r.Context(), "SELECT pg_is_in_recovery(), EXISTS (SELECT 1 FROM orders WHERE id = $1)", r.URL.Query().Get("id")).Scan(&replica, &found)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprintf(w, "replica=%v found=%v", replica, found)
	})))
	defer status.Close()
	cli := &http.Client{Transport: causal.Transport(nil)}
	defer cli.CloseIdleConnections()
	call := func(ctx context.Context, base string, id int) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s/?id=%d", base, id), nil)
		resp, err := cli.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %s: %s", base, resp.Status, body)
		}
		return resp, string(body)
	}
	// order writes one order and returns the context a caller would pass
	// on: the token from the orders service's response.
	order := func(id int) context.Context {
		resp, _ := call(ctx, orders.URL, id)
		tok, ok := causal.FromHeader(resp.Header)
		if !ok {
			t.Fatalf("orders service answered without a %s header", causal.Header)
		}
		return driver.ContextWithCausalToken(ctx, tok)
	}
	testutil.Eventually(t, 10*time.Second, "reads served by the replica", func() error {
		if _, body := call(ctx, status.URL, 0); body != "replica=true found=false" {
			return fmt.Errorf("status: %s", body)
		}
		return nil
	})

	if err := testutil.PostgresExec(ctx, standby, "SELECT pg_wal_replay_pause()"); err != nil {
		t.Fatal(err)
	}
	withTok := order(1)
	if _, body := call(ctx, status.URL, 1); body != "replica=true found=false" {
		t.Errorf("without the token, with replay paused: %s; want the replica, missing the order", body)
	}
	start := time.Now()
	_, body := call(withTok, status.URL, 1)
	pausedWait := time.Since(start)
	if body != "replica=false found=true" {
		t.Errorf("with the token, replay paused: %s; want the primary, with the order", body)
	}
	if pausedWait < 300*time.Millisecond {
		t.Errorf("with the token, replay paused: answered in %v; want a wait of CausalWait (300ms) for the replica first", pausedWait)
	}

	// The replica catches up 30 ms into the wait: it serves the read.
	withTok = order(2)
	resume := time.AfterFunc(30*time.Millisecond, func() { // the fault's timing, not a synchronisation
		testutil.PostgresExec(context.Background(), standby, "SELECT pg_wal_replay_resume()")
	})
	defer resume.Stop()
	start = time.Now()
	_, body = call(withTok, status.URL, 2)
	caughtUpWait := time.Since(start)
	if body != "replica=true found=true" {
		t.Errorf("with the token, replica catching up during the wait: %s; want the replica, with the order", body)
	}
	t.Logf("read with a causal token: replay paused → primary after %v (CausalWait 300ms); replica resumed 30 ms into the wait → replica after %v",
		pausedWait.Round(time.Millisecond), caughtUpWait.Round(time.Millisecond))
}
