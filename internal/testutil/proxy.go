package testutil

import (
	"context"
	"fmt"
	"strings"
	"sync"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// Proxy is a TCP fault proxy between a client and one server, running in the
// test process. It is toxiproxy's proxy (a well-kept fault injector) driven
// directly, without its HTTP API. Clients connect to [Proxy.Addr]; the proxy
// forwards to the upstream address. Its methods are safe for concurrent use.
//
// Fault modes, one at a time: [Proxy.Pass] (no fault), [Proxy.Blackhole]
// (connections stay open, bytes vanish in both directions), [Proxy.Reset]
// (connections are reset by peer as soon as data flows), [Proxy.Latency]
// (every chunk is delayed).
type Proxy struct {
	t        TB
	name     string
	upstream string

	mu     sync.Mutex
	p      *toxiproxy.Proxy
	toxics []string // names of the active toxics
}

// StartProxy starts a fault proxy on a free loopback port that forwards to
// upstream (host:port), in pass mode. It is stopped at the end of the test.
func StartProxy(t TB, name, upstream string) *Proxy {
	t.Helper()
	logger := zerolog.Nop()
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), logger)
	p := toxiproxy.NewProxy(srv, name, "127.0.0.1:0", upstream)
	if err := p.Start(); err != nil {
		t.Fatalf("testutil: start proxy %s to %s: %v", name, upstream, err)
	}
	px := &Proxy{t: t, name: name, upstream: upstream, p: p}
	t.Cleanup(px.stop)
	return px
}

// Addr is the proxy's listen address (host:port).
func (p *Proxy) Addr() string { return p.p.Listen }

// URL is "http://" + Addr, the form etcd clients want.
func (p *Proxy) URL() string { return "http://" + p.p.Listen }

// Pass removes any fault: bytes flow again. Connections that lost bytes
// while blackholed are usually broken and get re-established by clients.
func (p *Proxy) Pass() {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.clearLocked()
}

// Blackhole keeps connections open but drops every byte in both directions,
// like a network partition that sends no RST. New connections are accepted
// and then see nothing either.
func (p *Proxy) Blackhole() {
	p.t.Helper()
	p.set("timeout", `{"timeout":0}`)
}

// Reset resets every connection (TCP RST) as soon as data flows on it, and
// every new connection likewise.
func (p *Proxy) Reset() {
	p.t.Helper()
	p.set("reset_peer", `{"timeout":0}`)
}

// Latency delays every chunk of data by ms milliseconds in both directions.
func (p *Proxy) Latency(ms int) {
	p.t.Helper()
	p.set("latency", fmt.Sprintf(`{"latency":%d,"jitter":0}`, ms))
}

func (p *Proxy) set(typ, attrs string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.clearLocked()
	for _, dir := range []string{"upstream", "downstream"} {
		name := typ + "_" + dir
		body := fmt.Sprintf(`{"name":%q,"type":%q,"stream":%q,"toxicity":1,"attributes":%s}`, name, typ, dir, attrs)
		if _, err := p.p.Toxics.AddToxicJson(strings.NewReader(body)); err != nil {
			p.t.Fatalf("testutil: proxy %s: add %s toxic %s: %v", p.name, typ, body, err)
		}
		p.toxics = append(p.toxics, name)
	}
}

func (p *Proxy) clearLocked() {
	for _, name := range p.toxics {
		if err := p.p.Toxics.RemoveToxic(context.Background(), name); err != nil {
			p.t.Errorf("testutil: proxy %s: remove toxic %s: %v", p.name, name, err)
		}
	}
	p.toxics = nil
}

func (p *Proxy) stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.clearLocked()
	p.p.Stop()
}
