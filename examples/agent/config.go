package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/pgha/pgha/ha"
	"github.com/pgha/pgha/internal/keyspace"
	"github.com/pgha/pgha/internal/secrets"
	"github.com/pgha/pgha/replicate"
	"sigs.k8s.io/yaml"
)

// config is the agent's configuration, from defaults, then the config
// file, then PGHA_* environment variables, then flags (each overrides the
// one before).
type config struct {
	cluster string
	node    string
	keyRoot string
	listen  string

	etcdEndpoints    []string
	etcdCAFile       string
	etcdCertFile     string
	etcdKeyFile      string
	etcdUsername     string
	etcdPasswordFile string
	etcdDialTimeout  time.Duration

	pgDataDir                 string
	pgBinDir                  string
	pgListenAddresses         string
	pgPort                    int
	pgAdvertiseHost           string
	pgAdvertisePort           int
	pgSocketDir               string
	pgLogFile                 string
	pgSuperuser               string
	pgSuperuserPasswordFile   string
	pgReplicationUser         string
	pgReplicationPasswordFile string
	pgReplicationNetworks     []string
	pgClientNetworks          []string
	pgParameters              map[string]string
	pgOSUser                  string
	keepPostgresRunning       bool
	pgReplaceDataDir          bool
	// Replica creation (replicate.Config.ReplicaMethods): the kinds in
	// order, one timeout for each, and the settings of the pgbackrest
	// and command methods.
	replicaMethods       []string
	replicaMethodTimeout time.Duration
	pgbackrestStanza     string
	pgbackrestConfig     string
	pgbackrestOptions    []string
	replicaCommand       string
	archiveReceivedWAL   bool
	// PostgreSQL TLS (replicate.Config.TLS): on when pgSSLCertFile is set.
	pgSSLCertFile       string
	pgSSLKeyFile        string
	pgSSLCAFile         string
	pgSSLClientCertFile string
	pgSSLClientKeyFile  string

	leaseTTL            time.Duration
	loopInterval        time.Duration
	maxLagOnFailover    int64
	syncMode            string
	syncStandbys        int
	noFailover          bool
	priority            int
	primaryStartTimeout time.Duration
	switchoverDrain     time.Duration
	departedSlotTTL     time.Duration
	watchdog            string
	watchdogDevice      string
	fenceGuard          bool
	recloneOnRewindFail bool
	// failsafe keeps the primary writable through an etcd outage while
	// every member promises not to campaign; apiURL is where the others
	// reach this node's HTTP server (default from pg-advertise-host and
	// the listen port).
	failsafe bool
	apiURL   string
	// onRoleChange is an executable run on each role change (empty:
	// none), killed after onRoleChangeTimeout.
	onRoleChange        string
	onRoleChangeTimeout time.Duration

	logLevel        string
	logFormat       string
	shutdownTimeout time.Duration
	httpTokenFile   string

	// Secrets: from PGHA_*_PASSWORD or the *-password-file settings, never
	// from a flag or the config file.
	etcdPassword          secret
	pgSuperuserPassword   secret
	pgReplicationPassword secret
	// httpToken, when set, enables POST /pause and /resume behind
	// "Authorization: Bearer <token>".
	httpToken secret
}

// secret is a password. It prints as [redacted] in logs, errors and
// JSON, so a mistake cannot leak it.
type secret string

func (secret) String() string                  { return "[redacted]" }
func (secret) LogValue() slog.Value            { return slog.StringValue("[redacted]") }
func (secret) MarshalJSON() ([]byte, error)    { return []byte(`"[redacted]"`), nil }
func (s secret) GoString() string              { return s.String() }
func (s secret) Format(f fmt.State, verb rune) { io.WriteString(f, s.String()) }

// setting is one configuration knob. Its flag is --name, its environment
// variable PGHA_NAME (upper case, '-' → '_'), its config file key name
// with '-' → '_'.
type setting struct {
	name  string
	usage string
	ptr   any // *string, *int, *int64, *bool, *time.Duration, *[]string, *map[string]string
}

func (s setting) env() string {
	return "PGHA_" + strings.ToUpper(strings.ReplaceAll(s.name, "-", "_"))
}

func (s setting) key() string { return strings.ReplaceAll(s.name, "-", "_") }

// where names the three places a setting can be given, for error messages.
func (s setting) where() string {
	return fmt.Sprintf("--%s, %s or %q in the config file", s.name, s.env(), s.key())
}

