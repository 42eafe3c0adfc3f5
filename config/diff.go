package config

import (
	"fmt"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
)

// A Change is a key whose value differs between two configurations; a
// side that lacks the key shows as "(absent)".
type Change struct {
	Key, Old, New string
}

func (c Change) String() string { return fmt.Sprintf("%s: %s → %s", c.Key, c.Old, c.New) }

// Diff compares two YAML configurations key by key (mappings are walked,
// lists and scalars compared whole) and returns what changed, sorted by
// key, leaving out the keys skip accepts (nil: none).
func Diff(old, new []byte, skip func(key string) bool) ([]Change, error) {
	a, err := leaves(old)
	if err != nil {
		return nil, err
	}
	b, err := leaves(new)
	if err != nil {
		return nil, err
	}
	var out []Change
	for k, va := range a {
		if vb, ok := b[k]; !ok || va != vb {
			if !ok {
				vb = "(absent)"
			}
			out = append(out, Change{k, va, vb})
		}
	}
	for k, vb := range b {
		if _, ok := a[k]; !ok {
			out = append(out, Change{k, "(absent)", vb})
		}
	}
	if skip != nil {
		kept := out[:0]
		for _, c := range out {
			if !skip(c.Key) {
				kept = append(kept, c)
			}
		}
		out = kept
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

// leaves flattens a YAML document into key paths and their values written
// as compact YAML.
func leaves(text []byte) (map[string]string, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(text, &doc); err != nil {
		return nil, fmt.Errorf("config: %s", strings.TrimPrefix(err.Error(), "yaml: "))
	}
	out := map[string]string{}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return out, nil
	}
	var walk func(n *yaml.Node, path string) error
	walk = func(n *yaml.Node, path string) error {
		if n.Kind == yaml.MappingNode {
			for i := 0; i+1 < len(n.Content); i += 2 {
				if err := walk(n.Content[i+1], join(path, n.Content[i].Value)); err != nil {
					return err
				}
			}
			return nil
		}
		v, err := flow(n)
		if err != nil {
			return err
		}
		out[path] = v
		return nil
	}
	return out, walk(doc.Content[0], "")
}

// flow writes a node on one line.
func flow(n *yaml.Node) (string, error) {
	c := *n
	setFlow(&c)
	b, err := yaml.Marshal(&c)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

func setFlow(n *yaml.Node) {
	n.Style |= yaml.FlowStyle
	n.HeadComment, n.LineComment, n.FootComment = "", "", ""
	n.Content = append([]*yaml.Node(nil), n.Content...)
	for i, c := range n.Content {
		cc := *c
		setFlow(&cc)
		n.Content[i] = &cc
	}
}
