package causal_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"

	"github.com/pgha/pgha/driver"
	"github.com/pgha/pgha/driver/causal"
)

// A service reads with the token its caller passed on: Middleware puts it
// in the request context, where a driver.Reader honours it. The caller's
// client sends the token of its context with Transport. (The token here
// is written by hand; a real one comes from driver.Pool.CausalToken after
// a write.)
func Example() {
	status := httptest.NewServer(causal.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// pool.Reader().QueryRow(r.Context(), ...) would wait for a
		// replica that has replayed past this token, or use the primary.
		tok, ok := driver.CausalTokenFromContext(r.Context())
		fmt.Println("status service reads at or after", tok, ok)
	})))
	defer status.Close()

	tok, _ := driver.ParseCausalToken("0/16B3748") // from pool.CausalToken(ctx) after a write
	ctx := driver.ContextWithCausalToken(context.Background(), tok)
	client := &http.Client{Transport: causal.Transport(nil)}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, status.URL, nil)
	resp, err := client.Do(req)
	if err != nil {
		fmt.Println(err)
		return
	}
	resp.Body.Close()
	client.CloseIdleConnections()
	// Output: status service reads at or after 0/16B3748 true
}
