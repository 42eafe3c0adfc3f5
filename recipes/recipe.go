// Package recipes runs the whole Minitron pipeline from one YAML file:
// prepare data, score importance on calibration data, prune the teacher,
// distill the student, evaluate and export it. Each stage records a
// checksum of its inputs next to its outputs, so rerunning a recipe skips
// finished stages and resumes an interrupted one.
package recipes

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/minitron/minitron/config"
	"github.com/minitron/minitron/distill"
	"github.com/minitron/minitron/eval"
	"github.com/minitron/minitron/model"
	"github.com/minitron/minitron/train"
)

// Stages returns the names of the stages, in the order they run.
func Stages() []string { return []string{"data", "importance", "prune", "distill", "eval", "export"} }

// Recipe is a pipeline description.
type Recipe struct {
	Name string `yaml:"name"`
	// Out is the run directory (default runs/NAME, relative to the
	// working directory).
	Out       string `yaml:"out"`
	Teacher   string `yaml:"teacher"`
	Tokenizer string `yaml:"tokenizer"` // default: the teacher's directory
	Device    string `yaml:"device"`

	Data        DataStage        `yaml:"data"`
	Calibration CalibrationStage `yaml:"calibration"`
	Importance  ImportanceStage  `yaml:"importance"`
	Prune       PruneStage       `yaml:"prune"`
	Distill     DistillStage     `yaml:"distill"`
	Eval        EvalStage        `yaml:"eval"`
	Export      ExportStage      `yaml:"export"`

	dir string // the recipe file's directory: relative paths start there
}

// Dataset is one dataset of the blend: already prepared (Path) or prepared
// by the data stage from Inputs.
type Dataset struct {
	Name       string   `yaml:"name"`
	Path       string   `yaml:"path"`
	Inputs     []string `yaml:"inputs"`
	Include    []string `yaml:"include"`
	TextField  string   `yaml:"text_field"`
	SplitLines bool     `yaml:"split_lines"`
	Weight     float64  `yaml:"weight"`
}

// DataStage prepares the datasets.
type DataStage struct {
	Datasets    []Dataset `yaml:"datasets"`
	SeqLen      int       `yaml:"seq_len"`
	ValFraction float64   `yaml:"val_fraction"`
	Seed        uint64    `yaml:"seed"`
}

// CalibrationStage draws the importance calibration sample.
type CalibrationStage struct {
	Dataset string `yaml:"dataset"` // name of a dataset (default: the first)
	Samples int    `yaml:"samples"`
	SeqLen  int    `yaml:"seq_len"`
	Seed    uint64 `yaml:"seed"`
}

// ImportanceStage configures scoring.
type ImportanceStage struct {
	SeqAgg     string `yaml:"seq_agg"`
	BatchAgg   string `yaml:"batch_agg"`
	NeuronSite string `yaml:"neuron_site"`
	Depth      bool   `yaml:"depth"`
	BatchSize  int    `yaml:"batch_size"`
}

// PruneStage sets the student's shape.
type PruneStage struct {
	HiddenSize        int    `yaml:"hidden_size"`
	NumAttentionHeads int    `yaml:"num_attention_heads"`
	IntermediateSize  int    `yaml:"intermediate_size"`
	NumLayers         int    `yaml:"num_layers"`
	DropLayers        []int  `yaml:"drop_layers"`
	DepthMetric       string `yaml:"depth_metric"`
	Divisor           int    `yaml:"divisor"`
}

// DistillStage is the retraining: the train loop's settings plus the loss.
type DistillStage struct {
	Train      train.LoopConfig       `yaml:"train"`
	Optimizer  train.OptimizerConfig  `yaml:"optimizer"`
	Eval       train.EvalConfig       `yaml:"eval"`
	Checkpoint train.CheckpointConfig `yaml:"checkpoint"`
	KD         distill.KD             `yaml:"kd"`
}

// Sample is one generation shown at the end.
type Sample struct {
	Prompt       string  `yaml:"prompt"`
	MaxNewTokens int     `yaml:"max_new_tokens"`
	Temperature  float64 `yaml:"temperature"`
	TopK         int     `yaml:"top_k"`
	Seed         uint64  `yaml:"seed"`
}

// EvalStage measures teacher, pruned and distilled models: their
// cross-entropy on the held-out sequences the distillation validates on
// (distill.eval.batches micro-batches of distill.train.micro_batch), so
// the student's compares with the distillation's val_ce; the benchmarks
// in Tasks; and samples from the student.
type EvalStage struct {
	Samples []Sample `yaml:"samples"`
	// Tasks are benchmarks scored on every model, as lm-evaluation-harness
	// scores them (see minitron eval --help).
	Tasks []EvalTask `yaml:"tasks"`
	// BOS begins every context with the tokenizer's BOS token.
	BOS bool `yaml:"bos"`
	// HumanEval's sampling, when a task is humaneval.
	HumanEval HumanEvalStage `yaml:"humaneval"`
}

