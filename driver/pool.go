package driver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/pgha/pgha/internal/keyspace"
)

// Pool is a connection pool that sends every write to the cluster's current
// primary and follows promotions. It has the methods of [pgxpool.Pool] with
// the same signatures, so it replaces one without other code changes. It is
// safe for concurrent use.
//
// Internally it keeps one pgxpool per node, created on first use: the
// primary's serves writes, the replicas' serve [Pool.Reader].
type Pool struct {
	cfg *Config
	log *slog.Logger
	tel *telemetry

	// primary is the node writes go to; nil while there is none.
	primary atomic.Pointer[node]
	// replicas are the nodes that may serve reads (lag checked per read).
	replicas atomic.Pointer[[]*node]
	rr       atomic.Uint32 // round-robin cursor
	waiters  atomic.Int32  // operations waiting for a primary

	reader Reader

	mu        sync.Mutex
	closed    bool
	changed   chan struct{} // closed and replaced on every topology update
	nodes     map[string]*node
	hostNodes []*node // Config.Hosts, in order
	// etcd state
	etcdMode     bool
	etcdAnswered bool
	leader       string // node name of the leader record, "" if none
	members      map[string]keyspace.MemberRecord
	badMembers   map[string]string // member key → the unparseable value already logged
	splitWarned  string            // the writable hosts last warned about
	lastErr      error             // why there is no primary, for ErrNoPrimary
	emptyStat    *pgxpool.Stat

	kick     chan struct{} // wakes the prober
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	ownsEtcd *clientv3.Client
	layout   keyspace.Layout
}

// New creates a Pool from a connection string: [ParseConfig] followed by
// [NewWithConfig], as with pgxpool.
func New(ctx context.Context, connString string) (*Pool, error) {
	cfg, err := ParseConfig(connString)
	if err != nil {
		return nil, err
	}
	return NewWithConfig(ctx, cfg)
}

// NewWithConfig creates a Pool. It validates cfg (returning a
// *[ConfigError]), starts watching the topology in the background and
// returns without waiting for a primary: like pgxpool, it does not connect
// to PostgreSQL before the first operation. cfg is copied; ctx is used for
// nothing but values. Close the pool when done.
func NewWithConfig(ctx context.Context, cfg *Config) (*Pool, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.copy()
	cfg.setDefaults()
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	p := &Pool{
		cfg:        cfg,
		changed:    make(chan struct{}),
		nodes:      map[string]*node{},
		members:    map[string]keyspace.MemberRecord{},
		badMembers: map[string]string{},
		kick:       make(chan struct{}, 1),
	}
	p.reader.p = p
	if cfg.usesEtcd() {
		p.log = log.With("cluster", cfg.Cluster)
		p.etcdMode = true
		p.layout, _ = keyspace.NewLayout(cfg.KeyRoot, cfg.Cluster) // checked by Validate
	} else {
		p.log = log
	}
	var err error
	if p.tel, err = newTelemetry(p, cfg); err != nil {
		return nil, err
	}
	if cfg.TracerProvider != nil && cfg.PoolConfig.ConnConfig.Tracer == nil {
		cfg.PoolConfig.ConnConfig.Tracer = newQueryTracer(cfg.TracerProvider)
	}
	// An empty Stat for Stat() while there is no primary: pgxpool.Stat has
	// unexported fields, so take one from a closed, never-used pool.
	ec := cfg.PoolConfig.Copy()
	ec.MinConns, ec.MinIdleConns = 0, 0
	ep, err := pgxpool.NewWithConfig(context.WithoutCancel(ctx), ec)
	if err != nil {
		return nil, err
	}
	ep.Close()
	p.emptyStat = ep.Stat()

	for _, h := range cfg.Hosts {
		host, port, _ := splitHostPort(h) // checked by Validate
		n := newNode(h, host, port)
		p.hostNodes = append(p.hostNodes, n)
		if !p.etcdMode {
			p.nodes[h] = n
		}
	}
	var cli *clientv3.Client
	if p.etcdMode {
		cli = cfg.Etcd
		if cli == nil {
			cli, err = clientv3.New(clientv3.Config{
				Endpoints:            cfg.EtcdEndpoints,
				TLS:                  cfg.EtcdTLS,
				Username:             cfg.EtcdUsername,
				Password:             cfg.EtcdPassword,
				DialTimeout:          5 * time.Second,
				DialKeepAliveTime:    2 * time.Second,
				DialKeepAliveTimeout: 2 * time.Second,
				Logger:               zap.NewNop(),
			})
			if err != nil {
				return nil, etcdClientError(cfg, err)
			}
			p.ownsEtcd = cli
		}
	}
	p.ctx, p.cancel = context.WithCancel(context.WithoutCancel(ctx))
	if p.etcdMode {
		p.lastErr = fmt.Errorf("etcd has not answered yet (cluster %q)", cfg.Cluster)
		if err := p.startEtcd(cli); err != nil {
			p.cancel()
			if p.ownsEtcd != nil {
				p.ownsEtcd.Close()
			}
			return nil, err
		}
		if p.ownsEtcd != nil {
			p.wg.Go(func() { p.diagnoseEtcd(cfg) })
		}
	}
	p.wg.Go(p.probeLoop)
	return p, nil
}

