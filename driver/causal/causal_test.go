package causal_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/propagation"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/pgha/pgha/driver"
	"github.com/pgha/pgha/driver/causal"
)

func token(t *testing.T, s string) driver.CausalToken {
	t.Helper()
	tok, err := driver.ParseCausalToken(s)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TestHTTPCarriesToken: a token in the caller's context goes out as the
// header (Transport) and comes back into the handler's context
// (Middleware); a bad header is ignored; no token, no header.
func TestHTTPCarriesToken(t *testing.T) {
	tok := token(t, "0/16B3748")
	var got []string
	srv := httptest.NewServer(causal.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tk, ok := driver.CausalTokenFromContext(r.Context())
		if !ok {
			got = append(got, "none")
			return
		}
		got = append(got, tk.String())
	})))
	defer srv.Close()
	cli := &http.Client{Transport: causal.Transport(nil)}
	defer cli.CloseIdleConnections()
	get := func(ctx context.Context, header string) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
		if header != "" {
			req.Header.Set(causal.Header, header)
		}
		resp, err := cli.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	get(driver.ContextWithCausalToken(context.Background(), tok), "")
	get(context.Background(), "")
	get(context.Background(), "not-an-lsn")
	get(context.Background(), "1/0")
	want := []string{"0/16B3748", "none", "none", "1/0"}
	if len(got) != len(want) {
		t.Fatalf("handler saw %v; want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("request %d: handler saw token %s; want %s", i, got[i], want[i])
		}
	}
}

// TestBaggageCarriesToken: ContextWithCausalToken puts the token in the
// OpenTelemetry baggage; a service that only propagates baggage (W3C
// baggage header) hands it on, and CausalTokenFromContext finds it there.
func TestBaggageCarriesToken(t *testing.T) {
	tok := token(t, "A/BC")
	ctx := driver.ContextWithCausalToken(context.Background(), tok)
	if v := baggage.FromContext(ctx).Member(driver.BaggageKey).Value(); v != "A/BC" {
		t.Fatalf("baggage member %s = %q; want A/BC", driver.BaggageKey, v)
	}
	h := http.Header{}
	propagation.Baggage{}.Inject(ctx, propagation.HeaderCarrier(h))
	next := propagation.Baggage{}.Extract(context.Background(), propagation.HeaderCarrier(h))
	if got, ok := driver.CausalTokenFromContext(next); !ok || got != tok {
		t.Errorf("token from the propagated baggage (header %q) = %v, %v; want %v", h.Get("baggage"), got, ok, tok)
	}
	if _, ok := driver.CausalTokenFromContext(context.Background()); ok {
		t.Error("a token in an empty context")
	}
}

// TestGRPCCarriesToken: the client interceptor sends the context's token
// as metadata; the server interceptor puts it in the handler's context.
func TestGRPCCarriesToken(t *testing.T) {
	tok := token(t, "0/3000060")
	var md metadata.MD
	invoker := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, opts ...grpc.CallOption) error {
		md, _ = metadata.FromOutgoingContext(ctx)
		return nil
	}
	if err := causal.UnaryClientInterceptor()(driver.ContextWithCausalToken(context.Background(), tok), "/x/Y", nil, nil, nil, invoker); err != nil {
		t.Fatal(err)
	}
	if v := md.Get(causal.MetadataKey); len(v) != 1 || v[0] != "0/3000060" {
		t.Fatalf("outgoing metadata %v; want %s: 0/3000060", md, causal.MetadataKey)
	}
	in := metadata.NewIncomingContext(context.Background(), md)
	var seen driver.CausalToken
	_, err := causal.UnaryServerInterceptor()(in, nil, &grpc.UnaryServerInfo{}, func(ctx context.Context, req any) (any, error) {
		seen, _ = driver.CausalTokenFromContext(ctx)
		return nil, nil
	})
	if err != nil || seen != tok {
		t.Errorf("handler saw %v, %v; want %v", seen, err, tok)
	}
}
