package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/pgha/pgha/internal/etcdtls"
	"github.com/pgha/pgha/internal/keyspace"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// checkEtcd reads the cluster's prefix once, within etcd-dial-timeout, so
// that a setting that can never work fails the start with an error naming
// it, instead of an HA loop retrying "context deadline exceeded" forever:
// a CA that did not sign etcd's certificate, a client certificate etcd
// refuses or lacks, http:// for an etcd that serves TLS, a user without
// read permission on the prefix. An etcd that is merely unreachable is
// not fatal (it returns nil: the HA loop retries).
func (c *config) checkEtcd(cli *clientv3.Client) error {
	layout, err := keyspace.NewLayout(c.keyRoot, c.cluster)
	if err != nil {
		return configErrorf("key-root/cluster: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.etcdDialTimeout)
	defer cancel()
	_, err = cli.Get(ctx, layout.Prefix(), clientv3.WithPrefix(), clientv3.WithCountOnly())
	switch {
	case err == nil:
		return nil
	case errors.Is(err, rpctypes.ErrPermissionDenied):
		who := "this client"
		if c.etcdUsername != "" {
			who = fmt.Sprintf("etcd user %q", c.etcdUsername)
		} else if c.etcdCertFile != "" {
			who = "the etcd user named by the CN of --etcd-cert-file"
		}
		return configErrorf("%s may not read %s: grant it the role pgha-%s-manager (read-write on the cluster's prefix; see docs/security.md or ha.EtcdRoles)", who, layout.Prefix(), c.cluster)
	}
	if d := c.diagnoseEtcd(); d != nil {
		return d
	}
	return nil
}

// etcdDialError is the error of a failed etcd client creation: the TLS or
// endpoint problem behind it when one is found, else err.
func (c *config) etcdDialError(err error) error {
	if errors.Is(err, rpctypes.ErrAuthFailed) {
		return configErrorf("etcd rejected user %q and its password (%v): check --etcd-username and PGHA_ETCD_PASSWORD or --etcd-password-file", c.etcdUsername, err)
	}
	if d := c.diagnoseEtcd(); d != nil {
		return d
	}
	return fmt.Errorf("etcd %v: %w: check --etcd-endpoints, the TLS files and the credentials", c.etcdEndpoints, err)
}

// diagnoseEtcd dials each endpoint with the agent's TLS settings and
// returns a configuration error naming the setting behind the first TLS
// problem found, or nil when every endpoint either works or cannot be
// reached at all.
func (c *config) diagnoseEtcd() error {
	tlsCfg, err := c.tlsConfig()
	if err != nil {
		return err
	}
	d := etcdtls.Diagnose(context.Background(), c.etcdEndpoints, tlsCfg, min(c.etcdDialTimeout, 5*time.Second))
	if d == nil {
		return nil
	}
	ep, e := d.Endpoint, d.Err
	switch d.Problem {
	case etcdtls.UnknownAuthority:
		return configErrorf("etcd %s: its server certificate is not signed by a CA in --etcd-ca-file (%v): set --etcd-ca-file to the CA that signed etcd's certificate", ep, e)
	case etcdtls.WrongHost:
		return configErrorf("etcd %s: its server certificate is not valid for this host name (%v): use an endpoint host named in the certificate", ep, e)
	case etcdtls.ClientCertRequired:
		return configErrorf("etcd %s requires a client certificate (%v): set --etcd-cert-file and --etcd-key-file", ep, e)
	case etcdtls.ClientCertRefused:
		return configErrorf("etcd %s refused this agent's client certificate (%v): set --etcd-cert-file to a certificate signed by the CA etcd trusts for clients (--trusted-ca-file)", ep, e)
	case etcdtls.PlainURLForTLS:
		return configErrorf("etcd-endpoints: %s is http:// but etcd serves TLS there: use https:// (and --etcd-ca-file)", ep)
	case etcdtls.BadEndpoint:
		return configErrorf("etcd-endpoints: %q is not a URL such as https://10.0.0.1:2379", ep)
	}
	return configErrorf("%v: check --etcd-ca-file, --etcd-cert-file and --etcd-key-file", d)
}