// EvalTask is one benchmark and its data.
type EvalTask struct {
	Name string `yaml:"name"` // mmlu, hellaswag, winogrande, arc_challenge, arc_easy, humaneval
	Path string `yaml:"path"` // a folder of the hub's Parquet (or JSON lines) files, or one file
	// NumFewshot overrides the papers' shots (MMLU 5, HellaSwag 10,
	// Winogrande 5, ARC-Challenge 25).
	NumFewshot *int `yaml:"num_fewshot"`
	Limit      int  `yaml:"limit"` // first N documents (0: all)
}

// HumanEvalStage is HumanEval's sampling: the papers' n = 20 samples at
// temperature 0.2 and top-p 0.95 by default.
type HumanEvalStage struct {
	Samples      int     `yaml:"samples"`
	Temperature  float64 `yaml:"temperature"`
	TopP         float64 `yaml:"top_p"`
	Seed         uint64  `yaml:"seed"`
	MaxNewTokens int     `yaml:"max_new_tokens"`
}

// ExportStage writes the student for serving stacks.
type ExportStage struct {
	Formats   []string `yaml:"formats"`    // hf, gguf
	DType     string   `yaml:"dtype"`      // hf: bf16, f16, f32
	GGUFDType string   `yaml:"gguf_dtype"` // gguf: f32, f16, bf16, q8_0
}

// Default is a recipe's defaults.
func Default() Recipe {
	t := train.Default()
	return Recipe{
		Device:      "cpu",
		Data:        DataStage{SeqLen: 4096, ValFraction: 0.005, Seed: 1234},
		Calibration: CalibrationStage{Samples: 1024, Seed: 0},
		Importance:  ImportanceStage{SeqAgg: "mean", BatchAgg: "l2", NeuronSite: "post", Depth: true},
		Prune:       PruneStage{DepthMetric: "bi", Divisor: 1},
		Distill:     DistillStage{Train: t.Train, Optimizer: t.Optimizer, Eval: t.Eval, Checkpoint: t.Checkpoint, KD: distill.KD{Temperature: 1}},
		Eval:        EvalStage{HumanEval: HumanEvalStage{Samples: 20, Temperature: 0.2, TopP: 0.95, Seed: 1234, MaxNewTokens: 1024}},
		Export:      ExportStage{Formats: []string{"hf"}, DType: "bf16", GGUFDType: "f16"},
	}
}

// Load reads a recipe with --set overrides and checks it.
func Load(path string, overrides []string) (*Recipe, error) {
	r := Default()
	if err := config.Load(path, &r, overrides); err != nil {
		return nil, err
	}
	r.dir = filepath.Dir(path)
	if r.Name == "" {
		r.Name = strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
	}
	if r.Out == "" {
		r.Out = filepath.Join("runs", r.Name)
	}
	if r.Calibration.SeqLen == 0 {
		r.Calibration.SeqLen = r.Data.SeqLen
	}
	if r.Tokenizer == "" {
		r.Tokenizer = r.Teacher
	}
	return &r, nil
}

// path resolves a recipe path: environment variables expanded, relative
// paths taken from the recipe file's directory.
func (r *Recipe) path(p string) string {
	p = os.ExpandEnv(p)
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(r.dir, p)
}

// unsetVars returns the first environment variable p refers to that is not
// set, or "".
func unsetVars(p string) string {
	missing := ""
	os.Expand(p, func(k string) string {
		if _, ok := os.LookupEnv(k); !ok && missing == "" {
			missing = k
		}
		return ""
	})
	return missing
}

// StageIndex returns the position of a stage name.
func StageIndex(name string) (int, error) {
	for i, s := range Stages() {
		if s == name {
			return i, nil
		}
	}
	return 0, fmt.Errorf("recipes: unknown stage %q (stages: %s)", name, strings.Join(Stages(), ", "))
}

