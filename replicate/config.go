package replicate

import (
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/trace"
)

// Defaults used by [DefaultConfig] and for zero fields of [Config].
const (
	DefaultPort            = 5432
	DefaultListenAddresses = "127.0.0.1"
	DefaultSuperuser       = "postgres"
	DefaultReplicationUser = "replicator"
	DefaultOSUser          = "postgres"
	DefaultFenceTimeout    = time.Second
)

// maxSocketPath is the longest unix socket path the kernel accepts (sun_path
// is 108 bytes including the terminating NUL).
const maxSocketPath = 107

// Config configures an [Instance]: one PostgreSQL data directory on this
// machine. The zero value of every optional field means "use the default";
// [Config.Validate] rejects the rest. Config holds no context and is safe to
// copy.
type Config struct {
	// Name is this node's name, e.g. "node1". Required. A standby streams
	// with application_name = Name, so Name is what pg_stat_replication
	// shows and what synchronous_standby_names lists. Letters, digits, '_',
	// '-' and '.', at most 63 bytes.
	Name string

	// DataDir is the absolute path of the data directory. Required. It is
	// created (mode 0700) by Init and Clone if missing; its parent must
	// exist. No operation ever deletes it (see ReplaceDataDir).
	DataDir string

	// BinDir is the directory holding postgres, initdb, pg_basebackup,
	// pg_rewind and pg_controldata. Default: `pg_config --bindir`, else the
	// directory of initdb on PATH, else the newest of
	// /usr/lib/postgresql/*/bin, /usr/pgsql-*/bin and Homebrew's. [New]
	// returns an error wrapping [ErrNoBinaries] naming every place searched.
	BinDir string

	// ListenAddresses is PostgreSQL's listen_addresses: comma-separated
	// host names or IP addresses, "*" for all. Default "127.0.0.1".
	ListenAddresses string

	// Port is the TCP port, 1..65535. Default 5432. The unix socket is
	// SocketDir/.s.PGSQL.<Port>.
	Port int

	// SocketDir is the unix socket directory. Default: DataDir's parent
	// directory. The socket path must fit in 107 bytes.
	SocketDir string

	// LogFile is the file the server's stdout and stderr are appended to.
	// Default DataDir + ".log". It is never truncated by this package.
	LogFile string

	// Superuser is the database superuser created by Init; the Instance
	// connects as it. Default "postgres".
	Superuser string
	// SuperuserPassword is Superuser's password (SCRAM-SHA-256). Required.
	// It never appears in logs, errors or command lines.
	SuperuserPassword string

	// ReplicationUser is the role standbys stream as, created by Init with
	// the REPLICATION attribute. Default "replicator". Every node of a
	// cluster uses the same ReplicationUser and ReplicationPassword.
	ReplicationUser string
	// ReplicationPassword is ReplicationUser's password. Required. Standbys
	// read it from a 0600 passfile in the data directory (pgha.pgpass), not
	// from primary_conninfo.
	ReplicationPassword string

	// ReplicationNetworks are the CIDR prefixes standbys connect from, for
	// replication connections as ReplicationUser. Default 127.0.0.1/32 and
	// ::1/128.
	ReplicationNetworks []string
	// ClientNetworks are the CIDR prefixes clients (and pg_rewind, which
	// connects to the source as Superuser) connect from, to any database as
	// any role, with SCRAM. Default 127.0.0.1/32 and ::1/128.
	ClientNetworks []string

	// Parameters are extra server settings (postgresql.conf names and
	// values), written to pgha.conf at every Start and after Clone or
	// Rewind. They override this package's defaults (wal_level=replica,
	// hot_standby=on, max_wal_senders=10, max_replication_slots=10,
	// wal_keep_size=256MB, wal_log_hints=on, ...) but not the node's
	// listen_addresses, port and unix_socket_directories. Settings changed
	// with ALTER SYSTEM (postgresql.auto.conf) override them.
	Parameters map[string]string

	// OSUser is the operating system user PostgreSQL runs as when this
	// process runs as root (PostgreSQL refuses to run as root). Default
	// "postgres". Ignored when not root: then PostgreSQL runs as this
	// process's user. Directories this package creates are owned by it.
	OSUser string

	// SystemID, when not zero, is the PostgreSQL system identifier this
	// data directory must have: Start, Follow, Rewind and Clone refuse
	// another with an error wrapping [ErrSystemIDMismatch]. Zero accepts
	// any.
	SystemID uint64

	// FenceTimeout bounds the fast shutdown that [Instance.Fence] tries
	// first; after it the server gets an immediate shutdown. Default 1s.
	FenceTimeout time.Duration

	// ReplaceDataDir lets Clone use a non-empty DataDir: the old directory
	// is renamed to DataDir + ".replaced-<UTC time>" (never deleted).
	// Default false: Clone refuses with [ErrDataDirNotEmpty].
	ReplaceDataDir bool

	// ReplicaMethods are the ways Clone and Reclone create this node's data
	// directory, tried in order until one succeeds (see [ReplicaMethod]):
	// e.g. pgbackrest (restore from the backup repository, then stream)
	// before basebackup (copy from the source). A failed method's data
	// directory is moved aside, never deleted. Default: basebackup alone.
	ReplicaMethods []ReplicaMethod

	// ArchiveReceivedWAL makes Promote hand to the archiver the WAL
	// segments this standby received (streamed or restored) and holds in
	// pg_wal: with archive_mode=on a standby never archives them, so the
	// segments a primary that died had not archived yet (its archiver
	// behind, or failing) would be missing from the archive for good.
	// The archive then receives some segments a second time, with the
	// same content: archive_command must accept that (pgbackrest
	// archive-push does; `test ! -f` commands do not, and would stop
	// archiving). Default false.
	ArchiveReceivedWAL bool

	// TLS, when TLS.CertFile is set, makes the server require TLS and this
	// node verify the servers it connects to. Default: off (no ssl
	// settings written, pg_hba "host" lines, libpq's default sslmode).
	TLS TLSConfig

	// UnsafeNoSync skips fsync in initdb, pg_basebackup and pg_rewind. For
	// tests only: a machine crash can corrupt the data directory.
	UnsafeNoSync bool

	// Logger receives the instance's log lines (with node=Name). Nil means
	// slog.Default().
	Logger *slog.Logger

	// TracerProvider receives a span per role change (init, clone, follow,
	// promote, fence, rewind). Nil means no-op.
	TracerProvider trace.TracerProvider
}

