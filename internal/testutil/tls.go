package testutil

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"
)

// CA is a throwaway certificate authority for one test: an ECDSA P-256 key
// and a self-signed CA certificate, valid for one day, written as PEM to a
// temp dir. It issues server certificates (with SANs for the names and IP
// addresses given) and client certificates (CN = the user name, which is
// how etcd and PostgreSQL map a certificate to a user).
//
// When the test runs as root, the files are owned by the postgres OS user
// (mode 0600 for keys, 0644 for certificates) and the directory is
// traversable by it, because PostgreSQL, which runs as that user, reads
// its certificate and key and refuses a key that others can read.
type CA struct {
	// Dir holds every file the CA writes.
	Dir string
	// CertFile is the CA certificate (PEM): the trust root to give clients
	// and servers.
	CertFile string
	// Pool holds the CA certificate.
	Pool *x509.CertPool

	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	n    atomic.Int64
}

// CertFiles are the PEM files of one issued certificate and its key.
type CertFiles struct {
	CertFile, KeyFile string
}

// NewCA creates a CA whose files live in a new temp dir of t.
func NewCA(t TB) *CA {
	t.Helper()
	ca, err := newCA(t.TempDir(), "pgha test CA")
	if err != nil {
		t.Fatalf("testutil.NewCA: %v", err)
	}
	return ca
}

func newCA(dir, cn string) (*CA, error) {
	if os.Geteuid() == 0 {
		// t.TempDir makes 0700 directories: let the postgres user
		// through (it reads the server certificate and key).
		for _, d := range []string{dir, filepath.Dir(dir)} {
			if err := os.Chmod(d, 0o711); err != nil {
				return nil, err
			}
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("self-sign CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	ca := &CA{Dir: dir, CertFile: filepath.Join(dir, "ca.crt"), Pool: x509.NewCertPool(), cert: cert, key: key}
	ca.Pool.AddCert(cert)
	ca.n.Store(1)
	if err := writePEM(ca.CertFile, "CERTIFICATE", der, 0o644); err != nil {
		return nil, err
	}
	return ca, nil
}

// IssueServer issues a certificate for a server reachable as hosts (IP
// addresses and DNS names, each one a SAN), usable both as a server and as
// a client certificate (etcd's own gateway dials itself with it). name
// names the files (name-<serial>.crt and .key).
func (ca *CA) IssueServer(t TB, name string, hosts ...string) CertFiles {
	t.Helper()
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: name},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	f, err := ca.issue(name, tmpl)
	if err != nil {
		t.Fatalf("testutil: issue server certificate %s for %v: %v", name, hosts, err)
	}
	return f
}

// IssueClient issues a client certificate with CN = user, in files
// named client-<user>-<serial>.crt and .key.
func (ca *CA) IssueClient(t TB, user string) CertFiles {
	t.Helper()
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: user},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	f, err := ca.issue("client-"+user, tmpl)
	if err != nil {
		t.Fatalf("testutil: issue client certificate for %q: %v", user, err)
	}
	return f
}

// ClientTLS returns a TLS client config that trusts the CA and, when user
// is not empty, presents a client certificate with CN = user.
func (ca *CA) ClientTLS(t TB, user string) *tls.Config {
	t.Helper()
	cfg := &tls.Config{RootCAs: ca.Pool, MinVersion: tls.VersionTLS12}
	if user != "" {
		f := ca.IssueClient(t, user)
		cert, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
		if err != nil {
			t.Fatalf("testutil: load client certificate %s: %v", f.CertFile, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg
}

func (ca *CA) issue(name string, tmpl *x509.Certificate) (CertFiles, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return CertFiles{}, err
	}
	now := time.Now()
	serial := ca.n.Add(1)
	tmpl.SerialNumber = big.NewInt(serial)
	tmpl.NotBefore = now.Add(-time.Hour)
	tmpl.NotAfter = now.Add(24 * time.Hour)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return CertFiles{}, err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return CertFiles{}, err
	}
	base := filepath.Join(ca.Dir, fmt.Sprintf("%s-%d", name, serial))
	f := CertFiles{CertFile: base + ".crt", KeyFile: base + ".key"}
	if err := writePEM(f.CertFile, "CERTIFICATE", der, 0o644); err != nil {
		return CertFiles{}, err
	}
	if err := writePEM(f.KeyFile, "PRIVATE KEY", kder, 0o600); err != nil {
		return CertFiles{}, err
	}
	return f, nil
}

func writePEM(path, typ string, der []byte, perm os.FileMode) error {
	b := pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
	if err := os.WriteFile(path, b, perm); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if os.Geteuid() == 0 {
		if err := chownToPostgres(path); err != nil {
			return fmt.Errorf("chown %s: %w", path, err)
		}
	}
	return nil
}
