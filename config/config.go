// Package config reads YAML configuration files strictly. Every key is
// checked against the Go structure it fills before anything is decoded:
// an unknown key, or a value of the wrong type, is an error that names the
// key's full path (distill.train.micro_batch), where it came from (the
// file and line, or the --set override), what was expected, and the nearest
// known key. Command-line overrides (--set key.path=value) are applied to
// the parsed file, so precedence is defaults, then file, then flags.
// Validation that follows decoding reports its problems as an *Invalid,
// whose keys a caller can rename when the configuration is part of a larger
// one.
package config

import (
	"fmt"
	"os"
	"reflect"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Load decodes a YAML file into out (a pointer to a struct holding the
// defaults), after applying overrides of the form "a.b.c=value".
func Load(path string, out any, overrides []string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	return Decode(path, b, out, overrides)
}

// Decode is Load for YAML text; name is used in error messages.
func Decode(name string, text []byte, out any, overrides []string) error {
	var doc yaml.Node
	if err := yaml.Unmarshal(text, &doc); err != nil {
		return fmt.Errorf("config: %s: %s", name, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	if doc.Kind == 0 {
		doc = yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{{Kind: yaml.MappingNode, Tag: "!!map"}}}
	}
	root := doc.Content[0]
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" { // a file of comments only
		*root = yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	}
	c := &checker{name: name, origin: map[*yaml.Node]string{}}
	for _, o := range overrides {
		if err := c.set(root, o); err != nil {
			return fmt.Errorf("config: --set %s: %w", o, err)
		}
	}
	t := reflect.TypeOf(out)
	if t == nil || t.Kind() != reflect.Pointer {
		panic("config: Decode needs a pointer")
	}
	c.check(root, t.Elem(), "")
	if len(c.errs) > 0 {
		return fmt.Errorf("config: %s", strings.Join(c.errs, "\n  "))
	}
	if err := root.Decode(out); err != nil {
		// The check above accepts only what decodes; this is a bug.
		return fmt.Errorf("config: %s: %w", name, err)
	}
	return nil
}

var unmarshaler = reflect.TypeOf((*yaml.Unmarshaler)(nil)).Elem()

// checker walks a YAML tree against a Go type, collecting errors.
type checker struct {
	name   string
	origin map[*yaml.Node]string // nodes made by --set: the override
	errs   []string
}

// where names the source of a node: the file and line, or the override.
func (c *checker) where(n *yaml.Node) string {
	if o, ok := c.origin[n]; ok {
		return "--set " + o
	}
	return fmt.Sprintf("%s:%d", c.name, n.Line)
}

func (c *checker) fail(n *yaml.Node, path, format string, a ...any) {
	msg := fmt.Sprintf(format, a...)
	if path != "" {
		msg = path + ": " + msg
	}
	c.errs = append(c.errs, c.where(n)+": "+msg)
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// field is a struct field reachable by a YAML key (inline structs flattened).
type field struct {
	key string
	typ reflect.Type
}

func fields(t reflect.Type) []field {
	var out []field
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() && !f.Anonymous {
			continue
		}
		tag := f.Tag.Get("yaml")
		name, opts, _ := strings.Cut(tag, ",")
		if name == "-" {
			continue
		}
		if strings.Contains(","+opts+",", ",inline,") {
			out = append(out, fields(f.Type)...)
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		out = append(out, field{name, f.Type})
	}
	return out
}

// check reports what in n does not fit t; path is n's key path.
func (c *checker) check(n *yaml.Node, t reflect.Type, path string) {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return // leaves the default
	}
	if reflect.PointerTo(t).Implements(unmarshaler) {
		return // the type reads (and checks) its own YAML
	}
	switch t.Kind() {
	case reflect.Interface:
		return
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			c.fail(n, path, "want a mapping of keys (%s), got %s", keyList(fields(t)), describe(n))
			return
		}
		fs := fields(t)
		seen := map[string]bool{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Value == "<<" { // a YAML merge key: its mapping's keys count here
				c.check(v, t, path)
				continue
			}
			key := join(path, k.Value)
			if seen[k.Value] {
				c.fail(k, key, "given twice")
				continue
			}
			seen[k.Value] = true
			var ft reflect.Type
			for _, f := range fs {
				if f.key == k.Value {
					ft = f.typ
				}
			}
			if ft == nil {
				c.fail(k, key, "unknown key%s", suggest(k.Value, path, fs))
				continue
			}
			c.check(v, ft, key)
		}
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			c.fail(n, path, "want a mapping, got %s", describe(n))
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if err := k.Decode(reflect.New(t.Key()).Interface()); err != nil {
				c.fail(k, join(path, k.Value), "want a key that is %s", typeName(t.Key()))
				continue
			}
			c.check(v, t.Elem(), join(path, k.Value))
		}
	case reflect.Slice, reflect.Array:
		if n.Kind != yaml.SequenceNode {
			c.fail(n, path, "want %s, got %s", typeName(t), describe(n))
			return
		}
		if t.Kind() == reflect.Array && len(n.Content) != t.Len() {
			c.fail(n, path, "want %s, got %d values", typeName(t), len(n.Content))
			return
		}
		for i, e := range n.Content {
			c.check(e, t.Elem(), fmt.Sprintf("%s[%d]", path, i))
		}
	default:
		if n.Kind != yaml.ScalarNode {
			c.fail(n, path, "want %s, got %s", typeName(t), describe(n))
			return
		}
		if err := n.Decode(reflect.New(t).Interface()); err != nil {
			c.fail(n, path, "want %s, got %s", typeName(t), describe(n))
		}
	}
}