// TLSConfig is the PostgreSQL TLS setup of a node. Every file is PEM and
// every path absolute. With TLS on (CertFile set):
//
//   - the server runs with ssl=on and these files (settings that
//     Config.Parameters may not override);
//   - pg_hba.conf has only "hostssl" lines for TCP: a plain TCP connection
//     is refused; unix-socket connections are unchanged;
//   - every connection this node makes to another node (primary_conninfo,
//     pg_basebackup, pg_rewind, its own checks) uses sslmode=verify-full
//     with sslrootcert=CAFile: the other node's certificate must be signed
//     by CAFile and name the host this node reaches it by (a SAN).
//
// PostgreSQL reads KeyFile, and libpq (in the walreceiver, pg_basebackup
// and pg_rewind, which run as OSUser) reads ClientKeyFile: each must be
// readable by OSUser and owned by it with mode 0600 or less, or owned by
// root with mode 0640 or less. [New] checks the files exist.
type TLSConfig struct {
	// CertFile is this server's certificate; it must name every host and
	// address clients and other nodes use to reach it. Setting it turns
	// TLS on.
	CertFile string
	// KeyFile is CertFile's private key. Required with CertFile.
	KeyFile string
	// CAFile holds the CA certificate(s) that signed the nodes' server
	// certificates (sslrootcert for this node's connections) and clients'
	// certificates (ssl_ca_file). Required with CertFile.
	CAFile string
	// ClientCertFile and ClientKeyFile, when set, are the client
	// certificate this node presents to other nodes (streaming, cloning,
	// rewinding). Optional; both or neither. Passwords (SCRAM) are still
	// required.
	ClientCertFile string
	ClientKeyFile  string
}

// Enabled reports whether TLS is on: CertFile is set.
func (t TLSConfig) Enabled() bool { return t.CertFile != "" }

// validate checks the fields' presence and shape (not the files).
func (t TLSConfig) validate() error {
	fields := []struct{ name, v string }{
		{"TLS.CertFile", t.CertFile}, {"TLS.KeyFile", t.KeyFile}, {"TLS.CAFile", t.CAFile},
		{"TLS.ClientCertFile", t.ClientCertFile}, {"TLS.ClientKeyFile", t.ClientKeyFile},
	}
	for _, f := range fields {
		if f.v != "" && !filepath.IsAbs(f.v) {
			return &ConfigError{f.name, strconv.Quote(f.v), "must be an absolute path"}
		}
		if strings.ContainsAny(f.v, "'\\\n\r\x00") {
			return &ConfigError{f.name, strconv.Quote(f.v), "must not contain quotes, backslashes or line breaks"}
		}
	}
	if !t.Enabled() {
		for _, f := range fields[1:] {
			if f.v != "" {
				return &ConfigError{f.name, strconv.Quote(f.v), "is set but TLS.CertFile is empty: set TLS.CertFile (and KeyFile, CAFile) to turn TLS on"}
			}
		}
		return nil
	}
	if t.KeyFile == "" {
		return &ConfigError{"TLS.KeyFile", `""`, "is required with TLS.CertFile: the server certificate's private key"}
	}
	if t.CAFile == "" {
		return &ConfigError{"TLS.CAFile", `""`, "is required with TLS.CertFile: the CA that signed the nodes' certificates (this node verifies the others with sslmode=verify-full)"}
	}
	if (t.ClientCertFile == "") != (t.ClientKeyFile == "") {
		return &ConfigError{"TLS.ClientCertFile/ClientKeyFile", strconv.Quote(t.ClientCertFile) + " " + strconv.Quote(t.ClientKeyFile), "must be set together"}
	}
	return nil
}

