// Package etcdclient builds pgha's etcd clients the same way everywhere:
// [New] (clientv3.New without the client's own log chatter) and
// [TLSConfig] (the client's TLS setup from PEM files, as the example
// programs take it from their --etcd-ca-file, --etcd-cert-file and
// --etcd-key-file settings).
package etcdclient

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
)

// New is clientv3.New with cfg.Logger set to a no-op logger when it is
// nil: the etcd client logs every retry and reconnect, which would drown
// the lines of the loop that decides what to do about them (the HA loop,
// the pool's failover path). Its errors are clientv3.New's.
//
// Keep-alives: gRPC raises DialKeepAliveTime below 10 s to 10 s, so a
// shorter setting does not detect a dead connection sooner. Watches rely
// on internal/etcdmirror's progress requests for that instead.
//
// Reconnects: gRPC's default connection backoff grows to 120 s, so after
// an etcd outage of a minute a client could wait another half minute
// before it dials again, and a failsafe leader (ha.Config.Failsafe)
// would fence although etcd is back. New caps the backoff at
// MaxReconnectDelay (the caller's DialOptions still win).
func New(cfg clientv3.Config) (*clientv3.Client, error) {
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	cfg.DialOptions = append([]grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
		Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: MaxReconnectDelay},
		MinConnectTimeout: 5 * time.Second,
	})}, cfg.DialOptions...)
	return clientv3.New(cfg)
}

// MaxReconnectDelay is the longest a client from [New] waits between two
// attempts to connect to an etcd member.
const MaxReconnectDelay = time.Second

// TLSFiles names the PEM files of an etcd client's TLS setup. Every field
// may be empty.
type TLSFiles struct {
	// CAFile holds the CA certificates that sign etcd's server
	// certificate (--etcd-ca-file). Empty means the system's roots.
	CAFile string
	// CertFile and KeyFile hold the client certificate and its key
	// (--etcd-cert-file, --etcd-key-file), for etcd's client-cert-auth.
	// Set both or neither.
	CertFile, KeyFile string
}

// TLSConfig returns the TLS setup for an etcd client of endpoints: from
// the files when any is set; else TLS with the system's CA roots when an
// endpoint is https://; else nil (plain http://). Its errors name the
// setting to fix (--etcd-ca-file, --etcd-cert-file, --etcd-key-file) and
// the file.
func TLSConfig(endpoints []string, f TLSFiles) (*tls.Config, error) {
	if f == (TLSFiles{}) {
		for _, e := range endpoints {
			if strings.HasPrefix(e, "https://") {
				// TLS with the system's CA roots.
				return &tls.Config{MinVersion: tls.VersionTLS12}, nil
			}
		}
		return nil, nil
	}
	if (f.CertFile == "") != (f.KeyFile == "") {
		return nil, fmt.Errorf("--etcd-cert-file and --etcd-key-file go together: set both or neither")
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if f.CAFile != "" {
		pem, err := os.ReadFile(f.CAFile)
		if err != nil {
			return nil, fmt.Errorf("--etcd-ca-file: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--etcd-ca-file %s holds no PEM certificate", f.CAFile)
		}
	}
	if f.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("--etcd-cert-file %s and --etcd-key-file %s: %w", f.CertFile, f.KeyFile, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}
