package driver

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/pgha/pgha/internal/etcdclient"
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
	// hold is set while a planned switchover of the primary is requested
	// (etcd mode): new operations wait for the new primary, up to until
	// (see Config.SwitchoverDrain). Nil otherwise.
	hold atomic.Pointer[switchoverHold]
	// replicas are the nodes that may serve reads (lag checked per read).
	replicas atomic.Pointer[[]*node]
	rr       atomic.Uint32 // round-robin cursor
	waiters  atomic.Int32  // operations waiting for a primary

	probeConns    atomic.Int32 // open probe connections (ProbeStat)
	probeConnects atomic.Int64 // probe connection attempts (ProbeStat)

	reader Reader

	mu        sync.Mutex
	closed    bool
	changed   chan struct{} // closed and replaced on every topology update
	nodes     map[string]*node
	hostNodes []*node // Config.Hosts, in order
	// etcd state
	etcdMode     bool
	etcdAnswered bool
	// etcdLive: the member records' watch delivered since it last broke
	// (see byRecordsLocked).
	etcdLive    bool
	leader      string    // node name of the leader record, "" if none
	leaderSince time.Time // when a new leader record, not writable yet, arrived
	leaderRev   int64     // etcd revision of the leader record applied (applyLeader)
	members     map[string]keyspace.MemberRecord
	badMembers  map[string]string // member key → the unparseable value already logged
	splitWarned string            // the writable hosts last warned about
	lastErr     error             // why there is no primary, for ErrNoPrimary
	everPrimary bool              // a primary was ever found
	// single: host mode with one host. The host is presumed to be the
	// primary, as pgxpool presumes its host is there, and is probed only
	// after a failure or while an operation waits (see probeLoop).
	single      bool
	probeRounds int // probe rounds applied
	emptyStat   *pgxpool.Stat

	kick     chan struct{} // wakes the prober
	reread   chan struct{} // asks for a read of the leader key (helpLeaderLocked)
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	ownsEtcd *clientv3.Client
	etcd     *clientv3.Client // the client watching the cluster; nil in host mode
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
	cfg = cfg.Copy()
	cfg.Config = cfg.poolConfig()
	cfg.PoolConfig = cfg.Config
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
		reread:     make(chan struct{}, 1),
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
	if cfg.TracerProvider != nil && cfg.ConnConfig.Tracer == nil {
		cfg.ConnConfig.Tracer = newQueryTracer(cfg.TracerProvider)
	}
	// An empty Stat for Stat() while there is no primary: pgxpool.Stat has
	// unexported fields, so take one from a closed, never-used pool.
	ec := cfg.Config.Copy()
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
			// gRPC raises a keepalive below 10 s to 10 s: a stream pinned
			// to a dead etcd member is found by the watches' own silence
			// bound (internal/etcdmirror), not by this.
			cli, err = etcdclient.New(clientv3.Config{
				Endpoints:            cfg.EtcdEndpoints,
				TLS:                  cfg.EtcdTLS,
				Username:             cfg.EtcdUsername,
				Password:             cfg.EtcdPassword,
				DialTimeout:          5 * time.Second,
				DialKeepAliveTime:    10 * time.Second,
				DialKeepAliveTimeout: 2 * time.Second,
			})
			if err != nil {
				return nil, etcdClientError(cfg, err)
			}
			p.ownsEtcd = cli
		}
	}
	p.ctx, p.cancel = context.WithCancel(context.WithoutCancel(ctx))
	// Set before the etcd watch starts: it reads p.single (CI's race
	// detector caught the write after).
	p.single = !p.etcdMode && len(p.hostNodes) == 1
	p.etcd = cli
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
	if p.single {
		p.mu.Lock()
		p.publishLocked("single host")
		p.mu.Unlock()
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
