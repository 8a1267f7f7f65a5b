package resolve

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fakeClock is an injectable clock for the cache and hosts-file checks.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// replyFunc builds the reply to req (nil: send nothing). proto is "udp" or "tcp".
type replyFunc func(req *dns.Msg, proto string) *dns.Msg

// dnsServer is a real miekg/dns server on loopback, UDP and TCP on one port, that records the
// questions it was asked.
type dnsServer struct {
	addr string

	mu   sync.Mutex
	seen []string // "name TYPE proto"
}

func (s *dnsServer) record(q dns.Question, proto string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seen = append(s.seen, strings.ToLower(q.Name)+" "+dns.TypeToString[q.Qtype]+" "+proto)
}

// queries returns the recorded questions that start with prefix ("" for all).
func (s *dnsServer) queries(prefix string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, q := range s.seen {
		if strings.HasPrefix(q, prefix) {
			out = append(out, q)
		}
	}
	return out
}

func startDNS(t *testing.T, fn replyFunc) *dnsServer {
	t.Helper()
	pc, ln := listenUDPAndTCP(t)
	s := &dnsServer{addr: pc.LocalAddr().String()}
	handler := func(proto string) dns.Handler {
		return dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
			if len(req.Question) == 1 {
				s.record(req.Question[0], proto)
			}
			if resp := fn(req, proto); resp != nil {
				_ = w.WriteMsg(resp)
			}
		})
	}
	serve(t, &dns.Server{PacketConn: pc, Handler: handler("udp")})
	serve(t, &dns.Server{Listener: ln, Handler: handler("tcp")})
	return s
}

func serve(t *testing.T, srv *dns.Server) {
	t.Helper()
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	done := make(chan error, 1)
	go func() { done <- srv.ActivateAndServe() }()
	select {
	case <-started:
	case err := <-done:
		t.Fatalf("dns server: %v", err)
	}
	t.Cleanup(func() {
		_ = srv.Shutdown()
		<-done
	})
}

func listenUDPAndTCP(t *testing.T) (net.PacketConn, net.Listener) {
	t.Helper()
	for range 50 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		require.NoError(t, err)
		ln, err := net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			return pc, ln
		}
		_ = pc.Close()
	}
	t.Fatal("no port free for both udp and tcp")
	return nil, nil
}

// silentServer is a UDP socket that never answers.
func silentServer(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = pc.Close() })
	return pc.LocalAddr().String()
}

// zone answers from a fixed set of records, following CNAMEs like a recursive server.
// Names without records get NXDOMAIN with an SOA whose minimum is soaMin.
type zone struct {
	rrs    []dns.RR
	soaMin uint32
}

func newZone(t *testing.T, records ...string) *zone {
	t.Helper()
	z := &zone{soaMin: 300}
	for _, s := range records {
		rr, err := dns.NewRR(s)
		require.NoError(t, err, s)
		z.rrs = append(z.rrs, rr)
	}
	return z
}

func (z *zone) reply(req *dns.Msg, _ string) *dns.Msg {
	resp := new(dns.Msg)
	resp.SetReply(req)
	q := req.Question[0]
	name := strings.ToLower(q.Name)
	exists := false
	for range 8 {
		next := ""
		for _, rr := range z.rrs {
			h := rr.Header()
			if !strings.EqualFold(h.Name, name) {
				continue
			}
			exists = true
			switch {
			case h.Rrtype == q.Qtype:
				resp.Answer = append(resp.Answer, rr)
			case h.Rrtype == dns.TypeCNAME:
				resp.Answer = append(resp.Answer, rr)
				next = strings.ToLower(rr.(*dns.CNAME).Target)
			}
		}
		if next == "" {
			break
		}
		name = next
	}
	if len(resp.Answer) == 0 {
		if !exists {
			resp.Rcode = dns.RcodeNameError
		}
		resp.Ns = []dns.RR{z.soa()}
	}
	return resp
}

func (z *zone) soa() dns.RR {
	return &dns.SOA{
		Hdr: dns.RR_Header{Name: "example.", Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: 3600},
		Ns:  "ns.example.", Mbox: "admin.example.", Serial: 1, Refresh: 60, Retry: 60, Expire: 600,
		Minttl: z.soaMin,
	}
}

// rcodeReply answers every question with rcode and nothing else.
func rcodeReply(rcode int) replyFunc {
	return func(req *dns.Msg, _ string) *dns.Msg {
		resp := new(dns.Msg)
		resp.SetRcode(req, rcode)
		return resp
	}
}

// testConfig is a Config that ignores the machine's resolv.conf and hosts file.
func testConfig(t *testing.T, servers ...string) Config {
	t.Helper()
	dir := t.TempDir()
	return Config{
		Servers:    servers,
		ResolvConf: filepath.Join(dir, "resolv.conf"),
		HostsFile:  filepath.Join(dir, "hosts"),
		Timeout:    time.Second,
		Attempts:   2,
	}
}

func newResolver(t *testing.T, cfg Config) *Resolver {
	t.Helper()
	r, err := New(cfg)
	require.NoError(t, err)
	return r
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	require.NoError(t, os.WriteFile(path, []byte(content), 0o600))
}
