package driver_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/pgha/pgha/driver"
	"github.com/pgha/pgha/internal/keyspace"
	"github.com/pgha/pgha/internal/testutil"
	"github.com/pgha/pgha/replicate"
)

// TestResolveOutcomeNormalPath: with resolution on, Exec and Commit behave
// as without it when nothing fails (command tags, statement errors, a
// failed transaction's commit, the transaction closed after Commit).
func TestResolveOutcomeNormalPath(t *testing.T) {
	inst := testutil.StartPostgres(t, testutil.PostgresOptions{Name: "rn1"})
	ctx := testutil.Ctx(t, time.Minute)
	if err := testutil.PostgresExec(ctx, inst, "create table w(v int primary key, s text)"); err != nil {
		t.Fatal(err)
	}
	p := newPool(t, parse(t, connString("pgha_resolve_outcome=on", inst)))
	var o driver.Outcome
	octx := driver.WithOutcome(ctx, &o)
	tag, err := p.Exec(octx, "insert into w values ($1, $2), ($3, $4)", 1, "a", 2, nil)
	if err != nil || tag.String() != "INSERT 0 2" || o.Resolved {
		t.Fatalf("Exec = %q, %v (outcome %+v); want INSERT 0 2, not resolved", tag, err, o)
	}
	if tag, err = p.Exec(ctx, "update w set s = @s where v = @v", pgx.NamedArgs{"s": "b", "v": 2}); err != nil || tag.RowsAffected() != 1 {
		t.Fatalf("Exec with named arguments = %q, %v", tag, err)
	}
	if tag, err = p.Exec(ctx, "delete from w where v = $1", pgx.QueryExecModeCacheDescribe, 1); err != nil || tag.RowsAffected() != 1 {
		t.Fatalf("Exec with a mode argument = %q, %v", tag, err)
	}
	_, err = p.Exec(ctx, "insert into w values (2, 'dup')")
	if err == nil || !strings.Contains(err.Error(), "23505") || errors.Is(err, driver.ErrOutcomeUnknown) {
		t.Fatalf("duplicate key through Exec: %v; want the server's 23505 as is", err)
	}
	// A statement that refuses a transaction block runs alone.
	if _, err := p.Exec(ctx, "vacuum w"); err != nil {
		t.Fatalf("vacuum through a resolving Exec: %v", err)
	}
	// A connection used by the resolving path stays usable.
	var n int
	if err := p.QueryRow(ctx, "select count(*) from w").Scan(&n); err != nil || n != 1 {
		t.Fatalf("count = %d, %v; want 1", n, err)
	}

	tx, err := p.Begin(octx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "insert into w values (3)"); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatalf("commit: %v", err)
	}
	if err := tx.Rollback(ctx); !errors.Is(err, pgx.ErrTxClosed) {
		t.Fatalf("rollback after commit: %v; want pgx.ErrTxClosed", err)
	}
	if _, err := tx.Exec(ctx, "select 1"); !errors.Is(err, pgx.ErrTxClosed) {
		t.Fatalf("exec after commit: %v; want pgx.ErrTxClosed", err)
	}
	tx, err = p.Begin(octx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "insert into w values (3)"); err == nil {
		t.Fatal("duplicate insert in a transaction succeeded")
	}
	if err := tx.Commit(ctx); !errors.Is(err, pgx.ErrTxCommitRollback) {
		t.Fatalf("commit of a failed transaction: %v; want pgx.ErrTxCommitRollback", err)
	}
	if err := p.QueryRow(ctx, "select count(*) from w").Scan(&n); err != nil || n != 2 {
		t.Fatalf("count = %d, %v; want 2", n, err)
	}
}

