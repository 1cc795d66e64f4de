package election

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/pgha/pgha/internal/etcdmirror"
)

// doneLead is how long before ValidUntil the term's expiry timer fires, so
// that Done has closed by ValidUntil despite timer and scheduling latency.
const doneLead = 20 * time.Millisecond

// cleanupTimeout bounds the best-effort key delete and lease revoke a term
// does when it ends on its own.
const cleanupTimeout = 2 * time.Second

// Term is one leadership term won by [Elector.Campaign]. It renews its
// lease in the background until it ends: on [Term.Resign], when etcd
// reports the lease gone, when the key is deleted, or when no renewal has
// succeeded in time ([Term.ValidUntil] is reached). Its methods are safe for
// concurrent use.
//
// A Term is a value to check, not a flag to trust: before any action that
// needs leadership, check that time.Now() is before ValidUntil (minus the
// time the action takes), and guard etcd writes with [Term.IsOwner].
type Term struct {
	e     *Elector
	lease clientv3.LeaseID
	key   string
	rev   int64 // create revision of key: the fencing token
	log   *slog.Logger

	done chan struct{}
	stop chan struct{} // closed to stop the term's goroutines
	// extended is signalled by ExtendUntil so that run moves its expiry.
	extended chan struct{}

	mu         sync.Mutex
	validUntil time.Time
	rtt        time.Duration // round trip of the last successful renewal
	slowWarned bool
	err        error
	span       trace.Span // set when won, ended with the term

	stopOnce    sync.Once
	releaseOnce sync.Once
	wg          sync.WaitGroup
}

func newTerm(e *Elector, lease clientv3.LeaseID, validUntil time.Time) *Term {
	t := &Term{
		e:          e,
		lease:      lease,
		key:        e.pfx + strconv.FormatInt(int64(lease), 16),
		log:        e.log,
		done:       make(chan struct{}),
		stop:       make(chan struct{}),
		extended:   make(chan struct{}, 1),
		validUntil: validUntil,
	}
	t.wg.Add(1)
	go t.run()
	return t
}

// Token returns the fencing token: the create revision of the leader key.
// Every later term of the same election has a strictly greater token. Pass
// it to systems that can reject stale leaders.
func (t *Term) Token() int64 { return t.rev }

// Key returns the leader key.
func (t *Term) Key() string { return t.key }

// Lease returns the term's etcd lease. Keys put on it vanish when the term's
// lease ends.
func (t *Term) Lease() clientv3.LeaseID { return t.lease }

// IsOwner returns the comparison that guards a leader-only etcd write: it
// holds only while the leader key still exists with this term's create
// revision. Use it in a transaction:
//
//	cli.Txn(ctx).If(term.IsOwner()).Then(clientv3.OpPut(k, v)).Commit()
//
// and treat a failed comparison as "not leader".
func (t *Term) IsOwner() clientv3.Cmp {
	return clientv3.Compare(clientv3.CreateRevision(t.key), "=", t.rev)
}

// ValidUntil returns the latest instant at which this process may still
// believe it leads: the send time of the last successful lease renewal (or
// of the grant) plus the lease TTL, minus the safety margin, on the local
// monotonic clock. The etcd server cannot expire the lease before then
// (it measures the TTL from when it received the renewal, which is later),
// so no other candidate can be elected before ValidUntil. After the term
// has ended, ValidUntil returns its last value, which may lie in the future
// only when the term was resigned or its key was deleted.
//
// Compare it only with time.Now() values of this process; never store or
// serialise it.
func (t *Term) ValidUntil() time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.validUntil
}

// ExtendUntil moves ValidUntil to until if that is later, and reports
// whether the term still lasts. It is for a caller that holds its own
// proof that no other candidate can be elected before until although the
// lease may not be renewed by then: package ha's failsafe mode, which
// holds a promise not to campaign from every member that could. The term
// keeps trying to renew its lease; a renewal that etcd refuses (the lease
// is gone) or a deleted key still ends it at once.
func (t *Term) ExtendUntil(until time.Time) bool {
	t.mu.Lock()
	if t.err != nil {
		t.mu.Unlock()
		return false
	}
	if until.After(t.validUntil) {
		t.validUntil = until
	}
	t.mu.Unlock()
	select {
	case t.extended <- struct{}{}:
	default:
	}
	return true
}

