package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// fileConfig is the on-disk format. It is decoded from a yaml.Node tree by
// decodeStruct, which matches keys against the yaml tags, so every field is
// either a leaf (a type with a decode method that records its origin), a
// struct (a nested mapping) or a slice of structs (a list of mappings).
// Fields are exported only because decodeStruct reaches them by reflection.
type fileConfig struct {
	RelayURL     stringOrList `yaml:"relay_url"`
	TokenFile    scalar       `yaml:"token_file"`
	Allow        []fileRule   `yaml:"allow"`
	Deny         []fileRule   `yaml:"deny"`
	Blocked      blockedList  `yaml:"blocked"`
	Mode         scalar       `yaml:"mode"`
	DNS          fileDNS      `yaml:"dns"`
	EgressProxy  scalar       `yaml:"egress_proxy"`
	CAFile       scalar       `yaml:"ca_file"`
	Tunnels      integer      `yaml:"tunnels"`
	StatusListen scalar       `yaml:"status_listen"`
	AuditLog     scalar       `yaml:"audit_log"`
	AgentID      scalar       `yaml:"agent_id"`
	LogLevel     scalar       `yaml:"log_level"`
}

type fileDNS struct {
	Servers stringList `yaml:"servers"`
	Timeout duration   `yaml:"timeout"`
}

// fileRule is one entry of allow or deny. Exactly which of host, ip and cidr
// must be set, and what ports mean, is the allowlist package's business.
type fileRule struct {
	Host  scalar   `yaml:"host"`
	IP    scalar   `yaml:"ip"`
	CIDR  scalar   `yaml:"cidr"`
	Ports portList `yaml:"ports"`

	line int  // line of the rule's mapping
	bad  bool // the rule had a problem already; do not report it twice
}

func (r *fileRule) setPosition(line int) { r.line = line }
func (r *fileRule) setBad()              { r.bad = true }

// setting is a single value of the file and where it came from: scalar is
// a string, integer an integer, duration a Go duration string such as "2s"
// or "500ms" (a bare number is refused because its unit would be a guess).
type setting[T settingValue] struct {
	value T
	set   bool
	from  origin
}

// settingValue is what a setting may hold.
type settingValue interface{ string | int | time.Duration }

type (
	scalar   = setting[string]
	integer  = setting[int]
	duration = setting[time.Duration]
)

func (s *setting[T]) decode(n *yaml.Node, key string, p *problems) {
	s.from = lineOf(n)
	tag, want := "!!str", "a string"
	switch any(s.value).(type) {
	case int:
		tag, want = "!!int", "an integer"
	case time.Duration:
		want = `a duration such as "2s" or "500ms"`
	}
	if !expect(n, yaml.ScalarNode, tag, key, want, p) {
		return
	}
	if err := convert(n, &s.value); err != nil {
		p.add(s.from, "%s: %v", key, err)
		return
	}
	s.set = true
}

// convert stores the value of scalar node n, already checked to carry the
// right tag, into dst.
func convert(n *yaml.Node, dst any) error {
	switch v := dst.(type) {
	case *string:
		*v = n.Value
	case *int:
		if err := n.Decode(v); err != nil {
			return fmt.Errorf("%s is not a usable integer", n.Value)
		}
	case *time.Duration:
		d, err := time.ParseDuration(n.Value)
		if err != nil {
			return fmt.Errorf("%s is not a duration; write it like \"2s\" or \"500ms\"", quote(n.Value))
		}
		*v = d
	}
	return nil
}

// stringList is a list of strings, each with its own origin.
type stringList struct {
	items []scalar
	set   bool
	bad   bool // not a list, or an item is not a string; already reported
	from  origin
}

func (l *stringList) decode(n *yaml.Node, key string, p *problems) {
	l.from = lineOf(n)
	before := p.count()
	if expect(n, yaml.SequenceNode, "", key, "a list of strings", p) {
		l.set = true
		l.items = make([]scalar, 0, len(n.Content))
		for i, item := range n.Content {
			var s scalar
			s.decode(item, fmt.Sprintf("%s[%d]", key, i), p)
			if s.set {
				l.items = append(l.items, s)
			}
		}
	}
	l.bad = p.count() > before
}