func defaultConfig() *config {
	return &config{
		keyRoot:              keyspace.DefaultRoot,
		listen:               ":8008",
		etcdEndpoints:        []string{"http://127.0.0.1:2379"},
		etcdDialTimeout:      5 * time.Second,
		pgListenAddresses:    "127.0.0.1",
		pgPort:               5432,
		pgSuperuser:          "postgres",
		pgReplicationUser:    "replicator",
		pgOSUser:             "postgres",
		leaseTTL:             ha.DefaultLeaseTTL,
		loopInterval:         ha.DefaultLoopInterval,
		maxLagOnFailover:     ha.DefaultMaxLagOnFailover,
		syncMode:             string(ha.SyncOff),
		syncStandbys:         1,
		primaryStartTimeout:  ha.DefaultPrimaryStartTimeout,
		switchoverDrain:      ha.DefaultSwitchoverDrain,
		departedSlotTTL:      ha.DefaultDepartedSlotTTL,
		watchdog:             string(ha.WatchdogOff),
		watchdogDevice:       ha.DefaultWatchdogDevice,
		fenceGuard:           true,
		onRoleChangeTimeout:  30 * time.Second,
		replicaMethods:       []string{string(replicate.MethodBasebackup)},
		replicaMethodTimeout: replicate.DefaultReplicaMethodTimeout,
		logLevel:             "info",
		logFormat:            "text",
		shutdownTimeout:      15 * time.Second,
	}
}

