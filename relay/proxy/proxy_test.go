package proxy

import (
	"net"
	"strconv"
	"testing"

	"github.com/postern/postern/protocol"
)

func FuzzSplitTarget(f *testing.F) {
	for _, s := range []string{
		"gitlab.corp.example:443", "[::1]:443", "10.0.0.7:8080", "h", "h:", ":443",
		"h:0", "h:65536", "h:0443", "h:+443", "h: 443", "[::1]", "a:b:c", "[h]:1",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, hostport string) {
		host, port, aerr := SplitTarget(hostport)
		if aerr != nil {
			if aerr.Reason != protocol.BadTarget {
				t.Fatalf("splitTarget(%q) refused with %s, want BAD_TARGET", hostport, aerr.Reason)
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
