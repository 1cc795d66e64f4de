package ha

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/pgha/pgha/election"
	"github.com/pgha/pgha/internal/keyspace"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// This file is failsafe mode (Config.Failsafe): a leader that cannot renew
// its lease because etcd is unreachable keeps its primary writable while
// every member it could be replaced by has promised, over a direct
// node-to-node call, not to campaign. The safety argument is in
// docs/design.md ("Failsafe mode").
//
// Leader side: while etcd works, the leader keeps the failsafe record
// (keyspace.FailsafeRecord) naming every member that may campaign. When
// its lease renewal is overdue, it asks each of them for
// a promise; if every one promises, it extends its term
// (election.Term.ExtendUntil) to the earliest promise, counted from the
// request's send time minus the election's safety margin. Otherwise its
// term ends by ValidUntil as always.
//
// Member side: a member promises only to the leader of its own view, and
// only when it cannot reach etcd itself; it then neither campaigns nor
// promotes before the promise runs out on its own monotonic clock, and
// while the failsafe record exists, only the nodes it names may campaign.

// failsafePath is where Manager.Handler answers the leader's call.
const failsafePath = "/failsafe"

// failsafeRequest is the leader's call: who asks, and for how long.
type failsafeRequest struct {
	Leader    string `json:"leader"`
	Token     int64  `json:"token"`
	PromiseMS int64  `json:"promise_ms"`
}

// failsafeAnswer is a member's answer. Promised with PromiseMS > 0: the
// member will neither campaign nor promote for PromiseMS after it
// received the request. Otherwise Reason says why not.
type failsafeAnswer struct {
	Node      string `json:"node"`
	Promised  bool   `json:"promised"`
	PromiseMS int64  `json:"promise_ms,omitempty"`
	Reason    string `json:"reason,omitempty"`
}

// failsafe is the manager's failsafe state, shared by the loop, the
// leader's promise rounds and the HTTP handler.
type failsafe struct {
	mu sync.Mutex
	// promiseUntil: this node promised a leader not to campaign or
	// promote before then (local monotonic clock).
	promiseUntil time.Time
	// campaigning is set while a campaign runs: no promise is given then.
	campaigning bool
	// holdChecked: the start-up hold (a promise given before a restart)
	// has been applied.
	holdChecked bool
	// confirmed is the failsafe record etcd acknowledged this term;
	// attempted one whose write has an unknown outcome. A leader asks
	// the members of both.
	confirmed, attempted *keyspace.FailsafeRecord
	// active: the last promise round succeeded (for logs and Status).
	active bool
	// extendedTo is the deadline the last promise round gave the term
	// (zero once a renewal succeeds again); holdUntil, when in the
	// future, is how long a leader whose lease was lost under failsafe
	// may stay writable while it campaigns again (failsafeHold).
	extendedTo, holdUntil time.Time
}

// promised returns when this node's promise runs out (zero if none).
func (f *failsafe) promised() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.promiseUntil
}

// beginCampaign reports whether a campaign may start now, and if so marks
// one running: no promise is given until endCampaign.
func (f *failsafe) beginCampaign(now time.Time) (bool, time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if now.Before(f.promiseUntil) {
		return false, f.promiseUntil
	}
	f.campaigning = true
	return true, time.Time{}
}

func (f *failsafe) endCampaign() {
	f.mu.Lock()
	f.campaigning = false
	f.mu.Unlock()
}

// askSet returns the members a failsafe leader must ask (the union of the
// confirmed and the attempted record), and false when no record is
// confirmed this term: failsafe cannot hold then.
func (f *failsafe) askSet() ([]keyspace.FailsafeMember, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.confirmed == nil {
		return nil, false
	}
	seen := map[string]bool{}
	var out []keyspace.FailsafeMember
	for _, r := range []*keyspace.FailsafeRecord{f.confirmed, f.attempted} {
		if r == nil {
			continue
		}
		for _, m := range r.Members {
			if !seen[m.Node] {
				seen[m.Node] = true
				out = append(out, m)
			}
		}
	}
	return out, true
}

