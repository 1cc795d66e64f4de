package replicate_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgha/pgha/internal/testutil"
	"github.com/pgha/pgha/replicate"
)

// withTLS returns a Configure func giving a node a server certificate for
// hosts from ca, and ca as its trust root.
func withTLS(t *testing.T, ca *testutil.CA, name string, hosts ...string) func(*replicate.Config) {
	srv := ca.IssueServer(t, name, hosts...)
	return func(c *replicate.Config) {
		c.TLS = replicate.TLSConfig{CertFile: srv.CertFile, KeyFile: srv.KeyFile, CAFile: ca.CertFile}
	}
}

// connectTCP connects to inst over TCP as the superuser with the given
// libpq TLS keywords.
func connectTCP(ctx context.Context, inst *replicate.Instance, host, ssl string) (*pgx.Conn, error) {
	cfg := inst.Config()
	cc, err := pgx.ParseConfig(fmt.Sprintf("host=%s port=%d user=%s password=%s dbname=postgres connect_timeout=5 %s",
		host, cfg.Port, cfg.Superuser, cfg.SuperuserPassword, ssl))
	if err != nil {
		return nil, err
	}
	return pgx.ConnectConfig(ctx, cc)
}

// TestTLSRequired: a server with TLS on refuses plain TCP connections,
// accepts sslmode=verify-full for the name in its certificate and no other
// name, and a standby cloned from it with verify-full streams over TLS.
func TestTLSRequired(t *testing.T) {
	ca := testutil.NewCA(t)
	primary := testutil.StartPostgres(t, testutil.PostgresOptions{Name: "tls1", Configure: withTLS(t, ca, "tls1", "127.0.0.1")})
	ctx := testutil.Ctx(t, 2*time.Minute)

	// Plain TCP: no pg_hba line matches.
	_, err := connectTCP(ctx, primary, "127.0.0.1", "sslmode=disable")
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "28000" || !strings.Contains(pe.Message, "no encryption") {
		t.Fatalf("plain TCP connection: %v; want a pg_hba rejection (28000, no encryption)", err)
	}
	// verify-full for the certificate's address.
	conn, err := connectTCP(ctx, primary, "127.0.0.1", "sslmode=verify-full sslrootcert="+ca.CertFile)
	if err != nil {
		t.Fatalf("verify-full to 127.0.0.1: %v", err)
	}
	var ssl bool
	if err := conn.QueryRow(ctx, "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&ssl); err != nil || !ssl {
		t.Fatalf("pg_stat_ssl of the verify-full connection: ssl=%v, %v", ssl, err)
	}
	conn.Close(ctx)
	// verify-full for a name the certificate does not hold.
	_, err = connectTCP(ctx, primary, "localhost", "sslmode=verify-full sslrootcert="+ca.CertFile)
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("verify-full to localhost with a certificate for 127.0.0.1 only: %v; want a certificate error", err)
	}
	// A CA that did not sign the certificate.
	other := testutil.NewCA(t)
	_, err = connectTCP(ctx, primary, "127.0.0.1", "sslmode=verify-full sslrootcert="+other.CertFile)
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("verify-full with another CA: %v; want a certificate error", err)
	}

	// A standby cloned over verify-full streams over TLS, with a client
	// certificate.
	cli := ca.IssueClient(t, "replicator")
	standby := testutil.StartPostgres(t, testutil.PostgresOptions{Name: "tls2", CloneFrom: primary, Configure: func(c *replicate.Config) {
		withTLS(t, ca, "tls2", "localhost")(c)
		c.TLS.ClientCertFile, c.TLS.ClientKeyFile = cli.CertFile, cli.KeyFile
	}})
	if err := testutil.PostgresExec(ctx, primary, "CREATE TABLE t AS SELECT 42 AS x"); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 30*time.Second, "the standby replays the row", func() error {
		n, err := testutil.PostgresQueryInt(ctx, standby, "SELECT x FROM t")
		if err != nil {
			return err
		}
		if n != 42 {
			return fmt.Errorf("x = %d", n)
		}
		return nil
	})
	var walSSL bool
	var clientDN string
	testutil.Eventually(t, 30*time.Second, "the walsender to tls2 uses TLS", func() error {
		c, err := primary.Connect(ctx)
		if err != nil {
			return err
		}
		defer c.Close(context.Background())
		return c.QueryRow(ctx, `SELECT s.ssl, coalesce(s.client_dn, '') FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid) WHERE r.application_name = 'tls2'`).Scan(&walSSL, &clientDN)
	})
	if !walSSL || !strings.Contains(clientDN, "replicator") {
		t.Fatalf("walsender to tls2: ssl=%v client_dn=%q; want TLS with the client certificate CN=replicator", walSSL, clientDN)
	}
}

