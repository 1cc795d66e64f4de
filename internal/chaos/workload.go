package chaos

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgha/pgha/driver"
	"github.com/pgha/pgha/internal/testutil"
)

// The SQL of the workload: a register per key, and a log of every value
// written, appended in the same statement (so a write's presence in the
// log after the heal tells whether an unknown write happened).
const (
	schemaSQL = `CREATE TABLE IF NOT EXISTS chaos_reg (k int PRIMARY KEY, v bigint NOT NULL);
CREATE TABLE IF NOT EXISTS chaos_log (v bigint PRIMARY KEY, k int NOT NULL);
CREATE TABLE IF NOT EXISTS chaos_plain (id bigint PRIMARY KEY)`
	writeSQL = `WITH l AS (INSERT INTO chaos_log (v, k) VALUES ($1, $2))
INSERT INTO chaos_reg (k, v) VALUES ($2, $1) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v`
	readSQL = `SELECT v FROM chaos_reg WHERE k = $1`
	// plainSQL is the plain client's write: one new id.
	plainSQL = `INSERT INTO chaos_plain (id) VALUES ($1)`
)

type opKind uint8

const (
	opRead opKind = iota
	opWrite
)

type outcome uint8

const (
	outOK      outcome = iota
	outFailed          // the pool says it was never executed
	outUnknown         // it may have been executed
)

func (o outcome) String() string {
	return [...]string{"ok", "failed", "unknown"}[o]
}

// op is one operation of the history. Times are nanoseconds since the
// run's start (monotonic clock).
type op struct {
	client  int
	kind    opKind
	key     int
	value   int64 // write: the value written; read: the value read (0: none)
	call    int64
	ret     int64
	outcome outcome
	err     string
}

// workload runs the clients.
type workload struct {
	c     *cluster
	tl    *timeline
	pools []*driver.Pool

	mu    sync.Mutex
	ops   []op
	plain []plainWrite

	next atomic.Int64 // last value written
	stop func()
}

// newPool builds a driver.Pool that follows the cluster through etcd and
// reaches each node through its client proxy: the nodes advertise their
// replication proxies, and the pool's dialer maps one to the other.
func (c *cluster) newPool(ctx context.Context, logf *os.File) (*driver.Pool, error) {
	pcfg, err := pgxpool.ParseConfig(fmt.Sprintf("postgres://postgres:%s@127.0.0.1/postgres?sslmode=disable&connect_timeout=2",
		url.QueryEscape(testutil.PostgresSuperuserPassword)))
	if err != nil {
		return nil, err
	}
	route := map[string]string{}
	for _, n := range c.nodes {
		route[n.repl.Addr()] = n.client.Addr()
	}
	var d net.Dialer
	pcfg.ConnConfig.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if to, ok := route[addr]; ok {
			addr = to
		}
		return d.DialContext(ctx, network, addr)
	}
	pcfg.MaxConns = 4
	dcfg := driver.LocalConfig()
	dcfg.Config, dcfg.Etcd, dcfg.Cluster = pcfg, c.cli, clusterName
	dcfg.FailoverTimeout = 8 * time.Second
	dcfg.Logger = slog.New(slog.NewTextHandler(logf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	return driver.NewWithConfig(ctx, dcfg)
}

// plainWrite is one write of the plain client: id, times as in op, and
// the outcome (failed: the driver says nothing reached the server, or
// the server refused it).
type plainWrite struct {
	id      int64
	call    int64
	ret     int64
	outcome outcome
}

// plainConnString is the plain client's connection string: every node's
// client proxy, target_session_attrs=read-write, the way most
// applications reach a cluster without driver.Pool. It never reads etcd:
// it writes to whichever server says it is writable.
func (c *cluster) plainConnString() string {
	var hosts []string
	for _, n := range c.nodes {
		hosts = append(hosts, n.client.Addr())
	}
	return fmt.Sprintf("postgres://postgres:%s@%s/postgres?sslmode=disable&connect_timeout=2&target_session_attrs=read-write",
		url.QueryEscape(testutil.PostgresSuperuserPassword), strings.Join(hosts, ","))
}

// plainClient writes new ids back to back (about 50 a second) through one
// pgx.Conn opened from plainConnString, reconnecting after any error. Each
// try writes a new id, so an id is acknowledged at most once.
func (w *workload) plainClient(ctx context.Context, cc *pgx.ConnConfig) {
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	pause := time.NewTimer(0)
	defer pause.Stop()
	var id int64
	for {
		select {
		case <-ctx.Done():
			return
		case <-pause.C:
		}
		pause.Reset(20 * time.Millisecond)
		if conn == nil {
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			c, err := pgx.ConnectConfig(cctx, cc)
			cancel()
			if err != nil {
				continue
			}
			conn = c
		}
		id++
		pw := plainWrite{id: id, call: w.tl.since(time.Now())}
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := conn.Exec(wctx, plainSQL, id)
		cancel()
		pw.ret = w.tl.since(time.Now())
		pw.outcome = classifyPlain(err)
		if ctx.Err() != nil && pw.outcome != outOK {
			pw.outcome = outUnknown
		}
		w.mu.Lock()
		w.plain = append(w.plain, pw)
		w.mu.Unlock()
		if err != nil {
			conn.Close(context.Background())
			conn = nil
		}
	}
}

// classifyPlain is classifyWrite for a plain pgx connection: failed only
// when pgconn says nothing was sent, or the server aborted the statement.
func classifyPlain(err error) outcome {
	if err == nil {
		return outOK
	}
	if pgconn.SafeToRetry(err) {
		return outFailed
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Severity == "ERROR" {
		return outFailed
	}
	return outUnknown
}

// plainHistory returns a copy of the plain client's writes so far.
func (w *workload) plainHistory() []plainWrite {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]plainWrite(nil), w.plain...)
}