// Close stops the pool's background work and closes every connection. It
// blocks until all acquired connections are released, like
// [pgxpool.Pool.Close]. Operations after Close fail with [ErrClosed]. Close
// is idempotent.
func (p *Pool) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	p.primary.Store(nil)
	p.replicas.Store(nil)
	close(p.changed)
	nodes := p.allNodesLocked()
	p.mu.Unlock()
	p.cancel()
	p.wg.Wait()
	var wg sync.WaitGroup
	for _, n := range nodes {
		wg.Go(n.closePools)
	}
	wg.Wait()
	if p.ownsEtcd != nil {
		p.ownsEtcd.Close()
	}
	p.tel.close()
}

func (p *Pool) allNodesLocked() []*node {
	ns := make([]*node, 0, len(p.nodes)+len(p.hostNodes))
	for _, n := range p.nodes {
		ns = append(ns, n)
	}
	for _, n := range p.hostNodes {
		if !slices.Contains(ns, n) {
			ns = append(ns, n)
		}
	}
	return ns
}

// --- topology -----------------------------------------------------------

// publishLocked recomputes the primary and the replicas from the current
// evidence and wakes waiters. Called under p.mu.
func (p *Pool) publishLocked(reason string) {
	if p.closed {
		return
	}
	old := p.primary.Load()
	var next *node
	if p.etcdMode && p.etcdAnswered {
		if n := p.nodes[p.leader]; n != nil && n.state() == wWritable {
			next = n
		}
	} else {
		var writable []*node
		for _, n := range p.candidatesLocked() {
			if n.state() == wWritable {
				writable = append(writable, n)
			}
		}
		switch {
		case len(writable) == 1:
			next = writable[0]
			p.splitWarned = ""
		case len(writable) > 1:
			keys := make([]string, len(writable))
			for i, n := range writable {
				keys[i] = n.key
			}
			if slices.Contains(writable, old) {
				next = old
			}
			if k := strings.Join(keys, ","); k != p.splitWarned {
				p.splitWarned = k
				p.log.Warn("several hosts accept writes", "hosts", keys, "keeping", keyOf(next))
			}
		default:
			p.splitWarned = ""
		}
	}
	if next != nil && (next.dropped || p.writePool(next) == nil) {
		next = nil
	}
	if next != old {
		p.primary.Store(next)
		if old != nil {
			// Idle connections close now; in-use ones are destroyed on
			// release; PrepareConn refuses any acquired from now on.
			if wp := old.wp.Load(); wp != nil {
				wp.Reset()
			}
		}
		switch {
		case next == nil:
			p.log.Warn("no writable primary", "previous", keyOf(old), "reason", reason)
		case old == nil:
			p.log.Info("primary found", "node", next.key, "addr", next.addr, "reason", reason)
		default:
			p.log.Warn("primary changed", "from", old.key, "to", next.key, "addr", next.addr, "reason", reason)
		}
		if next != nil && p.tel.everPrimary.Swap(true) && p.tel.lastPrimary != next.key {
			p.tel.failover(p.ctx, next.key)
		}
		if next != nil {
			p.tel.lastPrimary = next.key
		}
	}
	// Replicas: nodes in recovery by their latest probe.
	var reps []*node
	for _, n := range p.candidatesLocked() {
		if n == next {
			continue
		}
		if r := n.probe.Load(); r != nil && r.err == nil && r.inRecovery {
			if p.etcdMode && p.etcdAnswered {
				if m, ok := p.members[n.key]; ok && m.Role != keyspace.RoleReplica {
					continue
				}
			}
			reps = append(reps, n)
		}
	}
	p.replicas.Store(&reps)
	close(p.changed)
	p.changed = make(chan struct{})
}

