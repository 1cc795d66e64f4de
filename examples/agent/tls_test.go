package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgha/pgha/ha"
	"github.com/pgha/pgha/internal/testutil"
)

// secureEtcd starts an etcd with client TLS and authentication on, with
// the manager role of cluster for user "mgr" (password mgrPassword) and a
// user "nobody" without any role.
func secureEtcd(t *testing.T, cluster string) (*testutil.EtcdCluster, *testutil.CA) {
	t.Helper()
	ca := testutil.NewCA(t)
	etcd := testutil.StartEtcdWith(t, testutil.EtcdOptions{TLS: ca})
	etcd.EnableAuth(t, "root-secret")
	roles, err := ha.EtcdRoles("", cluster)
	if err != nil {
		t.Fatal(err)
	}
	mgr := roles[0]
	var perms []testutil.EtcdPerm
	for _, p := range mgr.Permissions {
		perms = append(perms, testutil.EtcdPerm{Key: p.Key, RangeEnd: p.RangeEnd(), Type: p.Type})
	}
	etcd.AddRole(t, mgr.Name, perms...)
	etcd.AddUser(t, "mgr", mgrPassword, mgr.Name)
	etcd.AddUser(t, "nobody", mgrPassword)
	return etcd, ca
}

const mgrPassword = "mgr-secret-Kd82"

// TestAgentEtcdTLS: the agent starts against an etcd with TLS (client
// certificates required) and authentication, with a user holding only the
// manager role of its cluster, and bootstraps a PostgreSQL that requires
// TLS (the --pg-ssl-* flags): plain TCP is refused, verify-full accepted.
func TestAgentEtcdTLS(t *testing.T) {
	etcd, ca := secureEtcd(t, "agenttls")
	cert := ca.IssueClient(t, "mgr")
	srv := ca.IssueServer(t, "t1", "127.0.0.1")
	args, addr, _ := agentArgs(t, "t1", "agenttls", etcd.Endpoints()[0])
	args = append(args, "--lease-ttl", "5s",
		"--etcd-ca-file", ca.CertFile, "--etcd-cert-file", cert.CertFile, "--etcd-key-file", cert.KeyFile,
		"--etcd-username", "mgr", "--etcd-dial-timeout", "30s",
		"--pg-ssl-cert-file", srv.CertFile, "--pg-ssl-key-file", srv.KeyFile, "--pg-ssl-ca-file", ca.CertFile)
	port := ""
	for i, a := range args {
		if a == "--pg-port" {
			port = args[i+1]
		}
	}
	env := []string{
		"PGHA_ETCD_PASSWORD=" + mgrPassword,
		"PGHA_PG_SUPERUSER_PASSWORD=" + testutil.PostgresSuperuserPassword,
		"PGHA_PG_REPLICATION_PASSWORD=" + testutil.PostgresReplicationPassword,
	}
	startAgent(t, args, env)
	waitStatus(t, addr, "/primary", 200)

	ctx := testutil.Ctx(t, 30*time.Second)
	dsn := fmt.Sprintf("host=127.0.0.1 port=%s user=postgres password=%s dbname=postgres connect_timeout=5 ", port, testutil.PostgresSuperuserPassword)
	_, err := pgx.Connect(ctx, dsn+"sslmode=disable")
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "28000" {
		t.Fatalf("plain TCP connection: %v; want a pg_hba rejection (28000)", err)
	}
	conn, err := pgx.Connect(ctx, dsn+"sslmode=verify-full sslrootcert="+ca.CertFile)
	if err != nil {
		t.Fatalf("verify-full connection: %v", err)
	}
	conn.Close(ctx)
}

