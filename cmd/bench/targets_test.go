package bench

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"
)

// The sink/source target speaks a tiny protocol: one op byte and a
// big-endian uint64 byte count, then
//
//	opUpload:   the client sends count bytes; the target answers the
//	            number it received as a uint64 once it has them all.
//	opDownload: the target sends count bytes.
//	opEcho:     the target sends back the count bytes it receives.
//
// Either way the target then waits for the client to close.
const (
	opUpload   byte = 'u'
	opDownload byte = 'd'
	opEcho     byte = 'e'
	headerLen       = 9
)

// chunkSize is the read and write size on both ends of a bulk transfer,
// large enough that neither end is what limits a loopback transfer.
const chunkSize = 256 << 10

// connDeadline bounds every target and client connection, so a stuck
// transfer fails the run instead of hanging it.
const connDeadline = 3 * time.Minute

// httpBody is what the HTTP target answers: about the size of a small
// JSON API response.
var httpBody = []byte(`{"id":12345,"key":"PROJ-1","fields":{"summary":"benchmark issue","status":"open"},"ok":true}` + "\n")

// pattern is the bytes every bulk writer sends: incompressible, not zeros.
func pattern() []byte {
	p := make([]byte, chunkSize)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range p {
		p[i] = byte(r.Uint32())
	}
	return p
}

// sinkServer is the bulk target.
type sinkServer struct {
	ln      net.Listener
	pattern []byte
	wg      sync.WaitGroup
	mu      sync.Mutex
	conns   map[net.Conn]struct{}
	errs    []error
}

func startSink(tb testing.TB) *sinkServer {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("sink listen: %v", err)
	}
	s := &sinkServer{ln: ln, pattern: pattern(), conns: map[net.Conn]struct{}{}}
	s.wg.Add(1)
	go s.accept()
	tb.Cleanup(func() {
		if err := s.close(); err != nil {
			tb.Errorf("sink: %v", err)
		}
	})
	return s
}

func (s *sinkServer) addr() string { return s.ln.Addr().String() }

func (s *sinkServer) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			err := s.serve(c)
			c.Close()
			s.mu.Lock()
			delete(s.conns, c)
			if err != nil {
				s.errs = append(s.errs, err)
			}
			s.mu.Unlock()
		}()
	}
}

func (s *sinkServer) serve(c net.Conn) error {
	_ = c.SetDeadline(time.Now().Add(connDeadline))
	var hdr [headerLen]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return fmt.Errorf("sink read header: %w", err)
	}
	n := int64(binary.BigEndian.Uint64(hdr[1:]))
	switch hdr[0] {
	case opUpload:
		got, err := readN(c, n)
		if err != nil {
			return fmt.Errorf("sink upload after %d of %d bytes: %w", got, n, err)
		}
		var ack [8]byte
		binary.BigEndian.PutUint64(ack[:], uint64(got))
		if _, err := c.Write(ack[:]); err != nil {
			return fmt.Errorf("sink ack: %w", err)
		}
	case opDownload:
		if err := writeN(c, s.pattern, n); err != nil {
			return fmt.Errorf("sink download: %w", err)
		}
	case opEcho:
		if _, err := io.CopyN(c, c, n); err != nil {
			return fmt.Errorf("sink echo: %w", err)
		}
	default:
		return fmt.Errorf("sink: unknown op %q", hdr[0])
	}
	// Wait for the client's close so our close never cuts its last read.
	_, _ = io.Copy(io.Discard, c)
	return nil
}

// close stops accepting, ends open connections, waits for every
// goroutine, and reports what went wrong on the server side.
func (s *sinkServer) close() error {
	err := s.ln.Close()
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return errors.Join(append(s.errs, err)...)
}

// readN reads and discards exactly n bytes.
func readN(r io.Reader, n int64) (int64, error) {
	buf := make([]byte, chunkSize)
	var got int64
	for got < n {
		m, err := r.Read(buf[:min(int64(len(buf)), n-got)])
		got += int64(m)
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return got, err
		}
	}
	return got, nil
}

// writeN writes n bytes of pattern, repeating it.
func writeN(w io.Writer, pattern []byte, n int64) error {
	for n > 0 {
		m := min(int64(len(pattern)), n)
		if _, err := w.Write(pattern[:m]); err != nil {
			return err
		}
		n -= m
	}
	return nil
}

// httpTarget is the small-response HTTP target, keep-alive on.
type httpTarget struct {
	srv  *http.Server
	ln   net.Listener
	done chan error
}

func startHTTPTarget(tb testing.TB) *httpTarget {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("http target listen: %v", err)
	}
	length := strconv.Itoa(len(httpBody))
	h := &httpTarget{
		ln:   ln,
		done: make(chan error, 1),
		srv: &http.Server{
			Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.Header().Set("Content-Length", length)
				_, _ = w.Write(httpBody)
			}),
			ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout:       time.Minute,
		},
	}
	go func() { h.done <- h.srv.Serve(ln) }()
	tb.Cleanup(func() {
		_ = h.srv.Close()
		if err := <-h.done; !errors.Is(err, http.ErrServerClosed) {
			tb.Errorf("http target: %v", err)
		}
	})
	return h
}

func (h *httpTarget) addr() string { return h.ln.Addr().String() }
