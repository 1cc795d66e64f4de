package replicate_test

import (
	"testing"
	"time"

	"github.com/pgha/pgha/internal/testutil"
)

// TestParameterQuotingReachesServer checks against a real server that a
// Config.Parameters value with backslashes, quotes and escape-like
// sequences arrives unchanged: postgresql.conf reads backslash escapes, so
// quoteConf must double backslashes (FuzzQuoteConf checks the same against
// a model of PostgreSQL's GUC_scanstr; this checks the model).
func TestParameterQuotingReachesServer(t *testing.T) {
	t.Parallel()
	ctx := testutil.Ctx(t, 2*time.Minute)
	const want = `C:\pg\new\table it's \101 \\ done`
	p := testutil.StartPostgres(t, testutil.PostgresOptions{Name: "quoting", Parameters: map[string]string{"application_name": want}})
	conn, err := p.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var got string
	if err := conn.QueryRow(ctx, "SELECT setting FROM pg_file_settings WHERE name = 'application_name' AND error IS NULL ORDER BY seqno DESC LIMIT 1").Scan(&got); err != nil {
		t.Fatalf("application_name from the configuration file: %v", err)
	}
	if got != want {
		t.Fatalf("application_name = %q; want %q", got, want)
	}
}
