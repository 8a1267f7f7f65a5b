package proxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/protocol"
)

func TestCheckTarget(t *testing.T) {
	tests := map[string]struct {
		target string
		want   string // "" = accepted; else a part of the message
	}{
		"name":                {"gitlab.corp.example:443", ""},
		"ipv4":                {"10.0.0.7:8080", ""},
		"bracketed ipv6":      {"[fd00::7]:443", ""},
		"underscore":          {"svc_internal.corp:443", ""},
		"punycode":            {"xn--bcher-kva.example:443", ""},
		"user info":           {"user@gitlab.corp:443", "carries user info"},
		"path":                {"gitlab.corp:443/x", "has a path or query"},
		"query":               {"gitlab.corp:443?x", "has a path or query"},
		"percent-encoded":     {"gitl%61b.corp:443", "is percent-encoded"},
		"bracketed ipv4":      {"[1.2.3.4]:443", "an IPv4 address goes without brackets (1.2.3.4:443)"},
		"bracketed name":      {"[gitlab.corp]:443", "is not one"},
		"no port":             {"gitlab.corp", "is not host:port"},
		"space in host":       {"git lab.corp:443", "has a character"},
		"unicode host":        {"bücher.example:443", "has a character"},
		"long target shown":   {strings.Repeat("a", 400) + "@b:1", "…"},
		"port with sign":      {"gitlab.corp:+443", "is not 1-65535"},
		"port leading zeroes": {"gitlab.corp:0443", "is not 1-65535"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			e := CheckTarget(tc.target)
			if tc.want == "" {
				assert.Nil(t, e)
				return
			}
			require.NotNil(t, e)
			assert.Equal(t, protocol.BadTarget, e.Reason)
			assert.Contains(t, e.Message, tc.want)
			assert.Less(t, len(e.Message), 500, "the message quotes a bounded part of the target")
		})
	}
}

func FuzzCheckTarget(f *testing.F) {
	for _, s := range []string{"gitlab.corp:443", "[::1]:443", "[1.2.3.4]:443", "u@h:1", "h:1/x", "h%41:1", "h"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, target string) {
		e := CheckTarget(target)
		if e != nil {
			if e.Reason != protocol.BadTarget {
				t.Fatalf("CheckTarget(%q) refused with %s", target, e.Reason)
			}
			return
		}
		// An accepted target is one the proxy can split and send on.
		if _, _, se := SplitTarget(target); se != nil {
			t.Fatalf("CheckTarget(%q) accepted what SplitTarget refuses: %v", target, se)
		}
	})
}

// lineServer serves the proxy's line check in front of an HTTP server
// that answers 200 "served <request target>" and counts the requests that
// reached it.
func lineServer(t *testing.T) (addr string, refused, served *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	refused, served = &atomic.Int64{}, &atomic.Int64{}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			served.Add(1)
			_, _ = io.WriteString(w, "served "+r.RequestURI)
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(CheckLines(ln, func(r protocol.Reason) {
			if r == protocol.BadTarget {
				refused.Add(1)
			}
		}))
	}()
	t.Cleanup(func() {
		_ = srv.Close()
		<-done
	})
	return ln.Addr().String(), refused, served
}

func sendRaw(t *testing.T, addr, request string) (status string, body []byte) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
	_, err = io.WriteString(c, request)
	require.NoError(t, err)
	br := bufio.NewReader(c)
	line, err := br.ReadString('\n')
	require.NoError(t, err)
	resp, err := http.ReadResponse(bufio.NewReader(io.MultiReader(strings.NewReader(line), br)), &http.Request{Method: http.MethodConnect})
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err = io.ReadAll(resp.Body)
	require.NoError(t, err)
	if resp.StatusCode >= 400 {
		assert.Equal(t, strings.TrimSuffix(line, "\r\n")[len("HTTP/1.1 "):], resp.Status)
		assert.Equal(t, resp.Header.Get("Postern-Reason"), strings.SplitN(resp.Status, " ", 2)[1])
	}
	return strings.TrimSuffix(line, "\r\n"), body
}

func TestCheckLinesRefusesBadConnectTargets(t *testing.T) {
	addr, refused, served := lineServer(t)
	for _, target := range []string{"user@gitlab.corp:443", "[1.2.3.4]:443", "gitlab.corp:443/x", "gitl%61b.corp:443"} {
		t.Run(target, func(t *testing.T) {
			line, body := sendRaw(t, addr, "CONNECT "+target+" HTTP/1.1\r\nHost: "+target+"\r\n\r\n")
			assert.Equal(t, "HTTP/1.1 400 BAD_TARGET", line)
			assert.Contains(t, string(body), `"reason":"BAD_TARGET"`)
			assert.Contains(t, string(body), `"provider_error_code":"PROVIDER_BASE_URL_BLOCKED"`)
		})
	}
	assert.Equal(t, int64(4), refused.Load(), "each refusal is counted")
	assert.Equal(t, int64(0), served.Load(), "no refused line reached the server")
}

func TestCheckLinesPassesOtherRequestsUntouched(t *testing.T) {
	addr, refused, served := lineServer(t)
	tests := map[string]struct{ request, want string }{
		"good CONNECT":      {"CONNECT gitlab.corp:443 HTTP/1.1\r\nHost: gitlab.corp:443\r\n\r\n", "served gitlab.corp:443"},
		"absolute-form GET": {"GET http://jira.corp/rest?a=%41 HTTP/1.1\r\nHost: jira.corp\r\nConnection: close\r\n\r\n", "served http://jira.corp/rest?a=%41"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			line, body := sendRaw(t, addr, tc.request)
			assert.Equal(t, "HTTP/1.1 200 OK", line)
			assert.Equal(t, tc.want, string(body))
		})
	}
	t.Run("line in two writes", func(t *testing.T) {
		c, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		defer c.Close()
		require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
		_, err = io.WriteString(c, "GET http://jira.corp/a HT")
		require.NoError(t, err)
		_, err = io.WriteString(c, "TP/1.1\r\nHost: jira.corp\r\nConnection: close\r\n\r\n")
		require.NoError(t, err)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		require.NoError(t, err)
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		assert.Equal(t, "served http://jira.corp/a", string(b))
	})
	assert.Equal(t, int64(0), refused.Load())
	assert.Equal(t, int64(3), served.Load())
}
