package etcdclient_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap/zapcore"

	"github.com/pgha/pgha/internal/etcdclient"
	"github.com/pgha/pgha/internal/testutil"
)

func TestMain(m *testing.M) { testutil.VerifyNoLeaks(m) }

func TestTLSConfig(t *testing.T) {
	ca := testutil.NewCA(t)
	cert := ca.IssueClient(t, "alice")
	missing := filepath.Join(t.TempDir(), "missing.pem")

	if tc, err := etcdclient.TLSConfig([]string{"http://e:2379"}, etcdclient.TLSFiles{}); tc != nil || err != nil {
		t.Errorf("no files, http: %v, %v; want nil, nil", tc, err)
	}
	if tc, err := etcdclient.TLSConfig([]string{"http://a:2379", "https://e:2379"}, etcdclient.TLSFiles{}); tc == nil || tc.RootCAs != nil || err != nil {
		t.Errorf("no files, https: %v, %v; want TLS with the system roots", tc, err)
	}
	tc, err := etcdclient.TLSConfig(nil, etcdclient.TLSFiles{CAFile: ca.CertFile, CertFile: cert.CertFile, KeyFile: cert.KeyFile})
	if err != nil || tc.RootCAs == nil || len(tc.Certificates) != 1 {
		t.Fatalf("CA and client certificate: %+v, %v; want both loaded", tc, err)
	}
	for _, bad := range []struct {
		name  string
		files etcdclient.TLSFiles
		want  []string
	}{
		{"a key as CA", etcdclient.TLSFiles{CAFile: cert.KeyFile}, []string{"--etcd-ca-file", cert.KeyFile, "holds no PEM certificate"}},
		{"missing CA", etcdclient.TLSFiles{CAFile: missing}, []string{"--etcd-ca-file", missing}},
		{"certificate without key", etcdclient.TLSFiles{CertFile: cert.CertFile}, []string{"--etcd-cert-file and --etcd-key-file go together"}},
		{"key without certificate", etcdclient.TLSFiles{KeyFile: cert.KeyFile}, []string{"--etcd-cert-file and --etcd-key-file go together"}},
		{"missing key", etcdclient.TLSFiles{CertFile: cert.CertFile, KeyFile: missing}, []string{"--etcd-key-file " + missing}},
		{"certificate and key swapped", etcdclient.TLSFiles{CertFile: cert.KeyFile, KeyFile: cert.CertFile}, []string{"--etcd-cert-file " + cert.KeyFile}},
	} {
		_, err := etcdclient.TLSConfig(nil, bad.files)
		for _, w := range bad.want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("%s: TLSConfig = %v; want an error containing %q", bad.name, err, w)
			}
		}
	}
	if _, err := os.Stat(cert.KeyFile); err != nil {
		t.Fatal(err)
	}
}

// TestNew: a client built with New works and has a logger (a nil one
// makes clientv3 build a production zap logger that writes to stderr).
func TestNew(t *testing.T) {
	c := testutil.StartEtcd(t, 1)
	cli, err := etcdclient.New(clientv3.Config{Endpoints: c.Endpoints(), DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if _, err := cli.Put(testutil.Ctx(t, 10*time.Second), "/k", "v"); err != nil {
		t.Fatalf("put through a client from New: %v", err)
	}
	if l := cli.GetLogger(); l == nil || l.Core().Enabled(zapcore.DebugLevel) || l.Core().Enabled(zapcore.ErrorLevel) {
		t.Errorf("New's client logs (logger %v); want the no-op logger", l)
	}
}