// Done returns a channel that is closed when the term ends. It closes no
// later than ValidUntil when renewals stop succeeding; it is a fencing
// trigger, unlike etcd's Session.Done, which fires only once the server has
// already expired the lease.
func (t *Term) Done() <-chan struct{} { return t.done }

// Err returns nil while the term lasts, then why it ended: [ErrResigned],
// [ErrLeaseLost], [ErrLeaseExpired] or [ErrKeyDeleted].
func (t *Term) Err() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.err
}

// Proclaim replaces the value of the leader key, guarded by the term's
// create revision. It returns an error matching [ErrNotLeader] if the term
// has ended or the key is no longer this term's.
func (t *Term) Proclaim(ctx context.Context, value []byte) error {
	if err := t.Err(); err != nil {
		return fmt.Errorf("election: proclaim %s: %w (%w)", t.key, ErrNotLeader, err)
	}
	resp, err := t.e.cli.Txn(ctx).
		If(t.IsOwner()).
		Then(clientv3.OpPut(t.key, string(value), clientv3.WithLease(t.lease))).
		Commit()
	if err != nil {
		return fmt.Errorf("election: proclaim %s: %w", t.key, err)
	}
	if !resp.Succeeded {
		t.end(ErrKeyDeleted)
		return fmt.Errorf("election: proclaim %s: %w (key deleted or replaced)", t.key, ErrNotLeader)
	}
	return nil
}

// Resign ends the term, then deletes the leader key (guarded by the term's
// create revision, so it never deletes a successor's key) and revokes the
// lease, so the next candidate leads at once. Done is closed before the key
// is deleted. Resign waits for the term's goroutines to stop. It is safe to
// call more than once and after the term ended on its own (which releases
// its resources); retry it when it returns an error, or let the lease
// expire within LeaseTTL.
func (t *Term) Resign(ctx context.Context) error {
	t.end(ErrResigned)
	t.shutdown()
	_, err := t.e.cli.Txn(ctx).If(t.IsOwner()).Then(clientv3.OpDelete(t.key)).Commit()
	if err != nil {
		return fmt.Errorf("election: resign %s: delete key: %w", t.key, err)
	}
	if _, err := t.e.cli.Revoke(ctx, t.lease); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return fmt.Errorf("election: resign %s: revoke lease: %w", t.key, err)
	}
	return nil
}

// end ends the term with err if it has not ended yet, and reports whether
// it did.
func (t *Term) end(err error) bool {
	t.mu.Lock()
	if t.err != nil {
		t.mu.Unlock()
		return false
	}
	t.err = err
	close(t.done)
	span := t.span
	t.mu.Unlock()

	if span == nil { // the campaign failed; Campaign reports it
		return true
	}
	ev := "lost"
	if errors.Is(err, ErrResigned) {
		ev = "resigned"
		t.log.Info("leadership resigned", "token", t.rev)
	} else {
		t.log.Warn("leadership lost", "token", t.rev, "reason", err.Error())
	}
	t.e.tel.transitions.Add(context.Background(), 1, eventAttr(ev))
	span.AddEvent(ev, trace.WithAttributes(attribute.String("pgha.election.reason", err.Error())))
	span.End()
	return true
}

// setWon attaches the campaign span; if the term ended in the meantime, the
// span ends now.
func (t *Term) setWon(span trace.Span) {
	t.mu.Lock()
	ended := t.err != nil
	if !ended {
		t.span = span
	}
	t.mu.Unlock()
	if ended {
		span.AddEvent("lost")
		span.End()
	}
}

// shutdown stops the term's goroutines and waits for them.
func (t *Term) shutdown() {
	t.stopOnce.Do(func() { close(t.stop) })
	t.wg.Wait()
}

// abort ends a campaign that did not win: stop renewing, then delete the key
// and revoke the lease with a fresh, bounded context.
func (t *Term) abort(err error) {
	t.end(err)
	t.shutdown()
	t.release()
}

// release deletes the key (guarded) and revokes the lease, best effort,
// once per term.
func (t *Term) release() { t.releaseOnce.Do(t.doRelease) }

