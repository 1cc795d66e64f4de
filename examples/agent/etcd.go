package main

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// tlsConfig builds the etcd client's TLS setup: from the CA and client
// certificate files, else the system's CA roots for https:// endpoints,
// else nil (plain http://).
func (c *config) tlsConfig() (*tls.Config, error) {
	if c.etcdCAFile == "" && c.etcdCertFile == "" {
		for _, e := range c.etcdEndpoints {
			if strings.HasPrefix(e, "https://") {
				// TLS with the system's CA roots.
				return &tls.Config{MinVersion: tls.VersionTLS12}, nil
			}
		}
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.etcdCAFile != "" {
		pem, err := os.ReadFile(c.etcdCAFile)
		if err != nil {
			return nil, configErrorf("etcd-ca-file: %v", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, configErrorf("etcd-ca-file %s holds no PEM certificate", c.etcdCAFile)
		}
	}
	if c.etcdCertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.etcdCertFile, c.etcdKeyFile)
		if err != nil {
			return nil, configErrorf("etcd-cert-file/etcd-key-file: %v", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
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
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:            c.etcdEndpoints,
		TLS:                  tlsCfg,
		Username:             c.etcdUsername,
		Password:             string(c.etcdPassword),
		DialTimeout:          c.etcdDialTimeout,
		DialKeepAliveTime:    2 * time.Second,
		DialKeepAliveTimeout: 2 * time.Second,
		// Not ctx: the client must outlive a SIGTERM, for the manager to
		// resign and revoke its leases on the way out. run closes it.
		// The HA loop logs what matters; the client's own retry chatter
		// would drown it.
		Logger: zap.NewNop(),
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
