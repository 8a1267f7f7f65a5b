package testkit

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// FreeAddr returns a 127.0.0.1 address whose port was free a moment ago,
// for a child process that must be told where to listen.
//
// The port comes from below the kernel's ephemeral range, not from a
// bind to port 0: the tests run in several processes at once and open
// thousands of outgoing connections, each of which takes an ephemeral
// port, so a port-0 reservation was now and then taken by someone's
// outgoing connection before the child bound it (a cluster node then
// failed with "address already in use"). It never hands out the same
// address twice in one test binary either.
func FreeAddr(tb testing.TB) string {
	tb.Helper()
	handedOut.Lock()
	defer handedOut.Unlock()
	lo, hi := listenPortRange()
	for range 200 {
		port := 0
		if hi > lo {
			port = lo + handedOut.rng.IntN(hi-lo)
		}
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			if port == 0 {
				require.NoError(tb, err, "reserve a port")
			}
			continue // in use by another listener: try another
		}
		addr := ln.Addr().String()
		_ = ln.Close()
		if !handedOut.addrs[addr] {
			handedOut.addrs[addr] = true
			return addr
		}
	}
	tb.Fatal("reserve a port: no free port found below the ephemeral range in 200 tries")
	return ""
}

// listenPortRange is the range [lo, hi) FreeAddr picks ports from: from
// 20000 up to the first ephemeral port. Where the ephemeral range cannot
// be read or leaves too little room below it, it is empty and FreeAddr
// lets the kernel choose.
func listenPortRange() (lo, hi int) {
	const floor = 20000
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0, 0
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0, 0
	}
	first, err := strconv.Atoi(f[0])
	if err != nil || first-floor < 1000 {
		return 0, 0
	}
	return floor, first
}

// handedOut is every address FreeAddr returned in this test binary, and
// the random source that spreads the binaries over the range.
var handedOut = struct {
	sync.Mutex
	addrs map[string]bool
	rng   *rand.Rand
}{addrs: map[string]bool{}, rng: rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(os.Getpid())))}

// GetOK says whether a GET of url through c answers 200 OK. It is meant
// for polling a server that is still starting, so any error just means
// "not yet".
func GetOK(c *http.Client, url string) bool {
	resp, err := c.Get(url)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// Serve accepts connections on a fresh loopback port and hands each to
// serve in a goroutine of its own; serve owns the connection. The test's
// cleanup stops accepting and waits for every serve to return.
func Serve(tb testing.TB, serve func(net.Conn)) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(tb, err)
	var wg sync.WaitGroup
	tb.Cleanup(func() {
		_ = ln.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { serve(c) })
		}
	})
	return ln.Addr().String()
}

// EchoSeed seeds the Pattern an EchoServer answers with; a client checks
// the answer against NewPattern(EchoSeed).
const EchoSeed = 7

// echoDeadline bounds one echo exchange. Nothing the tests send takes this
// long; a peer that went away must not pin the server's goroutine.
const echoDeadline = 5 * time.Minute

// EchoServer listens on loopback and answers each connection with the
// sha256 of all it read, up to the client's half-close, followed by as
// many bytes as it read from NewPattern(EchoSeed), then closes. One
// exchange proves both directions and the half-close. The server and
// every connection's goroutine stop before the test's cleanup returns.
func EchoServer(tb testing.TB) string {
	tb.Helper()
	return Serve(tb, echo)
}

func echo(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(echoDeadline))
	h := sha256.New()
	n, err := io.Copy(h, c)
	if err != nil {
		return
	}
	if _, err := c.Write(h.Sum(nil)); err != nil {
		return
	}
	_, _ = io.Copy(c, io.LimitReader(NewPattern(EchoSeed), n))
}

// Pattern is a deterministic, endless byte stream (xorshift): cheap to
// generate on both ends of a transfer and not compressible by accident.
type Pattern struct{ x uint64 }

// NewPattern starts the stream for seed; equal seeds give equal streams.
func NewPattern(seed uint64) *Pattern { return &Pattern{x: seed*0x9E3779B97F4A7C15 + 1} }

// Read fills b; it never fails.
func (p *Pattern) Read(b []byte) (int, error) {
	for i := range b {
		p.x ^= p.x << 13
		p.x ^= p.x >> 7
		p.x ^= p.x << 17
		b[i] = byte(p.x)
	}
	return len(b), nil
}

// Exchange is the client's half of an EchoServer exchange over c: it
// sends n bytes of NewPattern(3), half-closes, and checks the digest and
// the n bytes that come back. c must half-close (*net.TCPConn, or a
// BufferedConn over one). c's deadlines bound it; it does not close c.
func Exchange(c net.Conn, n int64) error {
	cw, ok := c.(interface{ CloseWrite() error })
	if !ok {
		if bc, isBuffered := c.(*BufferedConn); isBuffered {
			cw, ok = bc.Conn.(interface{ CloseWrite() error })
		}
	}
	if !ok {
		return fmt.Errorf("exchange: %T cannot half-close", c)
	}
	sent := sha256.New()
	writeErr := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.MultiWriter(c, sent), io.LimitReader(NewPattern(3), n))
		if err == nil {
			err = cw.CloseWrite()
		}
		writeErr <- err
	}()
	digest := make([]byte, sha256.Size)
	if _, err := io.ReadFull(c, digest); err != nil {
		_ = c.SetDeadline(time.Now()) // the writer must not outlive the call
		<-writeErr
		return fmt.Errorf("read digest: %w", err)
	}
	if err := <-writeErr; err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if !bytes.Equal(digest, sent.Sum(nil)) {
		return errors.New("the target saw other bytes than were sent")
	}
	got, want := sha256.New(), sha256.New()
	m, err := io.Copy(got, c)
	if err != nil {
		return fmt.Errorf("read answer after %d bytes: %w", m, err)
	}
	_, _ = io.Copy(want, io.LimitReader(NewPattern(EchoSeed), n))
	if m != n {
		return fmt.Errorf("got %d bytes back, want %d", m, n)
	}
	if !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
		return errors.New("bytes back differ from what the target sent")
	}
	return nil
}
