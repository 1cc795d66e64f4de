// Command pghactl is the operator's tool for a pgha cluster: it lists the
// members, hands leadership over (switchover, now or at a set time),
// promotes a chosen standby when there is no leader (failover), pauses and
// resumes automatic failover, re-clones a standby (reinit), forgets a
// departed member (remove), and prints the timeline history. It talks to etcd only, never
// to PostgreSQL or to the agents, so it works from any machine that can
// reach etcd.
//
// Usage:
//
//	pghactl [global flags] <command> [flags]
//
//	list        members with role, state, timeline, lag, leader and sync markers
//	history     timeline switches, oldest first
//	switchover  [--to NODE] [--wait 60s]   planned, zero-loss handover
//	            [--to NODE] --at TIME   schedule it (RFC 3339); --cancel cancels a pending one
//	failover    --to NODE [--force] [--wait 60s]   promote NODE when there is no leader
//	pause       [--reason TEXT]   no automatic failover until resume
//	resume      end maintenance mode
//	show-config the cluster-wide configuration and what waits for a restart
//	edit-config [--set KEY=VALUE... | --file PATH] [--force]   change it:
//	            without --set or --file, opens $EDITOR on the YAML; shows the
//	            diff, asks unless --force; the leader checks every value first
//	restart     [--pending] [--role primary|replica] [--no-switchover] [NODE...]
//	            rolling restart: standbys one at a time, each streaming
//	            again before the next; the primary last, after a switchover
//	            --at TIME [...]   schedule it: each node restarts then, one
//	            at a time, the primary last and in place (--no-switchover)
//	            --cancel NODE...  withdraw scheduled or pending restarts
//	reload      [NODE...]   every node (or those named) reads its
//	            configuration files again; prints what waits for a restart
//	reinit      NODE [--wait 30m] | --cancel NODE   re-clone a standby from the leader
//	remove      NODE [--wait 60s]   forget a stopped member: its record and slot
//
// Global flags (accepted before or after the command; each has a PGHA_*
// environment variable):
//
//	--etcd        etcd endpoints, comma-separated (PGHA_ETCD_ENDPOINTS; default http://127.0.0.1:2379)
//	--cluster     cluster name (PGHA_CLUSTER; required)
//	--key-root    etcd key root (PGHA_KEY_ROOT; default /pgha)
//	--etcd-ca-file, --etcd-cert-file, --etcd-key-file   TLS (PGHA_ETCD_CA_FILE, ...)
//	--etcd-username, --etcd-password-file   authentication; the password may
//	              also come from PGHA_ETCD_PASSWORD, never from a flag
//	--timeout     how long to wait for etcd (default 5s)
//	--json        machine-readable output for list, history, show-config, switchover, reinit and remove
//
// # Exit codes
//
//	0  the command succeeded
//	1  the operation failed or was refused (the message says why and what to do)
//	2  usage error: unknown command or flag, missing or invalid argument
//	3  etcd unreachable, or it rejected the TLS setup or the credentials
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/pgha/pgha/ha"
	"github.com/pgha/pgha/replicate"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Exit codes.
