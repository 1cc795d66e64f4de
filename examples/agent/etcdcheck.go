package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

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
// returns a configuration error naming the first TLS problem found, or
// nil when every endpoint either works or cannot be reached at all.
func (c *config) diagnoseEtcd() error {
	tlsCfg, err := c.tlsConfig()
	if err != nil {
		return err
	}
	for _, ep := range c.etcdEndpoints {
		if err := diagnoseEndpoint(ep, tlsCfg, c.etcdDialTimeout); err != nil {
			return err
		}
	}
	return nil
}

func diagnoseEndpoint(ep string, tlsCfg *tls.Config, timeout time.Duration) error {
	u, err := url.Parse(ep)
	if err != nil || u.Host == "" {
		return configErrorf("etcd-endpoints: %q is not a URL such as https://10.0.0.1:2379", ep)
	}
	timeout = min(timeout, 5*time.Second)
	d := &net.Dialer{Timeout: timeout}
	if u.Scheme == "http" {
		// Only whether the server speaks TLS matters: a plain etcd fails
		// the handshake at its first byte.
		conn, err := tls.DialWithDialer(d, "tcp", u.Host, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}})
		if err != nil {
			return nil
		}
		conn.Close()
		return configErrorf("etcd-endpoints: %s is http:// but etcd serves TLS there: use https:// (and --etcd-ca-file)", ep)
	}
	probe := &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{"h2"}}
	if tlsCfg != nil {
		probe = tlsCfg.Clone()
		probe.NextProtos = []string{"h2"}
	}
	if probe.ServerName == "" {
		probe.ServerName = u.Hostname()
	}
	conn, err := tls.DialWithDialer(d, "tcp", u.Host, probe)
	if err != nil {
		var opErr *net.OpError
		if errors.As(err, &opErr) && opErr.Op == "dial" {
			return nil // unreachable: not a setting problem
		}
		return tlsProblem(ep, err)
	}
	defer conn.Close()
	// With TLS 1.3 the server judges the client certificate after the
	// handshake: its verdict arrives as an alert on the first read.
	conn.SetDeadline(time.Now().Add(timeout))
	if _, err := conn.Read(make([]byte, 1)); err != nil && strings.Contains(err.Error(), "remote error") {
		return tlsProblem(ep, err)
	}
	return nil
}

// tlsProblem turns a TLS handshake error into an error naming the setting
// to fix.
func tlsProblem(ep string, err error) error {
	var unknown x509.UnknownAuthorityError
	var host x509.HostnameError
	var invalid x509.CertificateInvalidError
	msg := err.Error()
	switch {
	case errors.As(err, &unknown):
		return configErrorf("etcd %s: its server certificate is not signed by a CA in --etcd-ca-file (%v): set --etcd-ca-file to the CA that signed etcd's certificate", ep, err)
	case errors.As(err, &host):
		return configErrorf("etcd %s: its server certificate is not valid for this host name (%v): use an endpoint host named in the certificate", ep, err)
	case errors.As(err, &invalid):
		return configErrorf("etcd %s: its server certificate is invalid (%v)", ep, err)
	case strings.Contains(msg, "certificate required"):
		return configErrorf("etcd %s requires a client certificate (%v): set --etcd-cert-file and --etcd-key-file", ep, err)
	case strings.Contains(msg, "bad certificate"), strings.Contains(msg, "unknown certificate authority"), strings.Contains(msg, "certificate"):
		return configErrorf("etcd %s refused this agent's client certificate (%v): set --etcd-cert-file to a certificate signed by the CA etcd trusts for clients (--trusted-ca-file)", ep, err)
	}
	return configErrorf("etcd %s: TLS handshake failed (%v): check --etcd-ca-file, --etcd-cert-file and --etcd-key-file", ep, err)
}
