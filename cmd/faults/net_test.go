package faults

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/postern/postern/cmd/internal/testkit"
)

// sinkServer accepts connections and never reads from them: a target
// whose receive window fills and stays full.
type sinkServer struct {
	addr     string
	mu       sync.Mutex
	conns    []net.Conn
	accepted chan struct{}
}

func newSinkServer(t *testing.T) *sinkServer {
	t.Helper()
	s := &sinkServer{accepted: make(chan struct{}, 1024)}
	// Registered before Serve's, so it runs after Serve stopped accepting.
	t.Cleanup(s.closeAll)
	s.addr = testkit.Serve(t, func(c net.Conn) {
		s.mu.Lock()
		s.conns = append(s.conns, c)
		s.mu.Unlock()
		select {
		case s.accepted <- struct{}{}:
		default:
		}
	})
	return s
}

// closeAll closes every connection the sink accepted so far.
func (s *sinkServer) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.conns {
		_ = c.Close()
	}
	s.conns = nil
}

// refusedError is a CONNECT the relay answered with something else than
// 200.
type refusedError struct {
	status int
	reason string
}

func (e *refusedError) Error() string {
	return fmt.Sprintf("CONNECT answered %d %s", e.status, e.reason)
}

// connect sends CONNECT target through the relay's proxy listener and
// returns the open tunnel, or a *refusedError with the relay's answer.
// Every step is bounded by timeout.
func (s *system) connect(target string, timeout time.Duration) (*testkit.BufferedConn, error) {
	c, err := net.DialTimeout("tcp", s.relay.proxyAddr, timeout)
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(timeout))
	resp, br, err := testkit.Connect(c, s.connID, s.key, target)
	if err != nil {
		_ = c.Close()
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		_ = c.Close()
		return nil, &refusedError{status: resp.StatusCode, reason: resp.Header.Get("Postern-Reason")}
	}
	_ = c.SetDeadline(time.Time{})
	return &testkit.BufferedConn{Conn: c, R: br}, nil
}

// exchange runs one echo exchange of n bytes over tc within timeout and
// closes tc.
func exchange(tc *testkit.BufferedConn, n int64, timeout time.Duration) error {
	defer tc.Close()
	_ = tc.SetDeadline(time.Now().Add(timeout))
	return testkit.Exchange(tc, n)
}

// roundTrip opens a tunnel to the echo target and exchanges n bytes.
func (s *system) roundTrip(n int64, timeout time.Duration) error {
	tc, err := s.connect(s.echo, timeout)
	if err != nil {
		return err
	}
	return exchange(tc, n, timeout)
}

// loadLoop runs round trips of size bytes back to back until ctx ends,
// counting successes and failures. Each try is bounded by 10 s.
type loadLoop struct {
	mu       sync.Mutex
	ok, fail int
	lastOK   time.Time
	lastErr  error
}

func (l *loadLoop) run(ctx context.Context, s *system, size int64) {
	for ctx.Err() == nil {
		err := s.roundTrip(size, 10*time.Second)
		l.mu.Lock()
		if err == nil {
			l.ok++
			l.lastOK = time.Now()
		} else {
			l.fail++
			l.lastErr = err
		}
		l.mu.Unlock()
		if err != nil {
			// Do not spin while the relay is down.
			select {
			case <-ctx.Done():
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
}

func (l *loadLoop) counts() (ok, fail int, lastOK time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ok, l.fail, l.lastOK
}