const (
	exitOK          = 0
	exitFailed      = 1
	exitUsage       = 2
	exitUnreachable = 3
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

const usageText = `Usage: pghactl [global flags] <command> [flags]

Commands:
  list        members with role, state, timeline, lag, leader and sync markers
  history     timeline switches, oldest first
  switchover  planned, zero-loss handover: [--to NODE] [--wait 60s]
              scheduled: [--to NODE] --at TIME (RFC 3339); --cancel cancels a pending one
  failover    promote a standby when there is no leader: --to NODE [--force] [--wait 60s]
  pause       no automatic failover until resume: [--reason TEXT]
  resume      end maintenance mode
  show-config the cluster-wide configuration and what waits for a restart
  edit-config change it in $EDITOR, or: --set KEY=VALUE... | --file PATH; [--force]
  restart     rolling restart: [--pending] [--role primary|replica] [--no-switchover] [NODE...]
              scheduled: --at TIME (RFC 3339) [...]; --cancel NODE... withdraws
  reload      reload the configuration files: [NODE...]
  reinit      re-clone a standby from the leader (old data directory moved aside): NODE [--wait 30m]; --cancel NODE
  remove      forget a stopped member (its record and its slot on the leader): NODE [--wait 60s]

Global flags (before or after the command):
`

const exitText = `
Exit codes: 0 ok, 1 operation failed or refused, 2 usage error, 3 etcd unreachable.
Run 'pghactl <command> -h' for a command's flags.
`

// globals are the flags every command takes.
type globals struct {
	etcd       string
	cluster    string
	keyRoot    string
	caFile     string
	certFile   string
	keyFile    string
	username   string
	passFile   string
	timeout    time.Duration
	jsonOutput bool
	env        func(string) string
}

// register adds the global flags to fs; defaults come from the environment.
func (g *globals) register(fs *flag.FlagSet) {
	def := func(name, fallback string) string {
		if v := g.env(name); v != "" {
			return v
		}
		return fallback
	}
	fs.StringVar(&g.etcd, "etcd", def("PGHA_ETCD_ENDPOINTS", "http://127.0.0.1:2379"), "etcd endpoints, comma-separated (env PGHA_ETCD_ENDPOINTS)")
	fs.StringVar(&g.cluster, "cluster", def("PGHA_CLUSTER", ""), "cluster name (env PGHA_CLUSTER; required)")
	fs.StringVar(&g.keyRoot, "key-root", def("PGHA_KEY_ROOT", ha.DefaultKeyRoot), "etcd key root (env PGHA_KEY_ROOT)")
	fs.StringVar(&g.caFile, "etcd-ca-file", def("PGHA_ETCD_CA_FILE", ""), "CA bundle that signed etcd's server certificate (env PGHA_ETCD_CA_FILE)")
	fs.StringVar(&g.certFile, "etcd-cert-file", def("PGHA_ETCD_CERT_FILE", ""), "client certificate for etcd (env PGHA_ETCD_CERT_FILE)")
	fs.StringVar(&g.keyFile, "etcd-key-file", def("PGHA_ETCD_KEY_FILE", ""), "client certificate's key (env PGHA_ETCD_KEY_FILE)")
	fs.StringVar(&g.username, "etcd-username", def("PGHA_ETCD_USERNAME", ""), "etcd user (env PGHA_ETCD_USERNAME)")
	fs.StringVar(&g.passFile, "etcd-password-file", def("PGHA_ETCD_PASSWORD_FILE", ""), "file holding the etcd user's password (env PGHA_ETCD_PASSWORD_FILE; or the password itself in PGHA_ETCD_PASSWORD)")
	fs.DurationVar(&g.timeout, "timeout", 5*time.Second, "how long to wait for etcd")
	fs.BoolVar(&g.jsonOutput, "json", false, "print JSON (list, history, switchover, reinit, remove)")
}

// usageError is a command line that cannot run.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

// unreachableError is an etcd that could not be reached or refused us.
type unreachableError struct{ err error }

func (e *unreachableError) Error() string { return e.err.Error() }
func (e *unreachableError) Unwrap() error { return e.err }

// command is one subcommand.
type command struct {
	name string
	run  func(ctx context.Context, c *cli) error
}

// cli is what a command runs with.
type cli struct {
	g      *globals
	client *clientv3.Client
	stdout io.Writer
	// The commands' own flags.
	to     string
	force  bool
	wait   time.Duration
	reason string
	// edit-config's --set flags, and where its confirmation is read.
	sets  setFlags
	file  string
	stdin io.Reader
	// restart's flags and node arguments.
	pending      bool
	role         string
	noSwitchover bool
	nodes        []string
	// at is switchover --at as given, parsed into atTime by check;
	// cancel is --cancel; node is reinit's and remove's argument.
	at     string
	atTime time.Time
	cancel bool
	node   string
}

func (c *cli) opts() []ha.OpOption { return []ha.OpOption{ha.WithKeyRoot(c.g.keyRoot)} }

var commands = []command{
	{name: "list", run: cmdList},
	{name: "history", run: cmdHistory},
	{name: "switchover", run: cmdSwitchover},
	{name: "failover", run: cmdFailover},
	{name: "pause", run: cmdPause},
	{name: "resume", run: cmdResume},
	{name: "show-config", run: cmdShowConfig},
	{name: "edit-config", run: cmdEditConfig},
	{name: "restart", run: cmdRestart},
	{name: "reload", run: cmdReload},
	{name: "reinit", run: cmdReinit},
	{name: "remove", run: cmdRemove},
}

// run runs pghactl with args (without the program name) and returns the
// exit code. Output goes to stdout, errors and usage to stderr.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return runEnv(ctx, args, os.Getenv, stdout, stderr)
}

