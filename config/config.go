// Package config reads YAML configuration files strictly: unknown keys are
// errors that name the file and line, values are checked against their Go
// types, and command-line overrides (--set key.path=value) are applied
// before decoding, so precedence is defaults, then file, then flags.
package config

import (
	"bytes"
	"fmt"
	"os"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Load decodes a YAML file into out (which holds the defaults), after
// applying overrides of the form "a.b.c=value".
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
	for _, o := range overrides {
		if err := set(&doc, o); err != nil {
			return fmt.Errorf("config: --set %s: %w", o, err)
		}
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	if err := enc.Encode(&doc); err != nil {
		return fmt.Errorf("config: %s: %w", name, err)
	}
	// Decode the original text when nothing was overridden, so line
	// numbers in errors are the file's own.
	src := text
	if len(overrides) > 0 {
		src = buf.Bytes()
	}
	dec := yaml.NewDecoder(bytes.NewReader(src))
	dec.KnownFields(true)
	if err := dec.Decode(out); err != nil && err.Error() != "EOF" {
		msg := strings.TrimPrefix(err.Error(), "yaml: ")
		msg = strings.ReplaceAll(msg, "unmarshal errors:\n  ", "")
		if len(overrides) > 0 {
			msg += " (after applying --set overrides)"
		}
		return fmt.Errorf("config: %s: %s", name, msg)
	}
	return nil
}

// set applies "a.b.c=value" to a YAML document, creating mappings as needed.
func set(doc *yaml.Node, o string) error {
	key, val, ok := strings.Cut(o, "=")
	if !ok || key == "" {
		return fmt.Errorf("want key.path=value")
	}
	var v yaml.Node
	if err := yaml.Unmarshal([]byte(val), &v); err != nil {
		return fmt.Errorf("value %q: %w", val, err)
	}
	value := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Value: ""}
	if len(v.Content) > 0 {
		value = v.Content[0]
	}
	node := doc.Content[0]
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
				node.Content = append(node.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: p}, value)
			}
			return nil
		}
		if next == nil {
			next = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
			node.Content = append(node.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: p}, next)
		}
		node = next
	}
	return nil
}

// Marshal renders a configuration as YAML (the effective configuration
// stored with every checkpoint).
func Marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return buf.Bytes(), enc.Close()
}
