package dnstest

import (
	"strings"

	"github.com/miekg/dns"
)

// Query is one question as the server received it.
type Query struct {
	Name  string // lower-case FQDN
	Type  uint16 // dns.TypeA, dns.TypeAAAA, ...
	Proto string // "udp" or "tcp"
	// Seen counts the questions for the same name and type that came before this one, over
	// either protocol, so a handler can answer the first question differently from the next.
	Seen int
}

// String is "name TYPE proto", the form test tables write ("jira.corp.example. A udp").
func (q Query) String() string {
	return q.Name + " " + dns.TypeToString[q.Type] + " " + q.Proto
}

// Queries is a log of questions in the order they arrived.
type Queries []Query

// For keeps the questions for name (any case, trailing dot optional) and qtype. An empty name
// or a zero qtype matches every name or type.
func (qs Queries) For(name string, qtype uint16) Queries {
	name = canonical(name)
	var out Queries
	for _, q := range qs {
		if (name == "" || q.Name == name) && (qtype == 0 || q.Type == qtype) {
			out = append(out, q)
		}
	}
	return out
}

// Over keeps the questions that came over proto, "udp" or "tcp".
func (qs Queries) Over(proto string) Queries {
	var out Queries
	for _, q := range qs {
		if q.Proto == proto {
			out = append(out, q)
		}
	}
	return out
}

// Strings returns each question's String, or nil when there are none.
func (qs Queries) Strings() []string {
	var out []string
	for _, q := range qs {
		out = append(out, q.String())
	}
	return out
}

// canonical is the form names are logged and matched in: lower case, fully qualified. The
// empty name stays empty, so it can mean "any name".
func canonical(name string) string {
	if name == "" {
		return ""
	}
	return dns.Fqdn(strings.ToLower(name))
}