func runEnv(ctx context.Context, args []string, env func(string) string, stdout, stderr io.Writer) int {
	g := &globals{env: env}
	top := flag.NewFlagSet("pghactl", flag.ContinueOnError)
	top.SetOutput(stderr)
	g.register(top)
	top.Usage = func() {
		fmt.Fprint(stderr, usageText)
		top.PrintDefaults()
		fmt.Fprint(stderr, exitText)
	}
	if err := top.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage // flag printed the error and the usage
	}
	if top.NArg() == 0 {
		fmt.Fprintln(stderr, "pghactl: a command is required")
		top.Usage()
		return exitUsage
	}
	name := top.Arg(0)
	i := slices.IndexFunc(commands, func(c command) bool { return c.name == name })
	if i < 0 {
		fmt.Fprintf(stderr, "pghactl: unknown command %q; commands: list, history, switchover, failover, pause, resume, reinit, remove, show-config, edit-config, restart, reload\n", name)
		return exitUsage
	}
	cmd := commands[i]
	c := &cli{g: g, stdout: stdout, stdin: os.Stdin}
	// Global flags may come after the command too: the command's flag set
	// has them again, seeded with the values given before the command.
	given := map[string]string{}
	top.Visit(func(f *flag.Flag) { given[f.Name] = f.Value.String() })
	fs := flag.NewFlagSet("pghactl "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	g.register(fs)
	for k, v := range given {
		fs.Set(k, v)
	}
	switch name {
	case "switchover":
		fs.StringVar(&c.to, "to", "", "the standby to hand over to (default: the most advanced healthy standby)")
		fs.DurationVar(&c.wait, "wait", 60*time.Second, "how long to wait for the new leader to be writable")
		fs.StringVar(&c.at, "at", "", "schedule it at this RFC 3339 time (e.g. 2026-12-08T02:00:00Z), by the leader's clock, and return at once")
		fs.BoolVar(&c.cancel, "cancel", false, "cancel the pending switchover, scheduled or not")
	case "reinit":
		fs.DurationVar(&c.wait, "wait", 30*time.Minute, "how long to wait for the node to stream again (the request stays pending after)")
		fs.BoolVar(&c.cancel, "cancel", false, "cancel NODE's pending reinit request")
	case "remove":
		fs.DurationVar(&c.wait, "wait", 60*time.Second, "how long to wait for the leader to carry it out")
	case "failover":
		fs.StringVar(&c.to, "to", "", "the standby to promote (required)")
		fs.BoolVar(&c.force, "force", false, "promote even a standby outside the synchronous set (acknowledged commits may be lost)")
		fs.DurationVar(&c.wait, "wait", 60*time.Second, "how long to wait for the new leader to be writable")
	case "pause":
		fs.StringVar(&c.reason, "reason", "", "why, shown by list")
	case "restart":
		fs.BoolVar(&c.pending, "pending", false, "only members with a setting waiting for a restart")
		fs.StringVar(&c.role, "role", "", "only the primary or only the replicas: primary or replica")
		fs.BoolVar(&c.noSwitchover, "no-switchover", false, "restart the primary in place (its writes pause) instead of handing over first")
		fs.DurationVar(&c.wait, "wait", 10*time.Minute, "how long the whole rolling restart may take")
		fs.StringVar(&c.at, "at", "", "schedule the restarts at this RFC 3339 time (e.g. 2026-12-08T02:00:00Z), by each node's clock, and return at once")
		fs.BoolVar(&c.cancel, "cancel", false, "withdraw the restart requests of the nodes named (scheduled or pending)")
	case "reload":
		fs.DurationVar(&c.wait, "wait", 60*time.Second, "how long to wait for every node to reload")
	case "edit-config":
		fs.StringVar(&c.file, "file", "", "apply the configuration in this YAML file (the whole of it; see show-config) instead of editing")
		fs.Var(&c.sets, "set", "key=value to set (repeatable; an empty value unsets): max_lag_on_failover, sync_mode, sync_standbys, loop_interval, departed_slot_ttl, parameters.NAME, node_parameters.NODE.NAME")
		fs.BoolVar(&c.force, "force", false, "apply without asking for confirmation")
	}
	if err := fs.Parse(top.Args()[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if name == "restart" || name == "reload" {
		c.nodes = fs.Args()
	} else if (name == "reinit" || name == "remove") && fs.NArg() > 0 {
		// NODE, then flags may follow it.
		c.node = fs.Arg(0)
		if err := fs.Parse(fs.Args()[1:]); err != nil {
			return exitUsage
		}
	}
	if name != "restart" && name != "reload" && fs.NArg() > 0 {
		fmt.Fprintf(stderr, "pghactl %s: unexpected argument %q (flags start with --)\n", name, fs.Arg(0))
		return exitUsage
	}
	err := c.check(name)
	if err == nil {
		var closeClient func()
		c.client, closeClient, err = g.connect(ctx)
		if err == nil {
			err = cmd.run(ctx, c)
			closeClient()
		}
	}
	return report(stderr, name, err)
}

// check validates the flags that need no etcd.
func (c *cli) check(name string) error {
	if c.g.cluster == "" {
		return usagef("--cluster is required (or set PGHA_CLUSTER)")
	}
	if err := ha.ValidName(c.g.cluster); err != nil {
		return usagef("--cluster %q: %v", c.g.cluster, err)
	}
	if c.to != "" {
		if err := ha.ValidName(c.to); err != nil {
			return usagef("--to %q: %v", c.to, err)
		}
	}
	if name == "failover" && c.to == "" {
		return usagef("failover needs --to NODE: the standby to promote (see 'pghactl list')")
	}
	if name == "reinit" || name == "remove" {
		if c.node == "" {
			return usagef("%s needs NODE: 'pghactl %s NODE' (see 'pghactl list')", name, name)
		}
		if err := ha.ValidName(c.node); err != nil {
			return usagef("NODE %q: %v", c.node, err)
		}
	}
	if c.at != "" {
		if c.cancel {
			return usagef("--at and --cancel do not go together: cancel first, then schedule")
		}
		t, err := time.Parse(time.RFC3339, c.at)
		if err != nil {
			return usagef("--at %q is not an RFC 3339 time: give e.g. 2026-12-08T02:00:00Z or 2026-12-08T03:00:00+01:00", c.at)
		}
		if !t.After(time.Now()) {
			return usagef("--at %s is in the past (now %s): give a future time", c.at, time.Now().UTC().Format(time.RFC3339))
		}
		c.atTime = t
	}
	if name == "switchover" && c.cancel && c.to != "" {
		return usagef("--cancel takes no --to: it cancels whatever switchover is pending")
	}
	if c.g.timeout <= 0 {
		return usagef("--timeout %v must be positive", c.g.timeout)
	}
	for _, n := range c.nodes {
		if err := ha.ValidName(n); err != nil {
			return usagef("node %q: %v", n, err)
		}
	}
	if c.role != "" && c.role != "primary" && c.role != "replica" {
		return usagef("--role %q: want primary or replica", c.role)
	}
	if len(c.sets) > 0 && c.file != "" {
		return usagef("edit-config takes --set or --file, not both")
	}
	if name == "restart" && c.cancel {
		if len(c.nodes) == 0 {
			return usagef("restart --cancel needs the NODEs whose requests to withdraw (see 'pghactl list')")
		}
		if c.pending || c.role != "" || c.noSwitchover {
			return usagef("restart --cancel takes only NODEs")
		}
	}
	if (name == "switchover" || name == "failover" || name == "reinit" || name == "remove" || name == "restart" || name == "reload") && c.wait <= 0 {
		return usagef("--wait %v must be positive", c.wait)
	}
	if c.g.jsonOutput && !slices.Contains([]string{"list", "history", "switchover", "reinit", "remove", "show-config", "reload"}, name) {
		return usagef("--json applies to list, history, show-config, switchover, reinit, remove and reload only")
	}
	return nil
}

// report prints err and returns the exit code for it.
func report(stderr io.Writer, name string, err error) int {
	if err == nil {
		return exitOK
	}
	fmt.Fprintf(stderr, "pghactl %s: %v\n", name, err)
	var ue *usageError
	var ne *unreachableError
	switch {
	case errors.As(err, &ue):
		return exitUsage
	case errors.As(err, &ne):
		return exitUnreachable
	}
	return exitFailed
}

// status reads the cluster's state; a failure is an unreachable etcd.
func (c *cli) status(ctx context.Context) (ha.ClusterState, error) {
	sctx, cancel := context.WithTimeout(ctx, c.g.timeout)
	defer cancel()
	st, err := ha.ClusterStatus(sctx, c.client, c.g.cluster, c.opts()...)
	if err != nil {
		return st, c.g.unreachable(err)
	}
	return st, nil
}

// requireCluster fails when nothing is recorded for the cluster: most
// likely a wrong --cluster or --key-root.
func (c *cli) requireCluster(st ha.ClusterState) error {
	if len(st.Members) == 0 && st.Leader == nil && st.SystemID == "" {
		return fmt.Errorf("no cluster %q under %s in etcd %s: check --cluster and --key-root", c.g.cluster, c.g.keyRoot, c.g.etcd)
	}
	return nil
}

func cmdList(ctx context.Context, c *cli) error {
	st, err := c.status(ctx)
	if err != nil {
		return err
	}
	if err := c.requireCluster(st); err != nil {
		return err
	}
	if c.g.jsonOutput {
		return writeJSON(c.stdout, st)
	}
	printList(c.stdout, st, st.PauseReason)
	return nil
}

func cmdHistory(ctx context.Context, c *cli) error {
	st, err := c.status(ctx)
	if err != nil {
		return err
	}
	if err := c.requireCluster(st); err != nil {
		return err
	}
	if c.g.jsonOutput {
		h := st.History
		if h == nil {
			h = []ha.HistoryEntry{}
		}
		return writeJSON(c.stdout, h)
	}
	printHistory(c.stdout, st)
	return nil
}

// switchoverResult is switchover's --json output.
type switchoverResult struct {
	// Done: a switchover was performed: From → Leader, writable after
	// TookMS.
	From   string `json:"from,omitempty"`
	Leader string `json:"leader,omitempty"`
	TookMS int64  `json:"took_ms,omitempty"`
	// Scheduled is the request written by --at; Cancelled the one
	// --cancel removed (nil: none was pending).
	Scheduled *ha.SwitchoverRequest `json:"scheduled,omitempty"`
	Cancelled *ha.SwitchoverRequest `json:"cancelled,omitempty"`
}

func cmdSwitchover(ctx context.Context, c *cli) error {
	st, err := c.status(ctx)
	if err != nil {
		return err
	}
	if err := c.requireCluster(st); err != nil {
		return err
	}
	if c.cancel {
		return c.cancelSwitchover(ctx)
	}
	if st.Leader == nil {
		return errors.New("the cluster has no leader, so there is nothing to hand over: promote a standby with 'pghactl failover --to NODE'")
	}
	if !c.atTime.IsZero() {
		return c.scheduleSwitchover(ctx, st)
	}
	wctx, cancel := context.WithTimeout(ctx, c.wait)
	defer cancel()
	if c.to != "" {
		if c.to == st.Leader.Node {
			return fmt.Errorf("%s already leads; pick a standby: %s", c.to, standbys(st))
		}
		if _, ok := member(st, c.to); !ok {
			return fmt.Errorf("no member %q; members: %s", c.to, members(st))
		}
		// A standby may be briefly unhealthy (restarting to follow a new
		// source): wait for it rather than refuse, and rather than leave
		// a request pending that would fire whenever it recovers.
		if st, err = c.waitStandby(wctx, st); err != nil {
			return err
		}
	}
	from := st.Leader.Node
	start := time.Now()
	leader, err := ha.Switchover(wctx, c.client, c.g.cluster, c.to, c.opts()...)
	if err != nil {
		if wctx.Err() != nil {
			return fmt.Errorf("no new writable leader within --wait %v; %s: check 'pghactl list' and the agents' logs",
				c.wait, c.withdraw(ha.SwitchoverRequest{From: from, To: c.to}))
		}
		return explain(err, st)
	}
	took := time.Since(start)
	if c.g.jsonOutput {
		return writeJSON(c.stdout, switchoverResult{From: from, Leader: leader, TookMS: took.Milliseconds()})
	}
	fmt.Fprintf(c.stdout, "switchover: %s → %s, writable after %v\n", from, leader, took.Round(time.Millisecond))
	return nil
}

// scheduleSwitchover is switchover --at.
func (c *cli) scheduleSwitchover(ctx context.Context, st ha.ClusterState) error {
	if p := st.Switchover; p != nil {
		return fmt.Errorf("a switchover is already pending (%s): cancel it first with 'pghactl switchover --cancel'", describeSwitchover(*p))
	}
	if c.to != "" {
		if c.to == st.Leader.Node {
			return fmt.Errorf("%s already leads; pick a standby: %s", c.to, standbys(st))
		}
		if _, ok := member(st, c.to); !ok {
			return fmt.Errorf("no member %q; members: %s", c.to, members(st))
		}
	}
	sctx, cancel := context.WithTimeout(ctx, c.g.timeout)
	defer cancel()
	if err := ha.ScheduleSwitchover(sctx, c.client, c.g.cluster, c.to, c.atTime, c.opts()...); err != nil {
		return explain(err, st)
	}
	req := ha.SwitchoverRequest{From: st.Leader.Node, To: c.to, At: c.atTime}
	if c.g.jsonOutput {
		return writeJSON(c.stdout, switchoverResult{Scheduled: &req})
	}
	fmt.Fprintf(c.stdout, "switchover scheduled: %s (in %v, by the leader's clock); 'pghactl list' shows it, 'pghactl switchover --cancel' cancels it\n",
		describeSwitchover(req), time.Until(c.atTime).Round(time.Second))
	return nil
}

// cancelSwitchover is switchover --cancel.
func (c *cli) cancelSwitchover(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, c.g.timeout)
	defer cancel()
	req, ok, err := ha.CancelSwitchover(cctx, c.client, c.g.cluster, c.opts()...)
	if err != nil {
		return c.g.unreachable(err)
	}
	if c.g.jsonOutput {
		r := switchoverResult{}
		if ok {
			r.Cancelled = &req
		}
		return writeJSON(c.stdout, r)
	}
	if !ok {
		fmt.Fprintln(c.stdout, "no switchover was pending")
		return nil
	}
	fmt.Fprintf(c.stdout, "cancelled the pending %s\n", describeSwitchover(req))
	return nil
}

// describeSwitchover says what a switchover request asks.
func describeSwitchover(r ha.SwitchoverRequest) string {
	to := r.To
	if to == "" {
		to = "the most advanced healthy standby"
	}
	s := "switchover from " + r.From + " to " + to
	if r.From == "" {
		s = "manual failover to " + to
		if r.Force {
			s += " (forced)"
		}
	}
	if !r.At.IsZero() {
		s += " at " + r.At.Format(time.RFC3339)
	}
	return s
}

// nodeResult is reinit's and remove's --json output.
type nodeResult struct {
	Node string `json:"node"`
	// Leader is the leader that carried it out (reinit: cloned from).
	Leader string `json:"leader,omitempty"`
	TookMS int64  `json:"took_ms"`
	// Cancelled (reinit --cancel): whether a request was pending.
	Cancelled *bool `json:"cancelled,omitempty"`
}

func cmdReinit(ctx context.Context, c *cli) error {
	st, err := c.status(ctx)
	if err != nil {
		return err
	}
	if err := c.requireCluster(st); err != nil {
		return err
	}
	if c.cancel {
		cctx, cancel := context.WithTimeout(ctx, c.g.timeout)
		defer cancel()
		ok, err := ha.WithdrawReinit(cctx, c.client, c.g.cluster, c.node, c.opts()...)
		if err != nil {
			return c.g.unreachable(err)
		}
		if c.g.jsonOutput {
			return writeJSON(c.stdout, nodeResult{Node: c.node, Cancelled: &ok})
		}
		if ok {
			fmt.Fprintf(c.stdout, "cancelled the reinit request of %s (a re-clone already under way completes)\n", c.node)
		} else {
			fmt.Fprintf(c.stdout, "no reinit request of %s was pending\n", c.node)
		}
		return nil
	}
	wctx, cancel := context.WithTimeout(ctx, c.wait)
	defer cancel()
	start := time.Now()
	if err := ha.Reinit(wctx, c.client, c.g.cluster, c.node, c.opts()...); err != nil {
		switch {
		case errors.Is(err, ha.ErrIsLeader):
			return fmt.Errorf("%w (hand over with 'pghactl switchover --to STANDBY'; standbys: %s)", err, standbys(st))
		case wctx.Err() != nil:
			return fmt.Errorf("%w: 'pghactl list' shows the node's state; 'pghactl reinit --cancel %s' cancels the request", err, c.node)
		case strings.Contains(err.Error(), "reinit requested but failed"):
			return fmt.Errorf("%w; the node keeps retrying: 'pghactl reinit --cancel %s' cancels", err, c.node)
		}
		return explain(err, st)
	}
	took := time.Since(start)
	leader := ""
	if st.Leader != nil {
		leader = st.Leader.Node
	}
	if c.g.jsonOutput {
		return writeJSON(c.stdout, nodeResult{Node: c.node, Leader: leader, TookMS: took.Milliseconds()})
	}
	fmt.Fprintf(c.stdout, "reinit: %s re-cloned from %s and streaming after %v; its old data directory was moved aside (DATADIR.replaced-<time>): remove it by hand when no longer needed\n",
		c.node, leader, took.Round(time.Millisecond))
	return nil
}

func cmdRemove(ctx context.Context, c *cli) error {
	st, err := c.status(ctx)
	if err != nil {
		return err
	}
	if err := c.requireCluster(st); err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, c.wait)
	defer cancel()
	start := time.Now()
	if err := ha.Remove(wctx, c.client, c.g.cluster, c.node, c.opts()...); err != nil {
		switch {
		case errors.Is(err, ha.ErrMemberLive) || errors.Is(err, ha.ErrIsLeader):
			return err // says to stop it first
		case errors.Is(err, ha.ErrUnknownMember):
			return fmt.Errorf("%w; members: %s", err, members(st))
		}
		return explain(err, st)
	}
	leader := ""
	if st.Leader != nil {
		leader = st.Leader.Node
	}
	took := time.Since(start)
	if c.g.jsonOutput {
		return writeJSON(c.stdout, nodeResult{Node: c.node, Leader: leader, TookMS: took.Milliseconds()})
	}
	fmt.Fprintf(c.stdout, "removed %s: its replication slot on %s and its member record are gone; started again, it would rejoin\n", c.node, leader)
	return nil
}

