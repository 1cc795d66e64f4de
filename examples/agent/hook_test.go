package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pgha/pgha/ha"
	"github.com/pgha/pgha/internal/testutil"
)

// hookScript writes an executable script into a temp dir that appends
// its arguments and its whole environment to calls (one "args:" line,
// then "env:" lines, then "--"), prints a line, and exits with status 3
// for the role primary.
func hookScript(t *testing.T) (script, calls string) {
	t.Helper()
	dir := t.TempDir()
	calls = filepath.Join(dir, "calls.log")
	script = filepath.Join(dir, "on-role-change.sh")
	body := fmt.Sprintf(`#!/bin/sh
{
  echo "args: $*"
  env | sort | sed 's/^/env: /'
  echo "--"
} >> '%s'
echo "hook says: $1 $2"
[ "$2" = primary ] && exit 3
exit 0
`, calls)
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	return script, calls
}

// hookCall is one run of the hook script.
type hookCall struct {
	args []string
	env  map[string]string
}

func readCalls(t *testing.T, calls string) []hookCall {
	t.Helper()
	b, err := os.ReadFile(calls)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []hookCall
	cur := hookCall{env: map[string]string{}}
	for _, line := range strings.Split(string(b), "\n") {
		switch {
		case strings.HasPrefix(line, "args: "):
			cur.args = strings.Fields(strings.TrimPrefix(line, "args: "))
		case strings.HasPrefix(line, "env: "):
			k, v, _ := strings.Cut(strings.TrimPrefix(line, "env: "), "=")
			cur.env[k] = v
		case line == "--":
			out = append(out, cur)
			cur = hookCall{env: map[string]string{}}
		}
	}
	return out
}

// checkHookEnv fails for any variable but the hook's own and those kept
// from the agent's environment, and for any secret value.
func checkHookEnv(t *testing.T, c hookCall, secrets ...string) {
	t.Helper()
	allowed := append(slices.Clone(hookEnvKeep), "PGHA_ROLE", "PGHA_CLUSTER", "PGHA_NODE", "PGHA_TIMELINE",
		"PWD", "SHLVL", "_") // set by sh itself
	for k, v := range c.env {
		if !slices.Contains(allowed, k) {
			t.Errorf("hook %v: unexpected variable %s in its environment", c.args, k)
		}
		if strings.Contains(k, "PASSWORD") || strings.Contains(k, "TOKEN") {
			t.Errorf("hook %v: a secret's variable %s is in its environment", c.args, k)
		}
		for _, s := range secrets {
			if strings.Contains(v, s) {
				t.Errorf("hook %v: %s holds a secret", c.args, k)
			}
		}
	}
	if c.env["PGHA_ROLE"] != c.args[1] || c.env["PGHA_CLUSTER"] != c.args[2] || c.env["PGHA_NODE"] != c.args[3] || c.env["PATH"] == "" {
		t.Errorf("hook %v: environment %v; want PGHA_ROLE, PGHA_CLUSTER, PGHA_NODE as the arguments, and PATH", c.args, c.env)
	}
}

// TestAgentOnRoleChange: an agent with --on-role-change bootstraps a
// one-node cluster; the script runs with on_start and its first role,
// then on_role_change primary, cluster and node, an environment with none
// of the agent's secrets, and its exit status and output are logged.
func TestAgentOnRoleChange(t *testing.T) {
	const superPassword = "super-secret-Hk29vb"
	const replPassword = "repl-secret-Yt61cz"
	const httpToken = "http-token-Pq74nd-0123456789"
	// In the process environment too: the hook must not inherit it.
	t.Setenv("PGHA_PG_SUPERUSER_PASSWORD", superPassword)
	etcd := testutil.StartEtcd(t, 1)
	script, calls := hookScript(t)
	args, addr, _ := agentArgs(t, "h1", "hooktest", etcd.Endpoints()[0])
	args = append(args, "--on-role-change", script, "--on-role-change-timeout", "20s")
	env := []string{
		"PGHA_PG_SUPERUSER_PASSWORD=" + superPassword,
		"PGHA_PG_REPLICATION_PASSWORD=" + replPassword,
		"PGHA_HTTP_TOKEN=" + httpToken,
		"PATH=" + os.Getenv("PATH"), "HOME=/nonexistent-home", "LANG=C.UTF-8", "EDITOR=vi",
	}
	a := startAgent(t, args, env)
	waitStatus(t, addr, "/primary", http.StatusOK)
	var got []hookCall
	testutil.Eventually(t, 30*time.Second, "the hook runs for primary", func() error {
		got = readCalls(t, calls)
		for _, c := range got {
			if len(c.args) == 4 && c.args[0] == "on_role_change" && c.args[1] == "primary" {
				return nil
			}
		}
		return fmt.Errorf("calls so far: %v", got)
	})
	// The first run is on_start, unless the role it announced ended
	// before it began or finished (it is then skipped or killed, and
	// logged).
	onStartCut := false
	for _, line := range strings.Split(a.log.String(), "\n") {
		if strings.Contains(line, "action=on_start") && (strings.Contains(line, "skipped") || strings.Contains(line, "killed: the role")) {
			onStartCut = true
		}
	}
	if first := got[0].args; (len(first) == 0 || first[0] != "on_start") && !onStartCut {
		t.Errorf("first call %v; want on_start ROLE hooktest h1 (or its run skipped or killed, in the log)", first)
	}
	for i, c := range got {
		if len(c.args) != 4 || c.args[2] != "hooktest" || c.args[3] != "h1" || (i > 0 && c.args[0] != "on_role_change") {
			t.Errorf("call %d: args %v; want on_role_change ROLE hooktest h1", i, c.args)
		}
		checkHookEnv(t, c, superPassword, replPassword, httpToken)
		if c.env["HOME"] != "/nonexistent-home" || c.env["LANG"] != "C.UTF-8" {
			t.Errorf("call %d: HOME %q, LANG %q; want the agent's", i, c.env["HOME"], c.env["LANG"])
		}
		t.Logf("call %d: %v, environment %v", i, c.args, c.env)
	}
	testutil.Eventually(t, 10*time.Second, "the primary run's status and output logged", func() error {
		for _, line := range strings.Split(a.log.String(), "\n") {
			if strings.Contains(line, "on-role-change hook failed") && strings.Contains(line, "exit_status=3") &&
				strings.Contains(line, "hook says: on_role_change primary") {
				return nil
			}
		}
		return fmt.Errorf("no log line with the primary run's exit status 3 and output")
	})
	if err := a.stop(t); err != nil {
		t.Fatalf("run after cancel: %v", err)
	}
}

