package dnstest

import (
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// maxChain bounds the CNAME hops a Zone follows, so a loop in a test's records ends.
const maxChain = 8

// Zone answers from a fixed set of records the way a recursive server does: the records of the
// asked type, with any CNAME chain from the asked name followed inside the zone and every hop
// put in the answer. A name with no records is NXDOMAIN; a name with records of other types
// only is NODATA (NOERROR, no answer). Both negative answers carry an SOA, because its
// MINIMUM is what an RFC 2308 resolver caches them by.
type Zone struct {
	records []dns.RR
	// SOAMinimum is the MINIMUM of that SOA (its own TTL is an hour). NewZone sets 300; a test
	// changes it before the zone serves.
	SOAMinimum uint32
}

// NewZone parses records in zone-file form ("jira.corp.example. 60 IN A 10.0.0.1") and fails
// the test on one that does not parse.
func NewZone(t testing.TB, records ...string) *Zone {
	t.Helper()
	z := &Zone{SOAMinimum: 300}
	for _, s := range records {
		rr, err := dns.NewRR(s)
		if err != nil || rr == nil {
			t.Fatalf("dnstest: record %q: %v", s, err)
		}
		z.records = append(z.records, rr)
	}
	return z
}

// Reply is the zone's Handler.
func (z *Zone) Reply(q Query, req *dns.Msg) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(req)
	answer, exists := z.lookup(q.Name, q.Type)
	m.Answer = answer
	if len(answer) == 0 {
		if !exists {
			m.Rcode = dns.RcodeNameError
		}
		m.Ns = []dns.RR{z.soa()}
	}
	return m
}

// lookup returns the qtype records of name and of every name its CNAME chain reaches, with
// the CNAMEs themselves, and whether name has any record at all.
func (z *Zone) lookup(name string, qtype uint16) (answer []dns.RR, exists bool) {
	for range maxChain {
		next := ""
		for _, rr := range z.records {
			h := rr.Header()
			if !strings.EqualFold(h.Name, name) {
				continue
			}
			exists = true
			switch {
			case h.Rrtype == qtype:
				answer = append(answer, rr)
			case h.Rrtype == dns.TypeCNAME:
				answer = append(answer, rr)
				next = strings.ToLower(rr.(*dns.CNAME).Target)
			}
		}
		if next == "" {
			break
		}
		name = next
	}
	return answer, exists
}

func (z *Zone) soa() dns.RR {
	return &dns.SOA{
		Hdr: dns.RR_Header{Name: "example.", Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: 3600},
		Ns:  "ns.example.", Mbox: "admin.example.", Serial: 1, Refresh: 60, Retry: 60, Expire: 600,
		Minttl: z.SOAMinimum,
	}
}
