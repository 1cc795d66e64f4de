package ha

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"time"
)

// Limits of the server [NewHTTPServer] returns. A client that sends its
// request headers slower than HTTPReadHeaderTimeout (a slowloris) is cut
// off; one that sends more than HTTPMaxHeaderBytes of headers gets 431,
// and a body above HTTPMaxBodyBytes gets 413.
const (
	HTTPReadHeaderTimeout = 5 * time.Second
	HTTPReadTimeout       = 10 * time.Second
	HTTPWriteTimeout      = 10 * time.Second
	HTTPIdleTimeout       = 60 * time.Second
	HTTPMaxHeaderBytes    = 16 << 10
	HTTPMaxBodyBytes      = 64 << 10
)

// NewHTTPServer returns a server for h at addr with the timeouts and size
// limits above set: serve [Manager.Handler] (and [Manager.AdminHandler])
// with it rather than with a bare http.Server, whose zero timeouts let a
// slow client hold a connection and a goroutine forever. Request bodies
// are limited to HTTPMaxBodyBytes. The caller sets ErrorLog and calls
// Serve or ListenAndServe, and Shutdown.
func NewHTTPServer(addr string, h http.Handler) *http.Server {
	return &http.Server{
		Addr:              addr,
		Handler:           LimitBody(h, HTTPMaxBodyBytes),
		ReadHeaderTimeout: HTTPReadHeaderTimeout,
		ReadTimeout:       HTTPReadTimeout,
		WriteTimeout:      HTTPWriteTimeout,
		IdleTimeout:       HTTPIdleTimeout,
		MaxHeaderBytes:    HTTPMaxHeaderBytes,
	}
}

// LimitBody wraps h so that a request body above n bytes fails to read
// (h then answers 413) and a request that declares a longer body in
// Content-Length is answered 413 before h runs.
func LimitBody(h http.Handler, n int64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > n {
			http.Error(w, "request body too large", http.StatusRequestEntityTooLarge)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, n)
		h.ServeHTTP(w, r)
	})
}

// MinAdminTokenBytes is the shortest token [Manager.AdminHandler] accepts.
const MinAdminTokenBytes = 16

// AdminHandler returns the node's state-changing endpoints, each behind
// bearer-token authentication (header "Authorization: Bearer <token>"):
//
//   - POST /pause: maintenance mode for the whole cluster (see [Pause]);
//     an optional JSON body {"reason": "..."} is recorded.
//   - POST /resume: end maintenance mode (see [Resume]).
//
// A request without the right token gets 401 and changes nothing; the
// token is compared in constant time. Other methods get 405. token should
// come from a file or the environment, never a command line; it must be
// at least MinAdminTokenBytes long, else AdminHandler returns a
// *[ConfigError] (which never contains the token). Mount it beside
// [Manager.Handler]: their paths do not overlap. Safe for concurrent use.
func (m *Manager) AdminHandler(token string) (http.Handler, error) {
	if len(token) < MinAdminTokenBytes {
		return nil, &ConfigError{"admin token", "(hidden)", "is shorter than 16 bytes: use a random token of at least 16 bytes (e.g. openssl rand -hex 32)"}
	}
	want := sha256.Sum256([]byte(token))
	authed := func(h http.HandlerFunc) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			sum := sha256.Sum256([]byte(got))
			// Compare digests: constant time, whatever the lengths.
			if !ok || subtle.ConstantTimeCompare(sum[:], want[:]) != 1 {
				w.Header().Set("WWW-Authenticate", `Bearer realm="pgha"`)
				http.Error(w, "unauthorized: send Authorization: Bearer <token>", http.StatusUnauthorized)
				return
			}
			h(w, r)
		}
	}
	opts := []OpOption{WithKeyRoot(m.cfg.KeyRoot)}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /pause", authed(func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Reason string `json:"reason"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil && !errors.Is(err, io.EOF) {
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				http.Error(w, "request body too large", http.StatusRequestEntityTooLarge)
				return
			}
			http.Error(w, `body must be empty or JSON {"reason": "..."}: `+err.Error(), http.StatusBadRequest)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		if err := Pause(ctx, m.cfg.Client, m.cfg.Cluster, req.Reason, opts...); err != nil {
			http.Error(w, "etcd unreachable: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		m.log.Info("cluster paused through the HTTP API", "remote", r.RemoteAddr, "reason", req.Reason)
		writeJSON(w, map[string]any{"paused": true})
	}))
	mux.HandleFunc("POST /resume", authed(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		if err := Resume(ctx, m.cfg.Client, m.cfg.Cluster, opts...); err != nil {
			http.Error(w, "etcd unreachable: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		m.log.Info("cluster resumed through the HTTP API", "remote", r.RemoteAddr)
		writeJSON(w, map[string]any{"paused": false})
	}))
	return mux, nil
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}
