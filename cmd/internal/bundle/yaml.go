package bundle

import (
	"bytes"
	"fmt"
	"net/url"
	"regexp"
	"strings"

	"go.yaml.in/yaml/v3"
)

// secretKey names config keys whose values are secrets themselves; keys
// that name a file holding one (token_file, secret_file) are paths, kept.
var secretKey = regexp.MustCompile(`(?i)(password|passwd|secret|token|api_?key|cluster_key|private_key)$`)

// RedactYAML returns a config file with every secret value replaced: the
// values of keys named like secrets, and the passwords in URLs (a
// database URL, an egress proxy). Comments and order stay.
func RedactYAML(data []byte) ([]byte, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	redactNode(&doc, false)
	var out bytes.Buffer
	enc := yaml.NewEncoder(&out)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return out.Bytes(), nil
}

func redactNode(n *yaml.Node, secret bool) {
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			redactNode(n.Content[i+1], secretKey.MatchString(n.Content[i].Value))
		}
	case yaml.DocumentNode, yaml.SequenceNode:
		for _, c := range n.Content {
			redactNode(c, secret)
		}
	case yaml.ScalarNode:
		switch {
		case secret:
			n.Value, n.Tag, n.Style = Redacted, "!!str", 0
		case strings.Contains(n.Value, "://"):
			n.Value = RedactURL(n.Value)
		}
	}
}

// RedactURL drops the password of a URL; what does not parse as one is
// replaced whole when it looks like it holds credentials.
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		if strings.Contains(raw, "@") {
			return Redacted
		}
		return raw
	}
	return u.Redacted()
}

// URLPassword is the password in a URL, or "".
func URLPassword(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return ""
	}
	p, _ := u.User.Password()
	return p
}