// candidatesLocked lists the nodes the topology currently knows.
func (p *Pool) candidatesLocked() []*node {
	if p.etcdMode && !p.etcdAnswered {
		return p.hostNodes
	}
	ns := make([]*node, 0, len(p.nodes))
	for _, n := range p.nodes {
		ns = append(ns, n)
	}
	slices.SortFunc(ns, func(a, b *node) int {
		switch {
		case a.key < b.key:
			return -1
		case a.key > b.key:
			return 1
		}
		return 0
	})
	return ns
}

func keyOf(n *node) string {
	if n == nil {
		return ""
	}
	return n.key
}

// markReadOnly records that n refused a write, and withdraws it as primary.
func (p *Pool) markReadOnly(n *node, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if n.state() != wReadOnly {
		n.ws.Store(int32(wReadOnly))
		p.lastErr = err
		p.publishLocked("node refused a write: " + err.Error())
	}
	p.kickProber()
}

// connFailed records a connection failure on n: its idle connections are
// probably dead too, so they are closed, and the prober checks n at once.
func (p *Pool) connFailed(n *node, err error) {
	if wp := n.wp.Load(); wp != nil && p.primary.Load() == n {
		wp.Reset()
	}
	p.mu.Lock()
	p.lastErr = err
	p.mu.Unlock()
	p.kickProber()
}

func (p *Pool) kickProber() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

func (p *Pool) changedCh() (chan struct{}, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.changed, p.closed
}

// writer returns the primary, waiting up to FailoverTimeout for one.
func (p *Pool) writer(ctx context.Context) (*node, error) {
	if n := p.primary.Load(); n != nil {
		return n, nil
	}
	return p.await(ctx, nil, time.Time{})
}

// await waits for a primary. With failed != nil it waits for a primary other
// than failed, or for a probe of failed sent after since that found it
// writable. It gives up after FailoverTimeout with ErrNoPrimary.
func (p *Pool) await(ctx context.Context, failed *node, since time.Time) (*node, error) {
	start := time.Now()
	p.waiters.Add(1)
	p.kickProber()
	defer func() {
		p.waiters.Add(-1)
		p.tel.waited(ctx, time.Since(start))
	}()
	timer := time.NewTimer(p.cfg.FailoverTimeout)
	defer timer.Stop()
	for {
		ch, closed := p.changedCh()
		if closed {
			return nil, ErrClosed
		}
		if n := p.primary.Load(); n != nil {
			if n != failed {
				return n, nil
			}
			if r := n.probe.Load(); r != nil && r.at.After(since) && r.writable() {
				return n, nil
			}
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-timer.C:
			p.mu.Lock()
			last := p.lastErr
			p.mu.Unlock()
			return nil, &Error{Kind: ErrNoPrimary, Op: "wait", Node: keyOf(failed), Err: last}
		}
	}
}

// afterErr decides what to do after op failed on n outside a transaction:
// retry (true) or return the error it returns. mayRepeat says the
// operation can run twice without harm (Ping, or WithIdempotent).
func (p *Pool) afterErr(ctx context.Context, n *node, op string, err error, mayRepeat bool) (bool, error) {
	switch classify(ctx, err) {
	case classUnsent:
		if !errors.Is(err, errNotPrimary) {
			p.connFailed(n, err)
		}
		return true, err
	case classReadOnly:
		p.markReadOnly(n, err)
		return true, err
	case classConn:
		p.connFailed(n, err)
		if mayRepeat || isIdempotent(ctx) {
			return true, err
		}
		return false, &Error{Kind: ErrOutcomeUnknown, Op: op, Node: n.key, Err: err}
	}
	return false, err
}

