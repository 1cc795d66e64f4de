package driver_test

import (
	"context"
	"crypto/tls"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgha/pgha/driver"
)

func TestParseConfigOptions(t *testing.T) {
	cfg, err := driver.ParseConfig("postgres://u:secret@h1:5432,h2:5433/db?sslmode=disable" +
		"&pgha_read_mode=prefer-replicas&pgha_read_balance=least-busy&pgha_max_replica_lag=1MB" +
		"&pgha_failover_timeout=3s&pgha_probe_interval=250ms&pgha_probe_timeout=1s&application_name=app&pool_max_conns=7" +
		"&pgha_write_keepalive=5s&pgha_write_tcp_user_timeout=off&pgha_resolve_outcome=on" +
		"&pgha_switchover_drain=off&pgha_causal_wait=75ms")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(cfg.Hosts, ","), "h1:5432,h2:5433"; got != want {
		t.Errorf("Hosts = %s, want %s", got, want)
	}
	if cfg.ReadMode != driver.ReadPreferReplicas || cfg.ReadBalance != driver.LeastBusy || cfg.MaxReplicaLag != 1<<20 {
		t.Errorf("read settings = %v %v %d", cfg.ReadMode, cfg.ReadBalance, cfg.MaxReplicaLag)
	}
	if cfg.FailoverTimeout != 3*time.Second || cfg.ProbeInterval != 250*time.Millisecond || cfg.ProbeTimeout != time.Second {
		t.Errorf("durations = %v %v %v", cfg.FailoverTimeout, cfg.ProbeInterval, cfg.ProbeTimeout)
	}
	if cfg.WriteKeepAlive != 5*time.Second || cfg.WriteTCPUserTimeout >= 0 {
		t.Errorf("write TCP settings = %v %v, want 5s and off (negative)", cfg.WriteKeepAlive, cfg.WriteTCPUserTimeout)
	}
	if cfg.SwitchoverDrain >= 0 || cfg.CausalWait != 75*time.Millisecond {
		t.Errorf("SwitchoverDrain, CausalWait = %v %v, want off (negative) and 75ms", cfg.SwitchoverDrain, cfg.CausalWait)
	}
	if cfg.MaxConns != 7 {
		t.Errorf("MaxConns = %d, want 7", cfg.MaxConns)
	}
	if !cfg.ResolveOutcome {
		t.Errorf("ResolveOutcome = false, want true (pgha_resolve_outcome=on)")
	}
	rp := cfg.ConnConfig.RuntimeParams
	for k := range rp {
		if strings.HasPrefix(k, "pgha_") {
			t.Errorf("RuntimeParams still holds %s: it would be sent to the server", k)
		}
	}
	if rp["application_name"] != "app" {
		t.Errorf("application_name lost: %v", rp)
	}
	if err := cfg.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
}

func TestParseConfigEtcd(t *testing.T) {
	cfg, err := driver.ParseConfig("postgres://u:p@/db?pgha_cluster=main&pgha_etcd=http://127.0.0.1:2379,http://127.0.0.2:2379&pgha_root=/x")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Cluster != "main" || len(cfg.EtcdEndpoints) != 2 || cfg.KeyRoot != "/x" || len(cfg.Hosts) != 0 {
		t.Errorf("got cluster %q endpoints %v root %q hosts %v", cfg.Cluster, cfg.EtcdEndpoints, cfg.KeyRoot, cfg.Hosts)
	}
	if cfg.FailoverTimeout != driver.DefaultFailoverTimeout || cfg.ReadMode != driver.ReadPrimary ||
		cfg.SwitchoverDrain != driver.DefaultSwitchoverDrain || cfg.CausalWait != driver.DefaultCausalWait {
		t.Errorf("defaults not filled: %v %v %v %v", cfg.FailoverTimeout, cfg.ReadMode, cfg.SwitchoverDrain, cfg.CausalWait)
	}
	// Hosts written in the string are the bootstrap list; pgx's default
	// host is not.
	for s, want := range map[string]string{
		"postgres://u:p@h1:5432,h2:5433/db?pgha_cluster=m&pgha_etcd=http://e:2379": "h1:5432,h2:5433",
		"postgres://u:p@/db?pgha_cluster=m&pgha_etcd=http://e:2379":                "",
		"postgres:///db?host=h3&pgha_cluster=m&pgha_etcd=http://e:2379":            "h3:5432",
		"user=u host=h4 port=6000 pgha_cluster=m pgha_etcd=http://e:2379":          "h4:6000",
		"user=u dbname=d pgha_cluster=m pgha_etcd=http://e:2379":                   "",
	} {
		cfg, err := driver.ParseConfig(s)
		if err != nil {
			t.Errorf("ParseConfig(%s): %v", s, err)
			continue
		}
		if got := strings.Join(cfg.Hosts, ","); got != want {
			t.Errorf("ParseConfig(%s).Hosts = %q, want %q", s, got, want)
		}
	}
}