// TestResolveOutcomeSameServer: a COMMIT whose session is terminated while
// it runs (the server stays up) is resolved on the same server: not
// committed, where it used to be ErrOutcomeUnknown.
func TestResolveOutcomeSameServer(t *testing.T) {
	inst := testutil.StartPostgres(t, testutil.PostgresOptions{Name: "rs1"})
	ctx := testutil.Ctx(t, time.Minute)
	slowCommits(t, ctx, inst)
	p := newPool(t, parse(t, connString("pgha_failover_timeout=5s", inst)))
	var o driver.Outcome
	err := terminatedCommit(t, ctx, p, inst, driver.WithOutcome(ctx, &o))
	if !errors.Is(err, driver.ErrNotCommitted) || errors.Is(err, driver.ErrOutcomeUnknown) {
		t.Fatalf("commit whose session was ended while committing: %v; want ErrNotCommitted alone", err)
	}
	if !o.Resolved || o.XID == 0 || o.Err == nil {
		t.Fatalf("outcome %+v; want resolved, with the transaction id and the connection error", o)
	}
	if n, err := testutil.PostgresQueryInt(ctx, inst, "select count(*) from w where v = -1"); err != nil || n != 0 {
		t.Fatalf("rows of the not-committed transaction: %d, %v", n, err)
	}
}

