package driver

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// wstate is the latest evidence about whether a node accepts writes.
type wstate int32

const (
	wUnknown  wstate = iota
	wWritable        // a probe, a new connection or the leader record said so
	wReadOnly        // in recovery, read-only, or it refused a write
)

// probeResult is one probe of a node.
type probeResult struct {
	at         time.Time // when the probe was sent (monotonic)
	err        error
	inRecovery bool
	readOnly   bool
	lsn        uint64 // pg_current_wal_lsn() on a primary, pg_last_wal_replay_lsn() on a replica
}

func (r *probeResult) writable() bool {
	return r != nil && r.err == nil && !r.inRecovery && !r.readOnly
}

// node is one PostgreSQL server of the cluster.
type node struct {
	key  string // node name (etcd) or host:port
	addr string // host:port
	host string
	port uint16

	wp atomic.Pointer[pgxpool.Pool] // write pool: used only while the node is the primary
	// wt is the write pool's current term (see writeTerm): its pool,
	// its connections, and a ctx that ends when the node is deposed.
	wt atomic.Pointer[writeTerm]
	rp atomic.Pointer[pgxpool.Pool] // read pool: used while the node is a replica
	// holdGate ends when a planned switchover of the node starts: calls
	// waiting in its write pool's Acquire then go back to the funnel, which
	// holds them (see Pool.hold). Replaced by a fresh one each time.
	holdGate atomic.Pointer[gate]

	ws    atomic.Int32 // wstate
	probe atomic.Pointer[probeResult]
	// replay is the highest WAL position this replica is known to have
	// replayed (from probes and causal checks).
	replay atomic.Uint64
	// lag is the replica's replay lag in bytes; -1 unknown.
	lag atomic.Int64
	// recordLag is the lag its member record reports; -1 unknown.
	recordLag atomic.Int64
	// confirmed: a probe or a new write connection found the node
	// writable at least once.
	confirmed atomic.Bool

	// wpClosed is set (under Pool.mu) when wp was closed because the node
	// was deposed: writePool makes a new one if it is elected again.
	wpClosed bool

	// Operations routed here, by role at routing time (metrics).
	routedPrimary atomic.Int64
	routedReplica atomic.Int64

	probeConn *pgx.Conn // owned by the prober goroutine

	// dropped is set (under Pool.mu) when the node left the topology and
	// its pools were closed: no pool may be created for it after that.
	dropped bool
}

func newNode(key, host string, port uint16) *node {
	n := &node{key: key, addr: joinHostPort(host, port), host: host, port: port}
	n.lag.Store(-1)
	n.recordLag.Store(-1)
	return n
}

func (n *node) state() wstate { return wstate(n.ws.Load()) }

// noteReplay raises n.replay to lsn if it is higher.
func (n *node) noteReplay(lsn uint64) {
	for {
		cur := n.replay.Load()
		if lsn <= cur || n.replay.CompareAndSwap(cur, lsn) {
			return
		}
	}
}

// connConfig returns the template's connection config pointed at n, with the
// template's TLS settings (and sslmode=prefer fallback) for n's host.
func (n *node) connConfig(tmpl *pgx.ConnConfig) *pgx.ConnConfig {
	cc := tmpl.Copy()
	// The TLS attempts the template makes for one host: the main config,
	// then fallbacks for the same host (sslmode=prefer/allow).
	type attempt struct{ tls *tls.Config }
	attempts := []attempt{{cc.TLSConfig}}
	for _, f := range cc.Fallbacks {
		if f.Host == cc.Host && f.Port == cc.Port {
			attempts = append(attempts, attempt{f.TLSConfig})
		}
	}
	// Prefer the exact TLS settings the connection string gave this host.
	var own []*pgconn.FallbackConfig
	if cc.Host == n.host && cc.Port == n.port {
		own = append(own, &pgconn.FallbackConfig{Host: n.host, Port: n.port, TLSConfig: cc.TLSConfig})
	}
	for _, f := range cc.Fallbacks {
		if f.Host == n.host && f.Port == n.port {
			own = append(own, f)
		}
	}
	if len(own) == 0 {
		for _, a := range attempts {
			t := a.tls
			if t != nil {
				t = t.Clone()
				if !t.InsecureSkipVerify || t.ServerName != "" {
					t.ServerName = n.host
				}
			}
			own = append(own, &pgconn.FallbackConfig{Host: n.host, Port: n.port, TLSConfig: t})
		}
	}
	cc.Host, cc.Port, cc.TLSConfig = own[0].Host, own[0].Port, own[0].TLSConfig
	cc.Fallbacks = own[1:]
	// Our own checks replace target_session_attrs.
	cc.ValidateConnect = nil
	return cc
}

