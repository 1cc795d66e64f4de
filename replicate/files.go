package replicate

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// Files the Instance writes into the data directory.
const (
	nodeConfFile = "pgha.conf"   // included from postgresql.conf
	passFile     = "pgha.pgpass" // the replication password, for primary_conninfo
	autoConfFile = "postgresql.auto.conf"
	hbaFile      = "pg_hba.conf"
	standbyFile  = "standby.signal"
	pidFile      = "postmaster.pid"
)

// writeFile writes a file owned by the OS user, atomically (temp file and
// rename in the same directory).
// writeIfChanged writes data to path (mode 0600) unless it already holds
// exactly that, and reports whether it wrote.
func (i *Instance) writeIfChanged(path string, data []byte) (bool, error) {
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
		return false, nil
	}
	return true, i.writeFile(path, data, 0o600)
}

func (i *Instance) writeFile(path string, data []byte, perm fs.FileMode) error {
	tmp := path + ".pgha-tmp"
	if err := os.WriteFile(tmp, data, perm); err != nil {
		return fmt.Errorf("replicate: write %s: %w", path, err)
	}
	if err := os.Chmod(tmp, perm); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("replicate: write %s: %w", path, err)
	}
	if err := i.chown(tmp); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("replicate: write %s: %w", path, err)
	}
	return nil
}

func (i *Instance) chown(path string) error {
	if i.cred == nil {
		return nil
	}
	if err := os.Lchown(path, int(i.cred.Uid), int(i.cred.Gid)); err != nil {
		return fmt.Errorf("replicate: chown %s to %s: %w", path, i.cfg.OSUser, err)
	}
	return nil
}

// initialized reports whether DataDir holds a cluster.
func (i *Instance) initialized() bool {
	_, err := os.Stat(filepath.Join(i.cfg.DataDir, "PG_VERSION"))
	return err == nil
}

// Initialized reports whether DataDir holds a PostgreSQL cluster (its
// PG_VERSION file exists). It does not start anything.
func (i *Instance) Initialized() bool { return i.initialized() }

// prepareEmptyDir makes dir exist, empty, mode 0700 and owned by the OS user.
// A non-empty dir is moved aside when replace is set, else refused.
func (i *Instance) prepareEmptyDir(dir string, replace bool) error {
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.Mkdir(dir, 0o700); err != nil {
			return fmt.Errorf("replicate: create data directory: %w", err)
		}
	case err != nil:
		return fmt.Errorf("replicate: read data directory: %w", err)
	case len(entries) > 0:
		if !replace {
			return fmt.Errorf("%w: %s holds %d entries (e.g. %s); nothing was changed; set ReplaceDataDir to move it aside", ErrDataDirNotEmpty, dir, len(entries), entries[0].Name())
		}
		aside := fmt.Sprintf("%s.replaced-%s", dir, time.Now().UTC().Format("20060102T150405.000000000Z"))
		if err := os.Rename(dir, aside); err != nil {
			return fmt.Errorf("replicate: move data directory aside to %s: %w", aside, err)
		}
		i.log.Warn("moved data directory aside", "dir", dir, "to", aside)
		if dir == i.cfg.DataDir {
			i.clearRewindMarker(aside)
		}
		if err := os.Mkdir(dir, 0o700); err != nil {
			return fmt.Errorf("replicate: create data directory: %w", err)
		}
	}
	if err := i.chown(dir); err != nil {
		return err
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("replicate: chmod data directory: %w", err)
	}
	return i.checkDirs()
}

// checkDirs verifies that the OS user owns the data directory (when it
// exists) and can reach it, the socket directory and the log file's
// directory.
func (i *Instance) checkDirs() error {
	uid := os.Getuid()
	if i.cred != nil {
		uid = int(i.cred.Uid)
	}
	if fi, err := os.Stat(i.cfg.DataDir); err == nil {
		st := fi.Sys().(*syscall.Stat_t)
		if int(st.Uid) != uid {
			return fmt.Errorf("%w: data directory %s is owned by uid %d, but PostgreSQL runs as %s (uid %d): chown -R %d %s, or use another DataDir",
				ErrWrongOwner, i.cfg.DataDir, st.Uid, i.runUser(), uid, uid, i.cfg.DataDir)
		}
	}
	if i.cred == nil {
		return nil
	}
	for _, d := range []string{filepath.Dir(i.cfg.DataDir), i.cfg.SocketDir} {
		if err := i.checkTraverse(d); err != nil {
			return err
		}
	}
	return i.checkWritable(i.cfg.SocketDir, "SocketDir")
}