func (t *Term) doRelease() {
	ctx, cancel := context.WithTimeout(context.Background(), min(cleanupTimeout, t.e.ttl))
	defer cancel()
	if t.rev != 0 {
		if _, err := t.e.cli.Txn(ctx).If(t.IsOwner()).Then(clientv3.OpDelete(t.key)).Commit(); err != nil {
			t.log.Debug("release: delete key", "key", t.key, "err", err)
		}
	}
	if _, err := t.e.cli.Revoke(ctx, t.lease); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		t.log.Debug("release: revoke lease; it expires within the TTL", "lease", int64(t.lease), "err", err)
	}
}

// bind returns a context that is also cancelled, with the term's error as
// its cause, when the term ends.
func (t *Term) bind(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		select {
		case <-t.done:
			cancel(t.Err())
		case <-ctx.Done():
		}
	}()
	return ctx, func() {
		cancel(context.Canceled)
		<-done
	}
}

// pause waits d, and returns an error if ctx is done or the term ended.
func (t *Term) pause(ctx context.Context, d time.Duration) error {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-t.done:
		return t.Err()
	}
}

type renewal struct {
	sent time.Time
	ttl  int64
	err  error
}

// run renews the lease until the term ends, and ends it at ValidUntil
// (minus doneLead) when no renewal has succeeded in time.
func (t *Term) run() {
	defer t.wg.Done()
	ctx, cancel := context.WithCancel(context.Background())
	results := make(chan renewal, 1)
	var inflight sync.WaitGroup
	defer func() {
		cancel()
		inflight.Wait()
	}()

	expiry := time.NewTimer(time.Until(t.ValidUntil().Add(-doneLead)))
	defer expiry.Stop()
	renew := time.NewTimer(t.e.renew)
	defer renew.Stop()
	busy := false

	for {
		select {
		case <-t.stop:
			return
		case <-t.done:
			// Ended elsewhere: Resign and abort clean up themselves; a
			// deleted key or a refused Proclaim leaves the lease to revoke.
			if errors.Is(t.Err(), ErrResigned) {
				return
			}
			cancel()
			inflight.Wait()
			t.release()
			return
		case <-t.extended:
			if !expiry.Stop() {
				select {
				case <-expiry.C:
				default:
				}
			}
			expiry.Reset(time.Until(t.ValidUntil().Add(-doneLead)))
		case <-expiry.C:
			if left := time.Until(t.ValidUntil().Add(-doneLead)); left > 0 {
				expiry.Reset(left) // ExtendUntil moved the deadline
				continue
			}
			if t.end(ErrLeaseExpired) {
				cancel()
				inflight.Wait()
				t.release()
			}
			return
		case <-renew.C:
			if busy {
				continue
			}
			busy = true
			sent := t.e.now()
			rctx, rcancel := context.WithDeadline(ctx, t.ValidUntil().Add(-doneLead))
			inflight.Add(1)
			go func() {
				defer inflight.Done()
				defer rcancel()
				// WithRequireLeader: a member that has no leader (one that
				// just rejoined after a partition) refuses at once instead
				// of holding the renewal until it finds one (about 1 s seen
				// at TTL 2 s, which ended the term); the retry goes to
				// another endpoint.
				resp, err := t.e.cli.KeepAliveOnce(clientv3.WithRequireLeader(rctx), t.lease)
				r := renewal{sent: sent, err: err}
				if err == nil {
					r.ttl = resp.TTL
				}
				results <- r
			}()
		case r := <-results:
			busy = false
			switch {
			case r.err == nil && r.ttl > 0:
				vu := r.sent.Add(time.Duration(r.ttl)*time.Second - t.e.margin)
				rtt := t.e.now().Sub(r.sent)
				t.e.tel.renewal.Record(context.Background(), rtt.Seconds())
				t.mu.Lock()
				if t.err == nil && vu.After(t.validUntil) {
					t.validUntil = vu
				}
				vu = t.validUntil
				t.rtt = rtt
				warn := slowRenewal(rtt, t.e.ttl) && !t.slowWarned
				t.slowWarned = t.slowWarned || warn
				t.mu.Unlock()
				if warn {
					t.log.Warn("lease renewal round trip is over a tenth of the lease TTL: on this network a slow renewal can end the term (a false fence); raise the lease TTL",
						"rtt", rtt.Round(time.Millisecond), "ttl", t.e.ttl)
				}
				expiry.Reset(time.Until(vu.Add(-doneLead)))
				// A renewal that took long (sent before etcd came back, or
				// on a slow network) leaves little validity: renew again
				// within a third of what is left, not a whole interval
				// later, so that the fence deadline is not reached while a
				// renewal would have succeeded.
				renew.Reset(max(min(t.e.renew, time.Until(vu.Add(-doneLead))/3), 10*time.Millisecond))
			case r.err == nil || errors.Is(r.err, rpctypes.ErrLeaseNotFound):
				if t.end(fmt.Errorf("%w: etcd reports lease %x gone", ErrLeaseLost, int64(t.lease))) {
					t.release()
				}
				return
			default:
				t.log.Debug("lease renewal failed; retrying", "err", r.err, "valid_until_in", time.Until(t.ValidUntil()).Round(time.Millisecond))
				renew.Reset(min(t.e.renew, 100*time.Millisecond) + jitter(20*time.Millisecond))
			}
		}
	}
}

