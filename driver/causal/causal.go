// Package causal carries driver causal tokens ([driver.CausalToken])
// between services, so that a read in one service sees a write made
// through another: read-your-writes across a request chain.
//
// The first service writes through a [driver.Pool], takes a token with
// [driver.Pool.CausalToken] and puts it in the request context with
// [driver.ContextWithCausalToken]; every outgoing call made with that
// context carries it ([Transport] for net/http, [UnaryClientInterceptor]
// and [StreamClientInterceptor] for gRPC), and the next service's
// [Middleware] or server interceptors put it back in the request context,
// where its [driver.Reader] reads honour it: a replica serves the read
// only once it has replayed past the token (waiting up to
// driver.Config.CausalWait), the primary otherwise.
//
// The token travels as the [Header] HTTP header or the [MetadataKey] gRPC
// metadata entry. It is also in the context's OpenTelemetry baggage
// ([driver.BaggageKey]): services that already propagate baggage carry it
// without this package.
//
// This package holds the net/http and gRPC glue so that the driver
// package itself depends on neither.
package causal

import (
	"context"
	"net/http"

	"github.com/pgha/pgha/driver"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// Header is the HTTP header that carries a causal token, in the form
// [driver.CausalToken.String] gives (e.g. "0/16B3748").
const Header = "Pgha-Causal-Token"

// MetadataKey is the gRPC metadata key that carries a causal token.
const MetadataKey = "pgha-causal-token"

// FromHeader returns the token in h, if any. A value that does not parse
// is ignored (ok false): a read without a token is still correct, only
// maybe older than the caller expects.
func FromHeader(h http.Header) (tok driver.CausalToken, ok bool) {
	v := h.Get(Header)
	if v == "" {
		return driver.CausalToken{}, false
	}
	tok, err := driver.ParseCausalToken(v)
	return tok, err == nil && !tok.IsZero()
}

// SetHeader sets tok in h (for a response that hands the token back to
// the caller, or a request built by hand). The zero token removes it.
func SetHeader(h http.Header, tok driver.CausalToken) {
	if tok.IsZero() {
		h.Del(Header)
		return
	}
	h.Set(Header, tok.String())
}

// Middleware puts the causal token of each request's [Header] into its
// context, for the reads the handler makes through a [driver.Reader]. A
// request without one is passed on unchanged.
func Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if tok, ok := FromHeader(r.Header); ok {
			r = r.WithContext(driver.ContextWithCausalToken(r.Context(), tok))
		}
		next.ServeHTTP(w, r)
	})
}

// Transport returns a RoundTripper that adds the causal token of each
// request's context ([driver.CausalTokenFromContext]) as its [Header],
// then sends it with base (http.DefaultTransport when nil).
func Transport(base http.RoundTripper) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	return roundTripper{base}
}

type roundTripper struct{ base http.RoundTripper }

func (rt roundTripper) RoundTrip(r *http.Request) (*http.Response, error) {
	tok, ok := driver.CausalTokenFromContext(r.Context())
	if !ok || r.Header.Get(Header) != "" {
		return rt.base.RoundTrip(r)
	}
	// A RoundTripper must not modify the request it was given.
	r = r.Clone(r.Context())
	SetHeader(r.Header, tok)
	return rt.base.RoundTrip(r)
}

// outgoing adds ctx's token to the outgoing gRPC metadata.
func outgoing(ctx context.Context) context.Context {
	if tok, ok := driver.CausalTokenFromContext(ctx); ok {
		return metadata.AppendToOutgoingContext(ctx, MetadataKey, tok.String())
	}
	return ctx
}

// incoming returns ctx with the token of the incoming gRPC metadata.
func incoming(ctx context.Context) context.Context {
	md, _ := metadata.FromIncomingContext(ctx)
	for _, v := range md.Get(MetadataKey) {
		if tok, err := driver.ParseCausalToken(v); err == nil && !tok.IsZero() {
			return driver.ContextWithCausalToken(ctx, tok)
		}
	}
	return ctx
}

// UnaryClientInterceptor sends the causal token of each call's context
// as [MetadataKey].
func UnaryClientInterceptor() grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		return invoker(outgoing(ctx), method, req, reply, cc, opts...)
	}
}

// StreamClientInterceptor sends the causal token of each stream's context
// as [MetadataKey].
func StreamClientInterceptor() grpc.StreamClientInterceptor {
	return func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		return streamer(outgoing(ctx), desc, cc, method, opts...)
	}
}

// UnaryServerInterceptor puts the causal token of each call's metadata
// into the handler's context.
func UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		return handler(incoming(ctx), req)
	}
}

// StreamServerInterceptor puts the causal token of each stream's metadata
// into the handler's context.
func StreamServerInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		return handler(srv, serverStream{ss, incoming(ss.Context())})
	}
}

type serverStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s serverStream) Context() context.Context { return s.ctx }