// startWorkload starts clients goroutines over two pools and the plain
// client, after creating the tables.
func startWorkload(t interface {
	Fatalf(string, ...any)
}, c *cluster, tl *timeline, clients, keys int, seed int64, logf *os.File) *workload {
	w := &workload{c: c, tl: tl}
	ctx, cancel := context.WithCancel(context.Background())
	for range 2 {
		p, err := c.newPool(ctx, logf)
		if err != nil {
			cancel()
			for _, p := range w.pools {
				p.Close()
			}
			t.Fatalf("driver.NewWithConfig: %v", err)
		}
		w.pools = append(w.pools, p)
	}
	sctx, scancel := context.WithTimeout(ctx, 30*time.Second)
	_, err := w.pools[0].Exec(sctx, schemaSQL)
	scancel()
	if err != nil {
		cancel()
		w.closePools()
		t.Fatalf("create the workload's tables: %v", err)
	}
	cc, err := pgx.ParseConfig(c.plainConnString())
	if err != nil {
		cancel()
		w.closePools()
		t.Fatalf("parse the plain client's connection string: %v", err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); w.plainClient(ctx, cc) }()
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.client(ctx, i, w.pools[i%len(w.pools)], keys, rand.New(rand.NewPCG(uint64(seed), uint64(i)+1)))
		}()
	}
	w.stop = func() { cancel(); wg.Wait(); w.closePools() }
	return w
}

func (w *workload) closePools() {
	for _, p := range w.pools {
		p.Close()
	}
}

// client runs operations back to back with a short pause between them.
func (w *workload) client(ctx context.Context, id int, pool *driver.Pool, keys int, rng *rand.Rand) {
	pause := time.NewTimer(0)
	defer pause.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-pause.C:
		}
		o := op{client: id, key: rng.IntN(keys)}
		octx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if rng.IntN(2) == 0 {
			o.kind, o.value = opWrite, w.next.Add(1)
			o.call = w.tl.since(time.Now())
			_, err := pool.Exec(octx, writeSQL, o.value, o.key)
			o.ret = w.tl.since(time.Now())
			o.outcome = classifyWrite(err)
			if err != nil {
				o.err = err.Error()
			}
		} else {
			o.kind = opRead
			o.call = w.tl.since(time.Now())
			err := pool.QueryRow(octx, readSQL, o.key).Scan(&o.value)
			o.ret = w.tl.since(time.Now())
			switch {
			case errors.Is(err, pgx.ErrNoRows):
				o.value = 0
			case err != nil:
				// A read that failed has no effect: it is left out of
				// the check.
				o.outcome, o.err = outFailed, err.Error()
			}
		}
		cancel()
		if ctx.Err() != nil && o.outcome != outOK {
			// Cut short by the end of the run: the outcome is unknown.
			o.outcome = outUnknown
		}
		w.mu.Lock()
		w.ops = append(w.ops, o)
		w.mu.Unlock()
		pause.Reset(time.Duration(5+rng.IntN(10)) * time.Millisecond)
	}
}

// classifyWrite says what a write's error means for its outcome. Only
// errors that guarantee nothing was committed count as failed; everything
// else is unknown and resolved later against the log table.
func classifyWrite(err error) outcome {
	if err == nil {
		return outOK
	}
	if errors.Is(err, driver.ErrNoPrimary) || errors.Is(err, driver.ErrFailover) || driver.SafeToRetry(err) {
		return outFailed
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Severity == "ERROR" {
		// The server aborted the statement (e.g. read-only transaction):
		// an autocommit statement that errors commits nothing.
		return outFailed
	}
	return outUnknown
}

// history returns a copy of the operations so far.
func (w *workload) history() []op {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]op(nil), w.ops...)
}

// ackTimes are the completion times of acknowledged writes, sorted.
func ackTimes(ops []op) []int64 {
	var ts []int64
	for _, o := range ops {
		if o.kind == opWrite && o.outcome == outOK {
			ts = append(ts, o.ret)
		}
	}
	sort.Slice(ts, func(i, j int) bool { return ts[i] < ts[j] })
	return ts
}

// unavailability is the longest time without an acknowledged write within
// [from, to), counting a gap that starts before from only from from.
func unavailability(acks []int64, from, to int64) time.Duration {
	var worst int64
	prev := from
	i := sort.Search(len(acks), func(i int) bool { return acks[i] > from })
	for ; i < len(acks) && acks[i] <= to; i++ {
		worst = max(worst, acks[i]-prev)
		prev = acks[i]
	}
	// The time from the last acknowledgement to the window's end.
	worst = max(worst, to-prev)
	return time.Duration(worst)
}
