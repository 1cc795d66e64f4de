package main

import (
	"testing"
	"time"

	"github.com/pgha/pgha/internal/testutil"
)

// enableEtcdAuth turns authentication on in etcd with a root user.
func enableEtcdAuth(t *testing.T, etcd *testutil.EtcdCluster, rootPassword string) {
	t.Helper()
	cli := etcd.Client(t)
	ctx := testutil.Ctx(t, 10*time.Second)
	if _, err := cli.UserAdd(ctx, "root", rootPassword); err != nil {
		t.Fatalf("etcd user add root: %v", err)
	}
	if _, err := cli.UserGrantRole(ctx, "root", "root"); err != nil {
		t.Fatalf("etcd grant root: %v", err)
	}
	if _, err := cli.AuthEnable(ctx); err != nil {
		t.Fatalf("etcd auth enable: %v", err)
	}
}
