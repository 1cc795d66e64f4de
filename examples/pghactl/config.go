package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pgha/pgha/ha"
	"golang.org/x/term"
	"sigs.k8s.io/yaml"
)

// setFlags collects repeated --set key=value flags.
type setFlags []string

func (s *setFlags) String() string     { return strings.Join(*s, ",") }
func (s *setFlags) Set(v string) error { *s = append(*s, v); return nil }

// configLines renders a ClusterConfig as sorted "key = value" lines, the
// same keys --set takes.
func configLines(c ha.ClusterConfig) []string {
	var out []string
	if c.MaxLagOnFailover != nil {
		out = append(out, fmt.Sprintf("max_lag_on_failover = %d", *c.MaxLagOnFailover))
	}
	if c.SyncMode != nil {
		out = append(out, fmt.Sprintf("sync_mode = %s", *c.SyncMode))
	}
	if c.SyncStandbys != nil {
		out = append(out, fmt.Sprintf("sync_standbys = %d", *c.SyncStandbys))
	}
	if c.LoopInterval != nil {
		out = append(out, fmt.Sprintf("loop_interval = %v", time.Duration(*c.LoopInterval)))
	}
	if c.DepartedSlotTTL != nil {
		out = append(out, fmt.Sprintf("departed_slot_ttl = %v", time.Duration(*c.DepartedSlotTTL)))
	}
	for _, k := range slices.Sorted(maps.Keys(c.Parameters)) {
		out = append(out, fmt.Sprintf("parameters.%s = %s", k, c.Parameters[k]))
	}
	for _, n := range slices.Sorted(maps.Keys(c.NodeParameters)) {
		for _, k := range slices.Sorted(maps.Keys(c.NodeParameters[n])) {
			out = append(out, fmt.Sprintf("node_parameters.%s.%s = %s", n, k, c.NodeParameters[n][k]))
		}
	}
	return out
}

// applySet applies one --set key=value to c; an empty value unsets key.
func applySet(c *ha.ClusterConfig, kv string) error {
	key, val, ok := strings.Cut(kv, "=")
	key, val = strings.TrimSpace(key), strings.TrimSpace(val)
	if !ok || key == "" {
		return usagef("--set %q: want key=value (an empty value unsets the key)", kv)
	}
	unset := val == ""
	switch {
	case key == "max_lag_on_failover":
		if unset {
			c.MaxLagOnFailover = nil
			return nil
		}
		n, err := strconv.ParseInt(val, 10, 64)
		if err != nil || n < 0 {
			return usagef("--set max_lag_on_failover=%s: want a number of bytes >= 0", val)
		}
		c.MaxLagOnFailover = &n
	case key == "sync_mode":
		if unset {
			c.SyncMode = nil
			return nil
		}
		m := ha.SyncMode(val)
		switch m {
		case ha.SyncOff, ha.SyncOn, ha.SyncStrict, ha.SyncQuorum, ha.SyncQuorumStrict:
		default:
			return usagef("--set sync_mode=%s: want off, on, strict, quorum or quorum-strict", val)
		}
		c.SyncMode = &m
	case key == "sync_standbys":
		if unset {
			c.SyncStandbys = nil
			return nil
		}
		n, err := strconv.Atoi(val)
		if err != nil || n < 1 {
			return usagef("--set sync_standbys=%s: want a number >= 1", val)
		}
		c.SyncStandbys = &n
	case key == "loop_interval" || key == "departed_slot_ttl":
		field, lo, hi, eg := &c.LoopInterval, 10*time.Millisecond, 10*time.Second, "500ms"
		if key == "departed_slot_ttl" {
			field, lo, hi, eg = &c.DepartedSlotTTL, time.Minute, time.Duration(1<<63-1), "30m"
		}
		if unset {
			*field = nil
			return nil
		}
		d, err := time.ParseDuration(val)
		if err != nil || d < lo || d > hi {
			return usagef("--set %s=%s: want a duration from %v to %v, e.g. %s", key, val, lo, hi, eg)
		}
		hd := ha.Duration(d)
		*field = &hd
	case strings.HasPrefix(key, "parameters."):
		name := strings.TrimPrefix(key, "parameters.")
		if name == "" {
			return usagef("--set %s: name the parameter, e.g. parameters.work_mem=64MB", key)
		}
		if unset {
			delete(c.Parameters, name)
			return nil
		}
		if c.Parameters == nil {
			c.Parameters = map[string]string{}
		}
		c.Parameters[name] = val
	case strings.HasPrefix(key, "node_parameters."):
		node, name, ok := strings.Cut(strings.TrimPrefix(key, "node_parameters."), ".")
		if !ok || node == "" || name == "" {
			return usagef("--set %s: want node_parameters.NODE.PARAMETER=value", key)
		}
		if err := ha.ValidName(node); err != nil {
			return usagef("--set %s: node %q: %v", key, node, err)
		}
		if unset {
			delete(c.NodeParameters[node], name)
			if len(c.NodeParameters[node]) == 0 {
				delete(c.NodeParameters, node)
			}
			return nil
		}
		if c.NodeParameters == nil {
			c.NodeParameters = map[string]map[string]string{}
		}
		if c.NodeParameters[node] == nil {
			c.NodeParameters[node] = map[string]string{}
		}
		c.NodeParameters[node][name] = val
	default:
		return usagef("--set %s: unknown key; use max_lag_on_failover, sync_mode, sync_standbys, loop_interval, departed_slot_ttl, parameters.NAME or node_parameters.NODE.NAME", key)
	}
	return nil
}

