package dnstest

import (
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/miekg/dns"
)

// Server is a DNS server on 127.0.0.1, UDP and TCP on one port, that logs every question
// before its handler answers. It stops when the test that started it ends.
//
// A request without exactly one question never reaches the handler: miekg/dns answers it
// FORMERR itself.
type Server struct {
	addr    string
	respond RawHandler

	mu  sync.Mutex
	log Queries
}

// New starts a server whose replies h builds.
func New(t testing.TB, h Handler) *Server {
	t.Helper()
	return NewRaw(t, func(q Query, req *dns.Msg) [][]byte {
		if m := h(q, req); m != nil {
			return [][]byte{Pack(t, m)}
		}
		return nil
	})
}

// NewRaw starts a server that sends, for each question, the bytes h returns.
func NewRaw(t testing.TB, h RawHandler) *Server {
	t.Helper()
	pc, ln := listen(t)
	s := &Server{addr: pc.LocalAddr().String(), respond: h}
	serve(t, &dns.Server{PacketConn: pc, Handler: s.handler("udp")})
	serve(t, &dns.Server{Listener: ln, Handler: s.handler("tcp")})
	return s
}

// Silent starts a server that hears every question and answers none: a DNS timeout, with
// the questions still logged.
func Silent(t testing.TB) *Server {
	t.Helper()
	return New(t, Drop)
}

// Addr is the server's "127.0.0.1:port", for UDP and TCP alike.
func (s *Server) Addr() string { return s.addr }

// Queries returns the questions received so far, in order.
func (s *Server) Queries() Queries {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append(Queries(nil), s.log...)
}

func (s *Server) handler(proto string) dns.Handler {
	return dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		q := s.record(req.Question[0], proto)
		for _, b := range s.respond(q, req) {
			if len(b) > 0 {
				_, _ = w.Write(b)
			}
		}
	})
}

// record logs the question and returns it with its Seen count.
func (s *Server) record(dq dns.Question, proto string) Query {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := Query{Name: strings.ToLower(dq.Name), Type: dq.Qtype, Proto: proto}
	q.Seen = len(s.log.For(q.Name, q.Type))
	s.log = append(s.log, q)
	return q
}

// listen binds a UDP socket and a TCP listener on the same loopback port, so one address
// serves a resolver's UDP query and its TCP retry. A port free for UDP may be taken for TCP;
// then it tries another.
func listen(t testing.TB) (net.PacketConn, net.Listener) {
	t.Helper()
	for range 50 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("dnstest: %v", err)
		}
		ln, err := net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			return pc, ln
		}
		_ = pc.Close()
	}
	t.Fatal("dnstest: no loopback port free for both UDP and TCP")
	return nil, nil
}

// serve runs srv until the test ends and returns once it is ready, so no question a test
// sends can arrive before the server reads.
func serve(t testing.TB, srv *dns.Server) {
	t.Helper()
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	done := make(chan error, 1)
	go func() { done <- srv.ActivateAndServe() }()
	select {
	case <-started:
	case err := <-done:
		t.Fatalf("dnstest: serve: %v", err)
	}
	t.Cleanup(func() {
		if err := srv.Shutdown(); err != nil {
			t.Errorf("dnstest: shutdown: %v", err)
		}
		<-done
	})
}
