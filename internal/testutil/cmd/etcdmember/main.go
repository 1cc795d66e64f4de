// Command etcdmember runs one member of an etcd cluster (etcd's own server,
// go.etcd.io/etcd/server/v3/embed) as a process of its own, so that tests
// can run it inside a network namespace of testutil's Netbed: a member
// embedded in the test process would have its sockets in the test's
// namespace. It serves until SIGTERM or SIGINT, then stops cleanly.
//
// Test data only: fsync is off.
package main

import (
	"flag"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "etcdmember:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("etcdmember", flag.ContinueOnError)
	name := fs.String("name", "", "member name (required)")
	dir := fs.String("data-dir", "", "data directory (required)")
	clientURL := fs.String("client-url", "", "client URL to listen on and advertise, e.g. http://198.18.0.1:2379 (required)")
	peerURL := fs.String("peer-url", "", "peer URL to listen on and advertise (required)")
	initial := fs.String("initial-cluster", "", "name=peer-url,... of every member (required)")
	tick := fs.Uint("tick-ms", 100, "Raft heartbeat interval, ms")
	election := fs.Uint("election-ms", 1000, "Raft election timeout, ms")
	logFile := fs.String("log-file", "", "server log file (default stderr)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	for flagName, v := range map[string]string{"name": *name, "data-dir": *dir, "client-url": *clientURL, "peer-url": *peerURL, "initial-cluster": *initial} {
		if v == "" {
			return fmt.Errorf("--%s is required", flagName)
		}
	}
	cu, err := url.Parse(*clientURL)
	if err != nil {
		return fmt.Errorf("--client-url %q: %w", *clientURL, err)
	}
	pu, err := url.Parse(*peerURL)
	if err != nil {
		return fmt.Errorf("--peer-url %q: %w", *peerURL, err)
	}
	cfg := embed.NewConfig()
	cfg.Name, cfg.Dir = *name, *dir
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	cfg.InitialCluster = *initial
	cfg.InitialClusterToken = "pgha-test"
	cfg.ClusterState = embed.ClusterStateFlagNew
	cfg.TickMs, cfg.ElectionMs = *tick, *election
	cfg.UnsafeNoFsync = true
	cfg.LogLevel = "warn"
	if *logFile != "" {
		cfg.LogOutputs = []string{*logFile}
	}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return fmt.Errorf("start member %s: %w", *name, err)
	}
	defer e.Close()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case <-e.Server.ReadyNotify():
		fmt.Fprintf(os.Stderr, "etcdmember: %s ready, peers %s\n", *name, strings.ReplaceAll(*initial, ",", " "))
	case s := <-sig:
		fmt.Fprintf(os.Stderr, "etcdmember: %s: %v before ready\n", *name, s)
		return nil
	case <-time.After(5 * time.Minute):
		return fmt.Errorf("member %s not ready after 5 minutes", *name)
	}
	select {
	case s := <-sig:
		fmt.Fprintf(os.Stderr, "etcdmember: %s: %v, stopping\n", *name, s)
		return nil
	case err := <-e.Err():
		return fmt.Errorf("member %s: %w", *name, err)
	}
}