// TestAgentEtcdTLSErrors: settings that can never work stop the agent at
// start, within etcd-dial-timeout, with an error naming what to fix.
func TestAgentEtcdTLSErrors(t *testing.T) {
	etcd, ca := secureEtcd(t, "agenttls")
	other := testutil.NewCA(t)
	cert := ca.IssueClient(t, "mgr")
	foreign := other.IssueClient(t, "mgr")
	nobody := ca.IssueClient(t, "nobody")
	ep := etcd.Endpoints()[0]
	for _, tc := range []struct {
		name string
		args []string
		pw   string
		want []string
	}{
		{"wrong CA", []string{"--etcd-ca-file", other.CertFile, "--etcd-cert-file", cert.CertFile, "--etcd-key-file", cert.KeyFile, "--etcd-username", "mgr"},
			mgrPassword, []string{"not signed by a CA in --etcd-ca-file"}},
		{"wrong CA, certificate only", []string{"--etcd-ca-file", other.CertFile, "--etcd-cert-file", cert.CertFile, "--etcd-key-file", cert.KeyFile},
			"", []string{"not signed by a CA in --etcd-ca-file"}},
		{"no client certificate", []string{"--etcd-ca-file", ca.CertFile, "--etcd-username", "mgr"},
			mgrPassword, []string{"requires a client certificate", "--etcd-cert-file"}},
		{"client certificate of another CA", []string{"--etcd-ca-file", ca.CertFile, "--etcd-cert-file", foreign.CertFile, "--etcd-key-file", foreign.KeyFile},
			"", []string{"refused this agent's client certificate", "--etcd-cert-file"}},
		{"wrong password", []string{"--etcd-ca-file", ca.CertFile, "--etcd-cert-file", cert.CertFile, "--etcd-key-file", cert.KeyFile, "--etcd-username", "mgr"},
			"wrong", []string{`rejected user "mgr"`, "PGHA_ETCD_PASSWORD"}},
		{"http for a TLS etcd", []string{"--etcd-endpoints", "http" + strings.TrimPrefix(ep, "https")},
			"", []string{"is http:// but etcd serves TLS", "https://"}},
		{"user without the manager role", []string{"--etcd-ca-file", ca.CertFile, "--etcd-cert-file", nobody.CertFile, "--etcd-key-file", nobody.KeyFile},
			"", []string{"may not read /pgha/agenttls/", "pgha-agenttls-manager"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args, _, _ := agentArgs(t, "t1", "agenttls", ep)
			args = append(args, "--etcd-dial-timeout", "3s")
			args = append(args, tc.args...)
			env := []string{
				"PGHA_PG_SUPERUSER_PASSWORD=" + testutil.PostgresSuperuserPassword,
				"PGHA_PG_REPLICATION_PASSWORD=" + testutil.PostgresReplicationPassword,
			}
			if tc.pw != "" {
				env = append(env, "PGHA_ETCD_PASSWORD="+tc.pw)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			log := &syncBuffer{}
			start := time.Now()
			err := run(ctx, args, env, log)
			took := time.Since(start)
			if ctx.Err() != nil {
				t.Fatalf("run did not return within 30s (it returned %v); log:\n%s", err, log.String())
			}
			if err == nil {
				t.Fatalf("run returned nil; want an error containing %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if strings.Contains(err.Error(), mgrPassword) || (tc.pw != "" && strings.Contains(err.Error(), tc.pw)) {
				t.Errorf("the error holds the password: %v", err)
			}
			t.Logf("after %v: %v", took.Round(time.Millisecond), err)
		})
	}
}

// TestAgentPGTLSFlagErrors: incomplete PostgreSQL TLS flags fail the start
// naming the flag to set.
func TestAgentPGTLSFlagErrors(t *testing.T) {
	etcd := testutil.StartEtcd(t, 1)
	ca := testutil.NewCA(t)
	srv := ca.IssueServer(t, "t1", "127.0.0.1")
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no key", []string{"--pg-ssl-cert-file", srv.CertFile, "--pg-ssl-ca-file", ca.CertFile}, "--pg-ssl-key-file"},
		{"no CA", []string{"--pg-ssl-cert-file", srv.CertFile, "--pg-ssl-key-file", srv.KeyFile}, "--pg-ssl-ca-file"},
		{"key without cert", []string{"--pg-ssl-key-file", srv.KeyFile}, "--pg-ssl-key-file"},
		{"client cert without key", []string{"--pg-ssl-cert-file", srv.CertFile, "--pg-ssl-key-file", srv.KeyFile, "--pg-ssl-ca-file", ca.CertFile, "--pg-ssl-client-cert-file", srv.CertFile}, "--pg-ssl-client-cert-file"},
		{"missing file", []string{"--pg-ssl-cert-file", srv.CertFile, "--pg-ssl-key-file", srv.KeyFile, "--pg-ssl-ca-file", ca.Dir + "/absent.crt"}, "--pg-ssl-ca-file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args, _, _ := agentArgs(t, "t1", "agentpgtls", etcd.Endpoints()[0])
			args = append(args, tc.args...)
			env := []string{
				"PGHA_PG_SUPERUSER_PASSWORD=" + testutil.PostgresSuperuserPassword,
				"PGHA_PG_REPLICATION_PASSWORD=" + testutil.PostgresReplicationPassword,
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			err := run(ctx, args, env, &syncBuffer{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("run: %v; want an error naming %s", err, tc.want)
			}
		})
	}
}
