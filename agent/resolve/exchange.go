package resolve

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/miekg/dns"
)

const (
	// ednsSize is the UDP payload size we advertise: the DNS flag day 2020 value, which avoids
	// IP fragmentation on every common path.
	ednsSize = 1232
	// maxCNAMEDepth bounds how many CNAME hops inside one answer are followed.
	maxCNAMEDepth = 8
)

// outcome classifies the answer to one (name, type) question.
type outcome int

const (
	outcomeUnknown  outcome = iota
	outcomeAddrs            // at least one address of the asked type
	outcomeNoData           // NOERROR without addresses of the asked type
	outcomeNXDomain         // rcode 3
	outcomeServFail         // SERVFAIL, REFUSED, or any other error rcode
	outcomeTimeout          // no server answered
	outcomeCanceled         // the caller's context ended
)

var (
	errMismatch  = errors.New("reply does not match the question")
	errMalformed = errors.New("malformed reply")
)

// question is what a reply must echo to be accepted.
type question struct {
	id    uint16
	name  string // FQDN
	qtype uint16
}

// reply is the meaning of one accepted DNS message.
type reply struct {
	kind      outcome
	addrs     []netip.Addr
	rcode     int
	truncated bool
	// chain are the CNAME targets followed from the question name, in
	// order: lower-case FQDNs.
	chain []string
	// ttl is the lifetime of a positive answer (minimum over the records used), or for a
	// negative answer the SOA-derived negative TTL; negative means no SOA was present.
	ttl time.Duration
}

// result is the answer to one (name, type) question after cache, servers and retries.
type result struct {
	reply
	server    string
	fromCache bool
	detail    string // for ServFail and Timeout: what happened, for the error text
	err       error  // for outcomeCanceled: the context's error
}

// handleAnswer decodes raw as the reply to q. It returns errMismatch for a message that is not
// an answer to q (wrong id, name, type or class, or not a response), which a caller reading
// UDP must ignore, and errMalformed for bytes that are not a DNS message at all.
func handleAnswer(raw []byte, q question) (reply, error) {
	var m dns.Msg
	if err := m.Unpack(raw); err != nil {
		return reply{}, fmt.Errorf("%w: %w", errMalformed, err)
	}
	if !m.Response || m.Id != q.id || m.Opcode != dns.OpcodeQuery || len(m.Question) != 1 {
		return reply{}, errMismatch
	}
	mq := m.Question[0]
	if mq.Qtype != q.qtype || mq.Qclass != dns.ClassINET || !strings.EqualFold(mq.Name, q.name) {
		return reply{}, errMismatch
	}
	rep := reply{rcode: m.Rcode, truncated: m.Truncated, ttl: -1}
	switch m.Rcode {
	case dns.RcodeSuccess:
	case dns.RcodeNameError:
		rep.kind = outcomeNXDomain
		rep.ttl = negativeTTL(&m)
		return rep, nil
	default:
		rep.kind = outcomeServFail
		return rep, nil
	}

	addrs, chain, ttl := collectAddrs(&m, q)
	rep.chain = chain
	if len(addrs) == 0 {
		rep.kind = outcomeNoData
		rep.ttl = negativeTTL(&m)
		return rep, nil
	}
	rep.kind, rep.addrs, rep.ttl = outcomeAddrs, addrs, ttl
	return rep, nil
}

// collectAddrs follows the CNAME chain that starts at the question name and returns the
// addresses of the asked type owned by a name in that chain, in answer order, the CNAME
// targets it followed, in order, and the smallest TTL of the records used. Records about
// other names are ignored: a server (or an attacker racing it) cannot slip in addresses for
// a name we did not ask about.
func collectAddrs(m *dns.Msg, q question) ([]netip.Addr, []string, time.Duration) {
	minTTL := ^uint32(0)
	chain := map[string]bool{strings.ToLower(q.name): true}
	var followed []string
	owner := strings.ToLower(q.name)
	for range maxCNAMEDepth {
		next := ""
		for _, rr := range m.Answer {
			c, ok := rr.(*dns.CNAME)
			if ok && c.Hdr.Class == dns.ClassINET && strings.EqualFold(c.Hdr.Name, owner) {
				next = strings.ToLower(c.Target)
				minTTL = min(minTTL, c.Hdr.Ttl)
				break
			}
		}
		if next == "" || chain[next] {
			break
		}
		chain[next] = true
		followed = append(followed, next)
		owner = next
	}

	var addrs []netip.Addr
	for _, rr := range m.Answer {
		h := rr.Header()
		if h.Class != dns.ClassINET || h.Rrtype != q.qtype || !chain[strings.ToLower(h.Name)] {
			continue
		}
		var ip netip.Addr
		switch v := rr.(type) {
		case *dns.A:
			ip, _ = netip.AddrFromSlice(v.A.To4())
		case *dns.AAAA:
			ip, _ = netip.AddrFromSlice(v.AAAA.To16())
		}
		if !ip.IsValid() || containsAddr(addrs, ip) {
			continue
		}
		addrs = append(addrs, ip)
		minTTL = min(minTTL, h.Ttl)
	}
	return addrs, followed, time.Duration(minTTL) * time.Second
}

