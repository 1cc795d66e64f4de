package driver

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/pgha/pgha/internal/etcdtls"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
)

// etcdClientError explains why the pool's own etcd client could not be
// created: rejected credentials, a TLS setting that cannot work, or else
// the client's own error.
func etcdClientError(cfg *Config, err error) error {
	if errors.Is(err, rpctypes.ErrAuthFailed) {
		return &ConfigError{"EtcdUsername/EtcdPassword", strconv.Quote(cfg.EtcdUsername) + " (password redacted)", "were rejected by etcd: check the user name and password"}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if d := etcdtls.Diagnose(ctx, cfg.EtcdEndpoints, cfg.EtcdTLS, 3*time.Second); d != nil {
		return etcdTLSError(d)
	}
	return &ConfigError{"EtcdEndpoints", cfg.EtcdEndpoints, "cannot be used: " + err.Error()}
}

// etcdTLSError names the Config field behind a TLS problem.
func etcdTLSError(d *etcdtls.Error) *ConfigError {
	switch d.Problem {
	case etcdtls.UnknownAuthority:
		return &ConfigError{"EtcdTLS.RootCAs", d.Endpoint, fmt.Sprintf("do not hold the CA that signed the server's certificate (%v): add that CA to EtcdTLS.RootCAs", d.Err)}
	case etcdtls.WrongHost:
		return &ConfigError{"EtcdEndpoints", d.Endpoint, fmt.Sprintf("names a host the server's certificate is not valid for (%v): use a host named in the certificate", d.Err)}
	case etcdtls.ClientCertRequired:
		return &ConfigError{"EtcdTLS.Certificates", d.Endpoint, "hold no client certificate but etcd requires one: add one (tls.LoadX509KeyPair)"}
	case etcdtls.ClientCertRefused:
		return &ConfigError{"EtcdTLS.Certificates", d.Endpoint, fmt.Sprintf("were refused by etcd (%v): use a client certificate signed by the CA etcd trusts for clients", d.Err)}
	case etcdtls.PlainURLForTLS:
		return &ConfigError{"EtcdEndpoints", d.Endpoint, "is http:// but etcd serves TLS there: use https:// and set EtcdTLS"}
	case etcdtls.BadEndpoint:
		return &ConfigError{"EtcdEndpoints", d.Endpoint, "is not a URL such as https://10.0.0.1:2379"}
	}
	return &ConfigError{"EtcdTLS", d.Endpoint, d.Error()}
}

// diagnoseEtcd runs once, in the background, for a pool that built its own
// etcd client: an etcd client dials lazily and only ever reports "deadline
// exceeded", so when the TLS settings cannot work, the reason replaces
// "etcd has not answered yet" in the pool's ErrNoPrimary errors, and is
// logged once.
func (p *Pool) diagnoseEtcd(cfg *Config) {
	d := etcdtls.Diagnose(p.ctx, cfg.EtcdEndpoints, cfg.EtcdTLS, 3*time.Second)
	if d == nil {
		return
	}
	err := etcdTLSError(d)
	p.mu.Lock()
	set := !p.etcdAnswered && !p.closed
	if set {
		p.lastErr = err
	}
	p.mu.Unlock()
	if set {
		p.log.Error("etcd cannot be used with these settings", "err", err)
	}
}