// errReadOnlyConn: a new write connection found the server in recovery or
// read-only. Nothing was sent.
var errReadOnlyConn = errors.New("driver: server is read-only or in recovery")

// writePool returns n's write pool, creating it. Called under p.mu.
func (p *Pool) writePool(n *node) *pgxpool.Pool {
	if wp := n.wp.Load(); wp != nil && !n.wpClosed {
		return wp
	}
	n.wpClosed = false
	wt := newWriteTerm(p.ctx)
	pc := p.cfg.Config.Copy()
	pc.ConnConfig = n.connConfig(pc.ConnConfig)
	// A black-holed primary must be noticed in seconds (tcp.go).
	pc.ConnConfig.DialFunc = tcpDial(pc.ConnConfig.DialFunc, p.cfg.WriteKeepAlive, p.cfg.WriteTCPUserTimeout)
	// A commit whose wait for the synchronous standbys PostgreSQL cancels
	// "succeeds" with a warning: record it (syncwait.go).
	pc.ConnConfig.OnNotice = noticeHook(pc.ConnConfig.OnNotice)
	userAfterConnect := pc.AfterConnect
	// check is the write connection's check, then the user's AfterConnect.
	// It runs once per connection: when it is opened, or, for a connection
	// opened ahead (prewarm) while the node was not yet writable, on its
	// first acquire.
	check := func(ctx context.Context, c *pgx.Conn) error {
		var ro bool
		// One round trip: a write connection must be to a server out of
		// recovery whose sessions are not read-only (a fenced primary).
		err := c.QueryRow(ctx, "select pg_is_in_recovery() or current_setting('transaction_read_only')::bool",
			pgx.QueryExecModeSimpleProtocol).Scan(&ro)
		if err != nil {
			return err
		}
		if ro {
			return errReadOnlyConn
		}
		n.confirmed.Store(true)
		if userAfterConnect != nil {
			return userAfterConnect(ctx, c)
		}
		return nil
	}
	pc.AfterConnect = func(ctx context.Context, c *pgx.Conn) (err error) {
		// Tracked from now on, so that deposing the node cuts it, even
		// while its check runs on a node that black-holes every packet.
		if !wt.add(c.PgConn()) {
			return errNotPrimary
		}
		c.PgConn().CustomData()[connRefKey] = &connRef{p: p, n: n, t: wt} // connhook.go
		defer func() {
			if err != nil {
				wt.remove(c.PgConn()) // pgxpool closes it without BeforeClose
			}
		}()
		if isPrewarm(ctx) {
			c.PgConn().CustomData()[uncheckedKey] = true
			return nil
		}
		return check(ctx, c)
	}
	userBeforeClose := pc.BeforeClose
	pc.BeforeClose = func(c *pgx.Conn) {
		wt.remove(c.PgConn())
		if userBeforeClose != nil {
			userBeforeClose(c)
		}
	}
	userPrepare := pc.PrepareConn
	if userPrepare == nil && pc.BeforeAcquire != nil {
		ba := pc.BeforeAcquire
		userPrepare = func(ctx context.Context, c *pgx.Conn) (bool, error) { return ba(ctx, c), nil }
	}
	pc.BeforeAcquire = nil
	pc.PrepareConn = func(ctx context.Context, c *pgx.Conn) (bool, error) {
		if isPrewarm(ctx) {
			return true, nil // released at once, unused
		}
		if p.primary.Load() != n {
			return false, errNotPrimary
		}
		if cd := c.PgConn().CustomData(); cd[uncheckedKey] != nil {
			if err := check(ctx, c); err != nil {
				return false, err
			}
			delete(cd, uncheckedKey)
		}
		if userPrepare != nil {
			return userPrepare(ctx, c)
		}
		return true, nil
	}
	// No AfterRelease hook: pgxpool runs it on a new goroutine per release,
	// which costs more than the whole query path. When the node stops
	// being the primary, depose closes this pool: connections in use are
	// destroyed on release, and PrepareConn refuses any acquired before.
	// p.ctx carries the values of the ctx given to NewWithConfig: pgxpool
	// passes them to the connects it makes for MinConns, and so do we.
	wp, err := pgxpool.NewWithConfig(p.ctx, pc)
	if err != nil { // pgxpool fails only on invalid pool sizes, checked by Validate
		wt.end()
		p.log.Error("create write pool", "node", n.key, "err", err)
		return nil
	}
	wt.pool = wp
	n.wp.Store(wp)
	n.wt.Store(wt)
	return wp
}

