package replicate_test

import (
	"context"
	"testing"
	"time"

	"github.com/pgha/pgha/internal/testutil"
	"github.com/pgha/pgha/replicate"
)

func TestInitCloneReplicate(t *testing.T) {
	ctx := testutil.Ctx(t, 2*time.Minute)
	p := testutil.StartPostgres(t, testutil.PostgresOptions{Name: "primary"})
	s := testutil.StartPostgres(t, testutil.PostgresOptions{Name: "standby", CloneFrom: p})
	if err := testutil.PostgresExec(ctx, p, "CREATE TABLE t (v int); INSERT INTO t VALUES (1), (2)"); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 30*time.Second, "rows replicate to the standby", func() error {
		n, err := testutil.PostgresQueryInt(ctx, s, "SELECT count(*) FROM t")
		if err != nil {
			return err
		}
		if n != 2 {
			return fmtErr("standby has %d rows, want 2", n)
		}
		return nil
	})
	st, err := s.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v %+v", st, st.WALReceiver)
	pst, err := p.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", pst)
	_ = context.Background
	_ = replicate.Fast
}