// waitStandby waits until c.to is a healthy standby and returns the
// state then.
func (c *cli) waitStandby(ctx context.Context, st ha.ClusterState) (ha.ClusterState, error) {
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	said := false
	for {
		m, ok := member(st, c.to)
		switch {
		case !ok:
			return st, fmt.Errorf("member %q is gone; members: %s", c.to, members(st))
		case st.Leader == nil:
			return st, errors.New("the cluster lost its leader: check 'pghactl list'")
		case m.Role == ha.RoleReplica && m.Healthy:
			return st, nil
		}
		if !said {
			fmt.Fprintf(c.stdout, "waiting for %s to be a healthy standby (now role %s, healthy %v)\n", c.to, m.Role, m.Healthy)
			said = true
		}
		select {
		case <-ctx.Done():
			return st, fmt.Errorf("%s is not a healthy standby (role %s, healthy %v) after --wait %v: see 'pghactl list' and its agent's log, or pick another: %s",
				c.to, m.Role, m.Healthy, c.wait, standbys(st))
		case <-tick.C:
		}
		var err error
		if st, err = c.status(ctx); err != nil {
			return st, err
		}
	}
}

// withdraw deletes a switchover or failover request this command wrote,
// if it is still pending unchanged, so that it cannot fire later, and
// says what happened.
func (c *cli) withdraw(req ha.SwitchoverRequest) string {
	ctx, cancel := context.WithTimeout(context.Background(), c.g.timeout)
	defer cancel()
	withdrawn, err := ha.WithdrawSwitchover(ctx, c.client, c.g.cluster, req, c.opts()...)
	switch {
	case err != nil:
		return fmt.Sprintf("the request may still be pending (withdrawing it: %v); 'pghactl list' shows it", err)
	case withdrawn:
		return "the request was withdrawn"
	}
	return "the request is no longer pending"
}