// checkFiles checks that the TLS files exist and are regular files.
func (t TLSConfig) checkFiles() error {
	for _, f := range []struct{ name, v string }{
		{"TLS.CertFile", t.CertFile}, {"TLS.KeyFile", t.KeyFile}, {"TLS.CAFile", t.CAFile},
		{"TLS.ClientCertFile", t.ClientCertFile}, {"TLS.ClientKeyFile", t.ClientKeyFile},
	} {
		if f.v == "" {
			continue
		}
		fi, err := os.Stat(f.v)
		if err != nil {
			return &ConfigError{f.name, strconv.Quote(f.v), fmt.Sprintf("cannot be read: %v", err)}
		}
		if !fi.Mode().IsRegular() {
			return &ConfigError{f.name, strconv.Quote(f.v), "is not a regular file"}
		}
	}
	return nil
}

// tlsParams are the server settings Config.TLS owns.
var tlsParams = map[string]bool{"ssl": true, "ssl_cert_file": true, "ssl_key_file": true, "ssl_ca_file": true}

// DefaultConfig returns a Config with every default filled in. Set Name,
// DataDir and the two passwords before use.
func DefaultConfig() Config {
	var c Config
	c.setDefaults()
	return c
}

// LocalConfig returns a Config for a node of a cluster that runs entirely on
// this machine (the demo, tests): listening on 127.0.0.1:port only, sockets
// in DataDir's parent directory, fixed well-known passwords (LocalPassword
// for both roles) and every other field at its default. Never use it for a
// server reachable from other machines.
func LocalConfig(name, dataDir string, port int) Config {
	c := DefaultConfig()
	c.Name, c.DataDir, c.Port = name, dataDir, port
	c.ListenAddresses = "127.0.0.1"
	c.SuperuserPassword, c.ReplicationPassword = LocalPassword, LocalPassword
	c.SocketDir = filepath.Dir(filepath.Clean(dataDir))
	c.LogFile = filepath.Clean(dataDir) + ".log"
	return c
}

// LocalPassword is the password [LocalConfig] gives both roles.
const LocalPassword = "pgha-local"

func (c *Config) setDefaults() {
	if c.ListenAddresses == "" {
		c.ListenAddresses = DefaultListenAddresses
	}
	if c.Port == 0 {
		c.Port = DefaultPort
	}
	if c.SocketDir == "" && c.DataDir != "" {
		c.SocketDir = filepath.Dir(filepath.Clean(c.DataDir))
	}
	if c.LogFile == "" && c.DataDir != "" {
		c.LogFile = filepath.Clean(c.DataDir) + ".log"
	}
	if c.Superuser == "" {
		c.Superuser = DefaultSuperuser
	}
	if c.ReplicationUser == "" {
		c.ReplicationUser = DefaultReplicationUser
	}
	if len(c.ReplicationNetworks) == 0 {
		c.ReplicationNetworks = []string{"127.0.0.1/32", "::1/128"}
	}
	if len(c.ClientNetworks) == 0 {
		c.ClientNetworks = []string{"127.0.0.1/32", "::1/128"}
	}
	if c.OSUser == "" {
		c.OSUser = DefaultOSUser
	}
	if c.FenceTimeout == 0 {
		c.FenceTimeout = DefaultFenceTimeout
	}
}