func (c *config) settings() []setting {
	return []setting{
		{"cluster", "cluster name, the same on every node (required)", &c.cluster},
		{"node", "this node's name, unique in the cluster (default: the host name)", &c.node},
		{"key-root", "etcd key root", &c.keyRoot},
		{"listen", "HTTP address for /health, /primary, /replica, /readiness, /liveness, /cluster and /metrics", &c.listen},

		{"etcd-endpoints", "etcd endpoints, comma-separated", &c.etcdEndpoints},
		{"etcd-ca-file", "CA bundle that signed etcd's server certificate (enables TLS)", &c.etcdCAFile},
		{"etcd-cert-file", "client certificate for etcd (with --etcd-key-file)", &c.etcdCertFile},
		{"etcd-key-file", "client certificate's private key", &c.etcdKeyFile},
		{"etcd-username", "etcd user (password from PGHA_ETCD_PASSWORD or --etcd-password-file)", &c.etcdUsername},
		{"etcd-password-file", "file holding the etcd user's password", &c.etcdPasswordFile},
		{"etcd-dial-timeout", "how long to wait for etcd at start", &c.etcdDialTimeout},

		{"pg-data-dir", "PostgreSQL data directory, absolute (required)", &c.pgDataDir},
		{"pg-bin-dir", "directory of the PostgreSQL server binaries (default: searched)", &c.pgBinDir},
		{"pg-listen-addresses", "PostgreSQL listen_addresses", &c.pgListenAddresses},
		{"pg-port", "PostgreSQL port", &c.pgPort},
		{"pg-advertise-host", "host or IP other nodes and clients reach this node's PostgreSQL at (default 127.0.0.1, allowed only when PostgreSQL listens on loopback)", &c.pgAdvertiseHost},
		{"pg-advertise-port", "port other nodes and clients reach this node's PostgreSQL at, when a proxy or NAT sits in front of it (default: pg-port)", &c.pgAdvertisePort},
		{"pg-socket-dir", "unix socket directory (default: the data directory's parent)", &c.pgSocketDir},
		{"pg-log-file", "PostgreSQL log file (default: <data dir>.log)", &c.pgLogFile},
		{"pg-superuser", "database superuser", &c.pgSuperuser},
		{"pg-superuser-password-file", "file holding the superuser's password (or PGHA_PG_SUPERUSER_PASSWORD)", &c.pgSuperuserPasswordFile},
		{"pg-replication-user", "replication role", &c.pgReplicationUser},
		{"pg-replication-password-file", "file holding the replication role's password (or PGHA_PG_REPLICATION_PASSWORD)", &c.pgReplicationPasswordFile},
		{"pg-replication-networks", "CIDR prefixes standbys connect from, comma-separated (default loopback)", &c.pgReplicationNetworks},
		{"pg-client-networks", "CIDR prefixes clients connect from, comma-separated (default loopback)", &c.pgClientNetworks},
		{"pg-parameters", "extra server settings, name=value, comma-separated (a map in the config file)", &c.pgParameters},
		{"pg-os-user", "OS user PostgreSQL runs as when the agent runs as root", &c.pgOSUser},
		{"pg-ssl-cert-file", "PostgreSQL server certificate, naming pg-advertise-host (enables TLS: ssl=on, hostssl only, verify-full between nodes)", &c.pgSSLCertFile},
		{"pg-ssl-key-file", "PostgreSQL server certificate's key (owned by pg-os-user, mode 0600)", &c.pgSSLKeyFile},
		{"pg-ssl-ca-file", "CA that signed every node's PostgreSQL certificate (required with pg-ssl-cert-file)", &c.pgSSLCAFile},
		{"pg-ssl-client-cert-file", "client certificate this node presents to other nodes (optional, with pg-ssl-client-key-file)", &c.pgSSLClientCertFile},
		{"pg-ssl-client-key-file", "client certificate's key (owned by pg-os-user, mode 0600)", &c.pgSSLClientKeyFile},
		{"pg-replace-data-dir", "when the data directory cannot be reused (an interrupted rewind), move it aside (never deleted) and clone afresh from the leader", &c.pgReplaceDataDir},
		{"replica-methods", "how a standby's data directory is created, tried in order until one succeeds: basebackup (pg_basebackup from the leader), pgbackrest (restore from the pgBackRest repository, then stream) and command (replica-command); a failed method's directory is moved aside (never deleted), comma-separated", &c.replicaMethods},
		{"replica-method-timeout", "how long each replica method may take, the standby's start included", &c.replicaMethodTimeout},
		{"pgbackrest-stanza", "pgBackRest stanza the pgbackrest replica method restores from (required with it)", &c.pgbackrestStanza},
		{"pgbackrest-config", "pgBackRest configuration file, absolute (default: pgBackRest's own)", &c.pgbackrestConfig},
		{"pgbackrest-options", "extra pgBackRest options for the restore, --name=value, comma-separated (e.g. --process-max=4)", &c.pgbackrestOptions},
		{"replica-command", "executable the command replica method runs to fill PGHA_DATA_DIR (WAL-G, Barman, a snapshot); absolute path; environment documented at replicate.ReplicaMethod", &c.replicaCommand},
		{"archive-received-wal", "on promotion, archive the WAL segments this standby received, so that what a dead primary had not archived yet is not missing from the archive; the archive then gets some segments twice with the same content, which archive_command must accept (pgbackrest archive-push does)", &c.archiveReceivedWAL},
		{"keep-postgres-running", "leave a standby's PostgreSQL running when the agent exits (a leader's is always stopped)", &c.keepPostgresRunning},

		{"lease-ttl", "leader and member lease TTL, whole seconds", &c.leaseTTL},
		{"loop-interval", "HA loop interval, below lease-ttl/2", &c.loopInterval},
		{"max-lag-on-failover", "most WAL bytes a standby may lack and still be promoted automatically", &c.maxLagOnFailover},
		{"sync-mode", "replication durability: off, on, strict, quorum (ANY k of the streaming standbys) or quorum-strict", &c.syncMode},
		{"sync-standbys", "standbys confirming each commit in synchronous mode", &c.syncStandbys},
		{"nofailover", "never promote this node automatically", &c.noFailover},
		{"priority", "tie-breaker between equally advanced candidates: higher wins", &c.priority},
		{"primary-start-timeout", "how long a leader restarts its crashed PostgreSQL in place (asynchronous mode)", &c.primaryStartTimeout},
		{"switchover-drain", "in a planned switchover, how long the leader waits for open client transactions to end before it stops (those still open are terminated; negative: no wait)", &c.switchoverDrain},
		{"departed-slot-ttl", "how long the leader keeps the replication slot of a member that is gone (negative: forever)", &c.departedSlotTTL},
		{"watchdog", "arm a Linux watchdog device while leading, so that a frozen agent's machine is reset before its lease expires: off, automatic or required", &c.watchdog},
		{"watchdog-device", "the watchdog device", &c.watchdogDevice},
		{"reclone-on-rewind-failure", "when pg_rewind cannot bring a former primary back (or fails 3 times in a row), move its data directory aside (never deleted) and clone afresh from the leader; false: wait and publish the problem in the member record", &c.recloneOnRewindFail},
		{"failsafe", "keep the primary writable while etcd is unreachable, as long as every member it could be replaced by promises (over HTTP, with the http token) not to campaign; needs the same setting, http token and a reachable api-url on every node; false: every primary fences within the lease TTL when etcd is lost", &c.failsafe},
		{"api-url", "URL at which the other nodes reach this node's HTTP server (--listen), published in its member record for failsafe calls (default http://<pg-advertise-host>:<listen port>)", &c.apiURL},
		{"fence-guard", "while leading, run a fence guard process that fences PostgreSQL when the lease deadline passes without renewal, also when the agent itself is frozen (SIGSTOP, a stall); false: only the agent fences", &c.fenceGuard},

		{"on-role-change", "executable run on each change of this node's role, with the arguments ACTION ROLE CLUSTER NODE like Patroni's callbacks (ACTION on_start for the first role after start, then on_role_change); absolute path, no shell; empty: none", &c.onRoleChange},
		{"on-role-change-timeout", "how long the on-role-change executable may run before it and its children are killed", &c.onRoleChangeTimeout},

		{"log-level", "debug, info, warn or error", &c.logLevel},
		{"log-format", "text or json", &c.logFormat},
		{"http-token-file", "file holding the bearer token for POST /pause and /resume (or PGHA_HTTP_TOKEN; unset: no state-changing endpoint)", &c.httpTokenFile},
		{"shutdown-timeout", "how long the HTTP server may take to finish its requests at shutdown", &c.shutdownTimeout},
	}
}