// verify checks, after winning, that the key still exists with the term's
// create revision and lease, and that the lease is still valid locally.
func (t *Term) verify(ctx context.Context) error {
	if err := t.Err(); err != nil {
		return err
	}
	resp, err := t.e.cli.Get(ctx, t.key)
	if err != nil {
		return err
	}
	if len(resp.Kvs) == 0 {
		t.end(ErrKeyDeleted)
		return fmt.Errorf("%w: key %s is gone (its lease expired while waiting?)", ErrKeyDeleted, t.key)
	}
	if kv := resp.Kvs[0]; kv.CreateRevision != t.rev || kv.Lease != int64(t.lease) {
		t.end(ErrKeyDeleted)
		return fmt.Errorf("%w: key %s was replaced (create revision %d, lease %x; want %d, %x)",
			ErrKeyDeleted, t.key, kv.CreateRevision, kv.Lease, t.rev, int64(t.lease))
	}
	if !t.e.now().Before(t.ValidUntil()) {
		t.end(ErrLeaseExpired)
		return ErrLeaseExpired
	}
	return nil
}

// startWatch watches the leader key and ends the term when it is deleted
// or replaced.
func (t *Term) startWatch() {
	m, err := etcdmirror.New(etcdmirror.Config{Client: t.e.cli, Key: t.key, MaxBackoff: time.Second, Logger: t.log})
	if err != nil { // unreachable: the client and key are set
		t.end(fmt.Errorf("%w: cannot watch key %s: %w", ErrKeyDeleted, t.key, err))
		return
	}
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go func() {
			select {
			case <-t.stop:
			case <-t.done:
			}
			cancel()
		}()
		err := m.Run(ctx, func(u etcdmirror.Update) error {
			if u.Snapshot {
				// The first read, or a re-read after the watch broke.
				if len(u.KVs) == 0 || u.KVs[0].CreateRevision != t.rev {
					return ErrKeyDeleted
				}
				return nil
			}
			for _, ev := range u.Events {
				if ev.Type == clientv3.EventTypeDelete || ev.Kv.CreateRevision != t.rev {
					return ErrKeyDeleted
				}
			}
			return nil
		})
		if errors.Is(err, ErrKeyDeleted) {
			t.end(ErrKeyDeleted)
		}
	}()
}

func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return rand.N(d)
}

// RenewalRTT returns the round trip of the term's last successful lease
// renewal (send to answer, on the local monotonic clock), 0 before the
// first. Safe for concurrent use.
func (t *Term) RenewalRTT() time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.rtt
}

// slowRenewal reports whether a renewal round trip rtt makes a false fence
// likely with lease TTL ttl. The rule follows etcd's own tuning guide,
// which puts the election timeout at about ten round trips: a lease TTL
// below ten renewal round trips leaves too little room for one slow
// renewal before ValidUntil.
func slowRenewal(rtt, ttl time.Duration) bool { return rtt*10 > ttl }