func cmdShowConfig(ctx context.Context, c *cli) error {
	sctx, cancel := context.WithTimeout(ctx, c.g.timeout)
	defer cancel()
	cfg, rev, err := ha.ShowConfig(sctx, c.client, c.g.cluster, c.opts()...)
	if err != nil {
		return c.g.unreachable(err)
	}
	st, err := c.status(ctx)
	if err != nil {
		return err
	}
	pending := map[string][]string{}
	for _, m := range st.Members {
		if len(m.PendingRestart) > 0 {
			pending[m.Node] = m.PendingRestart
		}
	}
	if c.g.jsonOutput {
		return writeJSON(c.stdout, struct {
			Config         ha.ClusterConfig    `json:"config"`
			Revision       int64               `json:"revision"`
			PendingRestart map[string][]string `json:"pending_restart,omitempty"`
		}{cfg, rev, pending})
	}
	lines := configLines(cfg)
	if len(lines) == 0 {
		fmt.Fprintf(c.stdout, "# %s: no cluster-wide configuration; every node uses its own\n", c.g.cluster)
	}
	for _, l := range lines {
		fmt.Fprintln(c.stdout, l)
	}
	for _, n := range slices.Sorted(maps.Keys(pending)) {
		fmt.Fprintf(c.stdout, "# %s: pending restart: %s\n", n, strings.Join(pending[n], ", "))
	}
	return nil
}

func cmdEditConfig(ctx context.Context, c *cli) error {
	sctx, cancel := context.WithTimeout(ctx, c.g.timeout)
	defer cancel()
	cur, _, err := ha.ShowConfig(sctx, c.client, c.g.cluster, c.opts()...)
	if err != nil {
		return c.g.unreachable(err)
	}
	var next ha.ClusterConfig
	switch {
	case len(c.sets) > 0:
		next = cur
		next.Parameters = maps.Clone(cur.Parameters)
		next.NodeParameters = map[string]map[string]string{}
		for n, p := range cur.NodeParameters {
			next.NodeParameters[n] = maps.Clone(p)
		}
		for _, kv := range c.sets {
			if err := applySet(&next, kv); err != nil {
				return err
			}
		}
	case c.file != "":
		if next, err = readConfigFile(c.file); err != nil {
			return err
		}
	default:
		if next, err = c.editConfig(cur); err != nil {
			return err
		}
	}
	before, after := configLines(cur), configLines(next)
	diff := lineDiff(before, after)
	if len(diff) == 0 {
		fmt.Fprintln(c.stdout, "no change")
		return nil
	}
	for _, l := range diff {
		fmt.Fprintln(c.stdout, l)
	}
	if !c.force {
		ok, err := confirm(c.stdin, c.stdout)
		if err != nil {
			return err
		}
		if !ok {
			return errors.New("not applied")
		}
	}
	if err := ha.ProposeConfig(ctx, c.client, c.g.cluster, next, c.opts()...); err != nil {
		return err
	}
	fmt.Fprintln(c.stdout, "applied: every node reloads within a loop; 'pghactl show-config' lists what waits for a restart")
	return nil
}

