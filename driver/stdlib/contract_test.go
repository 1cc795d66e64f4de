package stdlib_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	pgxstdlib "github.com/jackc/pgx/v5/stdlib"

	"github.com/pgha/pgha/driver/stdlib"
	"github.com/pgha/pgha/internal/testutil"
)

// TestContract runs one script through pgx's stdlib.OpenDBFromPool over a
// *pgxpool.Pool and through stdlib.OpenDBFromPool over a *driver.Pool,
// against one server, and expects the same transcript: results, column
// types, errors, prepared statements, transactions, Ping and Stats.
func TestContract(t *testing.T) {
	primary := testutil.StartPostgres(t, testutil.PostgresOptions{Name: "sc1"})
	ctx := testutil.Ctx(t, time.Minute)
	raw, err := pgxpool.New(ctx, connString("", primary))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(raw.Close)
	ours := newPool(t, connString("", primary))

	pgxDB := pgxstdlib.OpenDBFromPool(raw)
	closeDB(t, pgxDB)
	ourDB := stdlib.OpenDBFromPool(ours)
	closeDB(t, ourDB)

	want := contractScript(t, ctx, pgxDB, "pgx", func(dc any) *pgx.Conn { return dc.(*pgxstdlib.Conn).Conn() })
	got := contractScript(t, ctx, ourDB, "ours", func(dc any) *pgx.Conn { return dc.(*stdlib.Conn).Conn() })
	if len(want) < 30 {
		t.Fatalf("pgx's transcript has %d lines, the script stopped early:\n%s", len(want), strings.Join(want, "\n"))
	}
	for i := range max(len(want), len(got)) {
		var w, g string
		if i < len(want) {
			w = want[i]
		}
		if i < len(got) {
			g = got[i]
		}
		if w != g {
			t.Errorf("line %d:\n  pgx:  %s\n  ours: %s", i, w, g)
		}
	}
	if t.Failed() || testing.Verbose() {
		t.Logf("pgx transcript:\n%s", strings.Join(want, "\n"))
	}
}

