package stdlib_test

import (
	"context"
	"errors"
	"fmt"
	"log"

	"github.com/pgha/pgha/driver"
	"github.com/pgha/pgha/driver/stdlib"
)

// exampleConnString is the Examples' server, e.g.
//
//	postgres://postgres:secret@127.0.0.1:5432/postgres
//
// In production, name the cluster and its etcd instead:
//
//	postgres://app:secret@/app?pgha_cluster=main&pgha_etcd=http://10.0.0.1:2379
func exampleConnString(extra string) string { return connString(extra, shared) }

// A *sql.DB over a driver.Pool: code written for database/sql (sqlx,
// gorm, ent, bun) writes to the primary and follows failovers. The errors
// of a failover are the pool's, matched with errors.Is.
func ExampleOpenDBFromPool() {
	ctx := context.Background()
	pool, err := driver.New(ctx, exampleConnString(""))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	db := stdlib.OpenDBFromPool(pool)
	defer db.Close() // before pool.Close

	if _, err := db.ExecContext(ctx, "create table if not exists items(id int primary key, name text)"); err != nil {
		log.Fatal(err)
	}
	_, err = db.ExecContext(ctx, "insert into items values ($1, $2) on conflict (id) do update set name = excluded.name", 1, "widget")
	switch {
	case errors.Is(err, driver.ErrOutcomeUnknown):
		log.Fatal("the insert may or may not have been applied: read it back")
	case err != nil:
		log.Fatal(err)
	}
	var name string
	if err := db.QueryRowContext(ctx, "select name from items where id = $1", 1).Scan(&name); err != nil {
		log.Fatal(err)
	}
	fmt.Println("name:", name)
	// Output: name: widget
}

// Reads through the pool's Reader: with pgha_read_mode=prefer-replicas
// they go to a replica within pgha_max_replica_lag, and to the primary
// when there is none (as here: one server).
func ExampleOpenDBFromReader() {
	ctx := context.Background()
	pool, err := driver.New(ctx, exampleConnString("pgha_read_mode=prefer-replicas"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	reads := stdlib.OpenDBFromReader(pool.Reader())
	defer reads.Close()

	var n int
	if err := reads.QueryRowContext(ctx, "select count(*) from generate_series(1, 3)").Scan(&n); err != nil {
		log.Fatal(err)
	}
	fmt.Println("count:", n)
	// Output: count: 3
}