func cmdFailover(ctx context.Context, c *cli) error {
	st, err := c.status(ctx)
	if err != nil {
		return err
	}
	if err := c.requireCluster(st); err != nil {
		return err
	}
	if st.Leader != nil {
		return fmt.Errorf("%s leads the cluster, so a failover is refused: for a planned change run 'pghactl switchover --to %s'", st.Leader.Node, c.to)
	}
	if _, ok := member(st, c.to); !ok {
		return fmt.Errorf("no member %q; members: %s", c.to, members(st))
	}
	wctx, cancel := context.WithTimeout(ctx, c.wait)
	defer cancel()
	start := time.Now()
	leader, err := ha.Failover(wctx, c.client, c.g.cluster, c.to, c.force, c.opts()...)
	if err != nil {
		if wctx.Err() != nil {
			return fmt.Errorf("%s was not writable within --wait %v; %s: check 'pghactl list' and its agent's log",
				c.to, c.wait, c.withdraw(ha.SwitchoverRequest{To: c.to, Force: c.force}))
		}
		return explain(err, st)
	}
	fmt.Fprintf(c.stdout, "failover: %s is the leader, writable after %v\n", leader, time.Since(start).Round(time.Millisecond))
	return nil
}

func cmdPause(ctx context.Context, c *cli) error {
	st, err := c.status(ctx)
	if err != nil {
		return err
	}
	// A typo in --cluster must not "pause" a cluster that does not exist.
	if err := c.requireCluster(st); err != nil {
		return err
	}
	pctx, cancel := context.WithTimeout(ctx, c.g.timeout)
	defer cancel()
	if err := ha.Pause(pctx, c.client, c.g.cluster, c.reason, c.opts()...); err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "paused %s: no automatic failover until 'pghactl resume'\n", c.g.cluster)
	return nil
}