// rawFlag captures a flag's text; it is applied after the file and the
// environment so that flags win.
type rawFlag struct {
	isBool bool
	val    string
	set    bool
}

func (f *rawFlag) String() string     { return f.val }
func (f *rawFlag) IsBoolFlag() bool   { return f.isBool }
func (f *rawFlag) Set(s string) error { f.val, f.set = s, true; return nil }

// configError is a configuration that cannot run: it names the setting
// and the fix.
type configError struct{ msg string }

func (e *configError) Error() string { return "config: " + e.msg }

func configErrorf(format string, args ...any) error {
	return &configError{fmt.Sprintf(format, args...)}
}

// loadConfig builds the configuration from args, env (KEY=value pairs)
// and the config file named by --config or PGHA_CONFIG. It returns
// flag.ErrHelp after printing the usage to out for -h.
func loadConfig(args, env []string, out io.Writer) (*config, error) {
	envMap := map[string]string{}
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok {
			envMap[k] = v
		}
	}
	cfg := defaultConfig()
	settings := cfg.settings()

	fs := flag.NewFlagSet("pgha-agent", flag.ContinueOnError)
	fs.SetOutput(out)
	configFile := fs.String("config", envMap["PGHA_CONFIG"], "config file, YAML or JSON, keys as the flags with '_' for '-' (env PGHA_CONFIG)")
	raw := map[string]*rawFlag{}
	for _, s := range settings {
		_, isBool := s.ptr.(*bool)
		raw[s.name] = &rawFlag{isBool: isBool}
		fs.Var(raw[s.name], s.name, fmt.Sprintf("%s (env %s; default %s)", s.usage, s.env(), showDefault(s)))
	}
	fs.Usage = func() {
		fmt.Fprint(out, "Usage: pgha-agent [flags]\n\nRuns the pgha HA manager for this node's PostgreSQL and serves its HTTP endpoints.\n"+
			"Settings come from defaults, then --config FILE, then PGHA_* environment variables, then flags.\n"+
			"Passwords come from PGHA_PG_SUPERUSER_PASSWORD, PGHA_PG_REPLICATION_PASSWORD, PGHA_ETCD_PASSWORD\n"+
			"or the *-password-file settings, never from a flag.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, configErrorf("%v (see pgha-agent -h)", err)
	}
	if fs.NArg() > 0 {
		return nil, configErrorf("unexpected argument %q: every setting is a --flag (see pgha-agent -h)", fs.Arg(0))
	}

	if *configFile != "" {
		if err := cfg.loadFile(*configFile, settings); err != nil {
			return nil, err
		}
	}
	for _, s := range settings {
		if v, ok := envMap[s.env()]; ok {
			if err := parseInto(s, v); err != nil {
				return nil, configErrorf("%s=%q: %v", s.env(), v, err)
			}
		}
	}
	for _, s := range settings {
		if f := raw[s.name]; f.set {
			if err := parseInto(s, f.val); err != nil {
				return nil, configErrorf("--%s %q: %v", s.name, f.val, err)
			}
		}
	}
	var err error
	if cfg.pgSuperuserPassword, err = readSecret(envMap, "PGHA_PG_SUPERUSER_PASSWORD", "pg-superuser-password-file", cfg.pgSuperuserPasswordFile); err != nil {
		return nil, err
	}
	if cfg.pgReplicationPassword, err = readSecret(envMap, "PGHA_PG_REPLICATION_PASSWORD", "pg-replication-password-file", cfg.pgReplicationPasswordFile); err != nil {
		return nil, err
	}
	if cfg.etcdPassword, err = readSecret(envMap, "PGHA_ETCD_PASSWORD", "etcd-password-file", cfg.etcdPasswordFile); err != nil {
		return nil, err
	}
	if cfg.httpToken, err = readSecret(envMap, "PGHA_HTTP_TOKEN", "http-token-file", cfg.httpTokenFile); err != nil {
		return nil, err
	}
	if cfg.node == "" {
		if h, err := os.Hostname(); err == nil {
			cfg.node, _, _ = strings.Cut(h, ".")
		}
	}
	return cfg, cfg.validate()
}

