package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// MaxFileSize bounds the config file. Real files are a few kilobytes; the bound
// keeps a wrong path (a log file, a device) from being read into memory.
const MaxFileSize = 1 << 20

// leaf is a setting that decodes itself from one YAML node and records where
// it came from.
type leaf interface {
	decode(n *yaml.Node, key string, p *problems)
}

// positioned is a list element that wants to know its own line and whether it
// had a problem.
type positioned interface {
	setPosition(line int)
	setBad()
}

// decodeFile turns the bytes of a config file into the on-disk type, reporting
// syntax errors, unknown and duplicate keys, wrong types, aliases and extra
// documents into p. Values are not judged here; see validate. ok is false
// when the file could not be read as settings at all, so that validating
// its (empty) result would only add noise.
func decodeFile(data []byte, p *problems) (fc *fileConfig, ok bool) {
	fc = &fileConfig{}
	return fc, decodeDocument(data, reflect.ValueOf(fc).Elem(), "relay_url: wss://...", p)
}

// decodeDocument decodes the one YAML document in data into struct v; see
// decodeFile. example is a setting as it would be written, for the message
// about a file that is not a mapping of settings.
func decodeDocument(data []byte, v reflect.Value, example string, p *problems) (ok bool) {
	if len(data) > MaxFileSize {
		p.add(origin{}, "file is larger than %d bytes; is this the right file?", MaxFileSize)
		return false
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if !errors.Is(err, io.EOF) {
			addSyntaxError(p, err, data)
			return false
		}
		return true // an empty file holds no settings; validate says what is missing
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case err == nil:
		p.add(lineOf(&extra), "a second YAML document starts here; a config file holds exactly one")
	case !errors.Is(err, io.EOF):
		addSyntaxError(p, err, data)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 {
		return true
	}
	root := doc.Content[0]
	switch {
	case isNull(root):
	case root.Kind != yaml.MappingNode:
		p.add(lineOf(root), "want a mapping of settings such as %q, got %s", example, describe(root))
		return false
	default:
		decodeStruct(root, v, "", p)
	}
	return true
}

// addSyntaxError reports a YAML parser error, moving its line (when the
// parser gave one) into the file:line position.
func addSyntaxError(p *problems, err error, data []byte) {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	o := origin{}
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if num, text, ok := strings.Cut(rest, ": "); ok {
			if line, err := strconv.Atoi(num); err == nil && line > 0 {
				o, msg = origin{line: line}, text
			}
		}
	}
	if name, ok := unknownAnchor(msg); ok && o.line == 0 {
		o.line = lineContaining(data, "*"+name)
	}
	// An unquoted wildcard host (host: *.corp.example) is YAML alias syntax;
	// the parser's complaint about it does not say so.
	if w := wildcardOnLine(data, o.line); w != "" {
		p.add(o, "YAML syntax: a value starting with * must be quoted, as in host: \"%s\"", w)
		return
	}
	p.add(o, "YAML syntax: %s", msg)
}

// wildcardOnLine returns the first word starting with "*." on the given
// 1-based line of data, or "".
func wildcardOnLine(data []byte, line int) string {
	if line <= 0 {
		return ""
	}
	lines := bytes.SplitN(data, []byte("\n"), line+1)
	if len(lines) < line {
		return ""
	}
	text := string(lines[line-1])
	i := strings.Index(text, "*.")
	if i < 0 {
		return ""
	}
	word, _, _ := strings.Cut(text[i:], " ")
	return shorten(strings.TrimRight(word, ",]}"))
}

// unknownAnchor extracts X from the parser's "unknown anchor 'X' referenced".
func unknownAnchor(msg string) (string, bool) {
	rest, ok := strings.CutPrefix(msg, "unknown anchor '")
	if !ok {
		return "", false
	}
	name, ok := strings.CutSuffix(rest, "' referenced")
	return name, ok
}

// lineContaining returns the 1-based line of the first occurrence of s in
// data, or 0.
func lineContaining(data []byte, s string) int {
	i := bytes.Index(data, []byte(s))
	if i < 0 {
		return 0
	}
	return bytes.Count(data[:i], []byte("\n")) + 1
}

