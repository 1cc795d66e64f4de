package testutil

import (
	"time"

	"github.com/pgha/pgha/internal/etcdclient"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// EtcdPerm is one permission of an etcd role: Type (clientv3.PermRead,
// PermWrite or PermReadWrite) on the key Key, or on every key in
// [Key, RangeEnd) when RangeEnd is set (clientv3.GetPrefixRangeEnd(Key)
// for a prefix).
type EtcdPerm struct {
	Key, RangeEnd string
	Type          clientv3.PermissionType
}

func (c *EtcdCluster) tlsInfo() transport.TLSInfo {
	if c.opts.TLS == nil {
		return transport.TLSInfo{}
	}
	return transport.TLSInfo{
		CertFile:       c.serverCert.CertFile,
		KeyFile:        c.serverCert.KeyFile,
		TrustedCAFile:  c.opts.TLS.CertFile,
		ClientCertAuth: true,
	}
}

// TLS returns the CA the cluster was started with, or nil.
func (c *EtcdCluster) TLS() *CA { return c.opts.TLS }

// RootPassword returns the root password set by [EtcdCluster.EnableAuth],
// or "" while authentication is off.
func (c *EtcdCluster) RootPassword() string {
	c.authMu.Lock()
	defer c.authMu.Unlock()
	return c.rootPassword
}

// ClientConfig returns a client configuration for every member with short
// timeouts (as [NewEtcdClient]). On a cluster with TLS it trusts the
// cluster's CA and presents a client certificate with CN = user (none when
// user is ""). When password is not empty, the client authenticates as user
// with it.
func (c *EtcdCluster) ClientConfig(t TB, user, password string) clientv3.Config {
	t.Helper()
	cfg := clientv3.Config{
		Endpoints:            c.Endpoints(),
		DialTimeout:          5 * time.Second,
		DialKeepAliveTime:    time.Second,
		DialKeepAliveTimeout: time.Second,
	}
	if c.opts.TLS != nil {
		cfg.TLS = c.opts.TLS.ClientTLS(t, user)
	}
	if password != "" {
		cfg.Username, cfg.Password = user, password
	}
	return cfg
}

// ClientAs returns a client built from [EtcdCluster.ClientConfig], closed at
// the end of the test.
func (c *EtcdCluster) ClientAs(t TB, user, password string) *clientv3.Client {
	t.Helper()
	cli, err := etcdclient.New(c.ClientConfig(t, user, password))
	if err != nil {
		t.Fatalf("testutil: etcd client as %q for %v: %v", user, c.Endpoints(), err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// EnableAuth turns etcd authentication on with a user "root" (password
// rootPassword) holding the root role. Afterwards [EtcdCluster.Client]
// acts as root: by its certificate's CN on a TLS cluster, else with the
// password.
func (c *EtcdCluster) EnableAuth(t TB, rootPassword string) {
	t.Helper()
	cli := c.Client(t)
	ctx := Ctx(t, 30*time.Second)
	if _, err := cli.UserAdd(ctx, "root", rootPassword); err != nil {
		t.Fatalf("testutil: etcd user add root: %v", err)
	}
	if _, err := cli.UserGrantRole(ctx, "root", "root"); err != nil {
		t.Fatalf("testutil: etcd user grant-role root root: %v", err)
	}
	if _, err := cli.AuthEnable(ctx); err != nil {
		t.Fatalf("testutil: etcd auth enable: %v", err)
	}
	c.authMu.Lock()
	c.rootPassword = rootPassword
	c.authMu.Unlock()
}

// AddRole creates role with perms, as root.
func (c *EtcdCluster) AddRole(t TB, role string, perms ...EtcdPerm) {
	t.Helper()
	cli := c.Client(t)
	ctx := Ctx(t, 30*time.Second)
	if _, err := cli.RoleAdd(ctx, role); err != nil {
		t.Fatalf("testutil: etcd role add %s: %v", role, err)
	}
	for _, p := range perms {
		if _, err := cli.RoleGrantPermission(ctx, role, p.Key, p.RangeEnd, p.Type); err != nil {
			t.Fatalf("testutil: etcd role grant-permission %s %v %q..%q: %v", role, p.Type, p.Key, p.RangeEnd, err)
		}
	}
}

// AddUser creates user with password (which may be "" for a user that
// authenticates only by client certificate CN) and grants it roles, as
// root.
func (c *EtcdCluster) AddUser(t TB, user, password string, roles ...string) {
	t.Helper()
	cli := c.Client(t)
	ctx := Ctx(t, 30*time.Second)
	var err error
	if password == "" {
		_, err = cli.UserAddWithOptions(ctx, user, "", &clientv3.UserAddOptions{NoPassword: true})
	} else {
		_, err = cli.UserAdd(ctx, user, password)
	}
	if err != nil {
		t.Fatalf("testutil: etcd user add %s: %v", user, err)
	}
	for _, r := range roles {
		if _, err := cli.UserGrantRole(ctx, user, r); err != nil {
			t.Fatalf("testutil: etcd user grant-role %s %s: %v", user, r, err)
		}
	}
}