// TestTLSCloneWrongCA: a standby that trusts another CA cannot clone from a
// TLS server; the error says the certificate failed verification.
func TestTLSCloneWrongCA(t *testing.T) {
	ca := testutil.NewCA(t)
	primary := testutil.StartPostgres(t, testutil.PostgresOptions{Name: "tlsca1", Configure: withTLS(t, ca, "tlsca1", "127.0.0.1")})
	other := testutil.NewCA(t)
	cfg := testutil.PostgresConfig(t, "tlsca2")
	withTLS(t, other, "tlsca2", "127.0.0.1")(&cfg)
	inst, err := replicate.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	testutil.StopPostgresAtCleanup(t, inst)
	err = inst.Clone(testutil.Ctx(t, time.Minute), testutil.SourceOf(primary, ""))
	t.Logf("clone with the wrong CA: %v", err)
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("clone with the wrong CA: %v; want an error about the certificate", err)
	}
	if inst.Initialized() {
		t.Fatal("a failed clone left a data directory")
	}
}

// TestTLSConfigErrors: incomplete TLS settings are rejected naming the
// field.
func TestTLSConfigErrors(t *testing.T) {
	ca := testutil.NewCA(t)
	srv := ca.IssueServer(t, "x", "127.0.0.1")
	for _, tc := range []struct {
		name  string
		tls   replicate.TLSConfig
		param string
		field string
	}{
		{"key missing", replicate.TLSConfig{CertFile: srv.CertFile, CAFile: ca.CertFile}, "", "TLS.KeyFile"},
		{"CA missing", replicate.TLSConfig{CertFile: srv.CertFile, KeyFile: srv.KeyFile}, "", "TLS.CAFile"},
		{"no cert", replicate.TLSConfig{KeyFile: srv.KeyFile}, "", "TLS.KeyFile"},
		{"relative", replicate.TLSConfig{CertFile: "server.crt", KeyFile: srv.KeyFile, CAFile: ca.CertFile}, "", "TLS.CertFile"},
		{"client key missing", replicate.TLSConfig{CertFile: srv.CertFile, KeyFile: srv.KeyFile, CAFile: ca.CertFile, ClientCertFile: srv.CertFile}, "", "TLS.ClientCertFile/ClientKeyFile"},
		{"file absent", replicate.TLSConfig{CertFile: srv.CertFile, KeyFile: srv.KeyFile, CAFile: ca.Dir + "/absent.crt"}, "", "TLS.CAFile"},
		{"ssl parameter", replicate.TLSConfig{CertFile: srv.CertFile, KeyFile: srv.KeyFile, CAFile: ca.CertFile}, "ssl", "Parameters"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testutil.PostgresConfig(t, "tlscfg")
			cfg.TLS = tc.tls
			if tc.param != "" {
				cfg.Parameters = map[string]string{tc.param: "off"}
			}
			_, err := replicate.New(cfg)
			var ce *replicate.ConfigError
			if !errors.As(err, &ce) || ce.Field != tc.field {
				t.Fatalf("New: %v; want a ConfigError for %s", err, tc.field)
			}
		})
	}
}
