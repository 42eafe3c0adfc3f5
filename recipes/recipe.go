// Package recipes runs the whole Minitron pipeline from one YAML file:
// prepare data, optionally correct the teacher on that data, then for each
// step score importance on calibration data, prune the step's source model
// and distill the student from the step's teacher, and finally evaluate
// and export the last student. Steps chain: a step's source can be an
// earlier step's student (15B → 8B → 4B, each distilled from the 15B).
// Each stage records a checksum of its inputs next to its outputs, so
// rerunning a recipe skips finished stages and resumes an interrupted one.
package recipes

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/minitron/minitron/config"
	"github.com/minitron/minitron/distill"
	"github.com/minitron/minitron/eval"
	"github.com/minitron/minitron/model"
	"github.com/minitron/minitron/train"
)

// Stage kinds, in pipeline order.
const (
	KindData              = "data"
	KindTeacherCorrection = "teacher-correction"
	KindImportance        = "importance"
	KindPrune             = "prune"
	KindDistill           = "distill"
	KindEval              = "eval"
	KindExport            = "export"
)

// Stages returns the stage kinds in order. A recipe's stages are these,
// the teacher correction only when enabled and importance, prune and
// distill once per step (named STEP/KIND when the recipe has named steps).
func Stages() []string {
	return []string{KindData, KindTeacherCorrection, KindImportance, KindPrune, KindDistill, KindEval, KindExport}
}

// Model references in a step's source and teacher.
const (
	// RefTeacher is the recipe's teacher, after teacher correction when
	// the recipe enables it.
	RefTeacher = "teacher"
	// RefOriginalTeacher is the recipe's teacher as given, even when it
	// is corrected.
	RefOriginalTeacher = "original-teacher"
)

// Recipe is a pipeline description.
type Recipe struct {
	Name string `yaml:"name"`
	// Out is the run directory (default runs/NAME, relative to the
	// working directory).
	Out string `yaml:"out"`
	// Teacher is the model directory distillation learns from, and what
	// the first step prunes unless its source says otherwise.
	Teacher string `yaml:"teacher"`
	// TeacherArch describes the teacher for --plan, which reads no file:
	// a known architecture (see KnownArchs) or its shape.
	TeacherArch Arch   `yaml:"teacher_arch"`
	Tokenizer   string `yaml:"tokenizer"` // default: the teacher's directory
	Device      string `yaml:"device"`

	Data              DataStage              `yaml:"data"`
	TeacherCorrection TeacherCorrectionStage `yaml:"teacher_correction"`
	// Calibration, Importance, Prune and Distill are the settings of every
	// step; a step overrides any of their keys.
	Calibration CalibrationStage `yaml:"calibration"`
	Importance  ImportanceStage  `yaml:"importance"`
	Prune       PruneStage       `yaml:"prune"`
	Distill     DistillStage     `yaml:"distill"`
	// Steps are the prune-and-distill steps in order, a mapping from step
	// name to its settings. Without steps the recipe has one unnamed step
	// made of the sections above.
	Steps  Steps       `yaml:"steps"`
	Eval   EvalStage   `yaml:"eval"`
	Export ExportStage `yaml:"export"`

	dir string // the recipe file's directory: relative paths start there
}

// Step is one prune-and-distill step: score and prune Source to the step's
// shape, then distill the result from Teacher.
type Step struct {
	// Name is the step's key under steps ("" for the implicit step of a
	// recipe without steps).
	Name string `yaml:"-"`
	// Source is the model pruned: "teacher" (the default of the first
	// step), "original-teacher", an earlier step's name (its distilled
	// student; the default of later steps) or a model directory.
	Source string `yaml:"source"`
	// Teacher is the model distilled from: "teacher" (the default),
	// "original-teacher", an earlier step's name or a model directory.
	Teacher     string           `yaml:"teacher"`
	Calibration CalibrationStage `yaml:"calibration"`
	Importance  ImportanceStage  `yaml:"importance"`
	Prune       PruneStage       `yaml:"prune"`
	Distill     DistillStage     `yaml:"distill"`

	node *yaml.Node // the step's own keys, applied over the recipe's
}

// Steps is the ordered steps mapping of a recipe.
type Steps []Step

