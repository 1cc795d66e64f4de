package main

import (
	"crypto/tls"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/pgha/pgha/internal/etcdclient"
)

// tlsConfig builds the etcd client's TLS setup: from the CA and client
// certificate files, else the system's CA roots for https:// endpoints,
// else nil (plain http://).
func (c *config) tlsConfig() (*tls.Config, error) {
	tc, err := etcdclient.TLSConfig(c.etcdEndpoints, etcdclient.TLSFiles{CAFile: c.etcdCAFile, CertFile: c.etcdCertFile, KeyFile: c.etcdKeyFile})
	if err != nil {
		return nil, configErrorf("%v", err)
	}
	return tc, nil
}

// etcdClient connects to etcd. The client dials lazily: an etcd that is
// down at start is retried by the HA loop, not fatal (except that
// username/password authentication happens here). Settings that can never
// work (a wrong CA, a missing or refused client certificate, http:// for a
// TLS etcd, a wrong password, a user without read access to the cluster's
// prefix) fail here within etcd-dial-timeout, naming the setting to fix.
func (c *config) etcdClient() (*clientv3.Client, error) {
	tlsCfg, err := c.tlsConfig()
	if err != nil {
		return nil, err
	}
	cli, err := etcdclient.New(clientv3.Config{
		Endpoints:            c.etcdEndpoints,
		TLS:                  tlsCfg,
		Username:             c.etcdUsername,
		Password:             string(c.etcdPassword),
		DialTimeout:          c.etcdDialTimeout,
		DialKeepAliveTime:    2 * time.Second,
		DialKeepAliveTimeout: 2 * time.Second,
		// Not ctx: the client must outlive a SIGTERM, for the manager to
		// resign and revoke its leases on the way out. run closes it.
		// No Logger: etcdclient.New silences the client's retry chatter,
		// which would drown what the HA loop logs.
	})
	if err != nil {
		return nil, c.etcdDialError(err)
	}
	if err := c.checkEtcd(cli); err != nil {
		cli.Close()
		return nil, err
	}
	return cli, nil
}