func cmdResume(ctx context.Context, c *cli) error {
	st, err := c.status(ctx)
	if err != nil {
		return err
	}
	if err := c.requireCluster(st); err != nil {
		return err
	}
	if !st.Paused {
		fmt.Fprintf(c.stdout, "%s was not paused: automatic failover is on\n", c.g.cluster)
		return nil
	}
	rctx, cancel := context.WithTimeout(ctx, c.g.timeout)
	defer cancel()
	if err := ha.Resume(rctx, c.client, c.g.cluster, c.opts()...); err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "resumed %s: automatic failover is on\n", c.g.cluster)
	return nil
}

// explain adds what to do next to an operation's error.
func explain(err error, st ha.ClusterState) error {
	switch {
	case errors.Is(err, ha.ErrLeaderAlive):
		return fmt.Errorf("%w: for a planned change run 'pghactl switchover --to NODE'", err)
	case errors.Is(err, ha.ErrNoLeader):
		return fmt.Errorf("%w: promote a standby with 'pghactl failover --to NODE'", err)
	case errors.Is(err, ha.ErrUnknownMember):
		return fmt.Errorf("%w; members: %s", err, members(st))
	case errors.Is(err, ha.ErrNotSynchronous):
		return fmt.Errorf("%w: pick one of %v, or add --force to accept losing acknowledged commits", err, st.SyncSet)
	}
	return err
}