// retryTarget returns the node to retry on after err on n.
func (p *Pool) retryTarget(ctx context.Context, n *node, err error, at time.Time) (*node, error) {
	if errors.Is(err, errNotPrimary) || errors.Is(err, errReadOnlyConn) || classify(ctx, err) == classReadOnly {
		return p.writer(ctx)
	}
	return p.await(ctx, n, at)
}

// --- pgxpool.Pool's methods ---------------------------------------------

// Acquire returns a connection to the primary, waiting up to
// FailoverTimeout for one. Release it as with pgxpool; a connection to a
// node that stopped being the primary is destroyed on release.
func (p *Pool) Acquire(ctx context.Context) (*pgxpool.Conn, error) {
	n, err := p.writer(ctx)
	if err != nil {
		return nil, err
	}
	at := time.Now()
	c, err := n.wp.Load().Acquire(ctx)
	if err == nil {
		p.tel.routed(n, true)
		return c, nil
	}
	if retry, rerr := p.afterErr(ctx, n, "acquire", err, true); !retry {
		return nil, rerr
	}
	if n, err = p.retryTarget(ctx, n, err, at); err != nil {
		return nil, err
	}
	p.tel.routed(n, true)
	return n.wp.Load().Acquire(ctx)
}

// AcquireFunc acquires a connection to the primary, calls f with it and
// releases it. ctx affects only the acquisition.
func (p *Pool) AcquireFunc(ctx context.Context, f func(*pgxpool.Conn) error) error {
	c, err := p.Acquire(ctx)
	if err != nil {
		return err
	}
	defer c.Release()
	return f(c)
}

// AcquireAllIdle acquires every idle connection to the primary (none while
// there is no primary). Like pgxpool's, it is meant for health checks.
func (p *Pool) AcquireAllIdle(ctx context.Context) []*pgxpool.Conn {
	n := p.primary.Load()
	if n == nil {
		return []*pgxpool.Conn{}
	}
	return n.wp.Load().AcquireAllIdle(ctx)
}

// Reset closes every idle connection of every node and makes in-use ones
// close on release, leaving the pool open.
func (p *Pool) Reset() {
	p.mu.Lock()
	nodes := p.allNodesLocked()
	p.mu.Unlock()
	for _, n := range nodes {
		for _, pp := range []*pgxpool.Pool{n.wp.Load(), n.rp.Load()} {
			if pp != nil {
				pp.Reset()
			}
		}
	}
}

// Config returns a copy of the pgxpool configuration template the node
// pools are built from (host and port are set per node).
func (p *Pool) Config() *pgxpool.Config { return p.cfg.PoolConfig.Copy() }

// Stat returns the statistics of the primary's pool; while there is no
// primary, all-zero statistics.
func (p *Pool) Stat() *pgxpool.Stat {
	if n := p.primary.Load(); n != nil {
		return n.wp.Load().Stat()
	}
	s := *p.emptyStat
	return &s
}

// Exec runs sql on the primary. See the package documentation for retries
// and errors.
func (p *Pool) Exec(ctx context.Context, sql string, arguments ...any) (pgconn.CommandTag, error) {
	n := p.primary.Load()
	if n == nil {
		var err error
		if n, err = p.await(ctx, nil, time.Time{}); err != nil {
			return pgconn.CommandTag{}, err
		}
	}
	p.tel.routed(n, true)
	tag, rep, err := p.exec(ctx, n, sql, arguments)
	if err == nil {
		return tag, rep
	}
	at := time.Now()
	retry, err := p.afterErr(ctx, n, "exec", err, false)
	if !retry {
		return tag, err
	}
	if n, err = p.retryTarget(ctx, n, err, at); err != nil {
		return pgconn.CommandTag{}, err
	}
	p.tel.routed(n, true)
	tag, rep, err = p.exec(ctx, n, sql, arguments)
	if err != nil {
		_, err = p.afterErr(ctx, n, "exec", err, false)
		return tag, err
	}
	return tag, rep
}