// slowCommits creates w(v int primary key) where the COMMIT of a
// transaction that inserted a negative v runs for 30 s (a deferred
// trigger), so a test can break it while it runs.
func slowCommits(t *testing.T, ctx context.Context, inst *replicate.Instance) {
	t.Helper()
	for _, sql := range []string{
		"create table if not exists w(v int primary key)",
		"create function slow() returns trigger language plpgsql as $$ begin if new.v < 0 then perform pg_sleep(30); end if; return null; end $$",
		"create constraint trigger slow after insert on w deferrable initially deferred for each row execute function slow()",
	} {
		if err := testutil.PostgresExec(ctx, inst, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
}

// terminatedCommit begins a transaction on p with beginCtx, inserts -1
// into w (made slow to commit by slowCommits), and returns what its Commit
// returns once inst's backend was terminated while running the COMMIT.
func terminatedCommit(t *testing.T, ctx context.Context, p *driver.Pool, inst *replicate.Instance, beginCtx context.Context) error {
	t.Helper()
	_, pid, commitErr := slowCommit(t, ctx, p, beginCtx)
	waitCommitting(t, ctx, inst, pid)
	if err := testutil.PostgresExec(ctx, inst, "select pg_terminate_backend($1)", pid); err != nil {
		t.Fatal(err)
	}
	return <-commitErr
}

// slowCommit begins a transaction on p with beginCtx, inserts -1 into w
// (made slow to commit by slowCommits) and starts its Commit, whose
// result arrives on the channel; pid is its backend.
func slowCommit(t *testing.T, ctx context.Context, p *driver.Pool, beginCtx context.Context) (pgx.Tx, uint32, <-chan error) {
	t.Helper()
	tx, err := p.Begin(beginCtx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "insert into w values (-1)"); err != nil {
		t.Fatal(err)
	}
	pid := tx.Conn().PgConn().PID()
	commitErr := make(chan error, 1)
	go func() { commitErr <- tx.Commit(ctx) }()
	return tx, pid, commitErr
}

// waitCommitting waits until backend pid runs its COMMIT.
func waitCommitting(t *testing.T, ctx context.Context, inst *replicate.Instance, pid uint32) {
	t.Helper()
	testutil.Eventually(t, 10*time.Second, "COMMIT running", func() error {
		n, err := testutil.PostgresQueryInt(ctx, inst, "select count(*) from pg_stat_activity where pid = $1 and query = 'commit' and state = 'active'", pid)
		if err == nil && n == 0 {
			err = errors.New("not yet")
		}
		return err
	})
}

// forkCluster is a primary and a standby (synchronous or not) with an
// etcd leader record and history as the HA manager writes them, and a
// resolving pool; failover does what the manager does on a failover,
// history entry with its first transaction id included.
type forkCluster struct {
	t                *testing.T
	name             string
	primary, standby *replicate.Instance
	etcd             *testutil.EtcdCluster
	cli              *clientv3.Client
	layout           keyspace.Layout
	term1            *leaderTerm
	p                *driver.Pool
}

func newForkCluster(t *testing.T, ctx context.Context, name string, sync bool) *forkCluster {
	c := &forkCluster{t: t, name: name}
	c.primary, c.standby = pairMode(t, name, sync)
	c.etcd = testutil.StartEtcd(t, 1)
	c.cli = c.etcd.Client(t)
	c.layout, _ = keyspace.NewLayout("", name)
	var err error
	if c.term1, err = campaignT(ctx, c.etcd.Endpoints(), name, name+"1", c.primary, true); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.term1.Close)
	c.putHistory(ctx, keyspace.HistoryEntry{Timeline: 1, Leader: name + "1", Reason: "bootstrap"})
	c.p = newPool(t, parse(t, connString("pgha_resolve_outcome=on&pgha_failover_timeout=30s&pgha_cluster="+name+"&pgha_etcd="+c.etcd.Endpoints()[0])))
	return c
}

func (c *forkCluster) putHistory(ctx context.Context, entries ...keyspace.HistoryEntry) {
	b, err := keyspace.Encode(keyspace.HistoryRecord{Entries: entries})
	if err != nil {
		c.t.Fatal(err)
	}
	if _, err := c.cli.Put(ctx, c.layout.History(), string(b)); err != nil {
		c.t.Fatal(err)
	}
}

// failover promotes the standby after the primary died, as the manager
// does: leader record (not writable), promotion, the first transaction
// id of the new timeline read at once and appended to the history, then
// before (run between the promotion and the history entry), then the
// leader record made writable. It returns the first id.
func (c *forkCluster) failover(ctx context.Context, before func()) uint64 {
	t := c.t
	if err := c.term1.Resign(ctx); err != nil {
		t.Fatalf("resign: %v", err)
	}
	term2, err := campaignT(ctx, c.etcd.Endpoints(), c.name, c.name+"2", c.standby, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { term2.Resign(context.Background()); term2.Close() })
	tl, err := c.standby.Promote(ctx)
	if err != nil {
		t.Fatalf("promote: %v", err)
	}
	first, err := testutil.PostgresQueryInt(ctx, c.standby, "select pg_snapshot_xmax(pg_current_snapshot())::text::bigint")
	if err != nil {
		t.Fatalf("first transaction id: %v", err)
	}
	if before != nil {
		before()
	}
	c.putHistory(ctx, keyspace.HistoryEntry{Timeline: 1, Leader: c.name + "1", Reason: "bootstrap"},
		keyspace.HistoryEntry{Timeline: tl, Leader: c.name + "2", Reason: "failover", FirstXID: uint64(first)})
	if err := term2.Proclaim(ctx, leaderRecord(c.name+"2", c.standby, true)); err != nil {
		t.Fatalf("proclaim: %v", err)
	}
	return uint64(first)
}

// present returns the values of w on inst.
func present(t *testing.T, ctx context.Context, inst *replicate.Instance) map[int]bool {
	t.Helper()
	m := map[int]bool{}
	for _, v := range queryInts(t, ctx, inst, "select v from w") {
		m[v] = true
	}
	return m
}

// walsenderPIDs returns the PIDs of inst's walsenders.
func walsenderPIDs(t *testing.T, ctx context.Context, inst *replicate.Instance) []int {
	t.Helper()
	pids := queryInts(t, ctx, inst, "select pid from pg_stat_replication")
	if len(pids) == 0 {
		t.Fatalf("no walsender on %s", inst.Config().Name)
	}
	return pids
}

// queryInts runs sql, one int4 column, on inst.
func queryInts(t *testing.T, ctx context.Context, inst *replicate.Instance, sql string) []int {
	t.Helper()
	conn, err := inst.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, sql)
	if err != nil {
		t.Fatal(err)
	}
	vs, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	out := make([]int, len(vs))
	for i, v := range vs {
		out[i] = int(v)
	}
	return out
}

