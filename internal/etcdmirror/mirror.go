// Package etcdmirror keeps a reader in step with one etcd key or key prefix:
// it reads the range at a revision, then watches it from the next revision,
// and starts over when the watch can no longer be trusted. It is the one
// read-then-watch loop of pgha; election, ha and driver build their views
// of etcd on it.
//
// Quick start:
//
//	m, err := etcdmirror.New(etcdmirror.Config{Client: cli, Key: "/pgha/main/", Prefix: true})
//	err = m.Run(ctx, func(u etcdmirror.Update) error {
//		state.Apply(u) // a [State], or your own map
//		return nil
//	})
//
// # Lifecycle
//
// [Mirror.Run] reads every key of the range with one linearizable read (in
// pages of 1000 keys at that read's revision, like etcd's
// client/v3/mirror.Syncer) and hands the result to its callback as a
// snapshot [Update]. It then watches the range for what follows and
// hands over each batch of events as it arrives. It runs until its context
// is done or the callback returns an error, and returns why it stopped.
//
// # Behaviour under failure
//
//   - Compaction (the watch's start revision is gone) and a broken watch
//     (the channel closed, etcd lost its leader: the watch requires one,
//     the client was closed) make Run read the range again after a
//     jittered, capped exponential backoff ([backoff]) and deliver a fresh
//     snapshot. Every process sees an etcd outage at the same instant: the
//     jitter keeps them from re-reading in lockstep.
//   - A failed read is retried with the same backoff.
//   - A silent watch: gRPC does not honour client keep-alives below 10 s,
//     and a stream can stall without its connection failing. So Run
//     requests a progress notification whenever the watch has said nothing
//     for [Config.ProgressInterval], and treats a watch silent for
//     [Config.SilenceLimit] as broken: it cancels it and watches again from
//     the last revision it delivered (no re-read; if that revision was
//     compacted meanwhile, the compaction path above follows).
//
// Each of these is reported to [Config.OnBreak] with a [Break] saying why,
// and logged at debug level.
//
// # Concurrency
//
// Run calls its callback from the goroutine that called Run, one update at
// a time, in revision order; a callback that blocks holds the mirror back
// (the watch buffers) but loses nothing. A [Mirror] may be Run by several
// goroutines at once; each Run is independent.
package etcdmirror

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/pgha/pgha/internal/backoff"
)

// Defaults for zero fields of [Config].
const (
	DefaultProgressInterval = time.Second
	DefaultMinBackoff       = 50 * time.Millisecond
	DefaultMaxBackoff       = 2 * time.Second
)

// pageSize is how many keys one read of the range returns at most.
const pageSize = 1000