// UnmarshalYAML keeps each step's keys, in file order, to be applied over
// the recipe-wide settings once those are known (Load).
func (s *Steps) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.MappingNode {
		return fmt.Errorf("line %d: steps must be a mapping from step name to its settings", n.Line)
	}
	*s = nil
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if err := checkStepName(k.Value); err != nil {
			return fmt.Errorf("line %d: %w", k.Line, err)
		}
		if v.Kind != yaml.MappingNode && !(v.Kind == yaml.ScalarNode && v.Tag == "!!null") {
			return fmt.Errorf("line %d: steps.%s must be a mapping of settings", v.Line, k.Value)
		}
		if err := checkKeys(v, reflect.TypeOf(Step{}), "steps."+k.Value); err != nil {
			return err
		}
		if v.Kind != yaml.MappingNode {
			v = nil // a step of the recipe-wide settings alone
		}
		*s = append(*s, Step{Name: k.Value, node: v})
	}
	return nil
}

func checkStepName(n string) error {
	if n == "" || n == RefTeacher || n == RefOriginalTeacher || n == "data" || n == "eval" || n == "export" || n == KindTeacherCorrection {
		return fmt.Errorf("step name %q is reserved", n)
	}
	for _, c := range n {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("step name %q: use letters, digits, '-', '_' and '.'", n)
		}
	}
	return nil
}