// typeName says what a Go type accepts, in YAML's words.
func typeName(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "an integer"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a non-negative integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	case reflect.Slice:
		return "a list of " + plural(typeName(t.Elem()))
	case reflect.Array:
		return fmt.Sprintf("a list of %d %s", t.Len(), plural(typeName(t.Elem())))
	case reflect.Map, reflect.Struct:
		return "a mapping"
	}
	return t.String()
}

func plural(s string) string {
	switch {
	case s == "true or false":
		return "booleans"
	case strings.HasPrefix(s, "an "):
		return s[3:] + "s"
	case strings.HasPrefix(s, "a "):
		s = s[2:]
		if strings.HasPrefix(s, "list ") {
			return "lists" + s[4:]
		}
		return s + "s"
	}
	return s
}

// describe shows a node the way the user wrote it.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	v := n.Value
	if len(v) > 40 {
		v = v[:37] + "..."
	}
	return fmt.Sprintf("%q", v)
}

func keyList(fs []field) string {
	var ks []string
	for _, f := range fs {
		ks = append(ks, f.key)
	}
	return strings.Join(ks, ", ")
}

// suggest offers the known key nearest to an unknown one: a near miss at
// this level, or the same key one or two levels down; else the known keys.
func suggest(key, path string, fs []field) string {
	best, bestD := "", 1<<30
	for _, f := range fs {
		if d := distance(strings.ToLower(key), f.key); d < bestD {
			best, bestD = f.key, d
		}
	}
	if bestD <= max(1, min(3, len(key)/4)) {
		return fmt.Sprintf("; did you mean %s?", join(path, best))
	}
	var deeper []string
	var walk func(fs []field, p string, depth int)
	walk = func(fs []field, p string, depth int) {
		for _, f := range fs {
			t := f.typ
			for t.Kind() == reflect.Pointer {
				t = t.Elem()
			}
			if t.Kind() != reflect.Struct {
				continue
			}
			sub := fields(t)
			for _, s := range sub {
				if s.key == key {
					deeper = append(deeper, join(join(p, f.key), s.key))
				}
			}
			if depth > 1 {
				walk(sub, join(p, f.key), depth-1)
			}
		}
	}
	walk(fs, path, 2)
	if len(deeper) > 0 {
		sort.Strings(deeper)
		return fmt.Sprintf("; did you mean %s?", strings.Join(deeper, " or "))
	}
	where := path
	if where == "" {
		where = "the top level"
	}
	return fmt.Sprintf(" (%s has: %s)", where, keyList(fs))
}

// distance is the optimal string alignment distance (Levenshtein with
// transpositions) between a and b.
func distance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	d := make([][]int, len(ra)+1)
	for i := range d {
		d[i] = make([]int, len(rb)+1)
		d[i][0] = i
	}
	for j := range rb {
		d[0][j+1] = j + 1
	}
	for i := 1; i <= len(ra); i++ {
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] || (ra[i-1] == '-' && rb[j-1] == '_') {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(ra)][len(rb)]
}

// set applies "a.b.c=value" to a YAML mapping, creating mappings as
// needed; the nodes it makes remember the override for error messages.
func (c *checker) set(root *yaml.Node, o string) error {
	key, val, ok := strings.Cut(o, "=")
	if !ok || key == "" {
		return fmt.Errorf("want key.path=value")
	}
	var v yaml.Node
	if err := yaml.Unmarshal([]byte(val), &v); err != nil {
		return fmt.Errorf("value %q: %s", val, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	value := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Value: ""}
	if len(v.Content) > 0 {
		value = v.Content[0]
	}
	c.mark(value, o)
	node := root
	parts := strings.Split(key, ".")
	for i, p := range parts {
		if node.Kind != yaml.MappingNode {
			return fmt.Errorf("%s is not a mapping", strings.Join(parts[:i], "."))
		}
		var next *yaml.Node
		for j := 0; j+1 < len(node.Content); j += 2 {
			if node.Content[j].Value == p {
				next = node.Content[j+1]
				if i == len(parts)-1 {
					node.Content[j+1] = value
				}
				break
			}
		}
		if i == len(parts)-1 {
			if next == nil {
				k := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: p}
				c.origin[k] = o
				node.Content = append(node.Content, k, value)
			}
			return nil
		}
		if next == nil {
			k := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: p}
			next = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
			c.origin[k], c.origin[next] = o, o
			node.Content = append(node.Content, k, next)
		}
		node = next
	}
	return nil
}

func (c *checker) mark(n *yaml.Node, o string) {
	c.origin[n] = o
	for _, x := range n.Content {
		c.mark(x, o)
	}
}

// Marshal renders a configuration as YAML (the effective configuration
// stored with every checkpoint).
func Marshal(v any) ([]byte, error) {
	var buf strings.Builder
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return []byte(buf.String()), nil
}