// negativeTTL is the RFC 2308 negative-caching time from the SOA in the authority section:
// the smaller of the SOA record's TTL and its MINIMUM field. -1 when there is no SOA.
func negativeTTL(m *dns.Msg) time.Duration {
	for _, rr := range m.Ns {
		if soa, ok := rr.(*dns.SOA); ok {
			return time.Duration(min(soa.Hdr.Ttl, soa.Minttl)) * time.Second
		}
	}
	return -1
}

// exchange asks the servers one question. Tries go round the server list in order, Attempts
// times, like glibc: server 1, server 2, ..., then server 1 again. A server that answers
// SERVFAIL or REFUSED is not asked again for this question; any other answer ends the search.
func (r *Resolver) exchange(ctx context.Context, qname string, qtype uint16) result {
	failed := make([]bool, len(r.servers))
	var servFail *result
	var lastErr error
	for range r.attempts {
		for i, srv := range r.servers {
			if failed[i] {
				continue
			}
			if err := ctx.Err(); err != nil {
				return result{reply: reply{kind: outcomeCanceled}, err: err}
			}
			rep, err := r.try(ctx, srv, qname, qtype)
			if err != nil {
				if ctxErr := ctx.Err(); ctxErr != nil {
					return result{reply: reply{kind: outcomeCanceled}, err: ctxErr}
				}
				lastErr = err
				continue
			}
			res := result{reply: rep, server: srv}
			if rep.kind != outcomeServFail {
				return res
			}
			failed[i] = true
			if servFail == nil {
				res.detail = fmt.Sprintf("%s answered %s for %s %s", srv, rcodeName(rep.rcode), qname, dns.TypeToString[qtype])
				servFail = &res
			}
		}
	}
	if servFail != nil {
		return *servFail
	}
	res := result{reply: reply{kind: outcomeTimeout, rcode: -1}}
	res.detail = fmt.Sprintf("no answer from %s after %d tries", strings.Join(r.servers, ", "), r.attempts)
	if len(r.servers) > 1 {
		res.detail += " each"
	}
	if lastErr != nil && !isTimeout(lastErr) {
		res.detail += fmt.Sprintf(" (last error: %v)", lastErr)
	}
	return res
}

// try sends one query to one server over UDP, and again over TCP if the reply is truncated.
func (r *Resolver) try(ctx context.Context, server, qname string, qtype uint16) (reply, error) {
	rep, err := r.roundTrip(ctx, "udp", server, qname, qtype)
	if err != nil || !rep.truncated {
		return rep, err
	}
	r.log.Debug("dns reply truncated; retrying over tcp", "server", server, "name", qname, "type", dns.TypeToString[qtype])
	return r.roundTrip(ctx, "tcp", server, qname, qtype)
}

// roundTrip sends a fresh query (new random id, new socket) and reads until a reply that
// matches it arrives, the per-try timeout passes, or ctx ends. Replies that do not match are
// ignored and reading continues on the same socket, so a spoofed or stale datagram cannot
// make a lookup fail.
func (r *Resolver) roundTrip(ctx context.Context, network, server, qname string, qtype uint16) (reply, error) {
	q := question{id: dns.Id(), name: qname, qtype: qtype}
	m := new(dns.Msg)
	m.SetQuestion(qname, qtype)
	m.Id = q.id
	m.RecursionDesired = true
	m.SetEdns0(ednsSize, false)
	packed, err := m.Pack()
	if err != nil {
		return reply{}, fmt.Errorf("pack query: %w", err)
	}

	deadline := time.Now().Add(r.timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	dctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	conn, err := r.dialer.DialContext(dctx, network, server)
	if err != nil {
		return reply{}, err
	}
	defer conn.Close()
	if err := conn.SetDeadline(deadline); err != nil {
		return reply{}, err
	}
	// Wake a blocked read when the caller gives up.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	r.stats.queries.Add(1)
	if network == "tcp" {
		return readTCP(conn, packed, q)
	}
	return readUDP(conn, packed, q)
}

func readUDP(conn net.Conn, packed []byte, q question) (reply, error) {
	if _, err := conn.Write(packed); err != nil {
		return reply{}, err
	}
	buf := make([]byte, dns.MaxMsgSize)
	for {
		n, err := conn.Read(buf)
		if err != nil {
			return reply{}, err
		}
		rep, err := handleAnswer(buf[:n], q)
		if err == nil {
			return rep, nil
		}
	}
}

func readTCP(conn net.Conn, packed []byte, q question) (reply, error) {
	msg := make([]byte, 2+len(packed))
	binary.BigEndian.PutUint16(msg, uint16(len(packed)))
	copy(msg[2:], packed)
	if _, err := conn.Write(msg); err != nil {
		return reply{}, err
	}
	var hdr [2]byte
	buf := make([]byte, dns.MaxMsgSize)
	for {
		if _, err := io.ReadFull(conn, hdr[:]); err != nil {
			return reply{}, err
		}
		n := int(binary.BigEndian.Uint16(hdr[:]))
		if _, err := io.ReadFull(conn, buf[:n]); err != nil {
			return reply{}, err
		}
		rep, err := handleAnswer(buf[:n], q)
		if err == nil {
			rep.truncated = false // nothing larger to retry with
			return rep, nil
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func rcodeName(rcode int) string {
	if rcode < 0 {
		return ""
	}
	if s, ok := dns.RcodeToString[rcode]; ok {
		return s
	}
	return fmt.Sprintf("RCODE%d", rcode)
}