func TestParseConfigErrors(t *testing.T) {
	for _, tc := range []struct{ opts, wantKey string }{
		{"pgha_read_mode=fastest", "pgha_read_mode"},
		{"pgha_read_balance=random", "pgha_read_balance"},
		{"pgha_failover_timeout=soon", "pgha_failover_timeout"},
		{"pgha_failover_timeout=-1s", "pgha_failover_timeout"},
		{"pgha_probe_interval=1ms", "pgha_probe_interval"},
		{"pgha_probe_timeout=0s", "pgha_probe_timeout"},
		{"pgha_max_replica_lag=lots", "pgha_max_replica_lag"},
		{"pgha_max_replica_lag=-5MB", "pgha_max_replica_lag"},
		{"pgha_cluster=bad/name&pgha_etcd=http://x:1", "pgha_cluster"},
		{"pgha_cluster=main", "pgha_etcd"},
		{"pgha_etcd=http://x:1", "pgha_cluster"},
		{"pgha_etcd=a,,b&pgha_cluster=c", "pgha_etcd"},
		{"pgha_root=relative&pgha_etcd=http://x:1&pgha_cluster=c", "pgha_root"},
		{"pgha_failovr_timeout=1s", "pgha_failovr_timeout"},
		{"pgha_write_keepalive=0s", "pgha_write_keepalive"},
		{"pgha_write_keepalive=often", "pgha_write_keepalive"},
		{"pgha_write_tcp_user_timeout=-1s", "pgha_write_tcp_user_timeout"},
		{"pgha_resolve_outcome=yes", "pgha_resolve_outcome"},
		{"pgha_switchover_drain=0s", "pgha_switchover_drain"},
		{"pgha_causal_wait=soon", "pgha_causal_wait"},
	} {
		s := "postgres://u:hunter2@h1/db?" + tc.opts
		_, err := driver.ParseConfig(s)
		var pe *pgconn.ParseConfigError
		if !errors.As(err, &pe) {
			t.Errorf("ParseConfig(%s) = %v, want a *pgconn.ParseConfigError", tc.opts, err)
			continue
		}
		if !strings.Contains(err.Error(), tc.wantKey+":") {
			t.Errorf("ParseConfig(%s) error %q does not name %s", tc.opts, err, tc.wantKey)
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("ParseConfig(%s) error leaks the password: %q", tc.opts, err)
		}
	}
	if _, err := driver.ParseConfig("postgres://u@h1:notaport/db"); err == nil {
		t.Errorf("bad port accepted")
	}
}

