package config

import (
	"fmt"
	"math"
	"reflect"
	"time"

	"go.yaml.in/yaml/v3"
)

// DecodeStrict reads the YAML settings file data, named name in messages,
// into the struct v points to, with the same strictness and the same
// messages as an agent config: an unknown key names its line and the known
// key it most likely meant, a duplicate key names both lines, a value of the
// wrong type says what the key wants, and a syntax error keeps its line.
// Keys absent from the file leave their fields as they were, so v may hold
// defaults. Fields may be strings, integers, float64s, bools,
// time.Durations (written like "30s"), structs, and slices of these.
//
// The relay's config file is read with it, so that both binaries report
// config errors alike. The error joins every problem found; each is an
// *Error and matches ErrInvalid.
func DecodeStrict(name string, data []byte, v any) error {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.Elem().Kind() != reflect.Struct {
		panic(fmt.Sprintf("config.DecodeStrict: want a pointer to a struct, got %T", v))
	}
	p := &problems{file: name}
	example := "key: value"
	if names, _ := yamlFields(rv.Elem().Type()); len(names) > 0 {
		example = names[0] + ": ..."
	}
	decodeDocument(data, rv.Elem(), example, p)
	return p.err()
}

// decodePlain decodes scalar node n into f, a field of a basic kind.
func decodePlain(n *yaml.Node, f reflect.Value, key string, p *problems) {
	switch {
	case f.Type() == reflect.TypeFor[time.Duration]():
		var d duration
		d.decode(n, key, p)
		if d.set {
			f.SetInt(int64(d.value))
		}
	case f.Kind() == reflect.String:
		var s scalar
		s.decode(n, key, p)
		if s.set {
			f.SetString(s.value)
		}
	case f.Kind() == reflect.Int:
		var i integer
		i.decode(n, key, p)
		if i.set {
			f.SetInt(int64(i.value))
		}
	case f.Kind() == reflect.Float64:
		decodeFloat(n, f, key, p)
	case f.Kind() == reflect.Bool:
		if !expect(n, yaml.ScalarNode, "!!bool", key, "true or false", p) {
			return
		}
		var b bool
		if err := n.Decode(&b); err != nil {
			p.add(lineOf(n), "%s: %s is not true or false", key, quote(n.Value))
			return
		}
		f.SetBool(b)
	default:
		// Only reachable by adding a field of a new kind to a settings type.
		panic(fmt.Sprintf("config: no decoder for %s (%s)", key, f.Type()))
	}
}

// decodeFloat takes an integer or a decimal number; infinities and NaN
// (which YAML can spell) are refused, since no setting means them.
func decodeFloat(n *yaml.Node, f reflect.Value, key string, p *problems) {
	if isNull(n) {
		return
	}
	if n.Kind != yaml.ScalarNode || (n.ShortTag() != "!!int" && n.ShortTag() != "!!float") {
		p.add(lineOf(n), "%s: want a number, got %s", key, describe(n))
		return
	}
	var x float64
	if err := n.Decode(&x); err != nil || math.IsInf(x, 0) || math.IsNaN(x) {
		p.add(lineOf(n), "%s: %s is not a usable number", key, quote(n.Value))
		return
	}
	f.SetFloat(x)
}
