package driver_test

import (
	"context"
	"reflect"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgha/pgha/driver"
)

// poolAPI lists pgxpool.Pool's methods. Both pools must satisfy it, so a
// signature drift breaks the build.
type poolAPI interface {
	Acquire(ctx context.Context) (*pgxpool.Conn, error)
	AcquireFunc(ctx context.Context, f func(*pgxpool.Conn) error) error
	AcquireAllIdle(ctx context.Context) []*pgxpool.Conn
	Begin(ctx context.Context) (pgx.Tx, error)
	BeginTx(ctx context.Context, txOptions pgx.TxOptions) (pgx.Tx, error)
	Close()
	Config() *pgxpool.Config
	CopyFrom(ctx context.Context, tableName pgx.Identifier, columnNames []string, rowSrc pgx.CopyFromSource) (int64, error)
	Exec(ctx context.Context, sql string, arguments ...any) (pgconn.CommandTag, error)
	Ping(ctx context.Context) error
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Reset()
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
	Stat() *pgxpool.Stat
}

// DBTX is the interface sqlc generates (with copy and batch support).
type DBTX interface {
	Exec(context.Context, string, ...interface{}) (pgconn.CommandTag, error)
	Query(context.Context, string, ...interface{}) (pgx.Rows, error)
	QueryRow(context.Context, string, ...interface{}) pgx.Row
	CopyFrom(ctx context.Context, tableName pgx.Identifier, columnNames []string, rowSrc pgx.CopyFromSource) (int64, error)
	SendBatch(context.Context, *pgx.Batch) pgx.BatchResults
}

var (
	_ poolAPI = (*pgxpool.Pool)(nil)
	_ poolAPI = (*driver.Pool)(nil)
	_ DBTX    = (*driver.Pool)(nil)
)

// TestMethodSet fails when pgxpool.Pool has a method driver.Pool lacks or
// whose signature differs: a pgx upgrade that adds one must be followed.
func TestMethodSet(t *testing.T) {
	want := reflect.TypeFor[*pgxpool.Pool]()
	got := reflect.TypeFor[*driver.Pool]()
	for i := range want.NumMethod() {
		wm := want.Method(i)
		gm, ok := got.MethodByName(wm.Name)
		if !ok {
			t.Errorf("driver.Pool lacks pgxpool.Pool's method %s%v", wm.Name, wm.Type)
			continue
		}
		// Compare without the receiver.
		if !sameSignature(wm.Type, gm.Type) {
			t.Errorf("driver.Pool.%s has type %v; pgxpool.Pool.%s has %v", wm.Name, gm.Type, wm.Name, wm.Type)
		}
	}
	if n := reflect.TypeFor[poolAPI]().NumMethod(); n != want.NumMethod() {
		t.Errorf("poolAPI lists %d methods, pgxpool.Pool has %d: update poolAPI", n, want.NumMethod())
	}
}

func sameSignature(a, b reflect.Type) bool {
	if a.NumIn() != b.NumIn() || a.NumOut() != b.NumOut() || a.IsVariadic() != b.IsVariadic() {
		return false
	}
	for i := 1; i < a.NumIn(); i++ {
		if a.In(i) != b.In(i) {
			return false
		}
	}
	for i := range a.NumOut() {
		if a.Out(i) != b.Out(i) {
			return false
		}
	}
	return true
}