// TestResolveOutcomeForkReusesXIDs is the trap of issue 19 made
// deterministic: in asynchronous mode the old primary commits
// transactions that never reach the standby, then a COMMIT breaks with
// the primary's death; the promoted standby assigns the same transaction
// ids again, to transactions that commit, before the pool asks. Only the
// history's first-id rule answers "not committed"; pg_xact_status alone
// says "committed".
func TestResolveOutcomeForkReusesXIDs(t *testing.T) {
	ctx := testutil.Ctx(t, 2*time.Minute)
	c := newForkCluster(t, ctx, "rx", false)
	slowCommits(t, ctx, c.primary)
	for i := 1; i <= 10; i++ {
		if _, err := c.p.Exec(ctx, "insert into w values ($1)", i); err != nil {
			t.Fatal(err)
		}
	}
	testutil.Eventually(t, 30*time.Second, "standby replayed the first rows", func() error {
		n, err := testutil.PostgresQueryInt(ctx, c.standby, "select count(*) from w")
		if err == nil && n != 10 {
			err = fmt.Errorf("%d rows", n)
		}
		return err
	})
	// From here nothing reaches the standby.
	senders := walsenderPIDs(t, ctx, c.primary)
	for _, pid := range senders {
		if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
	}
	for i := 11; i <= 40; i++ {
		if _, err := c.p.Exec(ctx, "insert into w values ($1)", i); err != nil {
			t.Fatal(err)
		}
	}
	var o driver.Outcome
	_, pid, commitErr := slowCommit(t, ctx, c.p, driver.WithOutcome(ctx, &o))
	waitCommitting(t, ctx, c.primary, pid)
	kill(t, c.primary)
	for _, pid := range senders {
		syscall.Kill(pid, syscall.SIGKILL) // stopped: it never sends what it holds
	}
	first := c.failover(ctx, func() {
		// The new timeline reassigns the old primary's unreplicated ids
		// (31 commits), to transactions that commit.
		if err := testutil.PostgresExec(ctx, c.standby, "do $$ begin for i in 1..100 loop perform pg_current_xact_id(); commit; end loop; end $$"); err != nil {
			t.Fatalf("advance transaction ids: %v", err)
		}
	})
	err := <-commitErr
	t.Logf("first transaction id of the new timeline %d; broken commit's id %d; outcome %+v; Commit: %v", first, o.XID, o, err)
	if o.XID < first {
		t.Fatalf("the broken commit's id %d is below the new timeline's first %d: the test did not make ids diverge", o.XID, first)
	}
	var status string
	conn, cerr := c.standby.Connect(ctx)
	if cerr != nil {
		t.Fatal(cerr)
	}
	defer conn.Close(context.Background())
	if err := conn.QueryRow(ctx, "select pg_xact_status($1::text::xid8)", strconv.FormatUint(o.XID, 10)).Scan(&status); err != nil {
		t.Fatal(err)
	}
	rows := present(t, ctx, c.standby)
	if err == nil {
		t.Fatalf("WRONG ANSWER: Commit returned nil (resolved as committed: %+v), but row -1 is absent on the new primary, where pg_xact_status(%d) = %q belongs to another transaction", o, o.XID, status)
	}
	if !errors.Is(err, driver.ErrNotCommitted) {
		t.Fatalf("Commit = %v; want ErrNotCommitted (pg_xact_status(%d) on the new primary: %q)", err, o.XID, status)
	}
	if rows[-1] {
		t.Fatalf("row -1 present on the new primary although Commit said not committed")
	}
	if status != "committed" {
		t.Fatalf("pg_xact_status(%d) = %q on the new primary; want committed (the id reused), or the test proves nothing", o.XID, status)
	}
}

