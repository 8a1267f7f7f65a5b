package stream

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/postern/postern/agent/config"
	"github.com/postern/postern/agent/internal/testkit"
	"github.com/postern/postern/agent/policy"
	"github.com/postern/postern/agent/session"
	"github.com/postern/postern/protocol"
)

// Every test stops its session and waits for it, so any goroutine still
// alive at the end is a leak in the server or in a test's fake.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testServer is what a test gives the stream server; zero fields get the
// defaults of a test agent.
type testServer struct {
	Config   *config.Config
	Dial     policy.DialFunc
	Resolver policy.Resolver
	Audit    Auditor
	Logger   *slog.Logger
}

// serve runs a stream server on one tunnel session to the config's relay,
// as the agent does, until the test ends.
func serve(t *testing.T, o testServer) {
	t.Helper()
	if o.Resolver == nil {
		o.Resolver = testkit.NewResolver(t, "127.0.0.1:1", 0)
	}
	if o.Dial == nil {
		var d net.Dialer
		o.Dial = d.DialContext
	}
	pol := policy.New(o.Config, time.Now())
	srv, err := New(Config{
		Gate: policy.NewGate(pol, o.Resolver), Dial: o.Dial, Audit: o.Audit,
		OpenTimeout: 15 * time.Second, IdleTimeout: 15 * time.Minute, CAFile: o.Config.CAFile,
	})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	s, err := session.Open(ctx, session.Options{
		URL: o.Config.RelayURLs[0], HTTPClient: &http.Client{}, Token: testkit.Token,
		Reporter: helloOnly{pol}, Handler: srv, Logger: o.Logger,
		DrainTimeout: time.Second, // a stream a test leaves open must not hold cleanup
	})
	require.NoError(t, err)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Serve(ctx)
		s.Drain()
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(testkit.WaitTimeout):
			t.Errorf("the session did not stop")
		}
	})
}

// helloOnly reports the policy in Hello and an empty Health.
type helloOnly struct{ pol *policy.Policy }

func (r helloOnly) Hello() protocol.Hello {
	return protocol.Hello{ProtocolVersion: protocol.Version, AgentID: "stream-test", Tunnels: 1, Allowlist: r.pol.Summary}
}

func (helloOnly) Health() protocol.Health  { return protocol.Health{Time: time.Now().UTC()} }
func (helloOnly) Changed() <-chan struct{} { return nil }
