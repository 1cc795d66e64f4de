package election_test

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/pgha/pgha/election"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

func Example() {
	ctx := context.Background()
	cli, err := clientv3.New(clientv3.Config{Endpoints: exampleEndpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer cli.Close()

	e, err := election.New(election.Config{
		Client:   cli,
		Prefix:   "/pgha/example/leader",
		LeaseTTL: 2 * time.Second,
		Logger:   slog.New(slog.DiscardHandler),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	term, err := e.Campaign(ctx, []byte("node1"))
	if err != nil {
		fmt.Println(err)
		return
	}
	leader, _ := e.Leader(ctx)
	fmt.Printf("leader %s, token matches: %v\n", leader.Value, leader.Token == term.Token())
	// A leader acts only before ValidUntil, and stops when Done closes.
	fmt.Println("may lead now:", time.Now().Before(term.ValidUntil()))

	if err := term.Resign(ctx); err != nil {
		fmt.Println(err)
		return
	}
	<-term.Done()
	fmt.Println("term ended:", term.Err())
	_, err = e.Leader(ctx)
	fmt.Println(err)
	// Output:
	// leader node1, token matches: true
	// may lead now: true
	// term ended: election: resigned
	// election: no leader
}

func ExampleConfig_Validate() {
	err := election.Config{Client: &clientv3.Client{}, Prefix: "/pgha/main/leader", LeaseTTL: 1500 * time.Millisecond}.Validate()
	fmt.Println(err)
	// Output:
	// election: LeaseTTL 1.5s must be a whole number of seconds (etcd grants TTLs in whole seconds)
}
