package election

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/pgha/pgha/internal/etcdmirror"
)

// Leader is the holder of an election as seen in etcd. The zero Leader
// (see [Leader.IsZero]) means "no leader".
type Leader struct {
	// Key is the leader's etcd key: Prefix + "/" + lease ID in hex.
	Key string
	// Value is what the leader campaigned with or last proclaimed.
	Value []byte
	// Token is the key's create revision: the fencing token of the term.
	// It is strictly greater for every later term of the same election.
	Token int64
}

// IsZero reports whether l is the zero Leader, meaning "no leader".
func (l Leader) IsZero() bool { return l.Key == "" && l.Token == 0 && l.Value == nil }

func (l Leader) equal(o Leader) bool {
	return l.Key == o.Key && l.Token == o.Token && bytes.Equal(l.Value, o.Value)
}

// Elector campaigns for, observes and reports the leadership of one etcd key
// prefix. It is safe for concurrent use; it owns no goroutine of its own
// (each [Term] and each [Elector.Observe] call owns theirs).
type Elector struct {
	cli    *clientv3.Client
	pfx    string // with trailing "/"
	ttl    time.Duration
	margin time.Duration
	renew  time.Duration
	log    *slog.Logger
	tel    *telemetry
	now    func() time.Time

	mirror *etcdmirror.Mirror // of the whole prefix, for Observe

	warnedMu sync.Mutex
	warned   map[string]bool // foreign keys already logged
}

