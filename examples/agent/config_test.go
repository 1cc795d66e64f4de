package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const (
	testSuper = "cfg-super-Jx72"
	testRepl  = "cfg-repl-Kq19"
)

var baseEnv = []string{"PGHA_PG_SUPERUSER_PASSWORD=" + testSuper, "PGHA_PG_REPLICATION_PASSWORD=" + testRepl}

// TestConfigPrecedence: flags override the environment, which overrides
// the config file (YAML or JSON), which overrides the defaults.
func TestConfigPrecedence(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{
		"agent.yaml": "cluster: main\nnode: fromfile\nlease_ttl: 7s\npg_port: 1111\npg_data_dir: /data/pg\n" +
			"etcd_endpoints:\n  - http://e1:2379\n  - http://e2:2379\nmax_lag_on_failover: 4194304\nnofailover: true\n" +
			"pg_parameters:\n  work_mem: 8MB\n  shared_preload_libraries: 'a,b'\n",
		"agent.json": `{"cluster": "main", "node": "fromfile", "lease_ttl": "7s", "pg_port": 1111, "pg_data_dir": "/data/pg",
			"etcd_endpoints": ["http://e1:2379", "http://e2:2379"], "max_lag_on_failover": 4194304, "nofailover": true,
			"pg_parameters": {"work_mem": "8MB", "shared_preload_libraries": "a,b"}}`,
	} {
		t.Run(name, func(t *testing.T) {
			file := writeFile(t, dir, name, content)
			env := append([]string{"PGHA_CONFIG=" + file, "PGHA_NODE=fromenv", "PGHA_PG_PORT=2222"}, baseEnv...)
			cfg, err := loadConfig([]string{"--pg-port", "3333"}, env, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.cluster != "main" || cfg.node != "fromenv" || cfg.pgPort != 3333 || cfg.leaseTTL != 7*time.Second ||
				cfg.pgDataDir != "/data/pg" || strings.Join(cfg.etcdEndpoints, " ") != "http://e1:2379 http://e2:2379" ||
				cfg.maxLagOnFailover != 4<<20 || !cfg.noFailover || cfg.pgParameters["shared_preload_libraries"] != "a,b" ||
				cfg.pgParameters["work_mem"] != "8MB" {
				t.Errorf("config: %+v", *cfg)
			}
			if cfg.loopInterval != 500*time.Millisecond || cfg.listen != ":8008" || cfg.pgAdvertiseHost != "127.0.0.1" {
				t.Errorf("defaults: loop %v listen %q advertise %q", cfg.loopInterval, cfg.listen, cfg.pgAdvertiseHost)
			}
			if string(cfg.pgSuperuserPassword) != testSuper || string(cfg.pgReplicationPassword) != testRepl {
				t.Errorf("passwords not read from the environment")
			}
		})
	}
}

// TestPasswordFiles: passwords come from files (trailing newline cut).
func TestPasswordFiles(t *testing.T) {
	dir := t.TempDir()
	args := []string{"--cluster", "c", "--node", "n", "--pg-data-dir", "/d",
		"--pg-superuser-password-file", writeFile(t, dir, "s", testSuper+"\n"),
		"--pg-replication-password-file", writeFile(t, dir, "r", testRepl)}
	cfg, err := loadConfig(args, nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if string(cfg.pgSuperuserPassword) != testSuper || string(cfg.pgReplicationPassword) != testRepl {
		t.Errorf("passwords not read from files")
	}
}

// TestSecretRedacted: a secret never prints.
func TestSecretRedacted(t *testing.T) {
	s := secret(testSuper)
	for _, out := range []string{s.String(), s.LogValue().String(), sprintf("%v %s %+v %#v %q", s, s, s, s, s)} {
		if strings.Contains(out, testSuper) {
			t.Errorf("secret printed: %s", out)
		}
	}
}

// TestConfigErrors: each bad configuration is an error that names the
// setting and the fix, and holds no password.
func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	good := []string{"--cluster", "c", "--node", "n", "--pg-data-dir", "/d"}
	for _, tc := range []struct {
		name string
		args []string
		env  []string
		want string
	}{
		{"no cluster", []string{"--node", "n", "--pg-data-dir", "/d"}, nil, `cluster is required: set --cluster, PGHA_CLUSTER or "cluster" in the config file`},
		{"bad cluster", []string{"--cluster", "a/b", "--node", "n", "--pg-data-dir", "/d"}, nil, `cluster "a/b" is invalid`},
		{"no data dir", []string{"--cluster", "c", "--node", "n"}, nil, "pg-data-dir is required: set --pg-data-dir, PGHA_PG_DATA_DIR"},
		{"bad duration", good, []string{"PGHA_LEASE_TTL=5"}, `PGHA_LEASE_TTL="5": not a duration (e.g. 500ms, 5s, 1m)`},
		{"bad int flag", append(good, "--pg-port", "x"), nil, `--pg-port "x": not an integer`},
		{"bad parameters", append(good, "--pg-parameters", "work_mem"), nil, `"work_mem" is not name=value`},
		{"unknown flag", append(good, "--pg-prot", "1"), nil, "flag provided but not defined: -pg-prot"},
		{"stray argument", append(good, "extra"), nil, `unexpected argument "extra"`},
		{"unknown file key", append(good, "--config", writeFile(t, dir, "typo.yaml", "lease_tll: 5s\n")), nil, `unknown key "lease_tll"`},
		{"password in file", append(good, "--config", writeFile(t, dir, "pw.yaml", "pg_superuser_password: "+testSuper+"\n")), nil,
			`passwords never go in the config file: name a file with "pg_superuser_password_file", or set PGHA_PG_SUPERUSER_PASSWORD`},
		{"bad yaml", append(good, "--config", writeFile(t, dir, "bad.yaml", "cluster: [\n")), nil, "bad.yaml"},
		{"missing file", append(good, "--config", filepath.Join(dir, "nope.yaml")), nil, "--config: open"},
		{"two password sources", append(good, "--pg-superuser-password-file", writeFile(t, dir, "s", "x")), nil,
			"both PGHA_PG_SUPERUSER_PASSWORD and --pg-superuser-password-file are set: keep one"},
		{"no superuser password", good, []string{"PGHA_PG_SUPERUSER_PASSWORD="}, "set PGHA_PG_SUPERUSER_PASSWORD or --pg-superuser-password-file"},
		{"etcd user without password", append(good, "--etcd-username", "root"), nil, `etcd-username "root" has no password: set PGHA_ETCD_PASSWORD or --etcd-password-file`},
		{"etcd password without user", good, []string{"PGHA_ETCD_PASSWORD=" + testSuper}, "an etcd password is set but no etcd-username"},
		{"cert without key", append(good, "--etcd-cert-file", "/c.pem"), nil, "etcd-cert-file and etcd-key-file go together"},
		{"advertise host", append(good, "--pg-listen-addresses", "*"), nil, `pg-advertise-host is required when PostgreSQL listens beyond loopback (pg-listen-addresses "*")`},
		{"advertise port", append(good, "--pg-advertise-port", "70000"), nil, `pg-advertise-port 70000 is outside 1..65535`},
		{"log level", append(good, "--log-level", "loud"), nil, `log-level "loud": use debug, info, warn or error`},
		{"listen", append(good, "--listen", "8008"), nil, `listen "8008": want host:port or :port`},
		{"unknown replica method", append(good, "--replica-methods", "pgbackrest,wal-g"), nil, `--replica-methods (PGHA_REPLICA_METHODS, "replica_methods" in the config file): replicate: ReplicaMethods "wal-g" is not a replica method`},
		{"pgbackrest without stanza", append(good, "--replica-methods", "pgbackrest,basebackup"), nil, `replica-methods includes pgbackrest but pgbackrest-stanza is empty: set --pgbackrest-stanza`},
		{"command without path", append(good, "--replica-methods", "command"), nil, `replica-methods includes command but replica-command is empty: set --replica-command`},
		{"failsafe without token", append(good, "--failsafe"), nil, "failsafe needs the token nodes authenticate their failsafe calls with, the same on every node: set PGHA_HTTP_TOKEN or --http-token-file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := append(append([]string{}, baseEnv...), tc.env...)
			_, err := loadConfig(tc.args, env, io.Discard)
			checkConfigError(t, err, tc.want)
		})
	}
}

