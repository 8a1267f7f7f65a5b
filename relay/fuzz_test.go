package relay

import (
	"net"
	"strconv"
	"testing"

	"github.com/postern/postern/protocol"
)

func FuzzParseBaseURL(f *testing.F) {
	for _, s := range []string{
		"https://gitlab.corp.example",
		"http://10.20.1.5:8050/api?x=1",
		"https://[::1]:443/",
		"https://GitLab.Corp.Example:443",
		"ftp://x",
		"https://",
		"https://h:0",
		"https://h:65536",
		"https://h:-1",
		"https://user:pass@h:8443",
		"//h:443",
		"https://h:%34%34%33",
		"https://[fe80::1%25eth0]:443",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		target, aerr := parseBaseURL(raw)
		if aerr != nil {
			if aerr.reason != protocol.BadTarget {
				t.Fatalf("parseBaseURL(%q) refused with %s, want BAD_TARGET", raw, aerr.reason)
			}
			return
		}
		if len(raw) > protocol.MaxBaseURLLen {
			t.Fatalf("parseBaseURL accepted %d bytes", len(raw))
		}
		if target.host == "" || target.port < 1 || target.port > 65535 {
			t.Fatalf("parseBaseURL(%q) = %+v", raw, target)
		}
	})
}

func FuzzSplitTarget(f *testing.F) {
	for _, s := range []string{
		"gitlab.corp.example:443", "[::1]:443", "10.0.0.7:8080", "h", "h:", ":443",
		"h:0", "h:65536", "h:0443", "h:+443", "h: 443", "[::1]", "a:b:c", "[h]:1",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, hostport string) {
		host, port, aerr := splitTarget(hostport)
		if aerr != nil {
			if aerr.reason != protocol.BadTarget {
				t.Fatalf("splitTarget(%q) refused with %s, want BAD_TARGET", hostport, aerr.reason)
			}
			return
		}
		if host == "" || len(host) > protocol.MaxHostLen || port < 1 || port > 65535 {
			t.Fatalf("splitTarget(%q) = %q, %d", hostport, host, port)
		}
		// What the agent is asked for is exactly what the client named.
		h2, p2, err := net.SplitHostPort(hostport)
		if err != nil || h2 != host || p2 != strconv.Itoa(port) {
			t.Fatalf("splitTarget(%q) = %q, %d; SplitHostPort says %q, %q, %v", hostport, host, port, h2, p2, err)
		}
		// The request frame built from it passes the agent's validation.
		req := protocol.Request{Op: protocol.OpDial, ID: "r", Host: host, Port: port}
		if err := req.Validate(); err != nil {
			t.Fatalf("splitTarget(%q) gave a request the agent refuses: %v", hostport, err)
		}
	})
}
