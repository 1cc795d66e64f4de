package driver_test

import (
	"context"
	"errors"
	"fmt"
	"log"

	"github.com/jackc/pgx/v5"

	"github.com/pgha/pgha/driver"
)

// exampleEtcdConnString is the connection string of the Examples' cluster
// "ex" in etcd mode, e.g.
//
//	postgres://postgres:secret@127.0.0.1/postgres?pgha_cluster=ex&pgha_etcd=http://127.0.0.1:2379
func exampleEtcdConnString() string {
	return connString("pgha_cluster=ex&pgha_etcd=" + shared.etcd.Endpoints()[0])
}

// exampleHostsConnString lists the cluster's two servers, e.g.
//
//	postgres://postgres:secret@127.0.0.1:5432,127.0.0.1:5433/postgres?pgha_read_mode=prefer-replicas
func exampleHostsConnString(extra string) string {
	return connString(extra, shared.primary, shared.standby)
}

// The drop-in swap: replace pgxpool.New with driver.New. Writes go to the
// primary named by the leader record in etcd, and follow it when it moves.
func ExampleNew() {
	ctx := context.Background()
	// Was: pool, err := pgxpool.New(ctx, connString)
	pool, err := driver.New(ctx, exampleEtcdConnString())
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()

	if _, err := pool.Exec(ctx, "create table if not exists accounts(id int primary key, balance int)"); err != nil {
		log.Fatal(err)
	}
	if _, err := pool.Exec(ctx, "insert into accounts values (1, 100) on conflict (id) do update set balance = 100"); err != nil {
		log.Fatal(err)
	}
	var balance int
	if err := pool.QueryRow(ctx, "select balance from accounts where id = $1", 1).Scan(&balance); err != nil {
		log.Fatal(err)
	}
	fmt.Println("balance:", balance)
	// Output: balance: 100
}

// Reads opt in through Reader: with pgha_read_mode=prefer-replicas they go
// to a replica within pgha_max_replica_lag, else to the primary.
func ExamplePool_Reader() {
	ctx := context.Background()
	pool, err := driver.New(ctx, exampleHostsConnString("pgha_read_mode=prefer-replicas"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	if err := pool.Ping(ctx); err != nil { // waits for the first probe of the hosts
		log.Fatal(err)
	}

	var inRecovery bool
	if err := pool.Reader().QueryRow(ctx, "select pg_is_in_recovery()").Scan(&inRecovery); err != nil {
		log.Fatal(err)
	}
	fmt.Println("read served by a replica:", inRecovery)
	// Output: read served by a replica: true
}

// Read-your-writes: take a causal token after writing; a read with the
// token is served by a replica only once it has replayed the write, and by
// the primary until then.
func ExamplePool_CausalToken() {
	ctx := context.Background()
	pool, err := driver.New(ctx, exampleHostsConnString("pgha_read_mode=prefer-replicas"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()

	if _, err := pool.Exec(ctx, "create table if not exists events(msg text)"); err != nil {
		log.Fatal(err)
	}
	if _, err := pool.Exec(ctx, "insert into events values ('signed up')"); err != nil {
		log.Fatal(err)
	}
	tok, err := pool.CausalToken(ctx)
	if err != nil {
		log.Fatal(err)
	}
	// The token can travel to another process as tok.String().
	var n int
	err = pool.Reader().QueryRow(driver.WithCausalToken(ctx, tok),
		"select count(*) from events where msg = 'signed up'").Scan(&n)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("sees its own write:", n > 0)
	// Output: sees its own write: true
}

// A transaction broken by a failover is safe to run again from the start;
// a COMMIT with an unknown outcome needs the application to check what it
// wrote.
func ExamplePool_BeginTx() {
	ctx := context.Background()
	pool, err := driver.New(ctx, "postgres://app@/app?pgha_cluster=main&pgha_etcd=http://127.0.0.1:2379")
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()

	transfer := func() error {
		tx, err := pool.BeginTx(ctx, pgx.TxOptions{})
		if err != nil {
			return err
		}
		defer tx.Rollback(ctx)
		if _, err := tx.Exec(ctx, "update accounts set balance = balance - 10 where id = 1"); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "update accounts set balance = balance + 10 where id = 2"); err != nil {
			return err
		}
		return tx.Commit(ctx)
	}
	for attempt := 0; attempt < 3; attempt++ {
		err = transfer()
		if !errors.Is(err, driver.ErrFailover) {
			break // done, or an error that retrying will not fix
		}
	}
	switch {
	case errors.Is(err, driver.ErrOutcomeUnknown):
		log.Print("transfer may or may not have happened: reconcile")
	case err != nil:
		log.Print(err)
	}
}

// WithIdempotent lets the pool repeat a statement outside a transaction
// whose connection broke after it was sent, instead of returning
// ErrOutcomeUnknown.
func ExampleWithIdempotent() {
	ctx := context.Background()
	pool, err := driver.New(ctx, "postgres://app@pg1:5432,pg2:5432/app")
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()

	_, err = pool.Exec(driver.WithIdempotent(ctx),
		"insert into seen(id) values ($1) on conflict do nothing", 42)
	if err != nil {
		log.Print(err)
	}
}

// Code that tunes a pgxpool.Config after parsing compiles unchanged once
// pgxpool.ParseConfig is renamed driver.ParseConfig: the pgxpool fields
// and methods are promoted. Here a BeforeConnect hook supplies a rotating
// password (an IAM token, say), which the pool's probes use too.
func ExampleParseConfig() {
	// Was: cfg, err := pgxpool.ParseConfig(...)
	cfg, err := driver.ParseConfig("postgres://app@pg1:5432,pg2:5432/app?pool_max_conns=10&pgha_failover_timeout=5s")
	if err != nil {
		log.Fatal(err)
	}
	cfg.MaxConns = 20
	cfg.BeforeConnect = func(ctx context.Context, cc *pgx.ConnConfig) error {
		cc.Password = "token-from-your-secret-store"
		return nil
	}
	fmt.Println(cfg.MaxConns, cfg.Hosts, cfg.FailoverTimeout)
	fmt.Println(cfg.ConnString())
	// Copy is deep, pgha settings included: the copy can be changed and
	// passed to another NewWithConfig.
	other := cfg.Copy()
	other.Hosts = []string{"pg3:5432"}
	fmt.Println(cfg.Hosts, other.Hosts)
	// Output:
	// 20 [pg1:5432 pg2:5432] 5s
	// postgres://app@pg1:5432,pg2:5432/app?pool_max_conns=10&pgha_failover_timeout=5s
	// [pg1:5432 pg2:5432] [pg3:5432]
}