// exec runs sql on n's write pool as pgxpool.Pool.Exec does (acquire,
// exec, release). rep is the [ErrNotReplicated] error for a statement
// that succeeded while PostgreSQL cancelled its commit's wait for the
// synchronous standbys.
func (p *Pool) exec(ctx context.Context, n *node, sql string, args []any) (tag pgconn.CommandTag, rep, err error) {
	c, err := n.wp.Load().Acquire(ctx)
	if err != nil {
		return tag, nil, err
	}
	defer c.Release()
	pc := c.Conn().PgConn()
	clearSyncWait(pc)
	tag, err = c.Exec(ctx, sql, args...)
	if err == nil {
		rep = takeSyncWait(pc, "exec", n.key)
	}
	return tag, rep, err
}

// queryRow runs sql and scans its row on n's write pool, as
// pgxpool.Pool.QueryRow does; rep as for [Pool.exec].
func (p *Pool) queryRow(ctx context.Context, n *node, sql string, args, dest []any) (rep, err error) {
	c, err := n.wp.Load().Acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer c.Release()
	pc := c.Conn().PgConn()
	clearSyncWait(pc)
	err = c.QueryRow(ctx, sql, args...).Scan(dest...)
	if err == nil {
		rep = takeSyncWait(pc, "query row", n.key)
	}
	return rep, err
}

// Query runs sql on the primary. Errors returned by Query itself are
// handled as for [Pool.Exec]; errors met while reading rows are pgx's.
func (p *Pool) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	n := p.primary.Load()
	if n == nil {
		var err error
		if n, err = p.await(ctx, nil, time.Time{}); err != nil {
			return errRows{err}, err
		}
	}
	p.tel.routed(n, true)
	rows, err := n.wp.Load().Query(ctx, sql, args...)
	if err == nil {
		return rows, nil
	}
	at := time.Now()
	retry, err := p.afterErr(ctx, n, "query", err, false)
	if !retry {
		return errRows{err}, err
	}
	if n, err = p.retryTarget(ctx, n, err, at); err != nil {
		return errRows{err}, err
	}
	p.tel.routed(n, true)
	rows, err = n.wp.Load().Query(ctx, sql, args...)
	if err != nil {
		_, err = p.afterErr(ctx, n, "query", err, false)
		return errRows{err}, err
	}
	return rows, nil
}

// QueryRow runs sql on the primary; errors are deferred to Scan, which
// retries as [Pool.Exec] does.
func (p *Pool) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	return &poolRow{p: p, ctx: ctx, sql: sql, args: args}
}

// poolRow runs its query when scanned, so that a failure before the query
// was sent can be retried on the new primary.
type poolRow struct {
	p    *Pool
	ctx  context.Context
	sql  string
	args []any
}

func (r *poolRow) Scan(dest ...any) error {
	p, ctx := r.p, r.ctx
	n := p.primary.Load()
	if n == nil {
		var err error
		if n, err = p.await(ctx, nil, time.Time{}); err != nil {
			return err
		}
	}
	p.tel.routed(n, true)
	rep, err := p.queryRow(ctx, n, r.sql, r.args, dest)
	if err == nil {
		return rep
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return err
	}
	at := time.Now()
	retry, err := p.afterErr(ctx, n, "query row", err, false)
	if !retry {
		return err
	}
	if n, err = p.retryTarget(ctx, n, err, at); err != nil {
		return err
	}
	p.tel.routed(n, true)
	rep, err = p.queryRow(ctx, n, r.sql, r.args, dest)
	if err == nil {
		return rep
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		_, err = p.afterErr(ctx, n, "query row", err, false)
	}
	return err
}

// SendBatch sends b to the primary, waiting up to FailoverTimeout for one.
// It is not retried: its errors, met while reading the results, are pgx's.
func (p *Pool) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	n, err := p.writer(ctx)
	if err != nil {
		return pgx.FailedBatchResults(b, err)
	}
	p.tel.routed(n, true)
	return n.wp.Load().SendBatch(ctx, b)
}

// Begin starts a transaction on the primary. See [Pool.BeginTx].
func (p *Pool) Begin(ctx context.Context) (pgx.Tx, error) {
	return p.BeginTx(ctx, pgx.TxOptions{})
}