// Validate checks everything that can be checked before heavy work: the
// teacher and tokenizer load, inputs exist, the prune targets fit the
// teacher, and the training settings are sound.
func (r *Recipe) Validate() error {
	var errs []string
	add := func(f string, a ...any) { errs = append(errs, fmt.Sprintf(f, a...)) }
	if r.Teacher == "" {
		add("teacher: no teacher model directory (set teacher: to the Hugging Face directory of the model to prune and distill from)")
	} else if _, err := os.Stat(filepath.Join(r.path(r.Teacher), "config.json")); err != nil {
		add("teacher: %s is not a model directory (no config.json): %v", r.path(r.Teacher), err)
	}
	var tcfg *model.Config
	if len(errs) == 0 {
		var err error
		if tcfg, err = model.LoadConfig(filepath.Join(r.path(r.Teacher), "config.json")); err != nil {
			add("teacher: %v", err)
		}
	}
	if len(r.Data.Datasets) == 0 {
		add("data.datasets: no datasets")
	}
	names := map[string]bool{}
	for i, d := range r.Data.Datasets {
		if d.Name == "" {
			add("data.datasets[%d]: no name", i)
		}
		if names[d.Name] {
			add("data.datasets[%d]: name %q used twice", i, d.Name)
		}
		names[d.Name] = true
		if (d.Path == "") == (len(d.Inputs) == 0) {
			add("data.datasets[%d] (%s): give path (a prepared dataset) or inputs (files to prepare), not both", i, d.Name)
		}
		if d.Weight <= 0 {
			add("data.datasets[%d] (%s): weight %v must be positive", i, d.Name, d.Weight)
		}
		if d.Path != "" {
			if _, err := os.Stat(filepath.Join(r.path(d.Path), "manifest.json")); err != nil {
				add("data.datasets[%d] (%s): %s is not a prepared dataset", i, d.Name, r.path(d.Path))
			}
		}
		for _, in := range d.Inputs {
			if v := unsetVars(in); v != "" {
				add("data.datasets[%d] (%s): input %s uses $%s, which is not set in the environment", i, d.Name, in, v)
				continue
			}
			if _, err := os.Stat(r.path(in)); err != nil {
				add("data.datasets[%d] (%s): input %v", i, d.Name, err)
			}
		}
	}
	if c := r.Calibration.Dataset; c != "" && !names[c] {
		add("calibration.dataset %q is not one of the datasets", c)
	}
	if r.Calibration.Samples < 1 || r.Calibration.SeqLen < 2 {
		add("calibration: samples must be >= 1 and seq_len >= 2")
	}
	if r.Data.SeqLen < 1 {
		add("data.seq_len must be positive")
	}
	if tcfg != nil {
		p := r.Prune
		check := func(name string, v, src int) {
			if v < 0 || v > src {
				add("prune.%s %d must be in [0, %d] (0 keeps the teacher's %d)", name, v, src, src)
			}
		}
		check("hidden_size", p.HiddenSize, tcfg.HiddenSize)
		check("num_attention_heads", p.NumAttentionHeads, tcfg.NumHeads)
		check("intermediate_size", p.IntermediateSize, tcfg.IntermediateSize)
		check("num_layers", p.NumLayers, tcfg.NumLayers)
		if p.NumAttentionHeads%tcfg.NumKVHeads != 0 {
			add("prune.num_attention_heads %d is not a multiple of the teacher's %d KV groups", p.NumAttentionHeads, tcfg.NumKVHeads)
		}
		if p.Divisor > 0 && p.HiddenSize%p.Divisor != 0 {
			add("prune.hidden_size %d is not a multiple of prune.divisor %d", p.HiddenSize, p.Divisor)
		}
		for _, l := range p.DropLayers {
			if l < 0 || l >= tcfg.NumLayers {
				add("prune.drop_layers: the teacher has no layer %d", l)
			}
		}
	}
	// The distillation stage's own checks, in the recipe's keys. The
	// teacher and the datasets were checked above.
	dc := r.distillConfig("student", []train.Dataset{{Path: "data", Weight: 1}})
	dc.Teacher = distill.Teacher{Model: "teacher"}
	var inv *config.Invalid
	if err := dc.Validate(); errors.As(err, &inv) {
		errs = append(errs, inv.Problems(recipeKey)...)
	} else if err != nil {
		add("%v", err)
	}
	for i, t := range r.Eval.Tasks {
		if _, ok := eval.LookupTask(t.Name); !ok {
			add("eval.tasks[%d]: unknown task %q (tasks: %s)", i, t.Name, strings.Join(eval.TaskNames(), ", "))
		}
		if _, err := os.Stat(r.path(t.Path)); t.Path == "" || err != nil {
			add("eval.tasks[%d] (%s): no data at %q: give the folder of its hub files, or one file", i, t.Name, r.path(t.Path))
		}
	}
	for _, f := range r.Export.Formats {
		if f != "hf" && f != "gguf" {
			add("export.formats: %q is not supported (supported: hf, gguf)", f)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("recipes: invalid recipe:\n  %s", strings.Join(errs, "\n  "))
	}
	return nil
}

// recipeKey names a key of the distillation configuration as the recipe
// spells it: its loop, optimizer, eval, checkpoint and kd settings are under
// distill, its data settings under data, its device and teacher at the top.
func recipeKey(key string) string {
	switch head, _, _ := strings.Cut(key, "."); head {
	case "train", "optimizer", "eval", "checkpoint", "kd":
		return "distill." + key
	case "teacher":
		return "teacher"
	case "model":
		return "the pruned student (" + key + ", the prune stage's output)"
	}
	return key
}

// distillConfig is the distillation run of the recipe.
func (r *Recipe) distillConfig(student string, datasets []train.Dataset) *distill.Config {
	c := distill.Default()
	c.Model = train.ModelConfig{Checkpoint: student, Tokenizer: r.path(r.Tokenizer)}
	c.Data = train.DataConfig{Datasets: datasets, SeqLen: r.Data.SeqLen, ValFraction: r.Data.ValFraction, Seed: r.Data.Seed, Shuffle: true}
	c.Train, c.Optimizer, c.Eval, c.Checkpoint = r.Distill.Train, r.Distill.Optimizer, r.Distill.Eval, r.Distill.Checkpoint
	c.Device = r.Device
	c.Teacher = distill.Teacher{Model: r.path(r.Teacher)}
	c.KD = r.Distill.KD
	return &c
}
