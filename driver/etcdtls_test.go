package driver_test

import (
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pgha/pgha/driver"
	"github.com/pgha/pgha/internal/testutil"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestEtcdTLSSettingErrors: a pool whose own etcd client cannot work with
// its settings says which Config field to fix, within a bounded time:
// at NewWithConfig when the client authenticates with a password, else in
// the ErrNoPrimary of the first operation (after FailoverTimeout).
func TestEtcdTLSSettingErrors(t *testing.T) {
	ca := testutil.NewCA(t)
	etcd := testutil.StartEtcdWith(t, testutil.EtcdOptions{TLS: ca})
	etcd.EnableAuth(t, "root-secret")
	etcd.AddRole(t, "pool", testutil.EtcdPerm{Key: "/pgha/c1/", RangeEnd: clientv3.GetPrefixRangeEnd("/pgha/c1/"), Type: clientv3.PermissionType(clientv3.PermRead)})
	const pw = "app-secret-Vb61"
	etcd.AddUser(t, "app", pw, "pool")
	other := testutil.NewCA(t)
	ep := etcd.Endpoints()[0]
	for _, tc := range []struct {
		name      string
		endpoints []string
		tls       *tls.Config
		user, pw  string
		// atNew: the error comes from NewWithConfig; else from Exec.
		atNew bool
		field string
		want  string
	}{
		{"wrong CA", nil, other.ClientTLS(t, "app"), "app", pw, true, "EtcdTLS.RootCAs", "do not hold the CA"},
		{"wrong password", nil, ca.ClientTLS(t, "app"), "app", "wrong", true, "EtcdUsername/EtcdPassword", "rejected by etcd"},
		{"no client certificate", nil, ca.ClientTLS(t, ""), "", "", false, "EtcdTLS.Certificates", "etcd requires one"},
		{"client certificate of another CA", nil, &tls.Config{RootCAs: ca.Pool, Certificates: other.ClientTLS(t, "app").Certificates}, "", "", false, "EtcdTLS.Certificates", "refused by etcd"},
		{"http for a TLS etcd", []string{"http" + strings.TrimPrefix(ep, "https")}, nil, "", "", false, "EtcdEndpoints", "use https://"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := parse(t, "host=127.0.0.1 user=postgres password=x dbname=postgres")
			cfg.Hosts = nil
			cfg.EtcdEndpoints = tc.endpoints
			if cfg.EtcdEndpoints == nil {
				cfg.EtcdEndpoints = []string{ep}
			}
			cfg.EtcdTLS, cfg.EtcdUsername, cfg.EtcdPassword = tc.tls, tc.user, tc.pw
			cfg.Cluster = "c1"
			cfg.FailoverTimeout = 3 * time.Second
			cfg.Logger = testLogger(t)
			start := time.Now()
			p, err := driver.NewWithConfig(t.Context(), cfg)
			if !tc.atNew {
				if err != nil {
					t.Fatalf("NewWithConfig: %v; want a pool (the client dials lazily)", err)
				}
				defer p.Close()
				_, err = p.Exec(testutil.Ctx(t, 30*time.Second), "SELECT 1")
				if !errors.Is(err, driver.ErrNoPrimary) {
					t.Fatalf("Exec: %v; want ErrNoPrimary", err)
				}
			}
			took := time.Since(start)
			var ce *driver.ConfigError
			if !errors.As(err, &ce) || ce.Field != tc.field || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v; want a ConfigError for %s containing %q", err, tc.field, tc.want)
			}
			if strings.Contains(err.Error(), pw) || strings.Contains(err.Error(), "wrong\"") {
				t.Fatalf("the error holds the password: %v", err)
			}
			if took > 20*time.Second {
				t.Fatalf("the error took %v", took)
			}
			t.Log(fmt.Sprintf("after %v: %v", took.Round(time.Millisecond), err))
		})
	}
}