// TestRoleChangeHookTimeout: a hook that outlives its timeout is killed
// and logged; one whose role ended before it began is not run.
func TestRoleChangeHookTimeout(t *testing.T) {
	dir := t.TempDir()
	started := filepath.Join(dir, "started")
	script := filepath.Join(dir, "slow.sh")
	if err := os.WriteFile(script, []byte(fmt.Sprintf("#!/bin/sh\necho $$ > '%s'\necho going to sleep\nexec sleep 60\n", started)), 0o755); err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	hook := roleChangeHook(script, 300*time.Millisecond, []string{"PATH=" + os.Getenv("PATH")}, slog.New(slog.NewTextHandler(logs, nil)))
	ev := ha.RoleChange{Old: ha.RoleReplica, New: ha.RolePrimary, Cluster: "c", Node: "n1", Timeline: 2}
	begin := time.Now()
	hook(context.Background(), ev)
	took := time.Since(begin)
	if _, err := os.Stat(started); err != nil {
		t.Fatalf("the script did not start: %v", err)
	}
	l := logs.String()
	if !strings.Contains(l, "ran past --on-role-change-timeout") || !strings.Contains(l, "going to sleep") {
		t.Errorf("log %q; want the timeout and the output", l)
	}
	if took > 10*time.Second {
		t.Errorf("the hook returned %v after it began; want it killed at its 300ms timeout", took)
	}
	t.Logf("killed after %v", took.Round(time.Millisecond))

	os.Remove(started)
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the role already ended
	hook(ctx, ev)
	if _, err := os.Stat(started); err == nil {
		t.Errorf("the hook ran for a role that had already ended")
	}
	if !strings.Contains(logs.String(), "skipped") {
		t.Errorf("no log line for the skipped run")
	}
}

// TestOnRoleChangeConfig: the hook must be an absolute path to an
// executable file and its timeout positive; errors name the setting.
func TestOnRoleChangeConfig(t *testing.T) {
	dir := t.TempDir()
	good := []string{"--cluster", "c", "--node", "n", "--pg-data-dir", "/d"}
	script, _ := hookScript(t)
	plain := writeFile(t, dir, "plain.sh", "#!/bin/sh\n")
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"relative", append(good, "--on-role-change", "hook.sh"), `on-role-change "hook.sh" must be an absolute path`},
		{"missing", append(good, "--on-role-change", filepath.Join(dir, "nope")), "on-role-change: stat"},
		{"not executable", append(good, "--on-role-change", plain), "is not an executable file"},
		{"directory", append(good, "--on-role-change", dir), "is not an executable file"},
		{"timeout", append(good, "--on-role-change-timeout", "0s"), "on-role-change-timeout 0s must be positive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := loadConfig(tc.args, baseEnv, io.Discard)
			checkConfigError(t, err, tc.want)
		})
	}
	cfg, err := loadConfig(append(good, "--on-role-change", script), baseEnv, io.Discard)
	if err != nil || cfg.onRoleChange != script || cfg.onRoleChangeTimeout != 30*time.Second {
		t.Fatalf("a good hook: %+v, %v; want it, with the default timeout 30s", cfg, err)
	}
}
