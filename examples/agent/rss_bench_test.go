package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgha/pgha/ha"
	"github.com/pgha/pgha/internal/keyspace"
	"github.com/pgha/pgha/internal/testutil"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// BenchmarkAgentRSS measures the resident memory of real pgha-agent
// processes (PostgreSQL not counted): three agents, built with go build and
// run as separate processes against an embedded etcd, after they bootstrap
// a three-node cluster and after ten leader changes (planned switchovers,
// each a promotion, a demotion and a rejoin). It prints a table and
// reports the largest RSS. Run it once:
//
//	go test -run '^$' -bench AgentRSS -benchtime 1x ./examples/agent
func BenchmarkAgentRSS(b *testing.B) {
	const switchovers = 10
	bin := filepath.Join(b.TempDir(), "pgha-agent")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		b.Fatalf("go build: %v\n%s", err, out)
	}
	etcd := testutil.StartEtcd(b, 1)
	cli := etcd.Client(b)
	const cluster = "rss"
	var agents []*agentProc
	for i := 1; i <= 3; i++ {
		agents = append(agents, startAgentProc(b, bin, fmt.Sprintf("r%d", i), cluster, etcd.Endpoints()[0]))
	}
	b.Cleanup(func() {
		for _, a := range agents {
			a.stop(b)
		}
	})
	b.ResetTimer()
	for b.Loop() {
		waitClusterHealthy(b, cli, cluster, 3, 120*time.Second)
		before := rssAll(b, agents)
		for i := range switchovers {
			st := waitClusterHealthy(b, cli, cluster, 3, 60*time.Second)
			var to string
			for _, m := range st.Members {
				if !m.Leader {
					to = m.Node
					break
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			got, err := ha.Switchover(ctx, cli, cluster, to)
			cancel()
			if err != nil || got != to {
				b.Fatalf("switchover %d to %s: %s, %v", i+1, to, got, err)
			}
		}
		waitClusterHealthy(b, cli, cluster, 3, 60*time.Second)
		after := rssAll(b, agents)
		fmt.Printf("\npgha-agent resident memory (VmRSS; PostgreSQL not counted), %d agents, %d switchovers\n", len(agents), switchovers)
		fmt.Printf("%-6s %16s %16s %14s %26s %10s %10s\n", "agent", "after bootstrap", "after 10 switch", "peak (VmHWM)", "after: anon + file-backed", "PSS", "USS")
		var worst float64
		for i, a := range agents {
			fmt.Printf("%-6s %12.1f MiB %12.1f MiB %10.1f MiB %11.1f + %4.1f MiB %6.1f MiB %6.1f MiB\n", a.name, mib(before[i].rss), mib(after[i].rss), mib(after[i].hwm), mib(after[i].anon), mib(after[i].file), mib(after[i].pss), mib(after[i].uss))
			worst = max(worst, mib(after[i].rss), mib(before[i].rss))
		}
		b.ReportMetric(worst, "MiB-rss-max")
	}
}

func mib(kb int64) float64 { return float64(kb) / 1024 }

type agentProc struct {
	name string
	cmd  *exec.Cmd
	done chan error
	log  string
}

func startAgentProc(b *testing.B, bin, name, cluster, etcdURL string) *agentProc {
	b.Helper()
	pg := testutil.PostgresConfig(b, name)
	dir := b.TempDir()
	logPath := filepath.Join(dir, name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { logFile.Close() })
	cmd := exec.Command(bin,
		"--cluster", cluster, "--node", name, "--etcd-endpoints", etcdURL,
		"--listen", testutil.FreeAddr(b),
		"--pg-data-dir", pg.DataDir, "--pg-bin-dir", pg.BinDir, "--pg-port", strconv.Itoa(pg.Port),
		"--pg-socket-dir", pg.SocketDir, "--lease-ttl", "2s", "--loop-interval", "200ms")
	cmd.Env = append(os.Environ(), "PGHA_PG_SUPERUSER_PASSWORD="+testutil.PostgresSuperuserPassword,
		"PGHA_PG_REPLICATION_PASSWORD="+testutil.PostgresReplicationPassword)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	a := &agentProc{name: name, cmd: cmd, done: make(chan error, 1), log: logPath}
	go func() { a.done <- cmd.Wait() }()
	return a
}

// stop sends SIGTERM (the agent stops its PostgreSQL) and waits; SIGKILL
// after 60 s.
func (a *agentProc) stop(b *testing.B) {
	a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-a.done:
		if err != nil {
			b.Errorf("agent %s exited with %v; log %s", a.name, err, a.log)
		}
	case <-time.After(60 * time.Second):
		a.cmd.Process.Kill()
		<-a.done
		b.Errorf("agent %s did not stop within 60s of SIGTERM", a.name)
	}
}

type mem struct{ rss, hwm, anon, file, pss, uss int64 } // KiB

func rssAll(b *testing.B, agents []*agentProc) []mem {
	var out []mem
	for _, a := range agents {
		m, err := readMem(a.cmd.Process.Pid)
		if err != nil {
			b.Fatalf("agent %s: %v", a.name, err)
		}
		out = append(out, m)
	}
	return out
}

func readMem(pid int) (mem, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return mem{}, err
	}
	defer f.Close()
	var m mem
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ":")
		n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "VmRSS":
			m.rss = n
		case "VmHWM":
			m.hwm = n
		case "RssAnon":
			m.anon = n
		case "RssFile":
			m.file = n
		}
	}
	if err := sc.Err(); err != nil {
		return m, err
	}
	// Proportional and private (unique) set sizes: file pages of the
	// binary are shared by the agents running it.
	sr, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return m, err
	}
	for _, line := range strings.Split(string(sr), "\n") {
		k, v, _ := strings.Cut(line, ":")
		n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "Pss":
			m.pss = n
		case "Private_Clean", "Private_Dirty":
			m.uss += n
		}
	}
	return m, nil
}

// waitClusterHealthy waits for a writable leader and n-1 streaming
// standbys on its timeline.
func waitClusterHealthy(b *testing.B, cli *clientv3.Client, cluster string, n int, timeout time.Duration) ha.ClusterState {
	b.Helper()
	var st ha.ClusterState
	testutil.Eventually(b, timeout, "a writable leader and streaming standbys", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		var err error
		if st, err = ha.ClusterStatus(ctx, cli, cluster); err != nil {
			return err
		}
		if st.Leader == nil || !st.Leader.Writable {
			return fmt.Errorf("leader %+v", st.Leader)
		}
		streaming := 0
		for _, m := range st.Members {
			if !m.Leader && m.Role == keyspace.RoleReplica && m.Streaming && m.Timeline == st.Leader.Timeline {
				streaming++
			}
		}
		if streaming != n-1 {
			return fmt.Errorf("%d of %d standbys streaming", streaming, n-1)
		}
		return nil
	})
	return st
}
