// Command localcluster is pgha's demo: on one machine, with nothing but the
// PostgreSQL server binaries installed, it starts an embedded etcd, N
// PostgreSQL servers each run by an ha.Manager, and a writer through
// driver.Pool, then breaks the primary in four ways and narrates what
// happens: the write pause each failure causes and how many acknowledged
// rows were lost.
//
// Usage:
//
//	go run ./examples/localcluster [-nodes 3] [-sync on] [-ttl 2s] [-scripted] [-pgbin DIR]
//
// Interactive (the default on a terminal): a live status table, and Enter
// starts each failure. Scripted (-scripted, or when stdin is not a
// terminal): the failures run one after another, and the program exits
// with a summary; exit status 0 when the cluster recovered from every
// failure (and, in synchronous mode, lost no acknowledged row).
//
// Everything lives in a temporary directory that is removed on exit and on
// Ctrl-C, and every process it started is stopped.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdin, os.Stdout))
}

type options struct {
	nodes    int
	sync     string
	ttl      time.Duration
	scripted bool
	pgbin    string
}

// run is the program, testable in process. It returns the exit status.
func run(ctx context.Context, args []string, stdin io.Reader, stdout io.Writer) int {
	fs := flag.NewFlagSet("localcluster", flag.ContinueOnError)
	fs.SetOutput(stdout)
	var o options
	fs.IntVar(&o.nodes, "nodes", 3, "number of PostgreSQL nodes (2-5)")
	fs.StringVar(&o.sync, "sync", "on", "synchronous mode: off, on or strict")
	fs.DurationVar(&o.ttl, "ttl", 2*time.Second, "leader lease TTL (whole seconds, at least 2s)")
	fs.BoolVar(&o.scripted, "scripted", false, "run every failure without waiting for Enter, then exit with a summary")
	fs.StringVar(&o.pgbin, "pgbin", "", "directory of the PostgreSQL server binaries (default: found by pg_config, PATH or /usr/lib/postgresql/*/bin)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if o.nodes < 2 || o.nodes > 5 {
		fmt.Fprintf(stdout, "localcluster: -nodes %d: use 2 to 5 nodes\n", o.nodes)
		return 2
	}
	if o.sync != "off" && o.sync != "on" && o.sync != "strict" {
		fmt.Fprintf(stdout, "localcluster: -sync %q: use off, on or strict\n", o.sync)
		return 2
	}
	if !o.scripted && !isTerminal(stdin) {
		o.scripted = true
	}

	d, err := startDemo(ctx, o, stdout)
	if d != nil {
		defer d.close()
	}
	if err != nil {
		fmt.Fprintf(stdout, "\nlocalcluster: %v\n", err)
		d.printLogTail(40)
		return 1
	}
	var next func() bool
	if o.scripted {
		next = func() bool { return ctx.Err() == nil }
	} else {
		lines := make(chan struct{})
		go func() {
			sc := bufio.NewScanner(stdin)
			for sc.Scan() {
				lines <- struct{}{}
			}
			close(lines)
		}()
		stopLive := d.live(ctx)
		defer stopLive()
		next = func() bool {
			d.say("Press Enter for the next failure, Ctrl-C to quit.")
			select {
			case _, ok := <-lines:
				return ok
			case <-ctx.Done():
				return false
			}
		}
	}
	results, err := d.runScenarios(ctx, next)
	if err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintf(stdout, "\nlocalcluster: %v\n", err)
		d.printLogTail(40)
	}
	return d.summary(results, err)
}

// isTerminal reports whether r is a character device (a terminal).
func isTerminal(r io.Reader) bool {
	f, ok := r.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