// BeginTx starts a transaction on the primary, waiting up to
// FailoverTimeout for one; a BEGIN that fails on a failover is retried
// once. Statements of a transaction broken by a failover fail with
// [ErrFailover]; a COMMIT whose outcome is unknown fails with
// [ErrOutcomeUnknown].
func (p *Pool) BeginTx(ctx context.Context, txOptions pgx.TxOptions) (pgx.Tx, error) {
	n, err := p.writer(ctx)
	if err != nil {
		return nil, err
	}
	p.tel.routed(n, true)
	t, err := p.beginTx(ctx, n, txOptions)
	if err == nil {
		return t, nil
	}
	at := time.Now()
	// BEGIN has no effect of its own: repeat it after any failover error.
	if retry, rerr := p.afterErr(ctx, n, "begin", err, true); !retry {
		return nil, rerr
	}
	if n, err = p.retryTarget(ctx, n, err, at); err != nil {
		return nil, err
	}
	p.tel.routed(n, true)
	t, err = p.beginTx(ctx, n, txOptions)
	if err != nil {
		_, err = p.afterErr(ctx, n, "begin", err, true)
		return nil, err
	}
	return t, nil
}

// beginTx begins a transaction on a connection of n's write pool, as
// pgxpool.Pool.BeginTx does, but keeps the connection until the
// transaction ends: its commit's warnings must be read before another
// goroutine can acquire it.
func (p *Pool) beginTx(ctx context.Context, n *node, opts pgx.TxOptions) (*tx, error) {
	c, err := n.wp.Load().Acquire(ctx)
	if err != nil {
		return nil, err
	}
	t, err := c.BeginTx(ctx, opts)
	if err != nil {
		c.Release()
		return nil, err
	}
	return &tx{p: p, n: n, t: t, c: c}, nil
}

// CopyFrom copies rows into tableName on the primary. Only a failure
// before anything was sent is retried.
func (p *Pool) CopyFrom(ctx context.Context, tableName pgx.Identifier, columnNames []string, rowSrc pgx.CopyFromSource) (int64, error) {
	n, err := p.writer(ctx)
	if err != nil {
		return 0, err
	}
	p.tel.routed(n, true)
	at := time.Now()
	cnt, err := n.wp.Load().CopyFrom(ctx, tableName, columnNames, rowSrc)
	if err == nil {
		return cnt, nil
	}
	if classify(ctx, err) != classUnsent {
		_, err = p.afterErr(ctx, n, "copy", err, false)
		return cnt, err
	}
	p.afterErr(ctx, n, "copy", err, false)
	if n, err = p.retryTarget(ctx, n, err, at); err != nil {
		return 0, err
	}
	p.tel.routed(n, true)
	cnt, err = n.wp.Load().CopyFrom(ctx, tableName, columnNames, rowSrc)
	if err != nil {
		_, err = p.afterErr(ctx, n, "copy", err, false)
	}
	return cnt, err
}

// Ping checks the primary with an empty statement, waiting up to
// FailoverTimeout for one and retrying once after a failover error.
func (p *Pool) Ping(ctx context.Context) error {
	n, err := p.writer(ctx)
	if err != nil {
		return err
	}
	at := time.Now()
	err = n.wp.Load().Ping(ctx)
	if err == nil {
		return nil
	}
	if retry, rerr := p.afterErr(ctx, n, "ping", err, true); !retry {
		return rerr
	}
	if n, err = p.retryTarget(ctx, n, err, at); err != nil {
		return err
	}
	return n.wp.Load().Ping(ctx)
}

// errRows is the pgx.Rows of a failed Query, as pgxpool returns.
type errRows struct{ err error }

func (errRows) Close()                                       {}
func (e errRows) Err() error                                 { return e.err }
func (errRows) CommandTag() pgconn.CommandTag                { return pgconn.CommandTag{} }
func (errRows) FieldDescriptions() []pgconn.FieldDescription { return nil }
func (errRows) Next() bool                                   { return false }
func (e errRows) Scan(dest ...any) error                     { return e.err }
func (e errRows) Values() ([]any, error)                     { return nil, e.err }
func (e errRows) RawValues() [][]byte                        { return nil }
func (e errRows) Conn() *pgx.Conn                            { return nil }
func (e errRows) TypeMap() *pgtype.Map                       { return nil }
