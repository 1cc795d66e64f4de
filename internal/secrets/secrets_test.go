package secrets_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgha/pgha/internal/secrets"
)

func TestFromEnvOrFile(t *testing.T) {
	dir := t.TempDir()
	file := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	missing := filepath.Join(dir, "missing")
	for _, tc := range []struct {
		name, env, path, want, err string
	}{
		{"neither", "", "", "", ""},
		{"env", "s3cret", "", "s3cret", ""},
		{"file with a line break", "", file("lf", "s3cret\n"), "s3cret", ""},
		{"file with CRLF", "", file("crlf", "s3cret\r\n"), "s3cret", ""},
		{"inner spaces kept", "", file("sp", " s3 cret \n"), " s3 cret ", ""},
		{"both", "s3cret", file("both", "other"), "", "both PGHA_X_PASSWORD and --x-password-file are set: keep one"},
		{"missing file", "", missing, "", "--x-password-file: open " + missing},
	} {
		got, err := secrets.FromEnvOrFile("PGHA_X_PASSWORD", tc.env, "x-password-file", tc.path)
		switch {
		case tc.err == "" && (err != nil || got != tc.want):
			t.Errorf("%s: = %q, %v; want %q", tc.name, got, err, tc.want)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%s: error %v; want one containing %q", tc.name, err, tc.err)
		case err != nil && (strings.Contains(err.Error(), "s3cret") || strings.Contains(err.Error(), "other")):
			t.Errorf("%s: error %q holds the secret", tc.name, err)
		}
	}
}