// writeTerm is one generation of a node's write pool, from its creation
// to the node's deposition (depose). It tracks the pool's connections, so
// that deposing the node can cut them (close their sockets) instead of
// waiting for operations in flight on a node that may black-hole every
// packet, and its ctx ends at deposition, so that calls waiting in the
// pool's Acquire go back to choosing the primary (acquireWrite).
type writeTerm struct {
	pool   *pgxpool.Pool
	ctx    context.Context
	cancel context.CancelFunc

	mu    sync.Mutex
	conns map[*pgconn.PgConn]net.Conn
	over  bool // end was called: new connections are refused
}

func newWriteTerm(parent context.Context) *writeTerm {
	ctx, cancel := context.WithCancel(context.WithoutCancel(parent))
	return &writeTerm{ctx: ctx, cancel: cancel, conns: map[*pgconn.PgConn]net.Conn{}}
}

// add tracks pc; false once the term is over (pc is not tracked then).
func (t *writeTerm) add(pc *pgconn.PgConn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.over {
		return false
	}
	t.conns[pc] = pc.Conn()
	return true
}

func (t *writeTerm) remove(pc *pgconn.PgConn) {
	t.mu.Lock()
	delete(t.conns, pc)
	t.mu.Unlock()
}

// end ends the term: acquires waiting on the pool are cancelled and every
// connection of the pool, idle or in use, has its socket closed. An
// operation in flight on one fails at once: with an error that
// [SafeToRetry] accepts if its request was not written yet, otherwise
// with a broken connection (ErrOutcomeUnknown, or ErrFailover in a
// transaction). pgxpool destroys the connections when they are released.
// Idempotent.
func (t *writeTerm) end() {
	t.cancel()
	t.mu.Lock()
	t.over = true
	conns := t.conns
	t.conns = map[*pgconn.PgConn]net.Conn{}
	t.mu.Unlock()
	for _, nc := range conns {
		// The TCP socket itself: a TLS close would first try to send an
		// alert to a node that may not answer.
		if u, ok := nc.(interface{ NetConn() net.Conn }); ok {
			nc = u.NetConn()
		}
		nc.Close()
	}
}

// gate is a context that ends once, for a signal to waiting calls.
type gate struct {
	ctx    context.Context
	cancel context.CancelFunc
}

// gate returns n's current hold gate, making one if needed.
func (n *node) gate() *gate {
	for {
		if g := n.holdGate.Load(); g != nil {
			return g
		}
		ctx, cancel := context.WithCancel(context.Background())
		if n.holdGate.CompareAndSwap(nil, &gate{ctx, cancel}) {
			continue
		}
		cancel()
	}
}

// openGate ends n's hold gate (waking the calls waiting in its write
// pool's Acquire) and puts a fresh one in its place.
func (n *node) openGate() {
	ctx, cancel := context.WithCancel(context.Background())
	if old := n.holdGate.Swap(&gate{ctx, cancel}); old != nil {
		old.cancel()
	}
}

// acquireWrite acquires a connection of n's write pool for ctx. It gives
// up as soon as n stops being the primary (its write term ends), with an
// error matching errNotPrimary, so that the funnel retries on the new
// primary instead of waiting for a connection of the old one.
func (p *Pool) acquireWrite(ctx context.Context, n *node) (*pgxpool.Conn, error) {
	var c *pgxpool.Conn
	err := p.acquireWriteWith(ctx, n, func(ctx context.Context, wp *pgxpool.Pool) (err error) {
		c, err = wp.Acquire(ctx)
		return err
	})
	return c, err
}