// checkWritable checks that the OS user may create files in dir (the
// socket and its lock file).
func (i *Instance) checkWritable(dir, field string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("replicate: %s: %w", field, err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	var ok bool
	switch {
	case st.Uid == i.cred.Uid:
		ok = fi.Mode()&0o300 == 0o300
	case i.inGroup(st.Gid):
		ok = fi.Mode()&0o030 == 0o030
	default:
		ok = fi.Mode()&0o003 == 0o003
	}
	if !ok {
		return fmt.Errorf("%w: OS user %q (uid %d) cannot create files in %s %s (mode %v, owner uid %d): chown it to %s or set %s to a directory it owns (e.g. /tmp)",
			ErrWrongOwner, i.cfg.OSUser, i.cred.Uid, field, dir, fi.Mode(), st.Uid, i.cfg.OSUser, field)
	}
	return nil
}

func (i *Instance) runUser() string {
	if i.cred != nil {
		return fmt.Sprintf("OS user %q", i.cfg.OSUser)
	}
	return "this process's user"
}

// checkTraverse checks that the OS user can enter dir and all its parents.
func (i *Instance) checkTraverse(dir string) error {
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return fmt.Errorf("replicate: %w", err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		var ok bool
		switch {
		case st.Uid == i.cred.Uid:
			ok = fi.Mode()&0o100 != 0
		case i.inGroup(st.Gid):
			ok = fi.Mode()&0o010 != 0
		default:
			ok = fi.Mode()&0o001 != 0
		}
		if !ok {
			return fmt.Errorf("%w: OS user %q (uid %d) cannot enter %s (mode %v, owner uid %d): chmod o+x it or choose another directory",
				ErrWrongOwner, i.cfg.OSUser, i.cred.Uid, d, fi.Mode(), st.Uid)
		}
		if d == filepath.Dir(d) {
			return nil
		}
	}
}

func (i *Instance) inGroup(gid uint32) bool {
	if gid == i.cred.Gid {
		return true
	}
	for _, g := range i.groups {
		if g == gid {
			return true
		}
	}
	return false
}

// confQuoter escapes a value for a postgresql.conf string: PostgreSQL reads
// backslash escapes there (\\, \n, \r, ...), and a quote is doubled, as
// ALTER SYSTEM writes postgresql.auto.conf.
var confQuoter = strings.NewReplacer(`\`, `\\`, "'", "''", "\n", `\n`, "\r", `\r`)

// quoteConf quotes a value for postgresql.conf: single quotes, backslashes
// and quotes doubled, newlines escaped. (A value with a backslash used to
// reach the server with its escapes interpreted: a\b became a, backspace.)
func quoteConf(s string) string { return "'" + confQuoter.Replace(s) + "'" }

// quoteConninfo quotes a libpq keyword/value connection string value. An
// unquoted value ends at any isspace() character, so all of them force
// quotes.
func quoteConninfo(s string) string {
	if s != "" && !strings.ContainsAny(s, " '\\\t\n\v\f\r") {
		return s
	}
	r := strings.NewReplacer(`\`, `\\`, `'`, `\'`)
	return "'" + r.Replace(s) + "'"
}

// quoteIdent quotes an SQL identifier.
func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

// quoteLiteral quotes an SQL string literal (standard_conforming_strings).
func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// nodeConf is the content of pgha.conf.
func (i *Instance) nodeConf() string {
	var b strings.Builder
	b.WriteString("# Written by github.com/pgha/pgha/replicate at every start; edits are lost.\n")
	b.WriteString("# Per-cluster changes belong in Config.Parameters or ALTER SYSTEM.\n")
	defaults := [][2]string{
		{"wal_level", "replica"},
		{"hot_standby", "on"},
		{"max_wal_senders", "10"},
		{"max_replication_slots", "10"},
		{"wal_keep_size", "256MB"},
		{"wal_log_hints", "on"},
		{"password_encryption", "scram-sha-256"},
		{"wal_receiver_status_interval", "1s"},
		{"wal_retrieve_retry_interval", "1s"},
		{"logging_collector", "off"},
		{"log_line_prefix", "%m [%p] "},
		{"cluster_name", i.cfg.Name},
	}
	for _, kv := range defaults {
		fmt.Fprintf(&b, "%s = %s\n", kv[0], quoteConf(kv[1]))
	}
	keys := make([]string, 0, len(i.cfg.Parameters))
	for k := range i.cfg.Parameters {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "%s = %s\n", k, quoteConf(i.cfg.Parameters[k]))
	}
	if t := i.cfg.TLS; t.Enabled() {
		fmt.Fprintf(&b, "ssl = on\nssl_cert_file = %s\nssl_key_file = %s\nssl_ca_file = %s\n",
			quoteConf(t.CertFile), quoteConf(t.KeyFile), quoteConf(t.CAFile))
	}
	fmt.Fprintf(&b, "listen_addresses = %s\n", quoteConf(i.cfg.ListenAddresses))
	fmt.Fprintf(&b, "port = %d\n", i.cfg.Port)
	fmt.Fprintf(&b, "unix_socket_directories = %s\n", quoteConf(i.cfg.SocketDir))
	return b.String()
}