// unknownNotReceived is the reason for an unknown outcome whose
// transaction id never arrived (driver's judgeFork).
const unknownNotReceived = "the transaction id was not received before the connection failed"

// outcomeTally counts the answers of a resolving workload.
type outcomeTally struct {
	acked, resolvedCommitted, notCommitted, unknown, failover int
	reasons                                                   map[string]int
}

func (a *outcomeTally) add(b outcomeTally) {
	a.acked += b.acked
	a.resolvedCommitted += b.resolvedCommitted
	a.notCommitted += b.notCommitted
	a.unknown += b.unknown
	a.failover += b.failover
	if a.reasons == nil {
		a.reasons = map[string]int{}
	}
	for r, n := range b.reasons {
		a.reasons[r] += n
	}
}

func (a outcomeTally) broken() int { return a.resolvedCommitted + a.notCommitted + a.unknown }

func (a outcomeTally) String() string {
	return fmt.Sprintf("broken commits %d: committed %d, not committed %d, unknown %d; plain acks %d, ErrFailover %d; unknown reasons %v",
		a.broken(), a.resolvedCommitted, a.notCommitted, a.unknown, a.acked, a.failover, a.reasons)
}

// TestResolveOutcomeRandomKill: 12 goroutines commit through a resolving
// pool (autocommit Exec and explicit transactions, alternately) while the
// primary dies at a random instant, by kill -9 of its postmaster or by an
// immediate shutdown (every backend ends at once, mid-commit, and no
// checkpoint is written: a crash for the WAL), in synchronous and
// asynchronous mode; then the standby is promoted as the HA manager does.
// Every commit resolved as committed must be on the new primary, every
// one resolved as not committed (and every ErrFailover) absent; unknowns
// are counted, and may only be calls whose transaction id never arrived.
// 3 rounds per mode; PGHA_TEST_ROUNDS=n for more (a measurement).
func TestResolveOutcomeRandomKill(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("PGHA_TEST_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	t.Logf("seed %d (PGHA_TEST_SEED to repeat)", seed)
	rng := rand.New(rand.NewPCG(seed, 19))
	rounds := 3
	if s := os.Getenv("PGHA_TEST_ROUNDS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("PGHA_TEST_ROUNDS=%q: want a positive number of rounds per mode", s)
		}
		rounds = n
	}
	for _, mode := range []struct {
		name string
		sync bool
	}{{"sync", true}, {"async", false}} {
		t.Run(mode.name, func(t *testing.T) {
			var total outcomeTally
			// A crash can fall between commits: run up to 5 more rounds
			// until at least 3 broken commits were resolved.
			r := 0
			for ; r < rounds || total.resolvedCommitted+total.notCommitted < 3 && r < rounds+5; r++ {
				total.add(randomKillRound(t, fmt.Sprintf("rk%s%d", mode.name[:1], r), mode.sync, rng))
			}
			t.Logf("%s mode, %d rounds: %v", mode.name, r, total)
			if total.resolvedCommitted+total.notCommitted < 3 {
				t.Fatalf("%d broken commits resolved in %d rounds, want at least 3: the test proves too little", total.resolvedCommitted+total.notCommitted, r)
			}
			// With the history in etcd, every broken commit whose id
			// arrived is resolved: the only unknowns left are calls
			// whose connection failed before the id did (issue 19's
			// 1 % target is not met by that alone; see the report).
			for r, n := range total.reasons {
				if r != unknownNotReceived {
					t.Errorf("%d broken commits left unknown although their id was learned: %s", n, r)
				}
			}
		})
	}
}

