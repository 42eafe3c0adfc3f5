package config

import (
	"strings"
	"testing"
)

type inner struct {
	LR    float64 `yaml:"lr"`
	Steps int     `yaml:"steps"`
}

type loop struct {
	MicroBatch int `yaml:"micro_batch"`
	Steps      int `yaml:"steps"`
}

type stage struct {
	Train loop `yaml:"train"`
}

type base struct {
	Seed uint64 `yaml:"seed"`
}

type outer struct {
	base    `yaml:",inline"`
	Name    string            `yaml:"name"`
	Opt     inner             `yaml:"optimizer"`
	Files   []string          `yaml:"files"`
	Pair    [2]int            `yaml:"pair"`
	Distill stage             `yaml:"distill"`
	Tags    map[string]string `yaml:"tags"`
	On      bool              `yaml:"on"`
}

func TestDecode(t *testing.T) {
	c := outer{Name: "default", Opt: inner{LR: 1, Steps: 5}}
	err := Decode("x.yaml", []byte("name: run\nseed: 3\noptimizer:\n  lr: 0.5\npair: [1, 2]\n"), &c,
		[]string{"optimizer.steps=7", "files=[a, b]", "distill.train.micro_batch=4", "tags.x=y"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Name != "run" || c.Seed != 3 || c.Opt.LR != 0.5 || c.Opt.Steps != 7 || len(c.Files) != 2 || c.Pair != [2]int{1, 2} ||
		c.Distill.Train.MicroBatch != 4 || c.Tags["x"] != "y" {
		t.Fatalf("%+v", c)
	}
	// An empty file and a file of comments keep the defaults.
	for _, text := range []string{"", "# nothing\n"} {
		d := outer{Name: "default"}
		if err := Decode("x.yaml", []byte(text), &d, nil); err != nil || d.Name != "default" {
			t.Fatalf("%q: %+v %v", text, d, err)
		}
	}
}

func TestErrors(t *testing.T) {
	cases := []struct {
		text      string
		overrides []string
		want      string
	}{
		// Unknown keys: the full path, the line, the nearest key.
		{"name: a\noptimizer:\n  lr: 1\n  bogus: 2\n", nil, "x.yaml:4: optimizer.bogus: unknown key (optimizer has: lr, steps)"},
		{"distill:\n  train:\n    micro_bacth: 4\n", nil, "x.yaml:3: distill.train.micro_bacth: unknown key; did you mean distill.train.micro_batch?"},
		{"distill:\n  train:\n    micro-batch: 4\n", nil, "did you mean distill.train.micro_batch?"},
		{"distill:\n  steps: 4\n", nil, "x.yaml:2: distill.steps: unknown key; did you mean distill.train.steps?"},
		{"nmae: x\n", nil, "x.yaml:1: nmae: unknown key; did you mean name?"},
		{"seeds: 1\n", nil, "did you mean seed?"},
		// Wrong types: the path, the expected type, the value.
		{"optimizer:\n  lr: fast\n", nil, `x.yaml:2: optimizer.lr: want a number, got "fast"`},
		{"distill:\n  train:\n    steps: four hundred\n", nil, `x.yaml:3: distill.train.steps: want an integer, got "four hundred"`},
		{"seed: -1\n", nil, `seed: want a non-negative integer, got "-1"`},
		{"files: a\n", nil, `files: want a list of strings, got "a"`},
		{"pair: [1]\n", nil, "pair: want a list of 2 integers, got 1 values"},
		{"optimizer: 3\n", nil, `optimizer: want a mapping of keys (lr, steps), got "3"`},
		{"on: maybe\n", nil, `on: want true or false, got "maybe"`},
		{"name: a\nname: b\n", nil, "x.yaml:2: name: given twice"},
		{"name: [unclosed\n", nil, "x.yaml"},
		// Overrides: the override at fault, not a line of the file.
		{"name: a\n", []string{"optimizer.nope=1"}, "--set optimizer.nope=1: optimizer.nope: unknown key"},
		{"name: a\noptimizer:\n  lr: 1\n", []string{"optimizer.lr=fast"}, `--set optimizer.lr=fast: optimizer.lr: want a number, got "fast"`},
		{"name: a\n", []string{"novalue"}, "key.path=value"},
		{"name: a\n", []string{"name.sub=1"}, "not a mapping"},
		{"name: a\n", []string{"files=[a"}, "--set files=[a: value"},
	}
	for _, c := range cases {
		t.Run(c.want, func(t *testing.T) {
			var o outer
			err := Decode("x.yaml", []byte(c.text), &o, c.overrides)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("%q %v: error %v, want %q", c.text, c.overrides, err, c.want)
			}
		})
	}
	// Every problem is reported, not only the first.
	var o outer
	err := Decode("x.yaml", []byte("nmae: x\noptimizer:\n  lr: fast\n"), &o, nil)
	if err == nil || !strings.Contains(err.Error(), "nmae") || !strings.Contains(err.Error(), "optimizer.lr") {
		t.Fatalf("error %v, want both problems", err)
	}
}

func TestInvalid(t *testing.T) {
	e := &Invalid{Prefix: "train"}
	if e.Err() != nil {
		t.Fatal("no problem is not an error")
	}
	e.Addf("{train.steps} %d must be positive (or give {train.tokens})", -5)
	e.Addf("{data.path} %q does not exist", "/x/{y}")
	if got, want := e.Error(), "train: invalid configuration:\n  train.steps -5 must be positive (or give train.tokens)\n  data.path \"/x/{y}\" does not exist"; got != want {
		t.Fatalf("%q, want %q", got, want)
	}
	got := e.Problems(func(k string) string { return "distill." + k })
	if got[0] != "distill.train.steps -5 must be positive (or give distill.train.tokens)" || got[1] != `distill.data.path "/x/{y}" does not exist` {
		t.Fatalf("renamed: %q", got)
	}
}

func TestDistance(t *testing.T) {
	for _, c := range []struct {
		a, b string
		d    int
	}{{"", "", 0}, {"abc", "abc", 0}, {"micro_bacth", "micro_batch", 1}, {"kitten", "sitting", 3}, {"", "ab", 2}, {"lr", "min_lr", 4}} {
		if got := distance(c.a, c.b); got != c.d {
			t.Errorf("distance(%q, %q) = %d, want %d", c.a, c.b, got, c.d)
		}
	}
}

func TestDiff(t *testing.T) {
	old := []byte("kd:\n  temperature: 1\n  reverse: false\ntrain:\n  steps: 50\n  lr: 1e-3\ndata:\n  datasets:\n    - {path: a, weight: 1}\nteacher:\n  model: t1\n")
	now := []byte("kd:\n  temperature: 3\n  reverse: false\ntrain:\n  steps: 100\n  lr: 1e-3\ndata:\n  datasets:\n    - {path: b, weight: 1}\nextra: [1, 2]\n")
	got, err := Diff(old, now, func(k string) bool { return k == "train.steps" })
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, c := range got {
		lines = append(lines, c.String())
	}
	want := "data.datasets: [{path: a, weight: 1}] → [{path: b, weight: 1}]|extra: (absent) → [1, 2]|kd.temperature: 1 → 3|teacher.model: t1 → (absent)"
	if strings.Join(lines, "|") != want {
		t.Fatalf("diff:\n%s\nwant\n%s", strings.Join(lines, "|"), want)
	}
	if same, err := Diff(old, old, nil); err != nil || len(same) != 0 {
		t.Fatalf("no change: %v %v", same, err)
	}
}