// hbaConf is the content of pg_hba.conf: the superuser locally, the
// replication role for replication from ReplicationNetworks, everyone from
// ClientNetworks; all with SCRAM. With TLS on, every TCP line is hostssl:
// plain TCP connections match no line and are refused.
func (i *Instance) hbaConf() string {
	var b strings.Builder
	b.WriteString("# Written by github.com/pgha/pgha/replicate at every start; edits are lost.\n")
	b.WriteString("# TYPE  DATABASE     USER  ADDRESS  METHOD\n")
	su, repl := quoteIdent(i.cfg.Superuser), quoteIdent(i.cfg.ReplicationUser)
	host := "host   "
	if i.cfg.TLS.Enabled() {
		host = "hostssl"
	}
	fmt.Fprintf(&b, "local   all          %s  scram-sha-256\n", su)
	fmt.Fprintf(&b, "%s all          %s  127.0.0.1/32  scram-sha-256\n", host, su)
	fmt.Fprintf(&b, "%s all          %s  ::1/128  scram-sha-256\n", host, su)
	for _, n := range i.cfg.ReplicationNetworks {
		fmt.Fprintf(&b, "%s replication  %s  %s  scram-sha-256\n", host, repl, n)
	}
	for _, n := range i.cfg.ClientNetworks {
		fmt.Fprintf(&b, "%s all          all  %s  scram-sha-256\n", host, n)
	}
	return b.String()
}

// sslConninfo are the libpq keywords of this node's TCP connections to
// other nodes: with TLS on, sslmode=verify-full against CAFile and the
// client certificate if any; nothing with TLS off.
func (i *Instance) sslConninfo() []string {
	t := i.cfg.TLS
	if !t.Enabled() {
		return nil
	}
	kv := []string{"sslmode=verify-full", "sslrootcert=" + quoteConninfo(t.CAFile)}
	if t.ClientCertFile != "" {
		kv = append(kv, "sslcert="+quoteConninfo(t.ClientCertFile), "sslkey="+quoteConninfo(t.ClientKeyFile))
	}
	return kv
}

// sslEnv is sslConninfo as libpq environment variables, for pg_basebackup.
func (i *Instance) sslEnv() []string {
	t := i.cfg.TLS
	if !t.Enabled() {
		return nil
	}
	env := []string{"PGSSLMODE=verify-full", "PGSSLROOTCERT=" + t.CAFile}
	if t.ClientCertFile != "" {
		env = append(env, "PGSSLCERT="+t.ClientCertFile, "PGSSLKEY="+t.ClientKeyFile)
	}
	return env
}

// clientTLS is the TLS configuration of this process's own connections to
// host: pgconn's for sslmode=verify-full (server name = host) with TLS on,
// nil (no TLS) with TLS off.
func (i *Instance) clientTLS(host string) (*tls.Config, error) {
	kv := i.sslConninfo()
	if kv == nil {
		return nil, nil
	}
	cc, err := pgconn.ParseConfig(strings.Join(append([]string{"host=" + quoteConninfo(host)}, kv...), " "))
	if err != nil {
		return nil, fmt.Errorf("replicate: TLS settings for %s: %w", host, err)
	}
	return cc.TLSConfig, nil
}