func randomKillRound(t *testing.T, name string, syncMode bool, rng *rand.Rand) outcomeTally {
	ctx := testutil.Ctx(t, 2*time.Minute)
	c := newForkCluster(t, ctx, name, syncMode)
	type answer struct {
		kind string // acked, committed, not committed, unknown, failover
		err  error
	}
	var (
		mu      sync.Mutex
		answers = map[int]answer{}
		next    atomic.Int64
		acks    atomic.Int64
		stop    = make(chan struct{})
		wg      sync.WaitGroup
	)
	for g := range 12 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				id := int(next.Add(1))
				var o driver.Outcome
				octx := driver.WithOutcome(ctx, &o)
				var err error
				if g%2 == 0 { // exec
					_, err = c.p.Exec(octx, "insert into w values ($1)", id)
				} else {
					var tx pgx.Tx
					if tx, err = c.p.Begin(octx); err == nil {
						if _, err = tx.Exec(ctx, "insert into w values ($1)", id); err == nil {
							err = tx.Commit(octx)
						} else {
							tx.Rollback(ctx)
						}
					}
				}
				a := answer{err: err}
				switch {
				case err == nil && o.Resolved:
					a.kind = "committed"
				case err == nil:
					a.kind = "acked"
					acks.Add(1)
				case errors.Is(err, driver.ErrNotCommitted):
					a.kind = "not committed"
				case errors.Is(err, driver.ErrOutcomeUnknown):
					a.kind = "unknown: " + o.Reason
				case errors.Is(err, driver.ErrFailover):
					a.kind = "failover"
				default:
					a.kind = "other"
				}
				mu.Lock()
				answers[id] = a
				mu.Unlock()
				if ctx.Err() != nil {
					return
				}
			}
		})
	}
	stopped := false
	halt := func() {
		if !stopped {
			stopped = true
			close(stop)
			wg.Wait()
		}
	}
	defer halt()
	waitAcks := func(n int64, what string) {
		testutil.Eventually(t, time.Minute, what, func() error {
			if got := acks.Load(); got < n {
				return fmt.Errorf("%d acknowledged commits, want %d", got, n)
			}
			return nil
		})
	}
	// A random instant: after a random number of commits.
	waitAcks(20+rng.Int64N(400), "commits before the crash")
	fault := "kill -9"
	if rng.IntN(2) == 0 {
		fault = "immediate shutdown"
		exited := c.primary.Exited()
		if err := syscall.Kill(c.primary.PID(), syscall.SIGQUIT); err != nil {
			t.Fatal(err)
		}
		select {
		case <-exited:
		case <-ctx.Done():
			t.Fatal("postmaster did not exit after SIGQUIT")
		}
	} else {
		kill(t, c.primary)
	}
	before := acks.Load()
	c.failover(ctx, nil)
	waitAcks(before+100, "commits after the failover")
	halt()

	rows := present(t, ctx, c.standby)
	tally := outcomeTally{reasons: map[string]int{}}
	for id, a := range answers {
		kind := a.kind
		if r, ok := strings.CutPrefix(kind, "unknown: "); ok {
			kind = "unknown"
			tally.reasons[r]++
		}
		switch kind {
		case "acked":
			tally.acked++
			if syncMode && !rows[id] {
				t.Errorf("%s: commit %d acknowledged in synchronous mode is missing on the new primary", name, id)
			}
		case "committed":
			tally.resolvedCommitted++
			if !rows[id] {
				t.Errorf("%s: WRONG ANSWER: commit %d resolved as committed is missing on the new primary (%v)", name, id, a.err)
			}
		case "not committed":
			tally.notCommitted++
			if rows[id] {
				t.Errorf("%s: WRONG ANSWER: commit %d resolved as not committed is present on the new primary: %v", name, id, a.err)
			}
		case "failover":
			tally.failover++
			if rows[id] {
				t.Errorf("%s: write %d that failed with ErrFailover is present on the new primary: %v", name, id, a.err)
			}
		case "unknown":
			tally.unknown++
			t.Logf("%s: write %d unknown: %v", name, id, a.err)
		default:
			t.Errorf("%s: write %d: unexpected error %v", name, id, a.err)
		}
	}
	t.Logf("%s (%s): %v", name, fault, tally)
	return tally
}