// editConfig opens $VISUAL or $EDITOR on the current configuration as
// YAML and returns what the operator saved. The file is removed only when
// it was read back correctly; otherwise the error names it, so an edit is
// never lost.
func (c *cli) editConfig(cur ha.ClusterConfig) (ha.ClusterConfig, error) {
	editor := c.g.env("VISUAL")
	if editor == "" {
		editor = c.g.env("EDITOR")
	}
	if editor == "" {
		return ha.ClusterConfig{}, usagef("set EDITOR (or VISUAL) to edit the configuration, or give --set KEY=VALUE or --file PATH")
	}
	b, err := yaml.Marshal(cur)
	if err != nil {
		return ha.ClusterConfig{}, err
	}
	f, err := os.CreateTemp("", "pghactl-config-*.yaml")
	if err != nil {
		return ha.ClusterConfig{}, fmt.Errorf("a file to edit: %w", err)
	}
	path := f.Name()
	_, err = f.Write(append([]byte(configFileHeader), b...))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return ha.ClusterConfig{}, fmt.Errorf("write %s: %w", path, err)
	}
	// The editor is a command line ("code --wait", "vim"), run by the
	// shell like git and kubectl do, on the terminal pghactl runs on.
	cmd := exec.Command("/bin/sh", "-c", editor+` "$1"`, "editor", path)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = c.stdin, c.stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return ha.ClusterConfig{}, fmt.Errorf("%s exited with %v; nothing applied (the file is kept: %s)", editor, err, path)
	}
	next, err := readConfigFile(path)
	if err != nil {
		return ha.ClusterConfig{}, fmt.Errorf("%w; nothing applied: your edit is kept in %s, fix it and run 'pghactl edit-config --file %s'", err, path, path)
	}
	os.Remove(path)
	return next, nil
}

// configFileHeader starts the file edit-config opens.
const configFileHeader = `# pgha cluster-wide configuration. Save and quit to apply (you will see the
# diff and be asked first); an unchanged file applies nothing.
# Keys: max_lag_on_failover (bytes), sync_mode (off, on, strict, quorum,
# quorum-strict), sync_standbys, loop_interval (e.g. 500ms),
# departed_slot_ttl (e.g. 30m), parameters (NAME: value), node_parameters
# (NODE: {NAME: value}). The leader checks every value before any node
# applies it.
`

// readConfigFile reads a configuration in YAML (or JSON), refusing
// unknown keys, and checks each value the way --set does.
func readConfigFile(path string) (ha.ClusterConfig, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return ha.ClusterConfig{}, err
	}
	var cfg ha.ClusterConfig
	if err := yaml.UnmarshalStrict(b, &cfg); err != nil {
		// sigs.k8s.io/yaml goes through JSON: keep the part that names
		// the key or the value.
		msg := err.Error()
		if i := strings.LastIndex(msg, "json: "); i >= 0 {
			msg = msg[i+len("json: "):]
		}
		return ha.ClusterConfig{}, fmt.Errorf("%s: %s", path, msg)
	}
	var check ha.ClusterConfig
	for _, l := range configLines(cfg) {
		if err := applySet(&check, strings.Replace(l, " = ", "=", 1)); err != nil {
			return ha.ClusterConfig{}, fmt.Errorf("%s: %w", path, err)
		}
	}
	return cfg, nil
}

// lineDiff returns "- line" for lines only in a and "+ line" for lines
// only in b, in b's order after a's.
func lineDiff(a, b []string) []string {
	var out []string
	for _, l := range a {
		if !slices.Contains(b, l) {
			out = append(out, "- "+l)
		}
	}
	for _, l := range b {
		if !slices.Contains(a, l) {
			out = append(out, "+ "+l)
		}
	}
	return out
}

// confirm asks on in; without a terminal it refuses and names --force.
func confirm(in io.Reader, out io.Writer) (bool, error) {
	if f, ok := in.(*os.File); !ok || !term.IsTerminal(int(f.Fd())) {
		return false, usagef("stdin is not a terminal: add --force to apply without confirmation")
	}
	fmt.Fprint(out, "Apply these changes? [y/N] ")
	line, _ := bufio.NewReader(in).ReadString('\n')
	a := strings.ToLower(strings.TrimSpace(line))
	return a == "y" || a == "yes", nil
}

func cmdRestart(ctx context.Context, c *cli) error {
	st, err := c.statusOfNodes(ctx)
	if err != nil {
		return err
	}
	if c.cancel {
		return c.cancelRestarts(ctx)
	}
	if !c.atTime.IsZero() {
		return c.scheduleRestarts(ctx, st)
	}
	rctx, cancel := context.WithTimeout(ctx, c.wait)
	defer cancel()
	start := time.Now()
	done, err := ha.RollingRestart(rctx, c.client, c.g.cluster, ha.RollingRestartOptions{
		Nodes: c.nodes, PendingOnly: c.pending, Role: ha.Role(c.role), NoSwitchover: c.noSwitchover,
		Progress: func(step string) {
			fmt.Fprintf(c.stdout, "%6.1fs  %s\n", time.Since(start).Seconds(), step)
		},
	}, c.opts()...)
	if err != nil {
		return explain(err, st)
	}
	if len(done) == 0 {
		fmt.Fprintln(c.stdout, "nothing to restart")
		return nil
	}
	fmt.Fprintf(c.stdout, "restarted %s in %v\n", strings.Join(done, ", "), time.Since(start).Round(time.Millisecond))
	return nil
}