// failsafeMargin is the safety margin a promise is shortened by, the same
// as the election's lease margin.
func failsafeMargin(ttl time.Duration) time.Duration { return max(ttl/10, 100*time.Millisecond) }

// wantFailsafe is the failsafe record the leader keeps: itself and every
// member that may ever be promoted (NoFailover members are left out: the
// record bars them from campaigning while it exists, which they do not
// do anyway), sorted by name.
func wantFailsafe(o observation, self, selfURL string, token int64) keyspace.FailsafeRecord {
	r := keyspace.FailsafeRecord{Leader: self, Token: token,
		Members: []keyspace.FailsafeMember{{Node: self, APIURL: selfURL}}}
	for name, mem := range o.Members {
		if name == self || mem.Rec.NoFailover {
			continue
		}
		r.Members = append(r.Members, keyspace.FailsafeMember{Node: name, APIURL: mem.Rec.APIURL})
	}
	slices.SortFunc(r.Members, func(a, b keyspace.FailsafeMember) int { return strings.Compare(a.Node, b.Node) })
	return r
}

func sameFailsafe(a, b *keyspace.FailsafeRecord) bool {
	return a != nil && b != nil && a.Leader == b.Leader && a.Token == b.Token && slices.Equal(a.Members, b.Members)
}

// maintainFailsafe keeps the failsafe record current while this node
// leads: written (guarded by the term) when the member set changes with
// Failsafe on, deleted with it off.
func (m *Manager) maintainFailsafe(ctx context.Context, term *election.Term, o observation) error {
	key := m.layout.Failsafe()
	if !m.cfg.Failsafe {
		if o.Failsafe == nil {
			return nil
		}
		_, err := m.cfg.Client.Txn(ctx).If(term.IsOwner()).Then(clientv3.OpDelete(key)).Commit()
		if err != nil {
			return fmt.Errorf("delete the failsafe record (Failsafe is off): %w", err)
		}
		m.log.Info("failsafe record deleted: Failsafe is off on the leader")
		return nil
	}
	want := wantFailsafe(o, m.cfg.Node, m.cfg.APIURL, term.Token())
	m.fs.mu.Lock()
	if sameFailsafe(o.Failsafe, &want) && m.fs.attempted == nil {
		m.fs.confirmed = &want // what etcd holds, as this term wrote it
	}
	done := sameFailsafe(m.fs.confirmed, &want) && m.fs.attempted == nil
	if !done {
		m.fs.attempted = &want
	}
	m.fs.mu.Unlock()
	if done {
		return nil
	}
	b, err := keyspace.Encode(want)
	if err != nil {
		return err
	}
	resp, err := m.cfg.Client.Txn(ctx).If(term.IsOwner()).Then(clientv3.OpPut(key, string(b))).Commit()
	if err != nil {
		// Unknown outcome: the attempted record stays in the ask set.
		return fmt.Errorf("write the failsafe record: %w", err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("write the failsafe record: %w", election.ErrNotLeader)
	}
	m.fs.mu.Lock()
	m.fs.confirmed, m.fs.attempted = &want, nil
	m.fs.mu.Unlock()
	var noURL []string
	for _, mem := range want.Members {
		if mem.APIURL == "" && mem.Node != m.cfg.Node {
			noURL = append(noURL, mem.Node)
		}
	}
	if len(noURL) > 0 {
		m.log.Warn("failsafe cannot hold during an etcd outage: members publish no API URL (set APIURL / --api-url on them)", "members", noURL)
	}
	m.log.Info("failsafe record written", "members", len(want.Members))
	return nil
}

// failsafeKeeper runs beside the fencer while this node leads with
// Failsafe on: when the lease renewal is overdue, it
// runs promise rounds and extends the term by their result.
func (m *Manager) failsafeKeeper(term *election.Term, stop <-chan struct{}) {
	ttl := m.cfg.LeaseTTL
	tick := time.NewTicker(max(m.loopInterval()/2, 50*time.Millisecond))
	defer tick.Stop()
	defer m.setFailsafeActive(false)
	var warned string
	var extendedTo time.Time // the last deadline a promise round set
	for {
		select {
		case <-stop:
			return
		case <-term.Done():
			return
		case <-tick.C:
		}
		if vu := term.ValidUntil(); vu.After(extendedTo) && m.failsafeActive() {
			// A lease renewal moved the deadline past the promises.
			m.setFailsafeActive(false)
			m.fs.mu.Lock()
			m.fs.extendedTo = time.Time{}
			m.fs.mu.Unlock()
			m.log.Info("failsafe: the lease is renewed again; promise rounds stop")
		}
		// Rounds start once a renewal is about 1.5 renew intervals late
		// (the election renews every TTL/5): early enough that a round
		// (a member's etcd check takes up to LoopInterval) ends well
		// before the fence, late enough that on-time renewals never
		// start one.
		if time.Until(term.ValidUntil()) >= ttl-failsafeMargin(ttl)-3*ttl/10 {
			continue
		}
		until, why := m.promiseRound(term)
		if why != "" {
			if why != warned {
				m.log.Warn("failsafe: cannot keep the primary past its lease; it fences at the deadline unless etcd answers", "why", why,
					"fence_in", time.Until(term.ValidUntil().Add(-m.cfg.FenceBudget)).Round(time.Millisecond))
				warned = why
			}
			m.setFailsafeActive(false)
			continue
		}
		warned = ""
		if term.ExtendUntil(until) {
			extendedTo = term.ValidUntil()
			m.fs.mu.Lock()
			m.fs.extendedTo = extendedTo
			m.fs.mu.Unlock()
			if !m.setFailsafeActive(true) {
				m.log.Warn("failsafe: etcd unreachable; every member promised not to campaign, the primary stays writable",
					"valid_for", time.Until(until).Round(time.Millisecond))
			}
			m.tel.failsafeRounds.Add(context.Background(), 1)
			m.pokeFencer()
		}
	}
}

// failsafeActive reports whether promise rounds keep this leader now.
func (m *Manager) failsafeActive() bool {
	m.fs.mu.Lock()
	defer m.fs.mu.Unlock()
	return m.fs.active
}

// setFailsafeActive sets whether promise rounds keep this leader, and
// returns the previous value.
func (m *Manager) setFailsafeActive(on bool) bool {
	m.fs.mu.Lock()
	defer m.fs.mu.Unlock()
	was := m.fs.active
	m.fs.active = on
	return was
}

// promiseRound asks every member of the ask set for a promise, in
// parallel, and returns the instant until which all of them hold, or why
// not. The round ends by the instant the fencer would fence.
func (m *Manager) promiseRound(term *election.Term) (time.Time, string) {
	members, ok := m.fs.askSet()
	if !ok {
		return time.Time{}, "no failsafe record was confirmed by etcd this term"
	}
	deadline := term.ValidUntil().Add(-m.cfg.FenceBudget)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	promise := m.cfg.LeaseTTL
	req := failsafeRequest{Leader: m.cfg.Node, Token: term.Token(), PromiseMS: promise.Milliseconds()}
	sent := time.Now()
	until := sent.Add(promise - failsafeMargin(m.cfg.LeaseTTL))
	type result struct {
		node string
		ans  failsafeAnswer
		err  error
	}
	results := make(chan result, len(members))
	asked := 0
	for _, mem := range members {
		if mem.Node == m.cfg.Node {
			continue
		}
		asked++
		go func() {
			ans, err := m.askPromise(ctx, mem, req)
			results <- result{mem.Node, ans, err}
		}()
	}
	var refused []string
	for range asked {
		r := <-results
		switch {
		case r.err != nil:
			refused = append(refused, fmt.Sprintf("%s: %v", r.node, r.err))
		case !r.ans.Promised || r.ans.PromiseMS <= 0:
			refused = append(refused, fmt.Sprintf("%s: %s", r.node, r.ans.Reason))
		default:
			until = minTime(until, sent.Add(time.Duration(r.ans.PromiseMS)*time.Millisecond-failsafeMargin(m.cfg.LeaseTTL)))
		}
	}
	if len(refused) > 0 {
		slices.Sort(refused)
		return time.Time{}, "no promise from " + strings.Join(refused, "; ")
	}
	return until, ""
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// askPromise makes the failsafe call to one member.
func (m *Manager) askPromise(ctx context.Context, mem keyspace.FailsafeMember, req failsafeRequest) (failsafeAnswer, error) {
	if mem.APIURL == "" {
		return failsafeAnswer{}, errors.New("publishes no API URL")
	}
	body, _ := json.Marshal(req)
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(mem.APIURL, "/")+failsafePath, bytes.NewReader(body))
	if err != nil {
		return failsafeAnswer{}, err
	}
	hr.Header.Set("Content-Type", "application/json")
	hr.Header.Set("Authorization", "Bearer "+m.cfg.PeerToken)
	resp, err := m.cfg.PeerClient.Do(hr)
	if err != nil {
		return failsafeAnswer{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil {
		return failsafeAnswer{}, err
	}
	if resp.StatusCode != http.StatusOK {
		return failsafeAnswer{}, fmt.Errorf("HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(b)))
	}
	var ans failsafeAnswer
	if err := json.Unmarshal(b, &ans); err != nil {
		return failsafeAnswer{}, fmt.Errorf("answer does not parse: %w", err)
	}
	if ans.Node != mem.Node {
		return failsafeAnswer{}, fmt.Errorf("answered as %q: the record's URL reaches another node", ans.Node)
	}
	return ans, nil
}

// failsafeHandler answers the leader's call (POST /failsafe) with
// Config.PeerToken as bearer token.
func (m *Manager) failsafeHandler(w http.ResponseWriter, r *http.Request) {
	if m.cfg.PeerToken == "" {
		http.Error(w, "failsafe calls are off on this node: no PeerToken", http.StatusNotFound)
		return
	}
	got := sha256.Sum256([]byte(strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")))
	want := sha256.Sum256([]byte(m.cfg.PeerToken))
	if !strings.HasPrefix(r.Header.Get("Authorization"), "Bearer ") || subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
		http.Error(w, "unauthorized: send Authorization: Bearer <peer token>", http.StatusUnauthorized)
		return
	}
	var req failsafeRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 4096)).Decode(&req); err != nil {
		http.Error(w, "bad failsafe request: "+err.Error(), http.StatusBadRequest)
		return
	}
	writeJSON(w, m.answerFailsafe(r.Context(), req))
}

// answerFailsafe decides a member's answer to the leader's call. It
// promises only when failsafe is on here, the caller leads this node's
// view (same node, same token), this node neither campaigns nor leads,
// and it cannot reach etcd itself; the promise counts from after that
// check.
func (m *Manager) answerFailsafe(ctx context.Context, req failsafeRequest) failsafeAnswer {
	no := func(format string, args ...any) failsafeAnswer {
		return failsafeAnswer{Node: m.cfg.Node, Reason: fmt.Sprintf(format, args...)}
	}
	if !m.cfg.Failsafe {
		return no("Failsafe is off on this member")
	}
	node, token := m.view.leaderTerm()
	if node != req.Leader || token != req.Token {
		return no("%s (token %d) is not the leader of this member's view (%q, token %d)", req.Leader, req.Token, node, token)
	}
	if m.leading() {
		return no("this member holds a term")
	}
	// Can this member reach etcd? A linearizable read needs a quorum.
	gctx, cancel := context.WithTimeout(ctx, min(m.loopInterval(), m.cfg.LeaseTTL/4))
	_, err := m.cfg.Client.Get(gctx, m.layout.Leader(), clientv3.WithPrefix(), clientv3.WithCountOnly())
	cancel()
	if err == nil {
		return no("this member reaches etcd: the leader's lease decides")
	}
	promise := min(time.Duration(req.PromiseMS)*time.Millisecond, m.cfg.LeaseTTL)
	if promise <= 0 {
		return no("asked for a promise of %d ms", req.PromiseMS)
	}
	m.fs.mu.Lock()
	defer m.fs.mu.Unlock()
	if m.fs.campaigning || m.leading() {
		return no("this member is campaigning")
	}
	until := time.Now().Add(promise)
	if until.After(m.fs.promiseUntil) {
		m.fs.promiseUntil = until
	}
	m.log.Debug("failsafe: promised not to campaign", "leader", req.Leader, "for", promise)
	return failsafeAnswer{Node: m.cfg.Node, Promised: true, PromiseMS: promise.Milliseconds()}
}

// startupHold applies, once the view is loaded, the hold of a restarted
// member: a promise given by an earlier run of this process is not
// remembered, so while a failsafe record names this node it does not
// campaign for one promise length (LeaseTTL) after start.
func (m *Manager) startupHold(o observation) {
	m.fs.mu.Lock()
	defer m.fs.mu.Unlock()
	if m.fs.holdChecked {
		return
	}
	m.fs.holdChecked = true
	if o.Failsafe != nil && o.Failsafe.Has(m.cfg.Node) {
		if until := m.started.Add(m.cfg.LeaseTTL); until.After(m.fs.promiseUntil) {
			m.fs.promiseUntil = until
		}
	}
}

// failsafeAfterWin re-reads the failsafe record (a linearizable read)
// after winning an election: while this term holds the leader key no one
// else can change it, so a record that does not name this node means a
// failsafe leader may not have asked it, and the term must be given up.
func (m *Manager) failsafeAfterWin(ctx context.Context) error {
	gctx, cancel := context.WithTimeout(ctx, m.loopInterval())
	defer cancel()
	resp, err := m.cfg.Client.Get(gctx, m.layout.Failsafe())
	if err != nil {
		return fmt.Errorf("read the failsafe record after winning: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return nil
	}
	r, err := keyspace.Decode[keyspace.FailsafeRecord](resp.Kvs[0].Value)
	if err != nil {
		return fmt.Errorf("failsafe record: %w", err)
	}
	if !r.Has(m.cfg.Node) {
		return fmt.Errorf("the failsafe record of %s (token %d) does not name this node: only its members may lead while it exists", r.Leader, r.Token)
	}
	return nil
}

// failsafeHold is the fencer's step when term has ended because etcd
// says its lease or key is gone while a failsafe extension still runs:
// every member that may campaign promised not to before that extension's
// end, and the others may not campaign at all (the failsafe record), so
// no other node can lead before it. PostgreSQL stays writable while the
// loop campaigns again (decide: FailsafeHoldUntil), and the fencer fences
// at the extension's deadline unless a new term of this node has taken
// over by then (it then returns true: no fence). This keeps the primary
// that went on writing through an etcd outage, without a fence, when
// etcd expired its lease (etcd was reachable from none of the nodes, or
// the renewal came late after etcd returned).
func (m *Manager) failsafeHold(term *election.Term, stop chan struct{}) bool {
	err := term.Err()
	if !m.cfg.Failsafe || err == nil || !(errors.Is(err, election.ErrLeaseLost) || errors.Is(err, election.ErrKeyDeleted)) {
		return false
	}
	m.fs.mu.Lock()
	until := minTime(m.fs.extendedTo, term.ValidUntil()).Add(-m.cfg.FenceBudget)
	if m.fs.extendedTo.IsZero() || !time.Now().Before(until) {
		m.fs.mu.Unlock()
		return false
	}
	m.fs.holdUntil = until
	m.fs.mu.Unlock()
	defer func() {
		m.fs.mu.Lock()
		m.fs.holdUntil = time.Time{}
		m.fs.mu.Unlock()
	}()
	m.log.Warn("failsafe: etcd says the lease is gone, but every member's promise still runs: campaigning again; fencing at the promises' end unless a new term is won",
		"err", err.Error(), "fence_in", time.Until(until).Round(time.Millisecond))
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for time.Now().Before(until) {
		if t := m.currentTerm(); t != nil && t != term && t.Err() == nil {
			m.log.Info("failsafe: a new term took over; no fence", "token", t.Token())
			return true
		}
		select {
		case <-stop:
			return true // the loop ended this term itself (fence, resign)
		case <-tick.C:
		}
	}
	return false
}

// failsafeHoldUntil returns until when a leader whose lease was lost under
// failsafe may campaign again while writable (zero if not).
func (m *Manager) failsafeHoldUntil() time.Time {
	m.fs.mu.Lock()
	defer m.fs.mu.Unlock()
	return m.fs.holdUntil
}
