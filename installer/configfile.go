package installer

import (
	"bytes"
	"fmt"
	"path/filepath"

	"go.yaml.in/yaml/v3"
)

// installedConfig returns the config file content to install at
// installDir. The copy must name the installed token file, and relative
// paths in it must keep meaning what they meant next to the source (srcDir).
// When the source already says all that, its bytes are kept verbatim;
// otherwise only those keys are rewritten (comments survive, layout may be
// normalised).
func installedConfig(data []byte, srcDir, installDir, tokenFile string) ([]byte, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, fmt.Errorf("config: the top level is not a mapping")
	}
	top := doc.Content[0]
	changed := false
	set := func(key, want string) {
		for i := 0; i+1 < len(top.Content); i += 2 {
			if top.Content[i].Value != key {
				continue
			}
			v := top.Content[i+1]
			if v.Kind == yaml.ScalarNode && v.Value == want {
				return
			}
			*v = yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: want, LineComment: v.LineComment}
			changed = true
			return
		}
		top.Content = append(top.Content,
			&yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: key},
			&yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: want})
		changed = true
	}

	if raw, ok := value(top, "token_file"); !ok || resolve(installDir, raw) != tokenFile {
		set("token_file", tokenFile)
	}
	if srcDir != installDir {
		for _, key := range []string{"ca_file", "audit_log"} {
			if raw, ok := value(top, key); ok && raw != "" && !filepath.IsAbs(raw) {
				set(key, filepath.Join(srcDir, raw))
			}
		}
	}
	if !changed {
		return data, nil
	}
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return b.Bytes(), nil
}

// value returns the scalar under key in a mapping node.
func value(m *yaml.Node, key string) (string, bool) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key && m.Content[i+1].Kind == yaml.ScalarNode {
			return m.Content[i+1].Value, true
		}
	}
	return "", false
}

func resolve(dir, p string) string {
	if filepath.IsAbs(p) {
		return filepath.Clean(p)
	}
	return filepath.Join(dir, p)
}