// Config configures a [Mirror]. The zero value of every field but Client
// and Key means "use the default".
type Config struct {
	// Client is the etcd client. Required. The Mirror does not close it.
	Client *clientv3.Client

	// Key is the key to mirror, or the key prefix when Prefix is set.
	// Required.
	Key string

	// Prefix makes Key a prefix: every key that starts with it is
	// mirrored.
	Prefix bool

	// ProgressInterval is how long the watch may stay silent before Run
	// asks etcd for a progress notification. Default 1 s.
	ProgressInterval time.Duration

	// SilenceLimit is how long the watch may stay silent (no event, no
	// progress notification) before Run treats it as broken and watches
	// again from the last revision. Default 3 × ProgressInterval; must be
	// above ProgressInterval.
	SilenceLimit time.Duration

	// MinBackoff and MaxBackoff bound the jittered wait before Run reads
	// or watches again after a failure. Defaults 50 ms and 2 s; MaxBackoff
	// must not be below MinBackoff.
	MinBackoff, MaxBackoff time.Duration

	// OnBreak, when set, is called from Run's goroutine each time the
	// watch is abandoned, before the wait that precedes the next read or
	// watch. It must not block.
	OnBreak func(Break)

	// Logger receives debug lines about breaks and failed reads. Nil means
	// slog.Default().
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	if c.ProgressInterval == 0 {
		c.ProgressInterval = DefaultProgressInterval
	}
	if c.SilenceLimit == 0 {
		c.SilenceLimit = 3 * c.ProgressInterval
	}
	if c.MinBackoff == 0 {
		c.MinBackoff = DefaultMinBackoff
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = max(DefaultMaxBackoff, c.MinBackoff)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// ConfigError reports an invalid [Config] field: its name, its value and
// what to do instead.
type ConfigError struct {
	Field  string
	Value  any
	Reason string
}

// Error returns "etcdmirror: <field> <value> <reason>".
func (e *ConfigError) Error() string {
	return fmt.Sprintf("etcdmirror: %s %v %s", e.Field, e.Value, e.Reason)
}

// Validate reports the first invalid field as a *[ConfigError], after
// filling in defaults for zero fields of a copy of c.
func (c Config) Validate() error {
	c.setDefaults()
	switch {
	case c.Client == nil:
		return &ConfigError{"Client", "<nil>", "is required: pass a *clientv3.Client"}
	case c.Key == "":
		return &ConfigError{"Key", `""`, "is required: name the key or key prefix to mirror"}
	case c.ProgressInterval < 0:
		return &ConfigError{"ProgressInterval", c.ProgressInterval, "must be positive (or zero for the default 1s)"}
	case c.SilenceLimit <= c.ProgressInterval:
		return &ConfigError{"SilenceLimit", c.SilenceLimit, fmt.Sprintf("must be above ProgressInterval (%v), so that a progress notification can arrive in time", c.ProgressInterval)}
	case c.MinBackoff < 0:
		return &ConfigError{"MinBackoff", c.MinBackoff, "must be positive (or zero for the default 50ms)"}
	case c.MaxBackoff < c.MinBackoff:
		return &ConfigError{"MaxBackoff", c.MaxBackoff, fmt.Sprintf("must not be below MinBackoff (%v)", c.MinBackoff)}
	}
	return nil
}

// Update is one step of the mirror: a snapshot of the whole range, or a
// batch of changes to it.
type Update struct {
	// Snapshot is true when KVs holds every key of the range at Revision
	// and replaces all that came before: the first update of a Run and
	// each one after a re-read.
	Snapshot bool
	// KVs are the range's keys, sorted by key (snapshots only).
	KVs []*mvccpb.KeyValue
	// Events are the changes since the previous update, in revision order
	// (non-snapshots only; never empty then).
	Events []*clientv3.Event
	// Revision is the etcd revision the mirror reflects after this update:
	// the read's revision for a snapshot, the last event's revision
	// otherwise.
	Revision int64
}

// BreakKind says why a watch was abandoned.
type BreakKind int

// The kinds of [Break].
const (
	// Compacted: the revision to watch from has been compacted. The range
	// is read again.
	Compacted BreakKind = iota + 1
	// Broken: the watch ended (etcd lost its leader, the connection or
	// the client closed, etcd cancelled it). The range is read again.
	Broken
	// Silent: the watch said nothing for SilenceLimit despite progress
	// requests. It is opened again from the last revision.
	Silent
)

// String returns "compacted", "broken" or "silent".
func (k BreakKind) String() string {
	switch k {
	case Compacted:
		return "compacted"
	case Broken:
		return "broken"
	case Silent:
		return "silent"
	}
	return fmt.Sprintf("BreakKind(%d)", int(k))
}

// Break describes an abandoned watch, for [Config.OnBreak].
type Break struct {
	Kind BreakKind
	// Revision is the last revision delivered before the break.
	Revision int64
	// Err is what etcd or the client reported, or what Run saw.
	Err error
}

// String returns the kind, revision and error, for logs.
func (b Break) String() string {
	return fmt.Sprintf("%s after revision %d: %v", b.Kind, b.Revision, b.Err)
}

// Mirror mirrors one etcd key or key prefix; see the package doc. It is
// safe for concurrent use and owns no goroutine outside [Mirror.Run].
type Mirror struct {
	cfg      Config
	log      *slog.Logger
	pageSize int64 // keys per read; tests lower it
}

// New returns a Mirror for cfg, or a *[ConfigError] when cfg is invalid.
// It does not contact etcd.
func New(cfg Config) (*Mirror, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	return &Mirror{cfg: cfg, log: cfg.Logger.With("mirror", cfg.Key), pageSize: pageSize}, nil
}

// Run mirrors the range into apply until ctx is done or apply returns an
// error, and returns why it stopped: context.Cause(ctx), or apply's error
// as is. It never returns on an etcd error: it retries (see the package
// doc). apply is called from Run's goroutine, one update at a time.
func (m *Mirror) Run(ctx context.Context, apply func(Update) error) error {
	b := backoff.New(m.cfg.MinBackoff, m.cfg.MaxBackoff)
	var rev int64
	read := true
	for {
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		if read {
			kvs, r, err := m.read(ctx)
			if err != nil {
				if ctx.Err() != nil {
					return context.Cause(ctx)
				}
				m.log.Debug("etcd read failed; retrying", "err", err)
				if !b.Wait(ctx) {
					return context.Cause(ctx)
				}
				continue
			}
			if err := apply(Update{Snapshot: true, KVs: kvs, Revision: r}); err != nil {
				return err
			}
			rev, read = r, false
		}
		started := time.Now()
		brk, err := m.watch(ctx, rev, apply)
		if err != nil {
			return err
		}
		rev = brk.Revision
		read = brk.Kind != Silent
		m.log.Debug("etcd watch abandoned", "kind", brk.Kind.String(), "revision", brk.Revision, "err", brk.Err)
		if m.cfg.OnBreak != nil {
			m.cfg.OnBreak(brk)
		}
		// A watch that lasted a while broke for a new reason: start the
		// backoff over. One that keeps breaking at once waits longer.
		if time.Since(started) > m.cfg.MaxBackoff {
			b.Reset()
		}
		if !b.Wait(ctx) {
			return context.Cause(ctx)
		}
	}
}

// read returns every key of the range and the revision they were read at.
func (m *Mirror) read(ctx context.Context) ([]*mvccpb.KeyValue, int64, error) {
	if !m.cfg.Prefix {
		resp, err := m.cfg.Client.Get(ctx, m.cfg.Key)
		if err != nil {
			return nil, 0, err
		}
		return resp.Kvs, resp.Header.Revision, nil
	}
	var kvs []*mvccpb.KeyValue
	var rev int64
	key := m.cfg.Key
	for {
		opts := []clientv3.OpOption{
			clientv3.WithRange(clientv3.GetPrefixRangeEnd(m.cfg.Key)),
			clientv3.WithLimit(m.pageSize),
			clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend),
		}
		if rev != 0 {
			// Every page at the first page's revision: one consistent
			// snapshot.
			opts = append(opts, clientv3.WithRev(rev))
		}
		resp, err := m.cfg.Client.Get(ctx, key, opts...)
		if err != nil {
			return nil, 0, err
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		kvs = append(kvs, resp.Kvs...)
		if !resp.More || len(resp.Kvs) == 0 {
			return kvs, rev, nil
		}
		key = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// errSilent is the error of a [Silent] break.
var errSilent = errors.New("watch silent")

// watch watches the range after rev and applies its events until the
// watch must be abandoned (it returns the break, with the last revision
// delivered) or Run must stop (it returns the error Run returns).
func (m *Mirror) watch(ctx context.Context, rev int64, apply func(Update) error) (Break, error) {
	// The watch requires an etcd leader: a member cut off from the
	// quorum cancels it instead of serving stale events.
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	// The watch starts at rev, not rev+1, and drops what it already
	// delivered: etcd answers a progress request only once every watcher
	// of the stream has reached its start revision, so a watch that starts
	// in the future (rev+1 on an idle range) would get no answer and look
	// silent.
	opts := []clientv3.OpOption{clientv3.WithRev(rev), clientv3.WithProgressNotify(), clientv3.WithCreatedNotify()}
	if m.cfg.Prefix {
		opts = append(opts, clientv3.WithPrefix())
	}
	// Watch blocks until etcd confirms the watch: start it aside, so that
	// a silent etcd is noticed while it waits too.
	started := make(chan clientv3.WatchChan, 1)
	go func() { started <- m.cfg.Client.Watch(wctx, m.cfg.Key, opts...) }()
	var wch clientv3.WatchChan
	defer func() {
		cancel()
		if wch == nil {
			<-started
		}
	}()

	tick := time.NewTicker(m.cfg.ProgressInterval / 2)
	defer tick.Stop()
	heard := time.Now()
	brk := func(kind BreakKind, err error) (Break, error) {
		if ctx.Err() != nil {
			return Break{}, context.Cause(ctx)
		}
		return Break{Kind: kind, Revision: rev, Err: err}, nil
	}
	for {
		select {
		case <-ctx.Done():
			return Break{}, context.Cause(ctx)
		case wch = <-started:
			started = nil
		case wr, ok := <-wch:
			if !ok {
				return brk(Broken, errors.New("watch channel closed"))
			}
			heard = time.Now()
			if err := wr.Err(); err != nil {
				if wr.CompactRevision != 0 {
					return brk(Compacted, err)
				}
				return brk(Broken, err)
			}
			switch {
			case wr.Created:
			case wr.IsProgressNotify():
				// Every event up to the header's revision has been sent.
				rev = max(rev, wr.Header.Revision)
			case len(wr.Events) > 0:
				evs := wr.Events
				for len(evs) > 0 && evs[0].Kv.ModRevision <= rev {
					evs = evs[1:] // already delivered
				}
				if len(evs) == 0 {
					continue
				}
				rev = evs[len(evs)-1].Kv.ModRevision
				if err := apply(Update{Events: evs, Revision: rev}); err != nil {
					return Break{}, err
				}
				// Time spent in apply is not the watch's silence.
				heard = time.Now()
			}
		case now := <-tick.C:
			silent := now.Sub(heard)
			if silent >= m.cfg.SilenceLimit {
				return brk(Silent, fmt.Errorf("%w for %v (limit %v)", errSilent, silent.Round(time.Millisecond), m.cfg.SilenceLimit))
			}
			if silent >= m.cfg.ProgressInterval && wch != nil {
				m.requestProgress(wctx)
			}
		}
	}
}

// requestProgress asks etcd for a progress notification on the watch's
// stream, without waiting longer than ProgressInterval for the client to
// take the request (it does not while it reconnects).
func (m *Mirror) requestProgress(wctx context.Context) {
	// The request must carry the watch's metadata (WithRequireLeader) to
	// reach the watch's stream.
	rctx, cancel := context.WithTimeout(wctx, m.cfg.ProgressInterval)
	defer cancel()
	if err := m.cfg.Client.RequestProgress(rctx); err != nil {
		m.log.Debug("etcd progress request failed", "err", err)
	}
}

// State is a mirrored range held as a map from key to its latest value.
// Callers that need no more than the current keys use it as their
// callback's state: Run(ctx, func(u Update) error { s.Apply(u); ... }).
// It is not safe for concurrent use.
type State map[string]*mvccpb.KeyValue

// Apply brings s to u.Revision: a snapshot replaces every key, events are
// applied in order (a put stores the key's new value, a delete removes it).
func (s State) Apply(u Update) {
	if u.Snapshot {
		clear(s)
		for _, kv := range u.KVs {
			s[string(kv.Key)] = kv
		}
		return
	}
	for _, ev := range u.Events {
		switch ev.Type {
		case clientv3.EventTypePut:
			s[string(ev.Kv.Key)] = ev.Kv
		case clientv3.EventTypeDelete:
			delete(s, string(ev.Kv.Key))
		}
	}
}