func showDefault(s setting) string {
	switch p := s.ptr.(type) {
	case *string:
		if *p == "" {
			return "none"
		}
		return strconv.Quote(*p)
	case *[]string:
		if len(*p) == 0 {
			return "none"
		}
		return strings.Join(*p, ",")
	case *map[string]string:
		return "none"
	case *int:
		return strconv.Itoa(*p)
	case *int64:
		return strconv.FormatInt(*p, 10)
	case *bool:
		return strconv.FormatBool(*p)
	case *time.Duration:
		return p.String()
	}
	return "?"
}

// parseInto sets s from its text form (a flag or environment value).
func parseInto(s setting, v string) error {
	switch p := s.ptr.(type) {
	case *string:
		*p = v
	case *[]string:
		*p = splitList(v)
	case *map[string]string:
		m := map[string]string{}
		for _, kv := range splitList(v) {
			k, val, ok := strings.Cut(kv, "=")
			if !ok || strings.TrimSpace(k) == "" {
				return fmt.Errorf("%q is not name=value", kv)
			}
			m[strings.TrimSpace(k)] = strings.TrimSpace(val)
		}
		*p = m
	case *int:
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil {
			return errors.New("not an integer")
		}
		*p = n
	case *int64:
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil {
			return errors.New("not an integer")
		}
		*p = n
	case *bool:
		b, err := strconv.ParseBool(strings.TrimSpace(v))
		if err != nil {
			return errors.New("not a boolean (true or false)")
		}
		*p = b
	case *time.Duration:
		d, err := time.ParseDuration(strings.TrimSpace(v))
		if err != nil {
			return errors.New("not a duration (e.g. 500ms, 5s, 1m)")
		}
		*p = d
	default:
		return fmt.Errorf("unsupported setting type %T", p)
	}
	return nil
}

func splitList(v string) []string {
	var out []string
	for _, e := range strings.Split(v, ",") {
		if e = strings.TrimSpace(e); e != "" {
			out = append(out, e)
		}
	}
	return out
}

// loadFile applies a YAML or JSON config file. Unknown keys are errors,
// so a typo does not silently keep a default.
func (c *config) loadFile(path string, settings []setting) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return configErrorf("--config: %v", err)
	}
	j, err := yaml.YAMLToJSONStrict(b)
	if err != nil {
		return configErrorf("config file %s: %v", path, err)
	}
	var m map[string]any
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.UseNumber()
	if err := dec.Decode(&m); err != nil {
		return configErrorf("config file %s: want a map of settings: %v", path, err)
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		i := slices.IndexFunc(settings, func(s setting) bool { return s.key() == k })
		if i < 0 {
			if strings.HasSuffix(k, "password") {
				return configErrorf("config file %s: %q: passwords never go in the config file: name a file with %q, or set %s", path, k, k+"_file", "PGHA_"+strings.ToUpper(k))
			}
			return configErrorf("config file %s: unknown key %q (keys are the flag names with '_' for '-', see pgha-agent -h)", path, k)
		}
		s := settings[i]
		if err := setFromFile(s, m[k]); err != nil {
			return configErrorf("config file %s: %s: %v", path, k, err)
		}
	}
	return nil
}