// acquireWriteWith is acquireWrite with the acquisition done by acquire,
// on n's write pool and a ctx that ends when n is deposed (driver/stdlib
// acquires through pgx's stdlib this way, connhook.go).
func (p *Pool) acquireWriteWith(ctx context.Context, n *node, acquire func(context.Context, *pgxpool.Pool) error) error {
	t := n.wt.Load()
	g := n.gate()
	actx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(t.ctx, cancel)
	stopHold := context.AfterFunc(g.ctx, cancel)
	err := acquire(actx, t.pool)
	stop()
	stopHold()
	cancel()
	if err != nil && ctx.Err() == nil {
		if t.ctx.Err() != nil {
			return &deposedError{node: n.key, err: err}
		}
		if g.ctx.Err() != nil {
			return &deposedError{node: n.key, err: err, held: true}
		}
	}
	return err
}

// deposedError is acquireWrite's error when the node was deposed, or
// (held) when a planned switchover of it started.
type deposedError struct {
	node string
	err  error
	held bool
}

func (e *deposedError) Error() string {
	if e.held {
		return "acquire on node " + e.node + " given up: a planned switchover of it started: " + e.err.Error()
	}
	return "acquire on node " + e.node + " given up: it stopped being the primary: " + e.err.Error()
}

// Unwrap matches errNotPrimary (nothing sent, retry on the primary) but
// not the context error, which is not the caller's.
func (e *deposedError) Unwrap() error { return errNotPrimary }

// uncheckedKey marks, in a connection's CustomData, a write connection
// opened ahead that has not passed the write connection's check yet.
const uncheckedKey = "pgha.unchecked"

type prewarmKey struct{}

func isPrewarm(ctx context.Context) bool { return ctx.Value(prewarmKey{}) != nil }

// prewarm opens one connection in n's write pool ahead of its promotion:
// n is the new leader, not writable yet. When its record turns writable,
// every pool of a fleet would otherwise open its first write connection
// to it at the same instant (BenchmarkFleet: 200 pools took about a
// second on two cores, most of it authentication); with the connection
// open, the first write costs one check query. The connection is not
// checked now (the node is still in recovery): it is checked on its first
// acquire, before any use, so no write reaches a standby. It counts in
// Stat once n is the primary; it is closed with n's write pool if n never
// becomes the primary. Called under p.mu.
func (p *Pool) prewarm(n *node) {
	if p.closed || n.dropped {
		return
	}
	wp := p.writePool(n)
	if wp == nil || wp.Stat().TotalConns() > 0 {
		return
	}
	p.wg.Go(func() {
		ctx, cancel := context.WithTimeout(context.WithValue(p.ctx, prewarmKey{}, true), p.cfg.FailoverTimeout)
		defer cancel()
		if c, err := wp.Acquire(ctx); err == nil {
			c.Release()
		}
	})
}

// depose closes n's write pool because n stopped being the primary (the
// leader record moved away, or it was found dead or read-only). It ends
// the pool's term (writeTerm.end): operations in flight on its
// connections fail at once with the typed errors (a request not yet
// written is retried on the primary), connections held by the
// application are cut likewise, and calls waiting in its Acquire go back
// to choosing the primary. Its connection attempts in progress are
// cancelled. Closing waits for the connections in use to be released, so
// it runs in the background. Called under p.mu.
func (p *Pool) depose(n *node) {
	wp := n.wp.Load()
	if wp == nil || n.wpClosed {
		return
	}
	n.wpClosed = true
	if t := n.wt.Load(); t != nil {
		t.end()
	}
	p.wg.Go(wp.Close)
}

// readPool returns n's read pool, creating it. Safe for concurrent use.
func (p *Pool) readPool(n *node) *pgxpool.Pool {
	if rp := n.rp.Load(); rp != nil {
		return rp
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if rp := n.rp.Load(); rp != nil {
		return rp
	}
	if p.closed || n.dropped {
		return nil
	}
	pc := p.cfg.Config.Copy()
	pc.ConnConfig = n.connConfig(pc.ConnConfig)
	rp, err := pgxpool.NewWithConfig(p.ctx, pc)
	if err != nil {
		p.log.Error("create read pool", "node", n.key, "err", err)
		return nil
	}
	n.rp.Store(rp)
	return rp
}

// closePools closes n's pools. It blocks until their connections are
// released, like [pgxpool.Pool.Close].
func (n *node) closePools() {
	var wg sync.WaitGroup
	for _, pp := range []*pgxpool.Pool{n.wp.Load(), n.rp.Load()} {
		if pp != nil {
			wg.Go(pp.Close)
		}
	}
	wg.Wait()
}