// decodeStruct decodes mapping n into struct v, matching keys against v's yaml
// tags. prefix is the dotted path of n, empty at the top level.
func decodeStruct(n *yaml.Node, v reflect.Value, prefix string, p *problems) {
	names, index := yamlFields(v.Type())
	firstLine := make(map[string]int, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode || k.ShortTag() != "!!str" {
			p.add(lineOf(k), "%s: keys must be plain names, got %s", orTop(prefix), describe(k))
			continue
		}
		key := k.Value
		if line, dup := firstLine[key]; dup {
			p.add(lineOf(k), "duplicate key %q%s (first set at line %d)", key, in(prefix), line)
			continue
		}
		firstLine[key] = k.Line
		field, known := index[key]
		if !known {
			msg := fmt.Sprintf("unknown key %s%s", quote(key), in(prefix))
			if s := suggest(key, names); s != "" {
				msg += fmt.Sprintf("; did you mean %q?", s)
			}
			p.add(lineOf(k), "%s", msg)
			continue
		}
		full := key
		if prefix != "" {
			full = prefix + "." + key
		}
		decodeValue(val, v.Field(field), full, p)
	}
}

func decodeValue(n *yaml.Node, f reflect.Value, key string, p *problems) {
	if n.Kind == yaml.AliasNode {
		p.add(lineOf(n), "%s: YAML aliases (*%s) are not supported; write the value out", key, n.Value)
		return
	}
	if l, ok := f.Addr().Interface().(leaf); ok {
		l.decode(n, key, p)
		return
	}
	switch f.Kind() {
	case reflect.Struct:
		if expect(n, yaml.MappingNode, "", key, "a mapping", p) {
			decodeStruct(n, f, key, p)
		}
	case reflect.Slice:
		if !expect(n, yaml.SequenceNode, "", key, "a list", p) {
			return
		}
		f.Set(reflect.MakeSlice(f.Type(), len(n.Content), len(n.Content)))
		for i, item := range n.Content {
			elem := f.Index(i)
			pos, _ := elem.Addr().Interface().(positioned)
			if pos != nil {
				pos.setPosition(item.Line)
			}
			before := p.count()
			decodeValue(item, elem, fmt.Sprintf("%s[%d]", key, i), p)
			if pos != nil && p.count() > before {
				pos.setBad()
			}
		}
	default:
		decodePlain(n, f, key, p)
	}
}

// yamlFields lists the yaml keys of struct type t in declaration order and maps
// each to its field index.
func yamlFields(t reflect.Type) ([]string, map[string]int) {
	names := make([]string, 0, t.NumField())
	index := make(map[string]int, t.NumField())
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			continue
		}
		names = append(names, name)
		index[name] = i
	}
	return names, index
}

// suggest returns the known key nearest to key when it is close enough to be
// a likely typo (edit distance at most 2, or dashes for underscores), else the one known key that key
// is a word of (secret for secret_file, proxy for egress_proxy), else "".
func suggest(key string, known []string) string {
	if k := strings.ReplaceAll(key, "-", "_"); slices.Contains(known, k) {
		return k // a flag's name written as a key
	}
	best, bestDist := "", 3
	for _, k := range known {
		if d := editDistance(key, k); d < bestDist {
			best, bestDist = k, d
		}
	}
	if best != "" {
		return best
	}
	for _, k := range known {
		if slices.Contains(strings.Split(k, "_"), key) {
			if best != "" {
				return "" // a word of several keys says nothing
			}
			best = k
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b, counted in runes.
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	if len(ra) > 64 || len(rb) > 64 {
		return max(len(ra), len(rb)) // too long to be a typo of a key; skip the work
	}
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(rb)]
}

// expect reports whether n holds a value to decode: a node of kind (and of
// tag, unless tag is empty). An empty value holds nothing and is no problem,
// since a setting may be left blank; any other node is reported as not the
// want that key takes.
func expect(n *yaml.Node, kind yaml.Kind, tag, key, want string, p *problems) bool {
	if isNull(n) {
		return false
	}
	if n.Kind != kind || (tag != "" && n.ShortTag() != tag) {
		p.add(lineOf(n), "%s: want %s, got %s", key, want, describe(n))
		return false
	}
	return true
}

func lineOf(n *yaml.Node) origin { return origin{line: n.Line} }

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// in names the section a key sits in, for messages.
func in(prefix string) string {
	if prefix == "" {
		return ""
	}
	return " in " + prefix
}

func orTop(prefix string) string {
	if prefix == "" {
		return "top level"
	}
	return prefix
}

// describe says what a node is, for "want X, got Y" messages.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	}
	switch n.ShortTag() {
	case "!!null":
		return "an empty value"
	case "!!int", "!!float":
		return "the number " + shorten(n.Value)
	case "!!bool":
		return "the boolean " + n.Value
	case "!!str":
		return "the string " + quote(n.Value)
	default:
		return "a value tagged " + quote(n.ShortTag())
	}
}

// quote quotes s for a message, shortening it so that a pasted blob does not
// flood the output.
func quote(s string) string { return strconv.Quote(shorten(s)) }

func shorten(s string) string {
	const limit = 64
	if utf8.RuneCountInString(s) > limit {
		return string([]rune(s)[:limit]) + "..."
	}
	return s
}