// setFromFile sets s from a decoded JSON value. Text settings and list
// elements must be strings: YAML reads on, off, yes, no as booleans and
// 0123 as a number, and turning those back into text would silently give
// "true" or "83". Map values (server parameters) may be any scalar.
func setFromFile(s setting, v any) error {
	switch p := s.ptr.(type) {
	case *string:
		str, ok := v.(string)
		if !ok {
			return fmt.Errorf("want a string, got %s: quote the value (YAML reads on/off/yes/no as booleans and digits as numbers)", describeJSON(v))
		}
		if err := plainText(str); err != nil {
			return err
		}
		*p = str
		return nil
	case *[]string:
		switch v := v.(type) {
		case []any:
			var l []string
			for i, e := range v {
				str, ok := e.(string)
				if !ok {
					return fmt.Errorf("element %d: want a string, got %s: quote it", i, describeJSON(e))
				}
				if err := plainText(str); err != nil {
					return fmt.Errorf("element %d: %w", i, err)
				}
				l = append(l, str)
			}
			*p = l
			return nil
		case string:
			return parseInto(s, v)
		}
		return fmt.Errorf("want a list, got %s", describeJSON(v))
	case *map[string]string:
		mv, ok := v.(map[string]any)
		if !ok {
			return fmt.Errorf("want a map of name: value, got %s", describeJSON(v))
		}
		m := map[string]string{}
		for k, e := range mv {
			if err := plainText(k); err != nil {
				return fmt.Errorf("name %w", err)
			}
			switch e.(type) {
			case string, json.Number, bool:
				if err := plainText(fmt.Sprint(e)); err != nil {
					return fmt.Errorf("%s: %w", k, err)
				}
				m[k] = fmt.Sprint(e)
			default:
				return fmt.Errorf("%s: want a single value, got %s", k, describeJSON(e))
			}
		}
		*p = m
		return nil
	}
	switch v.(type) {
	case map[string]any, []any, nil:
		return fmt.Errorf("want a single value, got %s", describeJSON(v))
	}
	return parseInto(s, fmt.Sprint(v))
}

// plainText rejects a file value that is not valid UTF-8 or holds a
// control character (e.g. from a YAML !!binary tag or a "\u0000" escape):
// names, paths and addresses never do.
func plainText(s string) error {
	if !utf8.ValidString(s) {
		return fmt.Errorf("%.40q is not valid UTF-8", s)
	}
	if i := strings.IndexFunc(s, func(r rune) bool { return r < ' ' || r == 0x7f }); i >= 0 {
		return fmt.Errorf("%.40q holds the control character %U at byte %d", s, s[i], i)
	}
	return nil
}

// describeJSON names a decoded JSON value's type and value for an error.
func describeJSON(v any) string {
	switch v := v.(type) {
	case nil:
		return "nothing (null)"
	case bool:
		return fmt.Sprintf("the boolean %v", v)
	case json.Number:
		return "the number " + v.String()
	case string:
		return fmt.Sprintf("the string %q", v)
	case []any:
		return fmt.Sprintf("a list of %d", len(v))
	case map[string]any:
		return fmt.Sprintf("a map of %d", len(v))
	}
	return fmt.Sprintf("%T", v)
}

// readSecret returns a password from the environment variable envName or
// from file; both set is an error. Errors never hold the password.
func readSecret(env map[string]string, envName, fileSetting, file string) (secret, error) {
	v, err := secrets.FromEnvOrFile(envName, env[envName], fileSetting, file)
	if err != nil {
		return "", configErrorf("%v", err)
	}
	return secret(v), nil
}

