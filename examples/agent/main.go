// Command pgha-agent is a deployable per-node daemon: it runs the pgha HA
// manager for this node's PostgreSQL (bootstrap or join, failover,
// rejoin) and serves its HTTP endpoints and Prometheus metrics. Run one
// per PostgreSQL node, all pointing at the same etcd cluster.
//
//	pgha-agent --cluster main --node pg1 --etcd-endpoints http://etcd1:2379 \
//	    --pg-data-dir /var/lib/pgha/data --pg-listen-addresses '*' --pg-advertise-host 10.0.0.11
//
// # Configuration
//
// Every setting has a flag (--pg-data-dir), an environment variable
// (PGHA_PG_DATA_DIR) and a config file key (pg_data_dir); the file, YAML
// or JSON, is named by --config or PGHA_CONFIG. Flags override the
// environment, which overrides the file, which overrides the defaults.
// pgha-agent -h lists them all. Unknown file keys and invalid values stop
// the agent with an error naming the setting and the fix.
//
// # Role-change hook
//
// --on-role-change PATH runs the executable PATH (no shell) whenever this
// node's role changes, as Patroni runs its callbacks: PATH ACTION ROLE
// CLUSTER NODE, where ACTION is on_start for the first role after the
// agent started and on_role_change after that, and ROLE is primary,
// replica, starting, fenced or stopped. Its environment holds only PATH,
// HOME and LANG from the agent's, plus PGHA_ROLE, PGHA_CLUSTER, PGHA_NODE
// and PGHA_TIMELINE: never a password. Runs happen one at a time, in
// order, and never delay a failover; a run is killed, with its children,
// after --on-role-change-timeout (default 30s) or when the role it
// announces has ended (the next change). Its exit status and the last
// 4 KiB of its output are logged.
//
// Passwords come only from environment variables (PGHA_PG_SUPERUSER_PASSWORD,
// PGHA_PG_REPLICATION_PASSWORD, PGHA_ETCD_PASSWORD) or from files
// (--pg-superuser-password-file, ...), never from a flag or the config file.
// They are removed from the agent's environment at start, so PostgreSQL
// does not inherit them, and never appear in logs, errors or /cluster.
//
// # HTTP endpoints
//
// --listen (default :8008) serves /health, /primary, /replica?lag=N,
// /readiness, /liveness and /cluster (see ha.Manager.Handler) and
// /metrics, the OpenTelemetry metrics of the manager, election and etcd
// client in the Prometheus format (pgha_ha_role, pgha_ha_promotions_total,
// ...), plus Go runtime and process metrics. With --failsafe it also
// answers the leader's POST /failsafe (bearer token: the http token).
//
// # Failsafe
//
// --failsafe keeps the primary writable when etcd is lost as a whole: a
// leader that cannot renew its lease asks every member for a promise not
// to campaign (POST /failsafe on each member's --api-url, with the http
// token), and stays writable while every member promises; a member
// promises only when it cannot reach etcd itself. A primary cut from etcd
// while the others reach it still fences within the lease TTL. Set it,
// the same http token (PGHA_HTTP_TOKEN or --http-token-file) and a
// reachable --api-url on every node. See ha.Config.Failsafe.
//
// # Shutdown
//
// On SIGTERM or SIGINT the agent leaves the cluster cleanly: a leader
// stops its PostgreSQL with a fast shutdown and resigns, so a standby
// takes over at once; a standby's PostgreSQL is stopped too unless
// --keep-postgres-running is set. The HTTP server finishes its requests
// within --shutdown-timeout. The exit status is 0 after a clean shutdown,
// 1 on an error, 2 on a configuration error.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pgha/pgha/ha"
	"github.com/pgha/pgha/replicate"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/attribute"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	"golang.org/x/sync/errgroup"
)

// secretEnv are the environment variables that hold passwords and tokens.
var secretEnv = []string{"PGHA_PG_SUPERUSER_PASSWORD", "PGHA_PG_REPLICATION_PASSWORD", "PGHA_ETCD_PASSWORD", "PGHA_HTTP_TOKEN"}

func main() {
	// With --fence-guard the agent re-executes itself as its fence guard
	// while it leads: such a process is the guard, and exits here.
	ha.RunFenceGuardIfRequested()
	env := os.Environ()
	// PostgreSQL and the tools the agent runs inherit its environment:
	// keep the passwords out of it (and out of /proc/<pid>/environ).
	for _, k := range secretEnv {
		os.Unsetenv(k)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], env, os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "pgha-agent:", err)
		var ce *configError
		if errors.As(err, &ce) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

