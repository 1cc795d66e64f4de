package main

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"
)

// FuzzConfigFile fuzzes the bytes of the agent's --config file (YAML or
// JSON). For every input: no panic; a rejection is a *configError naming
// the file; an accepted file sets only scalar values (no list or map
// rendered into a string by fmt), and the settings it produced, written
// back as a JSON config file, load to the same settings (the loader
// neither loses nor invents anything).
func FuzzConfigFile(f *testing.F) {
	for _, s := range []string{
		// The README's example, in YAML and JSON.
		"cluster: main\nnode: node1\netcd_endpoints: [http://10.0.0.1:2379, http://10.0.0.2:2379]\npg_data_dir: /var/lib/postgresql/15/pgha\n" +
			"pg_advertise_host: 10.0.0.11\npg_listen_addresses: 0.0.0.0\npg_parameters: {shared_buffers: 1GB, max_connections: 200}\n" +
			"lease_ttl: 5s\nloop_interval: 500ms\nmax_lag_on_failover: 16777216\nsync_mode: on\npg_superuser_password_file: /etc/pgha/su\n",
		`{"cluster":"main","node":"node1","etcd_endpoints":"http://a:2379,http://b:2379","pg_port":5433,"sync_standbys":2,"log_level":"debug"}`,
		"etcd_endpoints:\n  - [nested, list]\n", "pg_parameters: {a: [1, 2]}\n", "pg_parameters: {a: null}\n",
		"pg_port: 1e3\n", "pg_port: 99999999999999999999\n", "lease_ttl: 5\n", "lease_ttl: forever\n", "sync_mode: yes\n",
		"pg_superuser_password: hunter2\n", "clsuter: main\n", "cluster: main\ncluster: other\n", "- a\n- b\n", "null\n", "",
		"a: &a [1]\nb: *a\n", "cluster: !!binary aGVsbG8=\n", "cluster: main\n---\ncluster: other\n", "{\"cluster\": \"main\",}",
		"\xef\xbb\xbfcluster: main\n", "cluster: \"\\u0000\"\n",
	} {
		f.Add([]byte(s))
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, b []byte) {
		path := filepath.Join(dir, "agent.yaml")
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		cfg := defaultConfig()
		err := cfg.loadFile(path, cfg.settings())
		if err != nil {
			var ce *configError
			if !errors.As(err, &ce) {
				t.Fatalf("loadFile(%q): rejection is %T %v; want *configError", b, err, err)
			}
			if !strings.HasPrefix(err.Error(), "config: config file "+path+": ") {
				t.Fatalf("loadFile(%q): error %q does not name the file", b, err)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Fatalf("loadFile(%q): error %q holds the password", b, err)
			}
			return
		}
		for _, s := range cfg.settings() {
			checkScalar(t, b, s)
		}
		// Text settings came from YAML/JSON strings, not from booleans or
		// numbers turned into text.
		if j, err := yaml.YAMLToJSONStrict(b); err == nil {
			var m map[string]any
			if json.Unmarshal(j, &m) == nil {
				for _, s := range cfg.settings() {
					if _, isText := s.ptr.(*string); isText {
						if v, ok := m[s.key()]; ok {
							if _, isString := v.(string); !isString {
								t.Fatalf("loadFile(%q): accepted %v (%T) for the text setting %s", b, v, v, s.name)
							}
						}
					}
				}
			}
		}
		// Write the settings back as a config file and load it again.
		out := map[string]any{}
		for _, s := range cfg.settings() {
			switch p := s.ptr.(type) {
			case *time.Duration:
				out[s.key()] = p.String()
			case *[]string:
				out[s.key()] = append([]string{}, *p...)
			case *map[string]string:
				m := map[string]string{}
				for k, v := range *p {
					m[k] = v
				}
				out[s.key()] = m
			default:
				out[s.key()] = reflect.ValueOf(s.ptr).Elem().Interface()
			}
		}
		j, err := json.Marshal(out)
		if err != nil {
			t.Fatalf("loadFile(%q) produced settings that do not marshal: %v", b, err)
		}
		back := filepath.Join(dir, "back.json")
		if err := os.WriteFile(back, j, 0o600); err != nil {
			t.Fatal(err)
		}
		cfg2 := defaultConfig()
		if err := cfg2.loadFile(back, cfg2.settings()); err != nil {
			t.Fatalf("loadFile(%q) accepted settings that do not load back from %s: %v", b, j, err)
		}
		s1, s2 := cfg.settings(), cfg2.settings()
		for i := range s1 {
			v1, v2 := reflect.ValueOf(s1[i].ptr).Elem().Interface(), reflect.ValueOf(s2[i].ptr).Elem().Interface()
			if !reflect.DeepEqual(v1, v2) && !(emptyValue(v1) && emptyValue(v2)) {
				t.Fatalf("loadFile(%q): %s is %#v; written back and loaded again it is %#v", b, s1[i].name, v1, v2)
			}
		}
	})
}

// checkScalar fails when a list or map setting holds a value that fmt made
// out of a YAML list, map or null (e.g. "[1 2]", "map[a:1]", "<nil>").
func checkScalar(t *testing.T, b []byte, s setting) {
	t.Helper()
	var vals []string
	switch p := s.ptr.(type) {
	case *[]string:
		vals = *p
	case *map[string]string:
		for _, v := range *p {
			vals = append(vals, v)
		}
	}
	for _, v := range vals {
		if v == "<nil>" || strings.HasPrefix(v, "map[") || strings.HasPrefix(v, "[") && strings.HasSuffix(v, "]") {
			t.Fatalf("loadFile(%q): %s holds %q, a non-scalar value rendered as text", b, s.name, v)
		}
	}
}

func emptyValue(v any) bool {
	rv := reflect.ValueOf(v)
	return (rv.Kind() == reflect.Slice || rv.Kind() == reflect.Map) && rv.Len() == 0
}

// TestConfigFileYAMLBooleans: YAML reads an unquoted on/off as a boolean;
// a text setting given one is an error that says to quote it, never the
// text "true".
func TestConfigFileYAMLBooleans(t *testing.T) {
	for in, want := range map[string]string{
		"sync_mode: on\n":                 `sync_mode: want a string, got the boolean true: quote the value`,
		"node: 0123\n":                    `node: want a string, got the number 83: quote the value`,
		"etcd_endpoints: [http://a, 1]\n": `etcd_endpoints: element 1: want a string, got the number 1: quote it`,
		"pg_parameters: {fsync: [1]}\n":   `pg_parameters: fsync: want a single value, got a list of 1`,
		"pg_client_networks:\n":           `pg_client_networks: want a list, got nothing (null)`,
	} {
		path := filepath.Join(t.TempDir(), "agent.yaml")
		if err := os.WriteFile(path, []byte(in), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg := defaultConfig()
		err := cfg.loadFile(path, cfg.settings())
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("config file %q: error %v; want one containing %q", in, err, want)
		}
	}
	// Scalars in server parameters stay accepted: PostgreSQL reads
	// true/false as on/off.
	path := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(path, []byte("sync_mode: \"on\"\npg_parameters: {fsync: off, max_connections: 200, work_mem: 4MB}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := defaultConfig()
	if err := cfg.loadFile(path, cfg.settings()); err != nil {
		t.Fatal(err)
	}
	if cfg.syncMode != "on" || !reflect.DeepEqual(cfg.pgParameters, map[string]string{"fsync": "false", "max_connections": "200", "work_mem": "4MB"}) {
		t.Fatalf("sync_mode %q, pg_parameters %v", cfg.syncMode, cfg.pgParameters)
	}
}
