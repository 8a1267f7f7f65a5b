package client_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"

	"github.com/postern/postern/protocol"
	"github.com/postern/postern/relay/api"
	"github.com/postern/postern/relay/client"
)

// relayStandIn plays the relay's two listeners for the examples: the API
// answers a status, a check and one event; the proxy refuses
// gitlab.other:443 like an agent without an allow rule for it, and
// otherwise carries the stream to target.
type relayStandIn struct {
	api   *httptest.Server
	proxy net.Listener
	wg    sync.WaitGroup
}

func startRelayStandIn(target string) *relayStandIn {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/connections/{id}/status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"connection_id":"conn_1","ready":false,"tunnel_status":"disconnected","auth_status":"active",`+
			`"allowlist_status":"unknown","reason":"AGENT_OFFLINE","provider_error_code":"PROVIDER_SELF_HOSTED_CONNECTIVITY_BLOCKED","agents":[]}`)
	})
	mux.HandleFunc("POST /v1/connections/{id}/check", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"ready":true,"steps":[{"step":"allowlist","ok":true,"ms":0},`+
			`{"step":"http","ok":true,"ms":12,"detail":"HTTP 401 Unauthorized: reachable, authentication required"}]}`)
	})
	mux.HandleFunc("GET /v1/events", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "id: 7\nevent: tunnel\ndata: {\"connection_id\":\"conn_1\",\"from\":\"connected\",\"to\":\"disconnected\",\"reason\":\"AGENT_OFFLINE\"}\n\n")
	})
	r := &relayStandIn{api: httptest.NewServer(mux)}
	r.proxy, _ = net.Listen("tcp", "127.0.0.1:0")
	r.wg.Go(func() {
		for {
			c, err := r.proxy.Accept()
			if err != nil {
				return
			}
			r.wg.Go(func() { serveConnect(c, target) })
		}
	})
	return r
}

func (r *relayStandIn) Close() {
	r.api.Close()
	_ = r.proxy.Close()
	r.wg.Wait()
}

func serveConnect(c net.Conn, target string) {
	defer c.Close()
	req, err := http.ReadRequest(bufio.NewReader(c))
	if err != nil {
		return
	}
	if req.Host == "gitlab.other:443" {
		body := `{"reason":"ALLOWLIST_MISSING","provider_error_code":"PROVIDER_SELF_HOSTED_CONNECTIVITY_BLOCKED",` +
			`"message":"no allow rule covers gitlab.other:443","request_id":"3f9a1c0d2b7e4a58"}`
		_, _ = io.WriteString(c, "HTTP/1.1 403 ALLOWLIST_MISSING\r\nPostern-Reason: ALLOWLIST_MISSING\r\n"+
			"Content-Type: application/json\r\nConnection: close\r\n\r\n"+body)
		return
	}
	up, err := net.Dial("tcp", target)
	if err != nil {
		return
	}
	defer up.Close()
	_, _ = io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n")
	go func() { _, _ = io.Copy(up, c); _ = up.(*net.TCPConn).CloseWrite() }()
	_, _ = io.Copy(c, up)
}

// The product reaches a self-hosted provider through the relay: one
// Dialer per Postern connection, an http.Transport on top, and the
// reason code of every refusal.
func ExampleNewTransport() {
	provider := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "GitLab answered "+r.URL.Path)
	}))
	defer provider.Close()
	relay := startRelayStandIn(provider.Listener.Addr().String())
	defer relay.Close()

	d, err := client.NewDialer(client.DialerConfig{
		Proxy:        relay.proxy.Addr().String(), // the relay's --proxy-listen
		ConnectionID: "conn_1",
		APIKey:       "pak_...", // from a secret store, never a flag
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	tr := client.NewTransport(d, nil) // nil: the system roots verify the provider
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}

	resp, err := hc.Get("http://gitlab.corp.example/api/v4/version")
	if err != nil {
		fmt.Println(err)
		return
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	fmt.Println(string(body))

	_, err = hc.Get("https://gitlab.other/api/v4/version")
	var refused *protocol.Error
	if errors.As(err, &refused) {
		fmt.Println(refused.Reason, refused.ProviderErrorCode, refused.RequestID)
	}
	// Output:
	// GitLab answered /api/v4/version
	// ALLOWLIST_MISSING PROVIDER_SELF_HOSTED_CONNECTIVITY_BLOCKED 3f9a1c0d2b7e4a58
}

// A refused CONNECT is a *client.ProxyError: the relay's reason error plus
// the target and the HTTP status.
func ExampleDialer_DialContext() {
	relay := startRelayStandIn("127.0.0.1:1")
	defer relay.Close()
	d, _ := client.NewDialer(client.DialerConfig{Proxy: relay.proxy.Addr().String(), ConnectionID: "conn_1", APIKey: "pak_..."})

	_, err := d.DialContext(context.Background(), "tcp", "gitlab.other:443")
	var pe *client.ProxyError
	if errors.As(err, &pe) {
		fmt.Println(pe.StatusCode, pe.Err.Reason, pe.Retryable())
	}
	fmt.Println(err)
	// Output:
	// 403 ALLOWLIST_MISSING false
	// CONNECT gitlab.other:443: HTTP 403: ALLOWLIST_MISSING: no allow rule covers gitlab.other:443 (request 3f9a1c0d2b7e4a58)
}

// Status says why a connection is not ready, in the reason table's words.
func ExampleClient_Status() {
	relay := startRelayStandIn("127.0.0.1:1")
	defer relay.Close()
	c := client.New(relay.api.URL, "pak_...", nil)

	st, err := c.Status(context.Background(), "conn_1", "https://gitlab.corp.example")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(st.Ready, st.TunnelStatus, st.Reason, st.ProviderErrorCode)
	// Output: false disconnected AGENT_OFFLINE PROVIDER_SELF_HOSTED_CONNECTIVITY_BLOCKED
}

// Check runs a live check from inside the customer network. A provider
// answering 401 is ready: the path works, and credentials are the
// product's business.
func ExampleClient_Check() {
	relay := startRelayStandIn("127.0.0.1:1")
	defer relay.Close()
	c := client.New(relay.api.URL, "pak_...", nil)

	ck, err := c.Check(context.Background(), "conn_1", "https://gitlab.corp.example")
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, s := range ck.Steps {
		fmt.Println(strings.TrimSpace(fmt.Sprintln(s.Step, s.OK, s.Detail)))
	}
	fmt.Println("ready:", ck.Ready)
	// Output:
	// allowlist true
	// http true HTTP 401 Unauthorized: reachable, authentication required
	// ready: true
}

// Events follows status transitions; resume with the last id after an
// error.
func ExampleClient_Events() {
	relay := startRelayStandIn("127.0.0.1:1")
	defer relay.Close()
	c := client.New(relay.api.URL, "pak_...", nil)

	lastID := ""
	err := c.Events(context.Background(), lastID, func(e api.Event) error {
		fmt.Println(e.ID, e.Type, e.ConnectionID, e.From, "->", e.To, e.Reason)
		lastID = e.ID
		return nil
	})
	fmt.Println(strings.Contains(err.Error(), "unexpected EOF"), "resume after", lastID)
	// Output:
	// 7 tunnel conn_1 connected -> disconnected AGENT_OFFLINE
	// true resume after 7
}