var (
	nameRE  = regexp.MustCompile(`^[A-Za-z0-9_.\-]{1,63}$`)
	roleRE  = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,62}$`)
	paramRE = regexp.MustCompile(`^[a-z_][a-z0-9_.]*$`)
)

// nodeParams are the settings the Instance owns per node.
var nodeParams = map[string]bool{"listen_addresses": true, "port": true, "unix_socket_directories": true}

// Validate checks c with defaults applied to zero fields. It returns a
// [*ConfigError] naming the first bad field, its value and the fix.
func (c Config) Validate() error {
	c.setDefaults()
	if !nameRE.MatchString(c.Name) {
		return &ConfigError{"Name", strconv.Quote(c.Name), "must be 1-63 letters, digits, '_', '-' or '.', e.g. \"node1\""}
	}
	if c.DataDir == "" || !filepath.IsAbs(c.DataDir) {
		return &ConfigError{"DataDir", strconv.Quote(c.DataDir), "must be an absolute path"}
	}
	if c.BinDir != "" && !filepath.IsAbs(c.BinDir) {
		return &ConfigError{"BinDir", strconv.Quote(c.BinDir), "must be an absolute path or empty (search)"}
	}
	if c.Port < 1 || c.Port > 65535 {
		return &ConfigError{"Port", c.Port, "out of range 1..65535"}
	}
	if strings.ContainsAny(c.ListenAddresses, "'\\\n") {
		return &ConfigError{"ListenAddresses", strconv.Quote(c.ListenAddresses), "must be comma-separated host names or addresses, or \"*\""}
	}
	if !filepath.IsAbs(c.SocketDir) {
		return &ConfigError{"SocketDir", strconv.Quote(c.SocketDir), "must be an absolute path"}
	}
	if sock := filepath.Join(c.SocketDir, fmt.Sprintf(".s.PGSQL.%d", c.Port)); len(sock) > maxSocketPath {
		return &ConfigError{"SocketDir", strconv.Quote(c.SocketDir), fmt.Sprintf("is too long: the socket path %s has %d bytes, the limit is %d; choose a shorter directory", sock, len(sock), maxSocketPath)}
	}
	if !filepath.IsAbs(c.LogFile) {
		return &ConfigError{"LogFile", strconv.Quote(c.LogFile), "must be an absolute path"}
	}
	if !roleRE.MatchString(c.Superuser) {
		return &ConfigError{"Superuser", strconv.Quote(c.Superuser), "must be a plain role name (letters, digits, '_')"}
	}
	if !roleRE.MatchString(c.ReplicationUser) {
		return &ConfigError{"ReplicationUser", strconv.Quote(c.ReplicationUser), "must be a plain role name (letters, digits, '_')"}
	}
	if c.ReplicationUser == c.Superuser {
		return &ConfigError{"ReplicationUser", strconv.Quote(c.ReplicationUser), "must differ from Superuser"}
	}
	if c.SuperuserPassword == "" {
		return &ConfigError{"SuperuserPassword", `""`, "is required (SCRAM authentication; trust is never used)"}
	}
	if c.ReplicationPassword == "" {
		return &ConfigError{"ReplicationPassword", `""`, "is required (SCRAM authentication; trust is never used)"}
	}
	for _, p := range []struct {
		field string
		pw    string
	}{{"SuperuserPassword", c.SuperuserPassword}, {"ReplicationPassword", c.ReplicationPassword}} {
		if strings.ContainsAny(p.pw, "\x00\n\r") {
			return &ConfigError{p.field, "(redacted)", "must not contain NUL or line breaks"}
		}
	}
	for _, n := range c.ReplicationNetworks {
		if _, err := netip.ParsePrefix(n); err != nil {
			return &ConfigError{"ReplicationNetworks", strconv.Quote(n), "must be a CIDR prefix such as 10.0.0.0/8"}
		}
	}
	for _, n := range c.ClientNetworks {
		if _, err := netip.ParsePrefix(n); err != nil {
			return &ConfigError{"ClientNetworks", strconv.Quote(n), "must be a CIDR prefix such as 10.0.0.0/8"}
		}
	}
	keys := make([]string, 0, len(c.Parameters))
	for k := range c.Parameters {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if !paramRE.MatchString(k) {
			return &ConfigError{"Parameters", strconv.Quote(k), "is not a PostgreSQL setting name (lower-case letters, digits, '_', '.')"}
		}
		if nodeParams[k] {
			return &ConfigError{"Parameters", strconv.Quote(k), "is set from Config (ListenAddresses, Port, SocketDir); set it there"}
		}
		if strings.ContainsAny(c.Parameters[k], "\n\r\x00") {
			return &ConfigError{"Parameters", fmt.Sprintf("%s=%q", k, c.Parameters[k]), "value must be one line"}
		}
	}
	if err := c.TLS.validate(); err != nil {
		return err
	}
	if c.TLS.Enabled() {
		for _, k := range keys {
			if tlsParams[k] {
				return &ConfigError{"Parameters", strconv.Quote(k), "is set from Config.TLS when TLS is on; remove it from Parameters"}
			}
		}
	}
	if !roleRE.MatchString(c.OSUser) && !nameRE.MatchString(c.OSUser) {
		return &ConfigError{"OSUser", strconv.Quote(c.OSUser), "must be a user name"}
	}
	if c.FenceTimeout < 0 {
		return &ConfigError{"FenceTimeout", c.FenceTimeout, "must not be negative"}
	}
	for n, m := range c.ReplicaMethods {
		if err := m.validate(n); err != nil {
			return err
		}
	}
	return nil
}
