package dnstest

import (
	"testing"

	"github.com/miekg/dns"
)

// Handler builds the reply to one question; q is the question as logged and req the request
// as received. A nil reply sends nothing, so the asker waits for its timeout.
type Handler func(q Query, req *dns.Msg) *dns.Msg

// RawHandler returns the datagrams (over TCP: the messages) to send for one question, in
// order. It exists for what no honest server sends, such as a forged reply with the wrong id
// or question, or bytes that are no DNS message, ahead of the real reply.
type RawHandler func(q Query, req *dns.Msg) [][]byte

// Pack returns m in wire form, for a RawHandler. A message that does not pack fails the test
// and yields nil, which the server does not send; it uses Errorf, not Fatal, because handlers
// run on the server's goroutines.
func Pack(t testing.TB, m *dns.Msg) []byte {
	t.Helper()
	b, err := m.Pack()
	if err != nil {
		t.Errorf("dnstest: pack %v: %v", m.Question, err)
		return nil
	}
	return b
}

// Drop never answers: a server that is up but silent, as a DNS timeout looks to the asker.
func Drop(Query, *dns.Msg) *dns.Msg { return nil }

// Rcode answers every question with rcode and no records.
func Rcode(rcode int) Handler {
	return func(_ Query, req *dns.Msg) *dns.Msg {
		m := new(dns.Msg)
		m.SetRcode(req, rcode)
		return m
	}
}

// TruncateUDP answers qtype questions over UDP with an empty reply marked truncated, as a
// server does when the answer does not fit a datagram, so the asker must retry over TCP;
// next answers everything else, including the retry.
func TruncateUDP(qtype uint16, next Handler) Handler {
	return func(q Query, req *dns.Msg) *dns.Msg {
		if q.Proto != "udp" || q.Type != qtype {
			return next(q, req)
		}
		m := new(dns.Msg)
		m.SetReply(req)
		m.Truncated = true
		return m
	}
}

// ByName sends the questions for a name in routes (any case, trailing dot optional) to that
// name's handler and all others to rest, so one server can fail some names in its own way
// and answer the rest from a zone.
func ByName(routes map[string]Handler, rest Handler) Handler {
	byName := make(map[string]Handler, len(routes))
	for name, h := range routes {
		byName[canonical(name)] = h
	}
	return func(q Query, req *dns.Msg) *dns.Msg {
		if h, ok := byName[q.Name]; ok {
			return h(q, req)
		}
		return rest(q, req)
	}
}