// run runs the agent until ctx is done or it fails: args are the
// command-line arguments without the program name, env the environment
// (KEY=value), stdout receives the log. It returns nil after a clean
// shutdown and for -h.
func run(ctx context.Context, args, env []string, stdout io.Writer) error {
	cfg, err := loadConfig(args, env, stdout)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	level, _ := parseLevel(cfg.logLevel)
	var handler slog.Handler
	if cfg.logFormat == "json" {
		handler = slog.NewJSONHandler(stdout, &slog.HandlerOptions{Level: level})
	} else {
		handler = slog.NewTextHandler(stdout, &slog.HandlerOptions{Level: level})
	}
	log := slog.New(handler)

	cli, err := cfg.etcdClient()
	if err != nil {
		return err
	}
	defer cli.Close()
	// In the background: an unreachable member must not delay the start.
	checked := make(chan struct{})
	go func() { defer close(checked); checkEtcdMembers(ctx, cli, log) }()
	defer func() { <-checked }()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	exporter, err := otelprom.New(otelprom.WithRegisterer(reg))
	if err != nil {
		return fmt.Errorf("prometheus exporter: %w", err)
	}
	mp := sdkmetric.NewMeterProvider(
		sdkmetric.WithReader(exporter),
		sdkmetric.WithResource(resource.NewSchemaless(
			attribute.String("service.name", "pgha-agent"),
			attribute.String("pgha.cluster", cfg.cluster),
			attribute.String("pgha.node", cfg.node),
		)),
	)
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		mp.Shutdown(sctx)
	}()

	methods, err := cfg.replicaMethodList()
	if err != nil {
		return err
	}
	inst, err := replicate.New(replicate.Config{
		Name:                cfg.node,
		DataDir:             cfg.pgDataDir,
		BinDir:              cfg.pgBinDir,
		ListenAddresses:     cfg.pgListenAddresses,
		Port:                cfg.pgPort,
		SocketDir:           cfg.pgSocketDir,
		LogFile:             cfg.pgLogFile,
		Superuser:           cfg.pgSuperuser,
		SuperuserPassword:   string(cfg.pgSuperuserPassword),
		ReplaceDataDir:      cfg.pgReplaceDataDir,
		ReplicaMethods:      methods,
		ArchiveReceivedWAL:  cfg.archiveReceivedWAL,
		ReplicationUser:     cfg.pgReplicationUser,
		ReplicationPassword: string(cfg.pgReplicationPassword),
		ReplicationNetworks: cfg.pgReplicationNetworks,
		ClientNetworks:      cfg.pgClientNetworks,
		Parameters:          cfg.pgParameters,
		OSUser:              cfg.pgOSUser,
		TLS: replicate.TLSConfig{
			CertFile: cfg.pgSSLCertFile, KeyFile: cfg.pgSSLKeyFile, CAFile: cfg.pgSSLCAFile,
			ClientCertFile: cfg.pgSSLClientCertFile, ClientKeyFile: cfg.pgSSLClientKeyFile,
		},
		Logger: log,
	})
	if err != nil {
		var ce *replicate.ConfigError
		if errors.As(err, &ce) {
			return settingError(ce.Field, err)
		}
		return fmt.Errorf("postgres: %w", err)
	}
	mgr, err := ha.New(ha.Config{
		Cluster:                cfg.cluster,
		Node:                   cfg.node,
		Client:                 cli,
		KeyRoot:                cfg.keyRoot,
		Instance:               inst,
		Host:                   cfg.pgAdvertiseHost,
		Port:                   cfg.pgAdvertisePort,
		LeaseTTL:               cfg.leaseTTL,
		LoopInterval:           cfg.loopInterval,
		MaxLagOnFailover:       cfg.maxLagOnFailover,
		SyncMode:               ha.SyncMode(cfg.syncMode),
		SyncStandbys:           cfg.syncStandbys,
		NoFailover:             cfg.noFailover,
		Priority:               cfg.priority,
		PrimaryStartTimeout:    cfg.primaryStartTimeout,
		SwitchoverDrain:        cfg.switchoverDrain,
		DepartedSlotTTL:        cfg.departedSlotTTL,
		Watchdog:               ha.WatchdogMode(cfg.watchdog),
		WatchdogDevice:         cfg.watchdogDevice,
		FenceGuard:             cfg.fenceGuard,
		Failsafe:               cfg.failsafe,
		APIURL:                 cfg.apiURL,
		PeerToken:              string(cfg.httpToken),
		RecloneOnRewindFailure: cfg.recloneOnRewindFail,
		OnRoleChange:           roleChangeHook(cfg.onRoleChange, cfg.onRoleChangeTimeout, env, log),
		Logger:                 log,
		MeterProvider:          mp,
	})
	if err != nil {
		var ce *ha.ConfigError
		if errors.As(err, &ce) {
			return settingError(ce.Field, err)
		}
		return err
	}

	ln, err := net.Listen("tcp", cfg.listen)
	if err != nil {
		return configErrorf("listen %q: %v: pick a free address with --listen", cfg.listen, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.Handle("/", mgr.Handler())
	if cfg.httpToken != "" {
		admin, err := mgr.AdminHandler(string(cfg.httpToken))
		if err != nil {
			ln.Close()
			return configErrorf("PGHA_HTTP_TOKEN or --http-token-file: %v", err)
		}
		mux.Handle("/pause", admin)
		mux.Handle("/resume", admin)
	}
	// Timeouts and header and body limits: see ha.NewHTTPServer.
	srv := ha.NewHTTPServer(cfg.listen, mux)
	srv.ErrorLog = slog.NewLogLogger(handler, slog.LevelWarn)
	log.Info("pgha-agent starting", "cluster", cfg.cluster, "node", cfg.node, "http", ln.Addr().String(),
		"etcd", cfg.etcdEndpoints, "data_dir", cfg.pgDataDir, "postgres", fmt.Sprintf("%s:%d", cfg.pgAdvertiseHost, cfg.pgAdvertisePort),
		"postgres_version", inst.Version(), "sync_mode", cfg.syncMode)

	// errStopped ends the group when Run returns without an error.
	errStopped := errors.New("stopped")
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := mgr.Run(gctx); err != nil {
			return fmt.Errorf("ha manager: %w", err)
		}
		return errStopped
	})
	g.Go(func() error {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("http server: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		if ctx.Err() != nil {
			log.Info("shutting down: leaving the cluster", "cause", context.Cause(ctx).Error())
		}
		sctx, cancel := context.WithTimeout(context.Background(), cfg.shutdownTimeout)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			srv.Close()
			log.Warn("http server shutdown", "err", err.Error())
		}
		return nil
	})
	err = g.Wait()
	if errors.Is(err, errStopped) {
		err = nil
	}
	if !cfg.keepPostgresRunning {
		sctx, cancel := context.WithTimeout(context.Background(), cfg.shutdownTimeout)
		if serr := inst.Stop(sctx, replicate.Fast); serr != nil {
			log.Error("stop PostgreSQL", "err", serr.Error())
		}
		cancel()
	}
	if err == nil {
		log.Info("pgha-agent stopped")
	}
	return err
}

