package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/pgha/pgha/internal/etcdclient"
	"github.com/pgha/pgha/internal/secrets"
)

// endpoints splits the --etcd list.
func (g *globals) endpoints() []string {
	var eps []string
	for _, e := range strings.Split(g.etcd, ",") {
		if e = strings.TrimSpace(e); e != "" {
			eps = append(eps, e)
		}
	}
	return eps
}

// tlsConfig builds the TLS setup from the CA and client certificate
// flags, else the system's CA roots for https:// endpoints, else nil.
func (g *globals) tlsConfig() (*tls.Config, error) {
	tc, err := etcdclient.TLSConfig(g.endpoints(), etcdclient.TLSFiles{CAFile: g.caFile, CertFile: g.certFile, KeyFile: g.keyFile})
	if err != nil {
		return nil, usagef("%v", err)
	}
	return tc, nil
}

// password returns the etcd password from PGHA_ETCD_PASSWORD or
// --etcd-password-file. Errors never hold the password.
func (g *globals) password() (string, error) {
	pass, err := secrets.FromEnvOrFile("PGHA_ETCD_PASSWORD", g.env("PGHA_ETCD_PASSWORD"), "etcd-password-file", g.passFile)
	if err != nil {
		return "", usagef("%v", err)
	}
	return pass, nil
}

// connect returns an etcd client and its close function.
func (g *globals) connect(ctx context.Context) (*clientv3.Client, func(), error) {
	eps := g.endpoints()
	if len(eps) == 0 {
		return nil, nil, usagef("--etcd: no endpoint given (e.g. --etcd http://10.0.0.1:2379,http://10.0.0.2:2379)")
	}
	tlsCfg, err := g.tlsConfig()
	if err != nil {
		return nil, nil, err
	}
	pass, err := g.password()
	if err != nil {
		return nil, nil, err
	}
	if pass != "" && g.username == "" {
		return nil, nil, usagef("an etcd password is set but no --etcd-username")
	}
	cli, err := etcdclient.New(clientv3.Config{
		Endpoints:   eps,
		TLS:         tlsCfg,
		Username:    g.username,
		Password:    pass,
		DialTimeout: g.timeout,
		Context:     ctx,
	})
	if err != nil {
		return nil, nil, g.unreachable(err)
	}
	return cli, func() { cli.Close() }, nil
}

// unreachable wraps an etcd failure with what to check.
func (g *globals) unreachable(err error) error {
	hint := "check --etcd, that etcd runs and that this machine reaches it"
	switch {
	case errors.Is(err, rpctypes.ErrAuthFailed), errors.Is(err, rpctypes.ErrPermissionDenied),
		errors.Is(err, rpctypes.ErrUserEmpty), errors.Is(err, rpctypes.ErrInvalidAuthToken):
		hint = "check --etcd-username and the password (PGHA_ETCD_PASSWORD or --etcd-password-file)"
	case strings.Contains(err.Error(), "x509") || strings.Contains(err.Error(), "tls"):
		hint = "check --etcd-ca-file, --etcd-cert-file and --etcd-key-file"
	case errors.Is(err, context.DeadlineExceeded):
		hint = fmt.Sprintf("no answer within --timeout %v; %s", g.timeout, hint)
	}
	return &unreachableError{fmt.Errorf("etcd %s: %w: %s", g.etcd, err, hint)}
}