// checkKeys reports a mapping key of n that no field of t (a struct type,
// through pointers, slices and maps) takes, as a strict decoder would:
// values inside steps are decoded in two passes, the second over defaults.
func checkKeys(n *yaml.Node, t reflect.Type, path string) error {
	for n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if reflect.PointerTo(t).Implements(reflect.TypeOf((*yaml.Unmarshaler)(nil)).Elem()) {
		return nil
	}
	switch {
	case t.Kind() == reflect.Struct && n.Kind == yaml.MappingNode:
		fields := map[string]reflect.Type{}
		var collect func(t reflect.Type)
		collect = func(t reflect.Type) {
			for i := range t.NumField() {
				f := t.Field(i)
				name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
				switch {
				case name == "-" || !f.IsExported():
				case strings.Contains(opts, "inline"):
					collect(f.Type)
				case name == "":
					fields[strings.ToLower(f.Name)] = f.Type
				default:
					fields[name] = f.Type
				}
			}
		}
		collect(t)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			ft, ok := fields[k.Value]
			if !ok {
				return fmt.Errorf("line %d: field %s not found in %s", k.Line, k.Value, path)
			}
			if err := checkKeys(n.Content[i+1], ft, path+"."+k.Value); err != nil {
				return err
			}
		}
	case (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) && n.Kind == yaml.SequenceNode:
		for i, c := range n.Content {
			if err := checkKeys(c, t.Elem(), fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
	case t.Kind() == reflect.Map && n.Kind == yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			if err := checkKeys(n.Content[i+1], t.Elem(), path+"."+n.Content[i].Value); err != nil {
				return err
			}
		}
	}
	return nil
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

// TeacherCorrectionStage fine-tunes the teacher on the distillation data
// before it is pruned and distilled from (Sreenivas et al. 2024,
// arXiv:2408.11796: without the original pretraining data the teacher
// first adapts to the new distribution). Next-token cross-entropy, the
// train loop's settings.
type TeacherCorrectionStage struct {
	Enabled bool `yaml:"enabled"`
	// PretrainLR is the teacher's original peak learning rate; with
	// optimizer.lr 0 the correction runs at LRFraction of it.
	PretrainLR float64 `yaml:"pretrain_lr"`
	// LRFraction is the share of PretrainLR used (the paper: 1/5).
	LRFraction float64                `yaml:"lr_fraction"`
	Train      train.LoopConfig       `yaml:"train"`
	Optimizer  train.OptimizerConfig  `yaml:"optimizer"`
	Eval       train.EvalConfig       `yaml:"eval"`
	Checkpoint train.CheckpointConfig `yaml:"checkpoint"`
}

// CorrectionTokens is the teacher correction's default length: about 100B
// tokens (arXiv:2408.11796).
const CorrectionTokens = 100e9

// LR is the peak learning rate the correction runs at.
func (t TeacherCorrectionStage) LR() float64 {
	if t.Optimizer.LR > 0 {
		return t.Optimizer.LR
	}
	return t.PretrainLR * t.LRFraction
}

// CalibrationStage draws the importance calibration sample from the
// training split of a dataset (never from its validation sequences).
type CalibrationStage struct {
	Dataset string `yaml:"dataset"` // name of a dataset (default: the first)
	Samples int    `yaml:"samples"`
	SeqLen  int    `yaml:"seq_len"` // at most data.seq_len (default: equal)
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
	HiddenSize        int `yaml:"hidden_size"`
	NumAttentionHeads int `yaml:"num_attention_heads"`
	IntermediateSize  int `yaml:"intermediate_size"`
	NumLayers         int `yaml:"num_layers"`
	// DropLayers drops these source layers (0-based) instead.
	DropLayers []int `yaml:"drop_layers"`
	// DepthMetric ranks layers for num_layers: bi, loss (single layers)
	// or block-bi (one contiguous block, 2408.11796 §2).
	DepthMetric string `yaml:"depth_metric"`
	Divisor     int    `yaml:"divisor"`
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
	tc := TeacherCorrectionStage{LRFraction: 0.2, Train: t.Train, Optimizer: t.Optimizer, Eval: t.Eval, Checkpoint: t.Checkpoint}
	// 2408.11796: 1/5 of the original peak learning rate with 120 warmup
	// steps (the rate follows from pretrain_lr); the length defaults to
	// CorrectionTokens when neither steps nor tokens are given.
	tc.Optimizer.LR, tc.Optimizer.MinLR, tc.Optimizer.Warmup = 0, 0, 120
	return Recipe{
		Device:            "cpu",
		Data:              DataStage{SeqLen: 4096, ValFraction: 0.005, Seed: 1234},
		TeacherCorrection: tc,
		Calibration:       CalibrationStage{Samples: 1024, Seed: 0},
		Importance:        ImportanceStage{SeqAgg: "mean", BatchAgg: "l2", NeuronSite: "post", Depth: true},
		Prune:             PruneStage{DepthMetric: "bi", Divisor: 1},
		Distill:           DistillStage{Train: t.Train, Optimizer: t.Optimizer, Eval: t.Eval, Checkpoint: t.Checkpoint, KD: distill.KD{Temperature: 1}},
		Eval:              EvalStage{HumanEval: HumanEvalStage{Samples: 20, Temperature: 0.2, TopP: 0.95, Seed: 1234, MaxNewTokens: 1024}},
		Export:            ExportStage{Formats: []string{"hf"}, DType: "bf16", GGUFDType: "f16"},
	}
}

// Load reads a recipe with --set overrides. It reads no other file.
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
	if r.Tokenizer == "" {
		r.Tokenizer = r.Teacher
	}
	if len(r.Steps) == 0 {
		r.Steps = Steps{{}}
	}
	for i := range r.Steps {
		st := &r.Steps[i]
		node := st.node
		*st = Step{Name: st.Name, Calibration: r.Calibration, Importance: r.Importance, Prune: r.Prune, Distill: r.Distill}
		// Decoding over a copy keeps the keys the step leaves out; slices
		// the step sets replace the recipe's.
		st.Prune.DropLayers = append([]int(nil), r.Prune.DropLayers...)
		if node != nil {
			if err := node.Decode(st); err != nil {
				return nil, fmt.Errorf("config: %s: steps.%s: %s", path, st.Name, strings.TrimPrefix(err.Error(), "yaml: "))
			}
		}
		if st.Source == "" {
			st.Source = RefTeacher
			if i > 0 {
				st.Source = r.Steps[i-1].Name
			}
		}
		if st.Teacher == "" {
			st.Teacher = RefTeacher
		}
		if st.Calibration.SeqLen == 0 {
			st.Calibration.SeqLen = r.Data.SeqLen
		}
	}
	if r.Calibration.SeqLen == 0 {
		r.Calibration.SeqLen = r.Data.SeqLen
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

// ref is a resolved model reference.
type ref struct {
	kind string // RefTeacher, RefOriginalTeacher, "step" or "dir"
	step int    // for "step"
	dir  string // for "dir": the resolved path
}

// resolve reads a model reference of step i: a keyword, an earlier step's
// name, or a directory.
func (r *Recipe) resolve(s string, i int) (ref, error) {
	switch s {
	case RefTeacher, RefOriginalTeacher:
		return ref{kind: s}, nil
	}
	for j, st := range r.Steps {
		if st.Name != "" && st.Name == s {
			if j >= i {
				return ref{}, fmt.Errorf("%q is step %d, not an earlier one; a step can only use the students of the steps before it", s, j+1)
			}
			return ref{kind: "step", step: j}, nil
		}
	}
	if s == "" {
		return ref{}, fmt.Errorf("no model given")
	}
	return ref{kind: "dir", dir: r.path(s)}, nil
}

// stage is one stage of a recipe.
type stage struct {
	name, kind string
	step       int // for importance, prune and distill; -1 otherwise
}

// stages lists the recipe's stages in order.
func (r *Recipe) stages() []stage {
	ss := []stage{{KindData, KindData, -1}}
	if r.TeacherCorrection.Enabled {
		ss = append(ss, stage{KindTeacherCorrection, KindTeacherCorrection, -1})
	}
	for i, st := range r.Steps {
		for _, k := range []string{KindImportance, KindPrune, KindDistill} {
			name := k
			if st.Name != "" {
				name = st.Name + "/" + k
			}
			ss = append(ss, stage{name, k, i})
		}
	}
	return append(ss, stage{KindEval, KindEval, -1}, stage{KindExport, KindExport, -1})
}

// StageNames lists the recipe's stages in order: data, teacher-correction
// (when enabled), importance/prune/distill per step (STEP/importance etc.
// when the steps are named), eval, export.
func (r *Recipe) StageNames() []string {
	var s []string
	for _, st := range r.stages() {
		s = append(s, st.name)
	}
	return s
}

// StageIndex returns the position of a stage, by name or, when only one
// stage has it, by kind.
func (r *Recipe) StageIndex(name string) (int, error) {
	ss := r.stages()
	var byKind []int
	for i, s := range ss {
		if s.name == name {
			return i, nil
		}
		if s.kind == name {
			byKind = append(byKind, i)
		}
	}
	if len(byKind) == 1 {
		return byKind[0], nil
	}
	if len(byKind) > 1 {
		var names []string
		for _, i := range byKind {
			names = append(names, ss[i].name)
		}
		return 0, fmt.Errorf("recipes: %d stages are %s stages; name one: %s", len(byKind), name, strings.Join(names, ", "))
	}
	return 0, fmt.Errorf("recipes: unknown stage %q (stages: %s)", name, strings.Join(r.StageNames(), ", "))
}

// stepDir is where step i's stages write.
func (r *Recipe) stepDir(i int) string {
	if r.Steps[i].Name == "" {
		return r.Out
	}
	return filepath.Join(r.Out, r.Steps[i].Name)
}

func (r *Recipe) scoresPath(i int) string {
	return filepath.Join(r.stepDir(i), "importance", "scores.safetensors")
}
func (r *Recipe) prunedDir(i int) string  { return filepath.Join(r.stepDir(i), "pruned") }
func (r *Recipe) distillDir(i int) string { return filepath.Join(r.stepDir(i), "distill") }

// studentDir is step i's distilled student.
func (r *Recipe) studentDir(i int) string { return filepath.Join(r.distillDir(i), train.FinalDir) }

func (r *Recipe) correctionDir() string { return filepath.Join(r.Out, KindTeacherCorrection) }

// FinalStudent is the last step's distilled student.
func (r *Recipe) FinalStudent() string { return r.studentDir(len(r.Steps) - 1) }

// dirOf is the directory a reference names.
func (r *Recipe) dirOf(x ref) string {
	switch x.kind {
	case RefTeacher:
		if r.TeacherCorrection.Enabled {
			return filepath.Join(r.correctionDir(), train.FinalDir)
		}
		return r.path(r.Teacher)
	case RefOriginalTeacher:
		return r.path(r.Teacher)
	case "step":
		return r.studentDir(x.step)
	}
	return x.dir
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

// Validate checks everything that can be checked before heavy work: the
// teacher and tokenizer exist, inputs exist, every step's source and
// teacher resolve, the prune targets fit each step's source, and the
// training settings are sound.
func (r *Recipe) Validate() error {
	var errs []string
	add := func(f string, a ...any) { errs = append(errs, fmt.Sprintf(f, a...)) }
	var tcfg *model.Config
	if r.Teacher == "" {
		add("teacher: no teacher model directory (set teacher: to the Hugging Face directory of the model to prune and distill from)")
	} else if _, err := os.Stat(filepath.Join(r.path(r.Teacher), "config.json")); err != nil {
		add("teacher: %s is not a model directory (no config.json): %v", r.path(r.Teacher), err)
	} else if tcfg, err = model.LoadConfig(filepath.Join(r.path(r.Teacher), "config.json")); err != nil {
		add("teacher: %v", err)
	}
	if acfg, err := r.TeacherArch.Config(); err != nil {
		add("%v", err)
	} else if acfg != nil && tcfg != nil {
		a, t := fullShape(acfg), fullShape(tcfg)
		a.cfg, t.cfg = nil, nil
		if a != t || acfg.VocabSize != tcfg.VocabSize || acfg.Arch != tcfg.Arch {
			add("teacher_arch (%s, hidden %d, %d heads, MLP %d, %d layers, vocab %d) is not the teacher's shape (%s, hidden %d, %d heads, MLP %d, %d layers, vocab %d); fix or remove it",
				acfg.Architecture, a.hidden, a.heads, a.ffn, a.L, acfg.VocabSize, tcfg.Architecture, t.hidden, t.heads, t.ffn, t.L, tcfg.VocabSize)
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
	if r.Data.SeqLen < 1 {
		add("data.seq_len must be positive")
	}
	if tc := r.TeacherCorrection; tc.Enabled {
		if !(tc.LR() > 0) {
			add("teacher_correction: set pretrain_lr (the teacher's original peak learning rate; the correction runs at lr_fraction %v of it) or optimizer.lr", tc.LRFraction)
		} else if err := r.correctionConfig([]train.Dataset{{Path: "data", Weight: 1}}).Validate(); err != nil {
			add("teacher_correction: %v", err)
		}
	}
	// Shapes flow from the teacher through the steps.
	shapes := make([]*model.Config, len(r.Steps))
	for i, st := range r.Steps {
		where := "step"
		if st.Name != "" {
			where = "steps." + st.Name
		}
		c := st.Calibration
		if c.Dataset != "" && !names[c.Dataset] {
			add("%s: calibration.dataset %q is not one of the datasets", where, c.Dataset)
		}
		if c.Samples < 1 || c.SeqLen < 2 {
			add("%s: calibration: samples must be >= 1 and seq_len >= 2", where)
		}
		if c.SeqLen > r.Data.SeqLen {
			add("%s: calibration.seq_len %d is longer than data.seq_len %d (calibration sequences are cut from training sequences)", where, c.SeqLen, r.Data.SeqLen)
		}
		var src *model.Config
		if x, err := r.resolve(st.Source, i); err != nil {
			add("%s: source: %v", where, err)
		} else {
			switch x.kind {
			case "step":
				src = shapes[x.step]
			case "dir":
				if cfg, err := model.LoadConfig(filepath.Join(x.dir, "config.json")); err != nil {
					add("%s: source %s: %v", where, x.dir, err)
				} else {
					src = cfg
				}
			default:
				src = tcfg
			}
		}
		if x, err := r.resolve(st.Teacher, i); err != nil {
			add("%s: teacher: %v", where, err)
		} else if x.kind == "dir" {
			if _, err := os.Stat(filepath.Join(x.dir, "config.json")); err != nil {
				add("%s: teacher %s is not a model directory (no config.json)", where, x.dir)
			}
		}
		if src != nil {
			tgt, perr := targetShape(src, st.Prune)
			for _, e := range perr {
				add("%s: %s", where, e)
			}
			shapes[i] = tgt
		}
		// The distillation's own checks, in the recipe's keys.
		dc := r.distillConfig(i, "student", []train.Dataset{{Path: "data", Weight: 1}})
		dc.Teacher = distill.Teacher{Model: "teacher"}
		var inv *config.Invalid
		if err := dc.Validate(); errors.As(err, &inv) {
			for _, p := range inv.Problems(recipeKey) {
				add("%s: %s", where, p)
			}
		} else if err != nil {
			add("%s: %v", where, err)
		}
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

// targetShape applies prune targets to a source shape, listing what does
// not fit. Zero targets keep the source's size.
func targetShape(src *model.Config, p PruneStage) (*model.Config, []string) {
	var errs []string
	t := *src
	set := func(name string, v int, dst *int) {
		switch {
		case v == 0:
		case v < 0 || v > *dst:
			errs = append(errs, fmt.Sprintf("prune.%s %d must be in [0, %d] (0 keeps the source's %d)", name, v, *dst, *dst))
		default:
			*dst = v
		}
	}
	set("hidden_size", p.HiddenSize, &t.HiddenSize)
	set("num_attention_heads", p.NumAttentionHeads, &t.NumHeads)
	set("intermediate_size", p.IntermediateSize, &t.IntermediateSize)
	if p.NumAttentionHeads%src.NumKVHeads != 0 {
		errs = append(errs, fmt.Sprintf("prune.num_attention_heads %d is not a multiple of the source's %d KV groups", p.NumAttentionHeads, src.NumKVHeads))
	}
	if p.Divisor > 0 && t.HiddenSize%p.Divisor != 0 {
		errs = append(errs, fmt.Sprintf("prune.hidden_size %d is not a multiple of prune.divisor %d", t.HiddenSize, p.Divisor))
	}
	drop := map[int]bool{}
	for _, l := range p.DropLayers {
		if l < 0 || l >= src.NumLayers {
			errs = append(errs, fmt.Sprintf("prune.drop_layers: the source has no layer %d (layers 0..%d)", l, src.NumLayers-1))
		}
		drop[l] = true
	}
	switch {
	case p.NumLayers != 0 && len(p.DropLayers) > 0:
		errs = append(errs, "prune: give num_layers or drop_layers, not both")
	case p.NumLayers < 0 || p.NumLayers > src.NumLayers:
		errs = append(errs, fmt.Sprintf("prune.num_layers %d must be in [0, %d] (0 keeps the source's %d)", p.NumLayers, src.NumLayers, src.NumLayers))
	case p.NumLayers > 0:
		t.NumLayers = p.NumLayers
	default:
		t.NumLayers -= len(drop)
	}
	switch p.DepthMetric {
	case "", "bi", "loss", "block-bi":
	default:
		errs = append(errs, fmt.Sprintf("prune.depth_metric %q: use bi, loss or block-bi", p.DepthMetric))
	}
	return &t, errs
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

// correctionKey names a key of the teacher correction's configuration as
// the recipe spells it.
func correctionKey(key string) string {
	switch head, _, _ := strings.Cut(key, "."); head {
	case "train", "optimizer", "eval", "checkpoint":
		return "teacher_correction." + key
	case "model":
		return "teacher"
	}
	return key
}

// distillConfig is step i's distillation run of the student in dir.
func (r *Recipe) distillConfig(i int, student string, datasets []train.Dataset) *distill.Config {
	st := r.Steps[i]
	c := distill.Default()
	c.Model = train.ModelConfig{Checkpoint: student, Tokenizer: r.path(r.Tokenizer)}
	c.Data = r.trainData(datasets)
	c.Train, c.Optimizer, c.Eval, c.Checkpoint = st.Distill.Train, st.Distill.Optimizer, st.Distill.Eval, st.Distill.Checkpoint
	c.Device = r.Device
	x, _ := r.resolve(st.Teacher, i)
	c.Teacher = distill.Teacher{Model: r.dirOf(x)}
	c.KD = st.Distill.KD
	return &c
}

// correctionConfig is the teacher-correction run.
func (r *Recipe) correctionConfig(datasets []train.Dataset) *train.Config {
	tc := r.TeacherCorrection
	c := train.Default()
	c.Model = train.ModelConfig{Checkpoint: r.path(r.Teacher), Tokenizer: r.path(r.Tokenizer)}
	c.Data = r.trainData(datasets)
	c.Train, c.Optimizer, c.Eval, c.Checkpoint = tc.Train, tc.Optimizer, tc.Eval, tc.Checkpoint
	if c.Train.Steps == 0 && c.Train.Tokens == 0 {
		c.Train.Tokens = CorrectionTokens
	}
	c.Optimizer.LR = tc.LR()
	c.Device = r.Device
	return &c
}

func (r *Recipe) trainData(datasets []train.Dataset) train.DataConfig {
	return train.DataConfig{Datasets: datasets, SeqLen: r.Data.SeqLen, ValFraction: r.Data.ValFraction, Seed: r.Data.Seed, Shuffle: true}
}
