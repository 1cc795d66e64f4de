package driver_test

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pgha/pgha/driver"
	"github.com/pgha/pgha/internal/testutil"
	"github.com/pgha/pgha/replicate"
)

// TestTLSVerifyFullServerNamePerNode: two servers that require TLS, whose
// certificates are each valid for one name only (the primary "localhost",
// the standby "127.0.0.1"). The connection string names only the standby,
// with sslmode=verify-full; the primary comes from Hosts (as it would from
// etcd). The pool verifies each node against its own host name: writes
// reach the primary over verified TLS and reads the standby. A pool that
// reaches the primary by a name its certificate lacks (127.0.0.1) finds
// no primary, and says why: the certificate.
func TestTLSVerifyFullServerNamePerNode(t *testing.T) {
	ca := testutil.NewCA(t)
	tlsFor := func(name, host string) func(*replicate.Config) {
		srv := ca.IssueServer(t, name, host)
		return func(c *replicate.Config) {
			c.TLS = replicate.TLSConfig{CertFile: srv.CertFile, KeyFile: srv.KeyFile, CAFile: ca.CertFile}
		}
	}
	primary := testutil.StartPostgres(t, testutil.PostgresOptions{Name: "tlsp", Configure: tlsFor("tlsp", "localhost")})
	// The standby clones from "localhost", the name in the primary's
	// certificate, with verify-full.
	standby, err := replicate.New(func() replicate.Config {
		c := testutil.PostgresConfig(t, "tlss")
		tlsFor("tlss", "127.0.0.1")(&c)
		return c
	}())
	if err != nil {
		t.Fatal(err)
	}
	testutil.StopPostgresAtCleanup(t, standby)
	ctx := testutil.Ctx(t, 2*time.Minute)
	src := replicate.Source{Host: "localhost", Port: primary.Config().Port, Slot: replicate.SlotName("tlss")}
	if err := standby.Clone(ctx, src); err != nil {
		t.Fatalf("clone over verify-full from %s: %v", src, err)
	}
	pPort, sPort := strconv.Itoa(primary.Config().Port), strconv.Itoa(standby.Config().Port)
	base := fmt.Sprintf("host=127.0.0.1 port=%s user=postgres password=%s dbname=postgres sslmode=verify-full sslrootcert=%s",
		sPort, testutil.PostgresSuperuserPassword, ca.CertFile)

	cfg := parse(t, base)
	cfg.Hosts = []string{"127.0.0.1:" + sPort, "localhost:" + pPort}
	cfg.ReadMode = driver.ReadReplicas
	cfg.ProbeInterval, cfg.ProbeTimeout, cfg.FailoverTimeout = 100*time.Millisecond, 2*time.Second, 20*time.Second
	pool := newPool(t, cfg)
	var node string
	var ssl bool
	q := "SELECT current_setting('cluster_name'), ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
	if err := pool.QueryRow(ctx, q).Scan(&node, &ssl); err != nil {
		t.Fatalf("write path to the primary at localhost:%s over verify-full: %v", pPort, err)
	}
	if node != "tlsp" || !ssl {
		t.Fatalf("write path reached %s (ssl %v); want tlsp over TLS", node, ssl)
	}
	testutil.Eventually(t, 30*time.Second, "a read on the standby over verify-full", func() error {
		if err := pool.Reader().QueryRow(ctx, q).Scan(&node, &ssl); err != nil {
			return err
		}
		if node != "tlss" || !ssl {
			return fmt.Errorf("read reached %s (ssl %v)", node, ssl)
		}
		return nil
	})

	// Control: the primary reached as 127.0.0.1, a name its certificate
	// does not hold. verify-full must refuse it.
	bad := parse(t, base)
	bad.Hosts = []string{"127.0.0.1:" + sPort, "127.0.0.1:" + pPort}
	bad.ProbeInterval, bad.ProbeTimeout, bad.FailoverTimeout = 100*time.Millisecond, 2*time.Second, 3*time.Second
	badPool := newPool(t, bad)
	_, err = badPool.Exec(ctx, "SELECT 1")
	if !errors.Is(err, driver.ErrNoPrimary) || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("pool reaching the primary by a name outside its certificate: %v; want ErrNoPrimary naming the certificate", err)
	}
	t.Logf("wrong server name, as expected: %v", err)
}
