package testutil_test

import (
	"crypto/tls"
	"errors"
	"testing"
	"time"

	"github.com/pgha/pgha/internal/etcdclient"
	"github.com/pgha/pgha/internal/testutil"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestEtcdTLSAndAuth: an embedded etcd with client TLS serves a client that
// trusts the CA and presents a certificate, refuses one that presents none,
// and with auth on grants a role's user exactly its prefix.
func TestEtcdTLSAndAuth(t *testing.T) {
	ca := testutil.NewCA(t)
	c := testutil.StartEtcdWith(t, testutil.EtcdOptions{TLS: ca})
	if got := c.Endpoints()[0]; got[:8] != "https://" {
		t.Fatalf("endpoint %s; want https://", got)
	}
	ctx := testutil.Ctx(t, 30*time.Second)
	if _, err := c.Client(t).Put(ctx, "/a/k", "v"); err != nil {
		t.Fatalf("put over TLS: %v", err)
	}

	// No client certificate: the handshake is refused.
	cfg := c.ClientConfig(t, "", "")
	cfg.TLS = &tls.Config{RootCAs: ca.Pool}
	cfg.DialTimeout = 2 * time.Second
	if cli, err := etcdclient.New(cfg); err == nil {
		_, err = cli.Get(testutil.Ctx(t, 3*time.Second), "/a/k")
		cli.Close()
		if err == nil {
			t.Fatal("a client without a certificate read from a cluster with client-cert-auth")
		}
	}

	c.EnableAuth(t, "rootpw")
	c.AddRole(t, "a-rw", testutil.EtcdPerm{Key: "/a/", RangeEnd: clientv3.GetPrefixRangeEnd("/a/"), Type: clientv3.PermissionType(clientv3.PermReadWrite)})
	c.AddUser(t, "alice", "alicepw", "a-rw")
	c.AddUser(t, "bob", "", "a-rw") // certificate CN only

	for _, who := range []struct{ user, pw string }{{"alice", "alicepw"}, {"bob", ""}} {
		cli := c.ClientAs(t, who.user, who.pw)
		if _, err := cli.Put(ctx, "/a/"+who.user, "x"); err != nil {
			t.Fatalf("%s: put in its prefix: %v", who.user, err)
		}
		if _, err := cli.Put(ctx, "/b/"+who.user, "x"); !errors.Is(err, rpctypes.ErrPermissionDenied) {
			t.Fatalf("%s: put outside its prefix: %v; want %v", who.user, err, rpctypes.ErrPermissionDenied)
		}
	}
	// The root client still works after auth is on.
	if _, err := c.Client(t).Put(ctx, "/b/root", "x"); err != nil {
		t.Fatalf("root put after auth enable: %v", err)
	}
	// A wrong password fails at client creation.
	if _, err := etcdclient.New(c.ClientConfig(t, "alice", "wrong")); !errors.Is(err, rpctypes.ErrAuthFailed) {
		t.Fatalf("wrong password: %v; want %v", err, rpctypes.ErrAuthFailed)
	}
}