// TestFailsafeAPIURL: with --failsafe the API URL defaults to the
// advertised host and the listen port; an explicit one is kept.
func TestFailsafeAPIURL(t *testing.T) {
	good := []string{"--cluster", "c", "--node", "n", "--pg-data-dir", "/d", "--failsafe", "--listen", ":9008",
		"--pg-listen-addresses", "*", "--pg-advertise-host", "10.0.0.7"}
	env := append(append([]string{}, baseEnv...), "PGHA_HTTP_TOKEN=0123456789abcdef0123")
	cfg, err := loadConfig(good, env, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.apiURL != "http://10.0.0.7:9008" {
		t.Fatalf("api-url = %q; want http://10.0.0.7:9008", cfg.apiURL)
	}
	cfg, err = loadConfig(append(good, "--api-url", "https://n.example:8443"), env, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.apiURL != "https://n.example:8443" {
		t.Fatalf("api-url = %q; want the explicit one", cfg.apiURL)
	}
}

func checkConfigError(t *testing.T, err error, want string) {
	t.Helper()
	var ce *configError
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), want) {
		t.Fatalf("error %v; want a config error containing %q", err, want)
	}
	if strings.Contains(err.Error(), testSuper) || strings.Contains(err.Error(), testRepl) {
		t.Fatalf("error holds a password: %v", err)
	}
}

