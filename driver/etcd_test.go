package driver_test

import (
	"context"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/pgha/pgha/election"
	"github.com/pgha/pgha/internal/keyspace"
	"github.com/pgha/pgha/replicate"
)

func clientv3New(endpoints []string) (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: 2 * time.Second,
		Logger:      zap.NewNop(),
	})
}

// leaderTerm is a term plus the client it runs on.
type leaderTerm struct {
	*election.Term
	cli *clientv3.Client
}

// Close closes the term's client (after Resign).
func (l *leaderTerm) Close() { l.cli.Close() }

// campaign makes node the leader of cluster, publishing its leader record,
// the way the HA manager does. The caller resigns and closes the term.
func campaign(ctx context.Context, endpoints []string, cluster, node string, inst *replicate.Instance, writable bool) (*election.Term, error) {
	t, err := campaignT(ctx, endpoints, cluster, node, inst, writable)
	if err != nil {
		return nil, err
	}
	return t.Term, nil
}

func campaignT(ctx context.Context, endpoints []string, cluster, node string, inst *replicate.Instance, writable bool) (*leaderTerm, error) {
	cli, err := clientv3New(endpoints)
	if err != nil {
		return nil, err
	}
	layout, err := keyspace.NewLayout("", cluster)
	if err != nil {
		cli.Close()
		return nil, err
	}
	el, err := election.New(election.Config{Client: cli, Prefix: layout.Leader(), LeaseTTL: 2 * time.Second, Logger: discardLogger})
	if err != nil {
		cli.Close()
		return nil, err
	}
	term, err := el.Campaign(ctx, leaderRecord(node, inst, writable))
	if err != nil {
		cli.Close()
		return nil, err
	}
	return &leaderTerm{term, cli}, nil
}
