package replicate

import (
	"context"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// Source is a running PostgreSQL server to clone from, stream from or rewind
// from: usually the primary, or a standby for cascading replication. The
// Instance connects to it with its own Config's ReplicationUser and
// ReplicationPassword (for streaming, cloning and slots) and Superuser and
// SuperuserPassword (for pg_rewind): every node of a cluster shares them.
type Source struct {
	// Host is the source's host name or IP address, as seen from this
	// node. Required.
	Host string
	// Port is the source's TCP port. Required.
	Port int
	// Slot is the physical replication slot on the source to stream
	// through, e.g. SlotName(cfg.Name). Clone, Follow and Rewind create it
	// on the source if it is missing. Empty means no slot: the source keeps
	// only wal_keep_size of WAL for this node.
	Slot string
}

// String returns "host:port", followed by " slot <name>" when Slot is set.
func (s Source) String() string {
	a := net.JoinHostPort(s.Host, strconv.Itoa(s.Port))
	if s.Slot != "" {
		a += " slot " + s.Slot
	}
	return a
}

func (s Source) validate() error {
	if s.Host == "" || strings.ContainsAny(s.Host, " '\\\n") {
		return &ConfigError{"Source.Host", strconv.Quote(s.Host), "must be a host name or IP address"}
	}
	if s.Port < 1 || s.Port > 65535 {
		return &ConfigError{"Source.Port", s.Port, "out of range 1..65535"}
	}
	if s.Slot != "" && !slotRE.MatchString(s.Slot) {
		return &ConfigError{"Source.Slot", strconv.Quote(s.Slot), "must be 1-63 lower-case letters, digits or '_' (see SlotName)"}
	}
	return nil
}

// replConn opens a physical replication connection to src as the
// replication role.
func (i *Instance) replConn(ctx context.Context, src Source) (*pgconn.PgConn, error) {
	cc, err := pgconn.ParseConfig("")
	if err != nil {
		return nil, fmt.Errorf("replicate: %w", err)
	}
	cc.Host = src.Host
	cc.Port = uint16(src.Port)
	cc.User = i.cfg.ReplicationUser
	cc.Password = i.cfg.ReplicationPassword
	cc.Database = ""
	cc.ConnectTimeout = 5 * time.Second
	if cc.TLSConfig, err = i.clientTLS(src.Host); err != nil {
		return nil, err
	}
	cc.Fallbacks = nil
	cc.RuntimeParams = map[string]string{"replication": "true", "application_name": i.cfg.Name}
	c, err := pgconn.ConnectConfig(ctx, cc)
	if err != nil {
		if isAuthError(err) {
			return nil, fmt.Errorf("%w: replication connection to %s as %s: %v", ErrAuthentication, src, i.cfg.ReplicationUser, err)
		}
		return nil, fmt.Errorf("replicate: replication connection to %s: %w", src, err)
	}
	return c, nil
}

// identifySource returns the source's system identifier and timeline, and
// creates src.Slot on it when missing.
func (i *Instance) identifySource(ctx context.Context, src Source) (sysID uint64, tli uint32, err error) {
	c, err := i.replConn(ctx, src)
	if err != nil {
		return 0, 0, err
	}
	defer c.Close(context.Background())
	res, err := c.Exec(ctx, "IDENTIFY_SYSTEM").ReadAll()
	if err != nil {
		return 0, 0, fmt.Errorf("replicate: IDENTIFY_SYSTEM on %s: %w", src, err)
	}
	if len(res) != 1 || len(res[0].Rows) != 1 || len(res[0].Rows[0]) < 2 {
		return 0, 0, fmt.Errorf("replicate: IDENTIFY_SYSTEM on %s: unexpected reply", src)
	}
	row := res[0].Rows[0]
	sysID, err = parseSystemID(string(row[0]))
	if err != nil {
		return 0, 0, fmt.Errorf("replicate: IDENTIFY_SYSTEM on %s: %w", src, err)
	}
	t, err := parseTimeline(string(row[1]), 10)
	if err != nil {
		return 0, 0, fmt.Errorf("replicate: IDENTIFY_SYSTEM on %s: %w", src, err)
	}
	if src.Slot != "" {
		_, err := c.Exec(ctx, "CREATE_REPLICATION_SLOT "+quoteIdent(src.Slot)+" PHYSICAL RESERVE_WAL").ReadAll()
		var pe *pgconn.PgError
		if err != nil && !(errors.As(err, &pe) && pe.Code == "42710") { // duplicate_object
			return 0, 0, fmt.Errorf("replicate: create slot %s on %s: %w", src.Slot, src, err)
		}
	}
	return sysID, t, nil
}

func isAuthError(err error) bool {
	var pe *pgconn.PgError
	// 28P01 invalid_password, 28000 invalid_authorization_specification
	// (no pg_hba.conf entry).
	return errors.As(err, &pe) && (pe.Code == "28P01" || pe.Code == "28000")
}

// scramVerifier computes the SCRAM-SHA-256 verifier PostgreSQL stores for
// password, so the password itself is never sent to or logged by the server.
func scramVerifier(password string) (string, error) {
	const iterations = 4096
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	salted, err := pbkdf2.Key(sha256.New, password, salt, iterations, sha256.Size)
	if err != nil {
		return "", err
	}
	mac := func(key []byte, msg string) []byte {
		h := hmac.New(sha256.New, key)
		h.Write([]byte(msg))
		return h.Sum(nil)
	}
	clientKey := mac(salted, "Client Key")
	stored := sha256.Sum256(clientKey)
	serverKey := mac(salted, "Server Key")
	b64 := base64.StdEncoding.EncodeToString
	return fmt.Sprintf("SCRAM-SHA-256$%d:%s$%s:%s", iterations, b64(salt), b64(stored[:]), b64(serverKey)), nil
}