// New returns an Elector for cfg. It returns a *[ConfigError] when cfg is
// invalid. It does not contact etcd.
func New(cfg Config) (*Elector, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	tel, err := newTelemetry(cfg.TracerProvider, cfg.MeterProvider)
	if err != nil {
		return nil, fmt.Errorf("election: telemetry: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	pfx := strings.TrimRight(cfg.Prefix, "/") + "/"
	log = log.With("election", strings.TrimSuffix(pfx, "/"))
	mirror, err := etcdmirror.New(etcdmirror.Config{Client: cfg.Client, Key: pfx, Prefix: true, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("election: watch %s: %w", pfx, err)
	}
	return &Elector{
		cli:    cfg.Client,
		pfx:    pfx,
		ttl:    cfg.LeaseTTL,
		margin: cfg.SafetyMargin,
		renew:  cfg.RenewInterval,
		log:    log,
		tel:    tel,
		now:    time.Now,
		mirror: mirror,
		warned: map[string]bool{},
	}, nil
}

// Prefix returns the election's key prefix, with its trailing "/".
func (e *Elector) Prefix() string { return e.pfx }

// LeaseTTL returns the lease TTL campaigns use.
func (e *Elector) LeaseTTL() time.Duration { return e.ttl }

// Campaign blocks until this candidate leads the election or ctx is done,
// and returns the leadership [Term]. value is published in the candidate's
// key (see [Leader.Value]).
//
// The candidate's key is created on a fresh lease that is renewed while it
// waits. Candidates are served in the order of their keys' create
// revisions. Keys under the prefix that do not have the election's layout
// (a lease-bound key named by its lease ID) are ignored, so a stray key
// cannot block the election.
//
// After winning, Campaign checks that its key still exists with its create
// revision and lease and that the lease is still valid on the local clock;
// a candidate whose lease expired while it waited does not win. On every
// error path it revokes its lease, which deletes its key; if etcd cannot be
// reached, the lease expires on its own within LeaseTTL.
//
// Campaign does not retry: it returns the first etcd error it meets
// (wrapped), and the caller decides whether to campaign again. The term is
// not bound to ctx: ctx bounds only the campaign. End a term with
// [Term.Resign].
func (e *Elector) Campaign(ctx context.Context, value []byte) (*Term, error) {
	start := e.now()
	_, span := e.tel.tracer.Start(ctx, "election.Campaign",
		trace.WithAttributes(attribute.String("pgha.election.prefix", e.pfx)))

	t, err := e.campaign(ctx, value)
	if err != nil {
		span.AddEvent("failed")
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
		span.End()
		return nil, err
	}
	acquire := e.now().Sub(start)
	e.tel.acquire.Record(ctx, acquire.Seconds())
	e.tel.transitions.Add(ctx, 1, eventAttr("won"))
	span.AddEvent("won", trace.WithAttributes(attribute.Int64("pgha.election.token", t.rev)))
	t.setWon(span)
	t.log.Info("leadership acquired", "token", t.rev, "lease", fmt.Sprintf("%x", int64(t.lease)), "waited", acquire, "valid_until_in", time.Until(t.ValidUntil()).Round(time.Millisecond))
	return t, nil
}

func (e *Elector) campaign(ctx context.Context, value []byte) (*Term, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("election: campaign %s: %w", e.pfx, err)
	}
	sent := e.now()
	g, err := e.cli.Grant(ctx, int64(e.ttl/time.Second))
	if err != nil {
		// If the grant reached the server, the lease holds no key and
		// expires by itself.
		return nil, fmt.Errorf("election: campaign %s: grant lease: %w", e.pfx, err)
	}
	if g.TTL <= 0 {
		return nil, fmt.Errorf("election: campaign %s: grant lease: server granted TTL %d", e.pfx, g.TTL)
	}
	ttl := g.TTL
	if e.now().Sub(sent) > e.renew {
		// The grant was slow (etcd restarting, a retried request): its
		// deadline, measured from the first send, may be near or past.
		// Renew once to start the term on a fresh one.
		sent = e.now()
		ka, err := e.cli.KeepAliveOnce(ctx, g.ID)
		if err != nil {
			e.revoke(g.ID)
			return nil, fmt.Errorf("election: campaign %s: renew slow-granted lease: %w", e.pfx, err)
		}
		ttl = ka.TTL
	}
	t := newTerm(e, g.ID, sent.Add(time.Duration(ttl)*time.Second-e.margin))
	// Every call below must also stop when the candidate's own term ends
	// (its lease expired while it waited): a linearizable read without a
	// quorum blocks until its context ends.
	ctx, cancel := t.bind(ctx)
	defer cancel()
	fail := func(what string, err error) (*Term, error) {
		if cause := context.Cause(ctx); ctx.Err() != nil && cause != nil {
			err = cause
		}
		err = fmt.Errorf("election: campaign %s: %s: %w", e.pfx, what, err)
		t.abort(err)
		return nil, err
	}

	resp, err := e.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(t.key), "=", 0)).
		Then(clientv3.OpPut(t.key, string(value), clientv3.WithLease(t.lease))).
		Commit()
	if err != nil {
		return fail("create key", err)
	}
	if !resp.Succeeded {
		return fail("create key", fmt.Errorf("key %s already exists on a fresh lease", t.key))
	}
	t.rev = resp.Header.Revision

	if err := e.waitPredecessors(ctx, t); err != nil {
		return fail("wait for earlier candidates", err)
	}
	if err := t.verify(ctx); err != nil {
		return fail("verify after winning", err)
	}
	t.startWatch()
	return t, nil
}

// revoke revokes a lease that holds no key yet, best effort.
func (e *Elector) revoke(id clientv3.LeaseID) {
	ctx, cancel := context.WithTimeout(context.Background(), min(cleanupTimeout, e.ttl))
	defer cancel()
	_, _ = e.cli.Revoke(ctx, id)
}

// waitPredecessors returns once no valid key with a lower create revision
// than t's remains, or with an error when ctx is done or t ends.
func (e *Elector) waitPredecessors(ctx context.Context, t *Term) error {
	for {
		resp, err := e.cli.Get(ctx, e.pfx, clientv3.WithPrefix(),
			clientv3.WithMaxCreateRev(t.rev-1),
			clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortDescend))
		if err != nil {
			if ctx.Err() != nil {
				return context.Cause(ctx)
			}
			if err := t.pause(ctx, 100*time.Millisecond); err != nil {
				return err
			}
			continue
		}
		var last *mvccpb.KeyValue
		for _, kv := range resp.Kvs {
			if e.valid(kv) {
				last = kv
				break
			}
		}
		if last == nil {
			return nil
		}
		if err := e.waitDelete(ctx, string(last.Key)); err != nil {
			return err
		}
	}
}

