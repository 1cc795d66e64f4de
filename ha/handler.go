package ha

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"time"
)

// Handler returns the node's HTTP endpoints for load balancers and
// Kubernetes probes. Every endpoint answers GET (and HEAD) only:
//
//   - /health: 200 while PostgreSQL runs, else 503.
//   - /primary: 200 only on the writable primary that holds the lease
//     (term live and before ValidUntil), else 503.
//   - /replica: 200 on a running standby; with ?lag=N (bytes), only if its
//     lag behind the leader's last published position is at most N.
//   - /readiness: 200 when the node is primary or a streaming standby.
//   - /liveness: 200 while the HA loop has run within 3 loop intervals.
//   - /cluster: the cluster's state from etcd as JSON (no secrets).
//
// Responses carry a small JSON body with the node's role; no endpoint
// shows a password or changes state (those are in [Manager.AdminHandler],
// behind a token). Other methods get 405. Serve it with [NewHTTPServer],
// which sets timeouts and size limits. The handler is safe for concurrent
// use and reads only snapshots the loop publishes.
func (m *Manager) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+failsafePath, m.failsafeHandler)
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
		s := m.snapshot()
		reply(w, s.pgRunning, s)
	})
	mux.HandleFunc("GET /primary", func(w http.ResponseWriter, r *http.Request) {
		s := m.snapshot()
		ok := s.Role == RolePrimary && s.Leading && time.Now().Before(s.validUntil)
		reply(w, ok, s)
	})
	mux.HandleFunc("GET /replica", func(w http.ResponseWriter, r *http.Request) {
		s := m.snapshot()
		ok := s.Role == RoleReplica
		if q := r.URL.Query().Get("lag"); q != "" {
			max, err := strconv.ParseInt(q, 10, 64)
			if err != nil || max < 0 {
				http.Error(w, "lag must be a non-negative number of bytes", http.StatusBadRequest)
				return
			}
			ok = ok && s.LagBytes >= 0 && s.LagBytes <= max
		}
		reply(w, ok, s)
	})
	mux.HandleFunc("GET /readiness", func(w http.ResponseWriter, r *http.Request) {
		s := m.snapshot()
		reply(w, s.Role == RolePrimary && s.Leading || s.Role == RoleReplica && s.streaming, s)
	})
	mux.HandleFunc("GET /liveness", func(w http.ResponseWriter, r *http.Request) {
		s := m.snapshot()
		reply(w, !s.lastStep.IsZero() && time.Since(s.lastStep) < 3*m.loopInterval()+time.Second, s)
	})
	mux.HandleFunc("GET /cluster", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		st, err := ClusterStatus(ctx, m.cfg.Client, m.cfg.Cluster, WithKeyRoot(m.cfg.KeyRoot))
		if err != nil {
			http.Error(w, "etcd unreachable: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(st)
	})
	return mux
}

// handlerStatus is what the endpoints report.
type handlerStatus struct {
	Status
	LagBytes   int64     `json:"lag_bytes"`
	pgRunning  bool      // PostgreSQL answered in the last round
	streaming  bool      // standby streaming
	validUntil time.Time // term's deadline when leading
	lastStep   time.Time
}

func (m *Manager) snapshot() handlerStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.hs
}

func reply(w http.ResponseWriter, ok bool, s handlerStatus) {
	w.Header().Set("Content-Type", "application/json")
	if !ok {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	json.NewEncoder(w).Encode(s)
}
