package agent

import (
	"context"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/postern/postern/agent/config"
	"github.com/postern/postern/agent/resolve"
)

// --- agent ---------------------------------------------------------------

// parseConfig parses an agent config written in the test.
func parseConfig(t testing.TB, yaml string) *config.Config {
	t.Helper()
	cfg, err := config.Parse("agent.yaml", []byte(yaml), nil)
	require.NoError(t, err)
	return cfg
}

// runAgent starts Run and, when the test ends, cancels it and waits for it
// to return.
func runAgent(t *testing.T, opts Options) *Agent {
	t.Helper()
	if opts.Token == "" {
		opts.Token = testToken
	}
	if opts.Version == "" {
		opts.Version = "1.2.3-test"
	}
	if opts.BackoffBase == 0 {
		opts.BackoffBase = 20 * time.Millisecond
	}
	if opts.BackoffMax == 0 {
		opts.BackoffMax = 100 * time.Millisecond
	}
	if opts.Resolver == nil {
		opts.Resolver = newResolver(t, "127.0.0.1:1", 0)
	}
	if opts.RefusedTokenPause == 0 {
		opts.RefusedTokenPause = time.Millisecond
	}
	if opts.DrainTimeout == 0 {
		opts.DrainTimeout = time.Second // a stream a test leaves open must not hold cleanup
	}
	a, err := New(opts)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run returned %v after cancel", err)
			}
		case <-time.After(waitTimeout):
			t.Errorf("Run did not return after cancel")
		}
	})
	return a
}

// newResolver returns a resolver asking only server, with the fixtures in
// testdata instead of the host's resolv.conf and hosts file. maxTTL 0 keeps
// the default cache; negative disables it.
func newResolver(t *testing.T, server string, maxTTL time.Duration) *resolve.Resolver {
	t.Helper()
	r, err := resolve.New(resolve.Config{
		Servers:     []string{server},
		Timeout:     150 * time.Millisecond,
		Attempts:    1,
		ResolvConf:  "testdata/resolv.conf",
		HostsFile:   "testdata/hosts",
		MaxTTL:      maxTTL,
		NegativeTTL: -1,
	})
	require.NoError(t, err)
	return r
}

// dialLog is a DialFunc that records every address the agent dials.
type dialLog struct {
	mu    sync.Mutex
	addrs []string
}

func (l *dialLog) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	l.mu.Lock()
	l.addrs = append(l.addrs, addr)
	l.mu.Unlock()
	var d net.Dialer
	return d.DialContext(ctx, network, addr)
}

// Addrs returns the addresses dialled so far, in order.
func (l *dialLog) Addrs() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.addrs)
}

// --- logs ----------------------------------------------------------------

// logRecord is one captured log line with its attributes as strings.
type logRecord struct {
	Level slog.Level
	Msg   string
	Attrs map[string]string
}

// logSink captures what the agent logs, so tests can assert on what an
// operator would read.
type logSink struct {
	mu   sync.Mutex
	recs []logRecord
}

func (s *logSink) Logger() *slog.Logger { return slog.New(&sinkHandler{sink: s}) }

// Find returns the records with the given message.
func (s *logSink) Find(msg string) []logRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []logRecord
	for _, r := range s.recs {
		if r.Msg == msg {
			out = append(out, r)
		}
	}
	return out
}

type sinkHandler struct {
	sink  *logSink
	attrs []slog.Attr
}

func (h *sinkHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *sinkHandler) Handle(_ context.Context, r slog.Record) error {
	rec := logRecord{Level: r.Level, Msg: r.Message, Attrs: make(map[string]string)}
	for _, a := range h.attrs {
		rec.Attrs[a.Key] = a.Value.String()
	}
	r.Attrs(func(a slog.Attr) bool {
		rec.Attrs[a.Key] = a.Value.String()
		return true
	})
	h.sink.mu.Lock()
	h.sink.recs = append(h.sink.recs, rec)
	h.sink.mu.Unlock()
	return nil
}

func (h *sinkHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &sinkHandler{sink: h.sink, attrs: append(slices.Clip(h.attrs), as...)}
}

func (h *sinkHandler) WithGroup(string) slog.Handler { return h }

// --- targets -------------------------------------------------------------

// target is a TCP service inside the "customer network": a real loopback
// listener that counts the connections it accepts.
type target struct {
	ln       net.Listener
	accepted atomic.Int32
	ended    atomic.Int32 // connections whose handler finished

	mu    sync.Mutex
	conns []net.Conn
	wg    sync.WaitGroup
}

// newTarget listens on addr ("127.0.0.1:0" or a fixed address) and serves
// every connection with handle.
func newTarget(t *testing.T, addr string, handle func(net.Conn)) *target {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	require.NoError(t, err)
	tg := &target{ln: ln}
	tg.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			tg.accepted.Add(1)
			tg.mu.Lock()
			tg.conns = append(tg.conns, c)
			tg.mu.Unlock()
			tg.wg.Go(func() {
				defer tg.ended.Add(1)
				defer c.Close()
				handle(c)
			})
		}
	})
	t.Cleanup(func() {
		_ = ln.Close()
		tg.mu.Lock()
		for _, c := range tg.conns {
			_ = c.Close()
		}
		tg.mu.Unlock()
		tg.wg.Wait()
	})
	return tg
}

func (tg *target) port() int { return tg.ln.Addr().(*net.TCPAddr).Port }

func (tg *target) addr() string { return tg.ln.Addr().String() }

// replyAfterEOF answers "pong:" and everything it read, but only once the
// client has finished writing: it proves half-close reaches the target.
func replyAfterEOF(c net.Conn) {
	got, err := io.ReadAll(c)
	if err != nil {
		return
	}
	_, _ = io.WriteString(c, "pong:"+string(got))
}

// echo copies everything back until the client closes.
func echo(c net.Conn) { _, _ = io.Copy(c, c) }

// refusedPort returns a loopback port nothing listens on.
func refusedPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := ln.Addr().(*net.TCPAddr).Port
	require.NoError(t, ln.Close())
	return port
}