func TestValidate(t *testing.T) {
	good := func() *driver.Config {
		c, err := driver.ParseConfig("postgres://u@h1:5432/db")
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	for _, tc := range []struct {
		field string
		mod   func(*driver.Config)
	}{
		{"Config", func(c *driver.Config) { c.Config, c.PoolConfig = nil, nil }},
		{"Config", func(c *driver.Config) { c.Config = &pgxpool.Config{ConnConfig: c.ConnConfig}; c.PoolConfig = nil }},
		{"Config", func(c *driver.Config) { *c = driver.Config{} }},
		{"Config", func(c *driver.Config) { *c = driver.Config{Hosts: []string{"h1:5432"}} }},
		{"PoolConfig", func(c *driver.Config) { c.PoolConfig = c.Config.Copy() }},
		{"Hosts", func(c *driver.Config) { c.Hosts = nil }},
		{"MaxConns/MinConns", func(c *driver.Config) { c.MaxConns = 0 }},
		{"Hosts[1]", func(c *driver.Config) { c.Hosts = append(c.Hosts, "nohostport") }},
		{"Cluster", func(c *driver.Config) { c.EtcdEndpoints = []string{"http://127.0.0.1:1"} }},
		{"FailoverTimeout", func(c *driver.Config) { c.FailoverTimeout = -time.Second }},
		{"ProbeInterval", func(c *driver.Config) { c.ProbeInterval = time.Millisecond }},
		{"ProbeTimeout", func(c *driver.Config) { c.ProbeTimeout = -1 }},
		{"ReadMode", func(c *driver.Config) { c.ReadMode = 9 }},
		{"ReadBalance", func(c *driver.Config) { c.ReadBalance = -1 }},
	} {
		c := good()
		tc.mod(c)
		err := c.Validate()
		var ce *driver.ConfigError
		if !errors.As(err, &ce) || ce.Field != tc.field {
			t.Errorf("Validate with bad %s = %v, want a ConfigError for %s", tc.field, err, tc.field)
			continue
		}
		if tc.field == "Config" && !strings.Contains(err.Error(), "driver.ParseConfig(connString)") {
			t.Errorf("Validate with bad %s = %q, want the fix (driver.ParseConfig(connString)) named", tc.field, err)
		}
		// NewWithConfig must return the same error, never panic.
		if _, err := driver.NewWithConfig(t.Context(), c); !errors.As(err, &ce) {
			t.Errorf("NewWithConfig with bad %s = %v, want a ConfigError", tc.field, err)
		}
	}
	if err := good().Validate(); err != nil {
		t.Errorf("good config: %v", err)
	}
	var nilCfg *driver.Config
	if err := nilCfg.Validate(); err == nil {
		t.Errorf("nil config validated")
	}
}

func TestCausalTokenString(t *testing.T) {
	for _, s := range []string{"0/0", "0/16B3748", "1/FF"} {
		tok, err := driver.ParseCausalToken(s)
		if err != nil || tok.String() != s {
			t.Errorf("ParseCausalToken(%s) = %v, %v; String %q", s, tok, err, tok.String())
		}
	}
	for _, s := range []string{"", "16B3748", "x/1", "1/2/3", "100000000/0"} {
		if _, err := driver.ParseCausalToken(s); err == nil {
			t.Errorf("ParseCausalToken(%q) succeeded", s)
		}
	}
}

// FuzzParseConfig checks that no connection string makes ParseConfig or
// Validate panic, and that pgha_* keys never reach the runtime parameters.
func FuzzParseConfig(f *testing.F) {
	for _, s := range []string{
		"postgres://u:p@h1:5432,h2:5433/db?pgha_read_mode=replicas",
		"host=h1,h2 port=1,2 user=u pgha_failover_timeout=2s",
		"postgres://u@/db?pgha_cluster=c&pgha_etcd=http://127.0.0.1:2379",
		"postgres://u@h/db?pgha_max_replica_lag=9999999999GB",
		"postgres://u@h/db?pgha_zzz=1",
		"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		cfg, err := driver.ParseConfig(s)
		if err != nil {
			return
		}
		for k := range cfg.ConnConfig.RuntimeParams {
			if strings.HasPrefix(k, "pgha_") {
				t.Fatalf("ParseConfig(%q) left %s in RuntimeParams", s, k)
			}
		}
		_ = cfg.Validate()
	})
}