// hookOutputTail is how much of a hook's output (stdout and stderr) is
// kept for the log.
const hookOutputTail = 4 << 10

// hookEnvKeep are the only variables of the agent's environment a hook
// gets.
var hookEnvKeep = []string{"PATH", "HOME", "LANG"}

// roleChangeHook returns the ha.Config.OnRoleChange that runs path with
// Patroni's callback arguments, or nil when path is empty. env is the
// agent's environment (KEY=value); only hookEnvKeep is passed on.
func roleChangeHook(path string, timeout time.Duration, env []string, log *slog.Logger) func(context.Context, ha.RoleChange) {
	if path == "" {
		return nil
	}
	kept := []string{}
	for _, kv := range env {
		if k, _, ok := strings.Cut(kv, "="); ok && slices.Contains(hookEnvKeep, k) {
			kept = append(kept, kv)
		}
	}
	if !slices.ContainsFunc(kept, func(kv string) bool { return strings.HasPrefix(kv, "PATH=") }) {
		kept = append(kept, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	}
	return func(ctx context.Context, ev ha.RoleChange) {
		action := "on_role_change"
		if ev.Old == "" {
			action = "on_start"
		}
		l := log.With("hook", path, "action", action, "role", string(ev.New))
		if ctx.Err() != nil {
			l.Info("on-role-change hook skipped: the role it announces has already ended")
			return
		}
		rctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		out := &tailBuffer{max: hookOutputTail}
		cmd := exec.CommandContext(rctx, path, action, string(ev.New), ev.Cluster, ev.Node)
		cmd.Env = append(slices.Clone(kept),
			"PGHA_ROLE="+string(ev.New), "PGHA_CLUSTER="+ev.Cluster, "PGHA_NODE="+ev.Node,
			"PGHA_TIMELINE="+strconv.FormatUint(uint64(ev.Timeline), 10))
		cmd.Dir = "/"
		cmd.Stdout, cmd.Stderr = out, out
		// Its own process group, killed as a whole: a script's children
		// (a sleep, a curl) die with it and release the output pipe.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
		cmd.WaitDelay = 2 * time.Second
		start := time.Now()
		err := cmd.Run()
		attrs := []any{"took", time.Since(start).Round(time.Millisecond).String(), "output", out.String()}
		if cmd.ProcessState != nil {
			attrs = append(attrs, "exit_status", cmd.ProcessState.ExitCode())
		}
		switch {
		case err == nil:
			l.Info("on-role-change hook ran", attrs...)
		case errors.Is(rctx.Err(), context.DeadlineExceeded) && ctx.Err() == nil:
			l.Warn("on-role-change hook killed: it ran past --on-role-change-timeout", append(attrs, "timeout", timeout.String())...)
		case ctx.Err() != nil:
			l.Warn("on-role-change hook killed: the role it announced has ended", attrs...)
		default:
			l.Warn("on-role-change hook failed", append(attrs, "err", err.Error())...)
		}
	}
}

// tailBuffer keeps the last max bytes written to it. exec calls Write
// from one goroutine at a time when Stdout and Stderr are the same
// writer.
type tailBuffer struct {
	max   int
	b     []byte
	total int
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.total += len(p)
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = append(t.b[:0], t.b[len(t.b)-t.max:]...)
	}
	return len(p), nil
}

// String is the kept tail, marked when earlier output was dropped.
func (t *tailBuffer) String() string {
	if t.total > len(t.b) {
		return fmt.Sprintf("[%d earlier bytes dropped]...%s", t.total-len(t.b), t.b)
	}
	return string(t.b)
}