// errGone stops a waitDelete mirror: the key it waits on is gone.
var errGone = errors.New("key deleted")

// waitDelete waits until key is gone, or ctx is done (ctx is bound to the
// candidate's term, so it also ends with the term).
func (e *Elector) waitDelete(ctx context.Context, key string) error {
	m, err := etcdmirror.New(etcdmirror.Config{Client: e.cli, Key: key, MaxBackoff: time.Second, Logger: e.log})
	if err != nil {
		return err
	}
	err = m.Run(ctx, func(u etcdmirror.Update) error {
		if u.Snapshot && len(u.KVs) == 0 {
			return errGone
		}
		for _, ev := range u.Events {
			if ev.Type == clientv3.EventTypeDelete {
				return errGone
			}
		}
		return nil
	})
	if errors.Is(err, errGone) {
		return nil
	}
	return err
}

// valid reports whether kv is a candidate key of this election
// ([IsCandidate]). Other keys are logged once and ignored.
func (e *Elector) valid(kv *mvccpb.KeyValue) bool {
	if IsCandidate(e.pfx, kv) {
		return true
	}
	k := string(kv.Key)
	e.warnedMu.Lock()
	first := !e.warned[k]
	if first {
		if len(e.warned) > 1000 {
			clear(e.warned)
		}
		e.warned[k] = true
	}
	e.warnedMu.Unlock()
	if first {
		e.log.Warn("ignoring foreign key under the election prefix", "key", k, "lease", kv.Lease)
	}
	return false
}

// leaderOf returns the leader among kvs by [LeaderKV], after logging the
// foreign keys among them once.
func (e *Elector) leaderOf(kvs iter.Seq[*mvccpb.KeyValue]) Leader {
	for kv := range kvs {
		e.valid(kv)
	}
	kv := LeaderKV(e.pfx, kvs)
	if kv == nil {
		return Leader{}
	}
	return Leader{Key: string(kv.Key), Value: kv.Value, Token: kv.CreateRevision}
}

// Leader returns the current leader, or [ErrNoLeader] when there is none.
// It reads etcd with a linearizable read.
func (e *Elector) Leader(ctx context.Context) (Leader, error) {
	resp, err := e.cli.Get(ctx, e.pfx, clientv3.WithPrefix())
	if err != nil {
		return Leader{}, fmt.Errorf("election: leader of %s: %w", e.pfx, err)
	}
	if l := e.leaderOf(slices.Values(resp.Kvs)); !l.IsZero() {
		return l, nil
	}
	return Leader{}, ErrNoLeader
}

// Observe returns a channel that receives the current leader first, then
// every change: a new leader, a new value proclaimed, and "no leader" (the
// zero [Leader]). It keeps going across watch compaction, etcd leader
// changes and reconnects, re-reading the state when its watch breaks (and
// treating a watch that stays silent for 3 s despite progress requests as
// broken), until ctx is done; then the channel is closed. A reader that
// falls behind makes Observe wait; it never drops the latest state. The
// leader is chosen by [LeaderKV].
func (e *Elector) Observe(ctx context.Context) <-chan Leader {
	ch := make(chan Leader)
	go e.observe(ctx, ch)
	return ch
}

func (e *Elector) observe(ctx context.Context, ch chan<- Leader) {
	defer close(ch)
	var last Leader
	sent := false
	cands := etcdmirror.State{}
	// The mirror re-reads after a jittered wait when its watch breaks:
	// every pool and manager observes the leader, and after an etcd outage
	// they must not all re-read at the same instant.
	err := e.mirror.Run(ctx, func(u etcdmirror.Update) error {
		cands.Apply(u)
		l := e.leaderOf(maps.Values(cands))
		if sent && l.equal(last) {
			return nil
		}
		select {
		case ch <- l:
			last, sent = l, true
			return nil
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	})
	e.log.Debug("observe: stopped", "reason", err)
}
