// Package etcdtls finds why a TLS connection to etcd cannot work, for
// errors that name the setting to fix. An etcd client dials lazily and
// retries: a CA that did not sign etcd's certificate, a missing client
// certificate or https:// spelt http:// all show up as "context deadline
// exceeded". [Diagnose] dials the endpoints itself with the same TLS
// configuration and classifies the handshake's failure.
package etcdtls

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"
)

// Problem is what is wrong with a TLS setup.
type Problem int

// Problems [Diagnose] reports.
const (
	// UnknownAuthority: the server's certificate is not signed by a CA the
	// client trusts (RootCAs, the CA file).
	UnknownAuthority Problem = iota + 1
	// WrongHost: the server's certificate does not name the endpoint's
	// host.
	WrongHost
	// InvalidCertificate: the server's certificate is expired, not yet
	// valid or otherwise invalid.
	InvalidCertificate
	// ClientCertRequired: the server requires a client certificate and
	// the client has none.
	ClientCertRequired
	// ClientCertRefused: the server refused the client's certificate
	// (signed by a CA it does not trust, or invalid).
	ClientCertRefused
	// PlainURLForTLS: the endpoint is http:// but the server speaks TLS.
	PlainURLForTLS
	// BadEndpoint: the endpoint is not a URL with a host.
	BadEndpoint
	// Handshake: another TLS handshake failure.
	Handshake
)

// Error is a TLS problem with one endpoint.
type Error struct {
	Endpoint string
	Problem  Problem
	// Err is the handshake's own error.
	Err error
}

// Error describes the problem generically; callers that know the names of
// the settings involved word their own message from Problem.
func (e *Error) Error() string {
	var what string
	switch e.Problem {
	case UnknownAuthority:
		what = "its server certificate is not signed by a trusted CA"
	case WrongHost:
		what = "its server certificate is not valid for this host name"
	case InvalidCertificate:
		what = "its server certificate is invalid"
	case ClientCertRequired:
		what = "it requires a client certificate"
	case ClientCertRefused:
		what = "it refused the client certificate"
	case PlainURLForTLS:
		what = "the endpoint is http:// but the server speaks TLS: use https://"
	case BadEndpoint:
		what = "the endpoint is not a URL such as https://10.0.0.1:2379"
	default:
		what = "the TLS handshake failed"
	}
	if e.Err != nil {
		return fmt.Sprintf("etcd %s: %s (%v)", e.Endpoint, what, e.Err)
	}
	return fmt.Sprintf("etcd %s: %s", e.Endpoint, what)
}

// Unwrap returns the handshake's error.
func (e *Error) Unwrap() error { return e.Err }

// Diagnose dials each endpoint over TCP and performs a TLS handshake with
// cfg (nil: https:// endpoints with the system's roots), each within
// timeout and all within ctx, and returns the first problem found. It
// returns nil when every endpoint either completes the handshake or cannot
// be reached at all (an unreachable etcd is not a setting problem).
func Diagnose(ctx context.Context, endpoints []string, cfg *tls.Config, timeout time.Duration) *Error {
	for _, ep := range endpoints {
		if ctx.Err() != nil {
			return nil
		}
		if err := diagnose(ctx, ep, cfg, timeout); err != nil {
			return err
		}
	}
	return nil
}

func diagnose(ctx context.Context, ep string, cfg *tls.Config, timeout time.Duration) *Error {
	u, err := url.Parse(ep)
	if err != nil || u.Host == "" {
		return &Error{Endpoint: ep, Problem: BadEndpoint, Err: err}
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	nd := &net.Dialer{}
	if u.Scheme == "http" {
		// Only whether the server speaks TLS matters: a plain etcd fails
		// the handshake at its first byte.
		td := &tls.Dialer{NetDialer: nd, Config: &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}}}
		conn, err := td.DialContext(ctx, "tcp", u.Host)
		if err != nil {
			return nil
		}
		conn.Close()
		return &Error{Endpoint: ep, Problem: PlainURLForTLS}
	}
	probe := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg != nil {
		probe = cfg.Clone()
	}
	probe.NextProtos = []string{"h2"}
	if probe.ServerName == "" {
		probe.ServerName = u.Hostname()
	}
	conn, err := (&tls.Dialer{NetDialer: nd, Config: probe}).DialContext(ctx, "tcp", u.Host)
	if err != nil {
		var opErr *net.OpError
		if ctx.Err() != nil || errors.As(err, &opErr) && opErr.Op == "dial" {
			return nil
		}
		return classify(ep, err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	// With TLS 1.3 the server judges the client certificate after the
	// handshake: its verdict arrives as an alert on the first read.
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	if _, err := conn.Read(make([]byte, 1)); err != nil && strings.Contains(err.Error(), "remote error") {
		return classify(ep, err)
	}
	return nil
}

func classify(ep string, err error) *Error {
	var unknown x509.UnknownAuthorityError
	var host x509.HostnameError
	var invalid x509.CertificateInvalidError
	msg := err.Error()
	p := Handshake
	switch {
	case errors.As(err, &unknown):
		p = UnknownAuthority
	case errors.As(err, &host):
		p = WrongHost
	case errors.As(err, &invalid):
		p = InvalidCertificate
	case strings.Contains(msg, "certificate required"):
		p = ClientCertRequired
	case strings.Contains(msg, "remote error") && strings.Contains(msg, "certificate"):
		p = ClientCertRefused
	}
	return &Error{Endpoint: ep, Problem: p, Err: err}
}
