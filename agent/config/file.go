package config

import (
	"fmt"
	"strconv"
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

// scalar is a string setting and where it came from.
type scalar struct {
	value string
	set   bool
	from  origin
}

func (s *scalar) decode(n *yaml.Node, key string, p *problems) {
	s.from = lineOf(n)
	if isNull(n) {
		return
	}
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!str" {
		p.add(s.from, "%s: want a string, got %s", key, describe(n))
		return
	}
	s.value, s.set = n.Value, true
}

// integer is an integer setting and where it came from.
type integer struct {
	value int
	set   bool
	from  origin
}

func (i *integer) decode(n *yaml.Node, key string, p *problems) {
	i.from = lineOf(n)
	if isNull(n) {
		return
	}
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" {
		p.add(i.from, "%s: want an integer, got %s", key, describe(n))
		return
	}
	if err := n.Decode(&i.value); err != nil {
		p.add(i.from, "%s: %s is not a usable integer", key, n.Value)
		return
	}
	i.set = true
}

// duration is a Go duration string such as "2s" or "500ms". A bare number is
// refused because its unit would be a guess.
type duration struct {
	value time.Duration
	set   bool
	from  origin
}

func (d *duration) decode(n *yaml.Node, key string, p *problems) {
	d.from = lineOf(n)
	if isNull(n) {
		return
	}
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!str" {
		p.add(d.from, "%s: want a duration such as \"2s\" or \"500ms\", got %s", key, describe(n))
		return
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		p.add(d.from, "%s: %s is not a duration; write it like \"2s\" or \"500ms\"", key, quote(n.Value))
		return
	}
	d.value, d.set = v, true
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
	if isNull(n) {
		return
	}
	if n.Kind != yaml.SequenceNode {
		p.add(l.from, "%s: want a list of strings, got %s", key, describe(n))
		l.bad = true
		return
	}
	l.set = true
	l.items = make([]scalar, 0, len(n.Content))
	before := p.count()
	for i, item := range n.Content {
		var s scalar
		s.decode(item, fmt.Sprintf("%s[%d]", key, i), p)
		if s.set {
			l.items = append(l.items, s)
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
	if isNull(n) {
		return
	}
	if n.Kind != yaml.SequenceNode {
		p.add(l.from, "%s: want a list of ports such as [443, \"8000-8100\"], got %s", key, describe(n))
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
			l.values = append(l.values, item.Value)
		default:
			p.add(lineOf(item), "%s: want a port number or a range such as \"8000-8100\", got %s", ikey, describe(item))
		}
	}
}