// TestLibraryConfigErrors: what ha.Config and replicate.Config reject is
// reported under the agent's setting names.
func TestLibraryConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"loop interval", []string{"--pg-data-dir", "/tmp/pgha-agent-test-none/data", "--loop-interval", "3s"}, "--loop-interval (PGHA_LOOP_INTERVAL"},
		{"relative data dir", []string{"--pg-data-dir", "data"}, "--pg-data-dir (PGHA_PG_DATA_DIR"},
		{"lease ttl", []string{"--pg-data-dir", "/tmp/pgha-agent-test-none/data", "--lease-ttl", "1500ms"}, "--lease-ttl (PGHA_LEASE_TTL"},
		{"watchdog mode", []string{"--pg-data-dir", "/tmp/pgha-agent-test-none/data", "--watchdog", "sometimes"}, "--watchdog (PGHA_WATCHDOG"},
		{"pgbackrest options", []string{"--pg-data-dir", "/tmp/pgha-agent-test-none/data", "--replica-methods", "pgbackrest", "--pgbackrest-stanza", "main", "--pgbackrest-options", "--type=time"}, "--pgbackrest-options (PGHA_PGBACKREST_OPTIONS"},
		{"relative replica command", []string{"--pg-data-dir", "/tmp/pgha-agent-test-none/data", "--replica-methods", "command", "--replica-command", "bin/restore"}, "--replica-command (PGHA_REPLICA_COMMAND"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"--cluster", "c", "--node", "n", "--etcd-endpoints", "http://127.0.0.1:1", "--listen", "127.0.0.1:0"}, tc.args...)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			err := run(ctx, args, baseEnv, io.Discard)
			checkConfigError(t, err, tc.want)
		})
	}
}

// TestTLSConfig: the CA and the client certificate load; a bad file is an
// error naming the setting.
func TestTLSConfig(t *testing.T) {
	dir := t.TempDir()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "pgha-test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile := writeFile(t, dir, "cert.pem", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	keyFile := writeFile(t, dir, "key.pem", string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})))

	cfg := &config{etcdCAFile: certFile, etcdCertFile: certFile, etcdKeyFile: keyFile}
	tc, err := cfg.tlsConfig()
	if err != nil || tc == nil || tc.RootCAs == nil || len(tc.Certificates) != 1 {
		t.Fatalf("tlsConfig: %+v, %v", tc, err)
	}
	if tc, err := (&config{etcdEndpoints: []string{"http://e:2379"}}).tlsConfig(); tc != nil || err != nil {
		t.Errorf("no TLS files, http: %v, %v; want nil, nil", tc, err)
	}
	if tc, err := (&config{etcdEndpoints: []string{"https://e:2379"}}).tlsConfig(); tc == nil || tc.RootCAs != nil || err != nil {
		t.Errorf("no TLS files, https: %v, %v; want TLS with the system roots", tc, err)
	}
	cfg.etcdCAFile = keyFile
	if _, err := cfg.tlsConfig(); err == nil || !strings.Contains(err.Error(), "etcd-ca-file") {
		t.Errorf("a key as CA: %v; want an error naming etcd-ca-file", err)
	}
	cfg.etcdCAFile, cfg.etcdKeyFile = certFile, filepath.Join(dir, "missing.pem")
	if _, err := cfg.tlsConfig(); err == nil || !strings.Contains(err.Error(), "--etcd-key-file "+cfg.etcdKeyFile) {
		t.Errorf("a missing key: %v; want an error naming etcd-key-file", err)
	}
	if _, err := os.Stat(keyFile); err != nil {
		t.Fatal(err)
	}
}

func sprintf(format string, args ...any) string { return fmt.Sprintf(format, args...) }