func member(st ha.ClusterState, name string) (ha.Member, bool) {
	i := slices.IndexFunc(st.Members, func(m ha.Member) bool { return m.Node == name })
	if i < 0 {
		return ha.Member{}, false
	}
	return st.Members[i], true
}

func members(st ha.ClusterState) string {
	var names []string
	for _, m := range st.Members {
		names = append(names, m.Node)
	}
	if len(names) == 0 {
		return "(none)"
	}
	return strings.Join(names, ", ")
}

func standbys(st ha.ClusterState) string {
	var names []string
	for _, m := range st.Members {
		if m.Role == ha.RoleReplica && m.Healthy {
			names = append(names, m.Node)
		}
	}
	if len(names) == 0 {
		return "(no healthy standby)"
	}
	return strings.Join(names, ", ")
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// state is a member's state column.
func state(m ha.Member) string {
	switch {
	case !m.Healthy:
		return "unhealthy"
	case m.Role == ha.RoleReplica && m.Streaming:
		return "streaming"
	case m.Role == ha.RoleReplica:
		return "not streaming"
	}
	return "running"
}

func printList(w io.Writer, st ha.ClusterState, pauseReason string) {
	head := "cluster " + st.Cluster
	if st.SystemID != "" {
		head += " (system " + st.SystemID + ")"
	}
	if st.Leader == nil {
		head += ": NO LEADER"
	}
	fmt.Fprintln(w, head)
	if st.Paused {
		if pauseReason != "" {
			pauseReason = " (" + pauseReason + ")"
		}
		fmt.Fprintf(w, "PAUSED%s: no automatic failover until 'pghactl resume'\n", pauseReason)
	}
	if s := st.Switchover; s != nil {
		if s.At.IsZero() {
			fmt.Fprintf(w, "pending switchover: from %q to %q (force %v)\n", s.From, s.To, s.Force)
		} else {
			fmt.Fprintf(w, "SCHEDULED %s (in %v, by the leader's clock); 'pghactl switchover --cancel' cancels it\n",
				describeSwitchover(*s), time.Until(s.At).Round(time.Second))
		}
	}
	for _, n := range st.Reinits {
		fmt.Fprintf(w, "pending reinit: %s ('pghactl reinit --cancel %s' cancels it)\n", n, n)
	}
	for _, r := range st.Removals {
		if r.Outcome == "" {
			fmt.Fprintf(w, "pending remove: %s\n", r.Node)
		}
	}
	for _, r := range st.Restarts {
		switch {
		case r.Reload:
			fmt.Fprintf(w, "pending reload: %s\n", r.Node)
		case !r.At.IsZero():
			fmt.Fprintf(w, "SCHEDULED restart of %s at %s (in %v)%s; 'pghactl restart --cancel %s' cancels it\n",
				r.Node, r.At.Format(time.RFC3339), time.Until(r.At).Round(time.Second), pendingNote(r.Pending), r.Node)
		default:
			fmt.Fprintf(w, "pending restart: %s%s\n", r.Node, pendingNote(r.Pending))
		}
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "MEMBER\tADDRESS\tROLE\tSTATE\tTL\tLAG\tLEADER\tSYNC")
	for _, m := range st.Members {
		lag := "-"
		if m.Role == ha.RoleReplica {
			lag = formatLag(m.LagBytes)
		}
		fmt.Fprintf(tw, "%s\t%s:%d\t%s\t%s\t%d\t%s\t%s\t%s\n", m.Node, m.Host, m.Port, m.Role, state(m),
			m.Timeline, lag, mark(m.Leader), mark(m.Sync))
	}
	tw.Flush()
	for _, m := range st.Members {
		if m.Problem != "" {
			fmt.Fprintf(w, "PROBLEM %s: %s\n", m.Node, m.Problem)
		}
	}
	for _, s := range st.Ignored {
		fmt.Fprintf(w, "ignored record %s\n", s)
	}
}

func mark(b bool) string {
	if b {
		return "*"
	}
	return ""
}

// formatLag prints a byte count with a binary unit; -1 is unknown.
func formatLag(b int64) string {
	switch {
	case b < 0:
		return "unknown"
	case b < 1<<10:
		return fmt.Sprintf("%d B", b)
	case b < 1<<20:
		return fmt.Sprintf("%.1f KiB", float64(b)/(1<<10))
	case b < 1<<30:
		return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
	}
	return fmt.Sprintf("%.1f GiB", float64(b)/(1<<30))
}

func printHistory(w io.Writer, st ha.ClusterState) {
	if len(st.History) == 0 {
		fmt.Fprintf(w, "cluster %s: no timeline switch yet\n", st.Cluster)
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TL\tSWITCH LSN\tLEADER\tREASON\tTIME (UTC)")
	for _, h := range st.History {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", h.Timeline, replicate.LSN(h.SwitchLSN), h.Leader, h.Reason,
			h.Time.UTC().Format(time.DateTime))
	}
	tw.Flush()
}