// passFileContent is the libpq password file holding the replication
// password for any host.
func (i *Instance) passFileContent() string {
	esc := strings.NewReplacer(`\`, `\\`, `:`, `\:`)
	return fmt.Sprintf("*:*:*:%s:%s\n", esc.Replace(i.cfg.ReplicationUser), esc.Replace(i.cfg.ReplicationPassword))
}

// writeNodeConfig (re)writes pgha.conf, pg_hba.conf and the passfile, and
// makes postgresql.conf include pgha.conf.
func (i *Instance) writeNodeConfig() error {
	dd := i.cfg.DataDir
	if err := i.ensureInclude(); err != nil {
		return err
	}
	if err := i.writeFile(filepath.Join(dd, nodeConfFile), []byte(i.nodeConf()), 0o600); err != nil {
		return err
	}
	if err := i.writeFile(filepath.Join(dd, hbaFile), []byte(i.hbaConf()), 0o600); err != nil {
		return err
	}
	return i.writeFile(filepath.Join(dd, passFile), []byte(i.passFileContent()), 0o600)
}

const (
	includeLine        = "include_if_exists = 'pgha.conf'"
	clusterIncludeLine = "include_if_exists = 'pgha-cluster.conf'"
)

func (i *Instance) ensureInclude() error {
	p := filepath.Join(i.cfg.DataDir, "postgresql.conf")
	b, err := os.ReadFile(p)
	if err != nil {
		return fmt.Errorf("replicate: read postgresql.conf: %w", err)
	}
	var lines []string
	hasCluster, hasNode := false, false
	for _, l := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		switch strings.TrimSpace(l) {
		case clusterIncludeLine:
			hasCluster = true
		case includeLine:
			if !hasCluster {
				// The cluster's file comes first: node settings win.
				lines = append(lines, clusterIncludeLine)
				hasCluster = true
			}
			hasNode = true
		}
		lines = append(lines, l)
	}
	if hasNode && len(lines) == len(strings.Split(strings.TrimRight(string(b), "\n"), "\n")) {
		return nil // both present, in order
	}
	if !hasNode {
		lines = append(lines, "", "# Cluster and node settings written by pgha; see pgha-cluster.conf and pgha.conf.")
		if !hasCluster {
			lines = append(lines, clusterIncludeLine)
		}
		lines = append(lines, includeLine)
	}
	st, err := os.Stat(p)
	if err != nil {
		return fmt.Errorf("replicate: %w", err)
	}
	return i.writeFile(p, []byte(strings.Join(lines, "\n")+"\n"), st.Mode().Perm())
}

// setAutoConf edits postgresql.auto.conf of a stopped server: each key in
// set is replaced by its value, or removed when the value is nil.
func (i *Instance) setAutoConf(set map[string]*string) error {
	p := filepath.Join(i.cfg.DataDir, autoConfFile)
	b, err := os.ReadFile(p)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("replicate: read %s: %w", autoConfFile, err)
	}
	return i.writeFile(p, []byte(editAutoConf(string(b), set)), 0o600)
}

// editAutoConf returns the postgresql.auto.conf content old with each key
// of set replaced by its value, or removed when the value is nil. Keys are
// matched as PostgreSQL matches parameter names: without regard to case.
// Other lines are kept, in order.
func editAutoConf(old string, set map[string]*string) string {
	lower := make(map[string]bool, len(set))
	for k := range set {
		lower[strings.ToLower(k)] = true
	}
	var out []string
	for _, l := range strings.Split(strings.TrimRight(old, "\n"), "\n") {
		k, _, _ := strings.Cut(l, "=")
		if lower[strings.ToLower(strings.TrimSpace(k))] {
			continue
		}
		if l != "" {
			out = append(out, l)
		}
	}
	if len(out) == 0 {
		out = append(out, "# Do not edit this file manually!", "# It will be overwritten by the ALTER SYSTEM command.")
	}
	keys := make([]string, 0, len(set))
	for k := range set {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if v := set[k]; v != nil {
			out = append(out, k+" = "+quoteConf(*v))
		}
	}
	return strings.Join(out, "\n") + "\n"
}

// primaryConninfo is the primary_conninfo for streaming from src. It holds
// no password: the walreceiver reads it from the passfile.
func (i *Instance) primaryConninfo(src Source) string {
	parts := []string{
		"host=" + quoteConninfo(src.Host),
		fmt.Sprintf("port=%d", src.Port),
		"user=" + quoteConninfo(i.cfg.ReplicationUser),
		"passfile=" + quoteConninfo(filepath.Join(i.cfg.DataDir, passFile)),
		"application_name=" + quoteConninfo(i.cfg.Name),
		"connect_timeout=5",
	}
	parts = append(parts, i.sslConninfo()...)
	return strings.Join(parts, " ")
}

// writeStandbyConfig makes a stopped data directory a standby of src:
// standby.signal, primary_conninfo and primary_slot_name, and no
// synchronous_standby_names inherited from another node.
func (i *Instance) writeStandbyConfig(src Source) error {
	ci := i.primaryConninfo(src)
	set := map[string]*string{
		"primary_conninfo":          &ci,
		"primary_slot_name":         nil,
		"synchronous_standby_names": nil,
	}
	if src.Slot != "" {
		s := src.Slot
		set["primary_slot_name"] = &s
	}
	if err := i.setAutoConf(set); err != nil {
		return err
	}
	if err := i.writeFile(filepath.Join(i.cfg.DataDir, standbyFile), nil, 0o600); err != nil {
		return err
	}
	return i.writeNodeConfig()
}

// removeStandbySignal removes standby.signal from the data directory and
// reports whether it was there: it is an empty marker this package writes
// (writeStandbyConfig writes it again), never user data.
func (i *Instance) removeStandbySignal() (bool, error) {
	err := os.Remove(filepath.Join(i.cfg.DataDir, standbyFile))
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	}
	return false, err
}
