package testutil_test

import (
	"testing"
	"time"

	"github.com/pgha/pgha/internal/testutil"
)

func TestStartPostgresPair(t *testing.T) {
	ctx := testutil.Ctx(t, time.Minute)
	p := testutil.StartPostgres(t, testutil.PostgresOptions{})
	s := testutil.StartPostgres(t, testutil.PostgresOptions{CloneFrom: p})
	if err := testutil.PostgresExec(ctx, p, "CREATE TABLE t AS SELECT 1 AS v"); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 30*time.Second, "the standby has the table", func() error {
		_, err := testutil.PostgresQueryInt(ctx, s, "SELECT count(*) FROM t")
		return err
	})
	st, err := s.Status(ctx)
	if err != nil || !st.InRecovery || st.WALReceiver == nil {
		t.Fatalf("standby Status = %+v, %v; want a streaming standby", st, err)
	}
	if kids := testutil.PostgresChildren(p.PID()); len(kids) == 0 {
		t.Fatalf("primary %d has no children", p.PID())
	}
}