// validate checks what ha and replicate cannot: required settings and the
// agent's own ones. ha.Config and replicate.Config validate the rest.
func (c *config) validate() error {
	s := map[string]setting{}
	for _, st := range c.settings() {
		s[st.name] = st
	}
	switch {
	case c.cluster == "":
		return configErrorf("cluster is required: set %s", s["cluster"].where())
	case keyspace.ValidName(c.cluster) != nil:
		return configErrorf("cluster %q is invalid: use 1-63 letters, digits, '_', '.', '-'", c.cluster)
	case c.node == "":
		return configErrorf("node is required (the host name could not be used): set %s", s["node"].where())
	case keyspace.ValidName(c.node) != nil:
		return configErrorf("node %q is invalid: use 1-63 letters, digits, '_', '.', '-'; set %s", c.node, s["node"].where())
	case len(c.etcdEndpoints) == 0:
		return configErrorf("etcd-endpoints is empty: set %s, e.g. http://10.0.0.1:2379,http://10.0.0.2:2379", s["etcd-endpoints"].where())
	case (c.etcdCertFile == "") != (c.etcdKeyFile == ""):
		return configErrorf("etcd-cert-file and etcd-key-file go together: set both or neither")
	case c.etcdPassword != "" && c.etcdUsername == "":
		return configErrorf("an etcd password is set but no etcd-username: set %s", s["etcd-username"].where())
	case c.etcdUsername != "" && c.etcdPassword == "":
		return configErrorf("etcd-username %q has no password: set PGHA_ETCD_PASSWORD or --etcd-password-file", c.etcdUsername)
	case c.etcdDialTimeout <= 0:
		return configErrorf("etcd-dial-timeout %v must be positive", c.etcdDialTimeout)
	case c.pgDataDir == "":
		return configErrorf("pg-data-dir is required: set %s to an absolute path", s["pg-data-dir"].where())
	case c.pgSuperuserPassword == "":
		return configErrorf("the PostgreSQL superuser password is required: set PGHA_PG_SUPERUSER_PASSWORD or --pg-superuser-password-file")
	case c.pgReplicationPassword == "":
		return configErrorf("the PostgreSQL replication password is required: set PGHA_PG_REPLICATION_PASSWORD or --pg-replication-password-file")
	case c.shutdownTimeout <= 0:
		return configErrorf("shutdown-timeout %v must be positive", c.shutdownTimeout)
	case c.logFormat != "text" && c.logFormat != "json":
		return configErrorf("log-format %q: use text or json", c.logFormat)
	}
	if _, err := parseLevel(c.logLevel); err != nil {
		return err
	}
	if c.onRoleChangeTimeout <= 0 {
		return configErrorf("on-role-change-timeout %v must be positive: set %s", c.onRoleChangeTimeout, s["on-role-change-timeout"].where())
	}
	if c.onRoleChange != "" {
		if !filepath.IsAbs(c.onRoleChange) {
			return configErrorf("on-role-change %q must be an absolute path to an executable (it is run without a shell): set %s", c.onRoleChange, s["on-role-change"].where())
		}
		fi, err := os.Stat(c.onRoleChange)
		switch {
		case err != nil:
			return configErrorf("on-role-change: %v: set %s to an executable", err, s["on-role-change"].where())
		case !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0:
			return configErrorf("on-role-change %q is not an executable file (mode %v): chmod +x it, or set %s", c.onRoleChange, fi.Mode(), s["on-role-change"].where())
		}
	}
	if _, err := c.replicaMethodList(); err != nil {
		return err
	}
	if _, _, err := net.SplitHostPort(c.listen); err != nil {
		return configErrorf("listen %q: want host:port or :port (e.g. :8008): %v", c.listen, err)
	}
	if c.pgAdvertisePort < 0 || c.pgAdvertisePort > 65535 {
		return configErrorf("pg-advertise-port %d is outside 1..65535: set %s to the port other nodes reach PostgreSQL at, or 0 for pg-port", c.pgAdvertisePort, s["pg-advertise-port"].where())
	}
	if c.pgAdvertisePort == 0 {
		c.pgAdvertisePort = c.pgPort
	}
	if c.pgAdvertiseHost == "" {
		if !loopbackOnly(c.pgListenAddresses) {
			return configErrorf("pg-advertise-host is required when PostgreSQL listens beyond loopback (pg-listen-addresses %q): set %s to the address other nodes reach this node at",
				c.pgListenAddresses, s["pg-advertise-host"].where())
		}
		c.pgAdvertiseHost = "127.0.0.1"
	}
	if c.failsafe {
		if len(c.httpToken) == 0 {
			return configErrorf("failsafe needs the token nodes authenticate their failsafe calls with, the same on every node: set PGHA_HTTP_TOKEN or %s", s["http-token-file"].where())
		}
		if c.apiURL == "" {
			_, port, _ := net.SplitHostPort(c.listen)
			c.apiURL = "http://" + net.JoinHostPort(c.pgAdvertiseHost, port)
		}
	}
	return nil
}

func loopbackOnly(addrs string) bool {
	for _, a := range splitList(addrs) {
		if a != "localhost" && !(net.ParseIP(a) != nil && net.ParseIP(a).IsLoopback()) {
			return false
		}
	}
	return true
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, configErrorf("log-level %q: use debug, info, warn or error", s)
	}
	return l, nil
}

