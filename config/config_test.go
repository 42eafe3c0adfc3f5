package config

import (
	"strings"
	"testing"
)

type inner struct {
	LR    float64 `yaml:"lr"`
	Steps int     `yaml:"steps"`
}

type outer struct {
	Name  string   `yaml:"name"`
	Opt   inner    `yaml:"optimizer"`
	Files []string `yaml:"files"`
}

func TestDecode(t *testing.T) {
	c := outer{Name: "default", Opt: inner{LR: 1, Steps: 5}}
	err := Decode("x.yaml", []byte("name: run\noptimizer:\n  lr: 0.5\n"), &c, []string{"optimizer.steps=7", "files=[a, b]"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Name != "run" || c.Opt.LR != 0.5 || c.Opt.Steps != 7 || len(c.Files) != 2 {
		t.Fatalf("%+v", c)
	}
}

func TestErrors(t *testing.T) {
	cases := []struct {
		text      string
		overrides []string
		want      string
	}{
		{"name: a\noptimizer:\n  lr: 1\n  bogus: 2\n", nil, "x.yaml: line 4: field bogus not found"},
		{"optimizer:\n  lr: fast\n", nil, "line 2"},
		{"name: [unclosed\n", nil, "x.yaml"},
		{"name: a\n", []string{"optimizer.nope=1"}, "field nope not found"},
		{"name: a\n", []string{"novalue"}, "key.path=value"},
		{"name: a\n", []string{"name.sub=1"}, "not a mapping"},
	}
	for _, c := range cases {
		var o outer
		err := Decode("x.yaml", []byte(c.text), &o, c.overrides)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q %v: error %v, want %q", c.text, c.overrides, err, c.want)
		}
	}
}