func TestValidateLocalConfig(t *testing.T) {
	c := driver.LocalConfig()
	pc, err := pgxpool.ParseConfig("postgres://u@h1:5432/db")
	if err != nil {
		t.Fatal(err)
	}
	c.Config = pc
	c.Hosts = []string{"h1:5432"}
	if err := c.Validate(); err != nil {
		t.Errorf("LocalConfig with a pool config and a host: %v", err)
	}
	// The deprecated name still works alone.
	c.Config, c.PoolConfig = nil, pc
	if err := c.Validate(); err != nil {
		t.Errorf("LocalConfig with only the deprecated PoolConfig: %v", err)
	}
}

// TestConfigDropIn: every exported field and method of pgxpool.Config is
// reachable on driver.Config with the same name and type (Copy excepted:
// it returns a *driver.Config), so code written for *pgxpool.Config
// compiles against *driver.Config.
func TestConfigDropIn(t *testing.T) {
	pt, dt := reflect.TypeFor[pgxpool.Config](), reflect.TypeFor[driver.Config]()
	for i := range pt.NumField() {
		f := pt.Field(i)
		if !f.IsExported() {
			continue
		}
		g, ok := dt.FieldByName(f.Name)
		if !ok || g.Type != f.Type {
			t.Errorf("driver.Config.%s: found %v (%v); pgxpool.Config.%s is %v", f.Name, ok, g.Type, f.Name, f.Type)
		}
	}
	pm, dm := reflect.TypeFor[*pgxpool.Config](), reflect.TypeFor[*driver.Config]()
	for i := range pm.NumMethod() {
		m := pm.Method(i)
		g, ok := dm.MethodByName(m.Name)
		switch {
		case !ok:
			t.Errorf("driver.Config lacks pgxpool.Config's method %s", m.Name)
		case m.Name == "Copy":
			if g.Type.Out(0) != dm {
				t.Errorf("(*driver.Config).Copy returns %v, want *driver.Config", g.Type.Out(0))
			}
		case !sameSignature(m.Type, g.Type):
			t.Errorf("driver.Config.%s has type %v; pgxpool.Config.%s has %v", m.Name, g.Type, m.Name, m.Type)
		}
	}
}

// TestConfigCopy: Copy is deep for everything a caller may change in
// place, pgha settings included, and ConnString works on both.
func TestConfigCopy(t *testing.T) {
	const s = "postgres://u:pw@h1:5432,h2:5433/db?pgha_etcd=http://e1:2379&pgha_cluster=c&application_name=a"
	c, err := driver.ParseConfig(s)
	if err != nil {
		t.Fatal(err)
	}
	c.EtcdTLS = &tls.Config{ServerName: "etcd"}
	c.BeforeConnect = func(context.Context, *pgx.ConnConfig) error { return nil }
	d := c.Copy()
	if d.ConnString() != s || c.ConnString() != s {
		t.Errorf("ConnString = %q / %q, want %q", c.ConnString(), d.ConnString(), s)
	}
	if d.BeforeConnect == nil || d.Cluster != "c" || d.MaxConns != c.MaxConns {
		t.Errorf("copy lost settings: %+v", d)
	}
	d.MaxConns++
	d.ConnConfig.RuntimeParams["application_name"] = "b"
	d.ConnConfig.Host = "other"
	d.Hosts[0] = "x:1"
	d.EtcdEndpoints[0] = "http://x:1"
	d.EtcdTLS.ServerName = "x"
	d.FailoverTimeout = time.Hour
	if c.MaxConns == d.MaxConns || c.ConnConfig.RuntimeParams["application_name"] != "a" || c.ConnConfig.Host != "h1" ||
		c.Hosts[0] != "h1:5432" || c.EtcdEndpoints[0] != "http://e1:2379" || c.EtcdTLS.ServerName != "etcd" ||
		c.FailoverTimeout == time.Hour {
		t.Errorf("changing the copy changed the original: %+v / %+v", c, c.ConnConfig)
	}
	if err := d.Validate(); err != nil {
		t.Errorf("Validate(copy): %v", err)
	}
}
