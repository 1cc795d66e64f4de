package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
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
	if g.caFile == "" && g.certFile == "" && g.keyFile == "" {
		for _, e := range g.endpoints() {
			if strings.HasPrefix(e, "https://") {
				// TLS with the system's CA roots.
				return &tls.Config{MinVersion: tls.VersionTLS12}, nil
			}
		}
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if g.caFile != "" {
		pem, err := os.ReadFile(g.caFile)
		if err != nil {
			return nil, usagef("--etcd-ca-file: %v", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, usagef("--etcd-ca-file %s holds no PEM certificate", g.caFile)
		}
	}
	if (g.certFile == "") != (g.keyFile == "") {
		return nil, usagef("--etcd-cert-file and --etcd-key-file go together: set both or neither")
	}
	if g.certFile != "" {
		cert, err := tls.LoadX509KeyPair(g.certFile, g.keyFile)
		if err != nil {
			return nil, usagef("--etcd-cert-file/--etcd-key-file: %v", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// password returns the etcd password from PGHA_ETCD_PASSWORD or
// --etcd-password-file. Errors never hold the password.
func (g *globals) password() (string, error) {
	env := g.env("PGHA_ETCD_PASSWORD")
	switch {
	case env != "" && g.passFile != "":
		return "", usagef("both PGHA_ETCD_PASSWORD and --etcd-password-file are set: keep one")
	case env != "":
		return env, nil
	case g.passFile != "":
		b, err := os.ReadFile(g.passFile)
		if err != nil {
			return "", usagef("--etcd-password-file: %v", err)
		}
		return strings.TrimRight(string(b), "\r\n"), nil
	}
	return "", nil
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
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   eps,
		TLS:         tlsCfg,
		Username:    g.username,
		Password:    pass,
		DialTimeout: g.timeout,
		Context:     ctx,
		Logger:      zap.NewNop(),
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