// scheduleRestarts writes a scheduled restart request for every chosen
// member. The managers carry them out at the time, one node at a time,
// the primary last and in place: a scheduled restart cannot hand over
// first, so the primary is included only with --no-switchover.
func (c *cli) scheduleRestarts(ctx context.Context, st ha.ClusterState) error {
	var chosen []string
	leader := ""
	if st.Leader != nil {
		leader = st.Leader.Node
	}
	for _, m := range st.Members {
		if len(c.nodes) > 0 && !slices.Contains(c.nodes, m.Node) {
			continue
		}
		if c.role == "primary" && m.Node != leader || c.role == "replica" && m.Node == leader {
			continue
		}
		if m.Node == leader && !c.noSwitchover {
			return fmt.Errorf("a scheduled restart restarts the primary %s in place (its writes pause for the restart): add --no-switchover to accept that, "+
				"or schedule the replicas (--role replica) and a switchover ('pghactl switchover --at ...') before restarting %s", leader, leader)
		}
		chosen = append(chosen, m.Node)
	}
	if len(chosen) == 0 {
		fmt.Fprintln(c.stdout, "nothing to restart")
		return nil
	}
	sctx, cancel := context.WithTimeout(ctx, c.g.timeout)
	defer cancel()
	for _, n := range chosen {
		if err := ha.ScheduleRestart(sctx, c.client, c.g.cluster, n, c.atTime, c.pending, c.opts()...); err != nil {
			return c.g.unreachable(err)
		}
	}
	fmt.Fprintf(c.stdout, "restart of %s scheduled at %s (in %v), one node at a time%s; 'pghactl list' shows it, 'pghactl restart --cancel NODE...' withdraws it\n",
		strings.Join(chosen, ", "), c.atTime.UTC().Format(time.RFC3339), time.Until(c.atTime).Round(time.Second), pendingNote(c.pending))
	return nil
}

// cancelRestarts withdraws the named nodes' restart requests.
func (c *cli) cancelRestarts(ctx context.Context) error {
	sctx, cancel := context.WithTimeout(ctx, c.g.timeout)
	defer cancel()
	for _, n := range c.nodes {
		had, err := ha.CancelRestart(sctx, c.client, c.g.cluster, n, c.opts()...)
		if err != nil {
			return c.g.unreachable(err)
		}
		if had {
			fmt.Fprintf(c.stdout, "restart request of %s withdrawn\n", n)
		} else {
			fmt.Fprintf(c.stdout, "no restart request for %s\n", n)
		}
	}
	return nil
}

// pendingNote says that a restart request is for pending settings only.
func pendingNote(pending bool) string {
	if pending {
		return " (only if a setting waits for a restart)"
	}
	return ""
}

func cmdReload(ctx context.Context, c *cli) error {
	st, err := c.statusOfNodes(ctx)
	if err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, c.wait)
	defer cancel()
	pending, err := ha.ReloadMembers(rctx, c.client, c.g.cluster, c.nodes, c.opts()...)
	if err != nil {
		return explain(err, st)
	}
	if c.g.jsonOutput {
		return writeJSON(c.stdout, pending)
	}
	for _, n := range slices.Sorted(maps.Keys(pending)) {
		if p := pending[n]; len(p) > 0 {
			fmt.Fprintf(c.stdout, "%s: reloaded; pending restart: %s ('pghactl restart --pending %s')\n", n, strings.Join(p, ", "), n)
		} else {
			fmt.Fprintf(c.stdout, "%s: reloaded\n", n)
		}
	}
	return nil
}

// statusOfNodes reads the cluster's state and checks that every node
// named on the command line is a member.
func (c *cli) statusOfNodes(ctx context.Context) (ha.ClusterState, error) {
	st, err := c.status(ctx)
	if err != nil {
		return st, err
	}
	if err := c.requireCluster(st); err != nil {
		return st, err
	}
	for _, n := range c.nodes {
		if _, ok := member(st, n); !ok {
			return st, explain(fmt.Errorf("%w: %s", ha.ErrUnknownMember, n), st)
		}
	}
	return st, nil
}