// stringOrList is a stringList that also accepts a single string.
type stringOrList struct{ stringList }

func (l *stringOrList) decode(n *yaml.Node, key string, p *problems) {
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!str" {
		s := scalar{value: n.Value, set: true, from: lineOf(n)}
		l.items, l.set, l.from = []scalar{s}, true, s.from
		return
	}
	if n.Kind == yaml.SequenceNode || isNull(n) {
		l.stringList.decode(n, key, p)
		return
	}
	l.from, l.bad = lineOf(n), true
	p.add(l.from, "%s: want a string or a list of strings, got %s", key, describe(n))
}

// portList is a rule's ports: numbers (443) or strings ("443", "8000-8100").
// Whether each is a valid port or range is checked by the allowlist package;
// here only the YAML types are.
type portList struct {
	values []string
	set    bool
	from   origin
}

func (l *portList) decode(n *yaml.Node, key string, p *problems) {
	l.from = lineOf(n)
	if !expect(n, yaml.SequenceNode, "", key, `a list of ports such as [443, "8000-8100"]`, p) {
		return
	}
	l.set = true
	l.values = make([]string, 0, len(n.Content))
	for i, item := range n.Content {
		ikey := fmt.Sprintf("%s[%d]", key, i)
		switch {
		case item.Kind == yaml.ScalarNode && item.ShortTag() == "!!int":
			var v int64
			if err := item.Decode(&v); err != nil {
				p.add(lineOf(item), "%s: %s is not a port", ikey, item.Value)
				continue
			}
			l.values = append(l.values, strconv.FormatInt(v, 10))
		case item.Kind == yaml.ScalarNode && item.ShortTag() == "!!str":
			if lo, hi, ok := colonRange(item.Value); ok {
				p.add(lineOf(item), "%s: %s is not a port range; write \"%s-%s\" (with a dash, in quotes)", ikey, quote(item.Value), lo, hi)
				continue
			}
			l.values = append(l.values, item.Value)
		default:
			p.add(lineOf(item), "%s: want a port number or a range such as \"8000-8100\", got %s", ikey, describe(item))
		}
	}
}

// blockedList is the blocked setting: IP addresses and CIDR blocks as
// strings, each kept with its line and its index in the file's list so a
// problem found later by the allowlist names the entry as written. Whether
// each is a valid address or block is the allowlist package's business.
type blockedList struct {
	entries []blockedEntry
	from    origin
}

type blockedEntry struct {
	value string
	index int
	from  origin
}

func (l *blockedList) decode(n *yaml.Node, key string, p *problems) {
	l.from = lineOf(n)
	if !expect(n, yaml.SequenceNode, "", key, `a list of IP addresses and CIDR blocks such as ["10.9.0.0/16", "192.0.2.7"]`, p) {
		return
	}
	l.entries = make([]blockedEntry, 0, len(n.Content))
	for i, item := range n.Content {
		if item.Kind != yaml.ScalarNode || item.ShortTag() != "!!str" {
			p.add(lineOf(item), "%s[%d]: want an IP address or CIDR block such as \"10.9.0.0/16\", got %s", key, i, describe(item))
			continue
		}
		l.entries = append(l.entries, blockedEntry{value: item.Value, index: i, from: lineOf(item)})
	}
}

// colonRange recognises a port range written with a colon, as in 9000:9001
// (which YAML reads as a string, or in YAML 1.1 as a base-60 number).
func colonRange(s string) (lo, hi string, ok bool) {
	lo, hi, ok = strings.Cut(s, ":")
	if !ok || !allDigits(lo) || !allDigits(hi) {
		return "", "", false
	}
	return lo, hi, true
}

func allDigits(s string) bool {
	if s == "" || len(s) > 5 {
		return false
	}
	for i := range len(s) {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