// contractScript runs the script on db, using table c_<name>, and returns
// its transcript (table names replaced by "T"). raw extracts the *pgx.Conn
// from the driver connection in (*sql.Conn).Raw.
func contractScript(t *testing.T, ctx context.Context, db *sql.DB, name string, raw func(any) *pgx.Conn) []string {
	t.Helper()
	tbl := "c_" + name
	var out []string
	log := func(format string, args ...any) {
		out = append(out, strings.ReplaceAll(fmt.Sprintf(format, args...), tbl, "T"))
	}
	errStr := func(err error) string {
		if err == nil {
			return "<nil>"
		}
		var pe *pgconn.PgError
		if errors.As(err, &pe) {
			return "SQLSTATE " + pe.Code + ": " + pe.Message
		}
		return fmt.Sprintf("error %q", err.Error())
	}
	exec := func(q string, args ...any) {
		res, err := db.ExecContext(ctx, q, args...)
		var n int64 = -1
		if err == nil {
			n, err = res.RowsAffected()
		}
		log("exec %q: %d %s", q, n, errStr(err))
	}
	exec("create table " + tbl + "(id int primary key, s text, n numeric(10,2), b bool, ts timestamptz, j jsonb, f float8, d date, bs bytea, a int[], u uuid, vc varchar(20))")
	exec("insert into "+tbl+" values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12), (2, null, null, null, null, null, null, null, null, null, null, null)",
		1, "one", "12.50", true, time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC), `{"k": [1, 2]}`, 1.25,
		time.Date(2024, 2, 29, 0, 0, 0, 0, time.UTC), []byte{0, 1, 255}, "{1,2,3}", "6ba7b810-9dad-11d1-80b4-00c04fd430c8", "vc")
	exec("insert into " + tbl + " (id) values (1)") // duplicate key
	exec("update " + tbl + " set s = s || '!'")

	// Rows: values as database/sql hands them over, and column types.
	rows, err := db.QueryContext(ctx, "select * from "+tbl+" order by id")
	if err != nil {
		t.Fatalf("%s: query: %v", name, err)
	}
	cols, _ := rows.Columns()
	log("columns %v", cols)
	cts, _ := rows.ColumnTypes()
	for _, ct := range cts {
		l, lok := ct.Length()
		p, s, pok := ct.DecimalSize()
		nullable, nok := ct.Nullable()
		log("column %s: %s %v len %d %v dec %d,%d %v null %v %v", ct.Name(), ct.DatabaseTypeName(), ct.ScanType(), l, lok, p, s, pok, nullable, nok)
	}
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		err := rows.Scan(ptrs...)
		var parts []string
		for _, v := range vals {
			if tm, ok := v.(time.Time); ok {
				v = tm.UTC()
			}
			parts = append(parts, fmt.Sprintf("%T(%v)", v, v))
		}
		log("row %s %s", strings.Join(parts, " "), errStr(err))
	}
	log("rows.Err %s, Close %s", errStr(rows.Err()), errStr(rows.Close()))

	// Typed scans, no rows, errors.
	var s string
	var n float64
	err = db.QueryRowContext(ctx, "select s, n from "+tbl+" where id = $1", 1).Scan(&s, &n)
	log("queryrow %q %v %s", s, n, errStr(err))
	err = db.QueryRowContext(ctx, "select s from "+tbl+" where id = $1", 99).Scan(&s)
	log("no rows: %v", errors.Is(err, sql.ErrNoRows))
	_, err = db.QueryContext(ctx, "select 1/0")
	log("division by zero: %s", errStr(err))
	_, err = db.QueryContext(ctx, "selec 1")
	log("syntax: %s", errStr(err))
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	_, err = db.ExecContext(cctx, "select 1")
	log("cancelled: %v", errors.Is(err, context.Canceled))

	// Prepared statements.
	st, err := db.PrepareContext(ctx, "select s from "+tbl+" where id = $1")
	log("prepare %s", errStr(err))
	if err == nil {
		for _, id := range []int{1, 2, 3} {
			var ns sql.NullString
			err := st.QueryRowContext(ctx, id).Scan(&ns)
			log("stmt(%d) %v %s", id, ns, errStr(err))
		}
		log("stmt close %s", errStr(st.Close()))
	}
	_, err = db.PrepareContext(ctx, "selec 1")
	log("prepare syntax: %s", errStr(err))
	ins, err := db.PrepareContext(ctx, "insert into "+tbl+" (id, s) values ($1, $2)")
	log("prepare insert %s", errStr(err))
	if err == nil {
		for _, id := range []int{10, 11, 1} {
			res, err := ins.ExecContext(ctx, id, "p")
			var ra int64 = -1
			if err == nil {
				ra, _ = res.RowsAffected()
			}
			log("stmt exec(%d) %d %s", id, ra, errStr(err))
		}
		ins.Close()
	}

	// Transactions.
	tx, err := db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelSerializable})
	log("begin %s", errStr(err))
	if err == nil {
		var iso string
		err = tx.QueryRowContext(ctx, "show transaction_isolation").Scan(&iso)
		log("isolation %s %s", iso, errStr(err))
		_, err = tx.ExecContext(ctx, "insert into "+tbl+" (id) values (20)")
		log("tx exec %s", errStr(err))
		tst, err := tx.PrepareContext(ctx, "select count(*) from "+tbl)
		if err == nil {
			var c int
			err = tst.QueryRowContext(ctx).Scan(&c)
			log("tx stmt %d %s", c, errStr(err))
		}
		log("commit %s", errStr(tx.Commit()))
		log("commit again %s", errStr(tx.Commit()))
	}
	tx, err = db.BeginTx(ctx, nil)
	if err == nil {
		tx.ExecContext(ctx, "insert into "+tbl+" (id) values (21)")
		log("rollback %s", errStr(tx.Rollback()))
	}
	tx, err = db.BeginTx(ctx, nil)
	if err == nil {
		_, err = tx.ExecContext(ctx, "insert into "+tbl+" (id) values (1)")
		log("tx duplicate %s", errStr(err))
		err = tx.Commit()
		log("commit of failed tx: %s (ErrTxCommitRollback %v)", errStr(err), errors.Is(err, pgx.ErrTxCommitRollback))
	}
	tx, err = db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err == nil {
		var ro string
		err = tx.QueryRowContext(ctx, "show transaction_read_only").Scan(&ro)
		log("read only tx %s %s", ro, errStr(err))
		log("read only commit %s", errStr(tx.Commit()))
	}
	var cnt int
	err = db.QueryRowContext(ctx, "select count(*) from "+tbl).Scan(&cnt)
	log("count %d %s", cnt, errStr(err))

	// A pinned connection keeps its session; Raw reaches pgx.
	c, err := db.Conn(ctx)
	if err != nil {
		t.Fatalf("%s: db.Conn: %v", name, err)
	}
	_, err = c.ExecContext(ctx, "set application_name = 'contract'")
	log("set %s", errStr(err))
	var app string
	err = c.QueryRowContext(ctx, "show application_name").Scan(&app)
	log("session kept: %s %s", app, errStr(err))
	err = c.Raw(func(dc any) error {
		return raw(dc).QueryRow(ctx, "select current_setting('application_name')").Scan(&app)
	})
	log("raw %s %s", app, errStr(err))
	log("conn close %s", errStr(c.Close()))

	log("ping %s", errStr(db.PingContext(ctx)))
	stats := db.Stats()
	log("stats open %d inuse %d idle %d maxopen %d", stats.OpenConnections, stats.InUse, stats.Idle, stats.MaxOpenConnections)
	return out
}