// fieldSettings maps ha.Config and replicate.Config field names to the
// agent's settings, so that their validation errors name what to set.
var fieldSettings = map[string]string{
	// ha.Config
	"Cluster": "cluster", "Node": "node", "KeyRoot": "key-root", "Host": "pg-advertise-host",
	"LeaseTTL": "lease-ttl", "LoopInterval": "loop-interval", "MaxLagOnFailover": "max-lag-on-failover",
	"SyncMode": "sync-mode", "SyncStandbys": "sync-standbys", "PrimaryStartTimeout": "primary-start-timeout", "SwitchoverDrain": "switchover-drain",
	"DepartedSlotTTL": "departed-slot-ttl", "Watchdog": "watchdog", "WatchdogDevice": "watchdog-device",
	"FenceGuard": "fence-guard", "Failsafe": "failsafe", "APIURL": "api-url", "PeerToken": "http-token-file",
	"FenceBudget": "lease-ttl",
	// replicate.Config
	"Name": "node", "DataDir": "pg-data-dir", "BinDir": "pg-bin-dir", "ListenAddresses": "pg-listen-addresses",
	"Port": "pg-port", "SocketDir": "pg-socket-dir", "LogFile": "pg-log-file", "Superuser": "pg-superuser",
	"SuperuserPassword": "pg-superuser-password-file", "ReplicationUser": "pg-replication-user",
	"ReplicationPassword": "pg-replication-password-file", "ReplicationNetworks": "pg-replication-networks",
	"ClientNetworks": "pg-client-networks", "Parameters": "pg-parameters", "OSUser": "pg-os-user",
	"TLS.CertFile": "pg-ssl-cert-file", "TLS.KeyFile": "pg-ssl-key-file", "TLS.CAFile": "pg-ssl-ca-file",
	"TLS.ClientCertFile": "pg-ssl-client-cert-file", "TLS.ClientKeyFile": "pg-ssl-client-key-file",
	"TLS.ClientCertFile/ClientKeyFile": "pg-ssl-client-cert-file",
	"ReplicaMethods":                   "replica-methods", "ReplicaMethods.Kind": "replica-methods",
	"ReplicaMethods.Timeout": "replica-method-timeout", "ReplicaMethods.Stanza": "pgbackrest-stanza",
	"ReplicaMethods.ConfigFile": "pgbackrest-config", "ReplicaMethods.Args": "pgbackrest-options",
	"ReplicaMethods.Path": "replica-command", "ArchiveReceivedWAL": "archive-received-wal",
}

// replicaMethodList builds replicate.Config.ReplicaMethods from the
// replica settings, or says which setting to fix.
func (c *config) replicaMethodList() ([]replicate.ReplicaMethod, error) {
	ms, err := replicate.ParseReplicaMethods(strings.Join(c.replicaMethods, ","))
	if err != nil {
		return nil, settingError("ReplicaMethods", err)
	}
	for n := range ms {
		m := &ms[n]
		m.Timeout = c.replicaMethodTimeout
		switch m.Kind {
		case replicate.MethodPgBackRest:
			if c.pgbackrestStanza == "" {
				return nil, configErrorf("replica-methods includes pgbackrest but pgbackrest-stanza is empty: set --pgbackrest-stanza (PGHA_PGBACKREST_STANZA, \"pgbackrest_stanza\" in the config file) to the stanza to restore from")
			}
			m.Stanza, m.ConfigFile, m.Args = c.pgbackrestStanza, c.pgbackrestConfig, c.pgbackrestOptions
		case replicate.MethodCommand:
			if c.replicaCommand == "" {
				return nil, configErrorf("replica-methods includes command but replica-command is empty: set --replica-command (PGHA_REPLICA_COMMAND, \"replica_command\" in the config file) to the executable's absolute path")
			}
			m.Path = c.replicaCommand
		}
	}
	return ms, nil
}

// settingError names the agent setting behind a library's config error.
func settingError(field string, err error) error {
	if i := strings.Index(field, "]."); strings.HasPrefix(field, "ReplicaMethods[") && i > 0 {
		field = "ReplicaMethods." + field[i+2:] // every method is built from the same settings
	}
	if name, ok := fieldSettings[field]; ok {
		return configErrorf("--%s (%s, %q in the config file): %v", name,
			"PGHA_"+strings.ToUpper(strings.ReplaceAll(name, "-", "_")), strings.ReplaceAll(name, "-", "_"), err)
	}
	return configErrorf("%v", err)
}
