package recipes

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"reflect"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/minitron/minitron/model"
	"github.com/minitron/minitron/train"
)

// Arch describes a model's shape without reading it: a known architecture
// by name (teacher_arch: nemotron-4-15b) or its dimensions.
type Arch struct {
	Name              string `yaml:"name"`
	Architecture      string `yaml:"architecture"` // NemotronForCausalLM or LlamaForCausalLM
	VocabSize         int    `yaml:"vocab_size"`
	HiddenSize        int    `yaml:"hidden_size"`
	NumAttentionHeads int    `yaml:"num_attention_heads"`
	NumKeyValueHeads  int    `yaml:"num_key_value_heads"`
	HeadDim           int    `yaml:"head_dim"`
	IntermediateSize  int    `yaml:"intermediate_size"`
	NumLayers         int    `yaml:"num_layers"`
	TieWordEmbeddings bool   `yaml:"tie_word_embeddings"`
}

// archFields is Arch without its YAML method.
type archFields Arch

// UnmarshalYAML takes a known architecture's name or a mapping of fields.
func (a *Arch) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		*a = Arch{Name: n.Value}
		return nil
	}
	if err := checkKeys(n, reflect.TypeOf(archFields{}), "teacher_arch"); err != nil {
		return err
	}
	return n.Decode((*archFields)(a))
}

// knownArchs are the published shapes of the models the shipped recipes
// start from (their config.json files).
var knownArchs = map[string]Arch{
	// Nemotron-4 15B (arXiv:2402.16819): 15.6B parameters.
	"nemotron-4-15b": {Architecture: "NemotronForCausalLM", VocabSize: 256000, HiddenSize: 6144, NumAttentionHeads: 48, NumKeyValueHeads: 8,
		HeadDim: 128, IntermediateSize: 24576, NumLayers: 32},
	// Minitron-8B-Base and Minitron-4B-Base (arXiv:2407.14679).
	"minitron-8b": {Architecture: "NemotronForCausalLM", VocabSize: 256000, HiddenSize: 4096, NumAttentionHeads: 48, NumKeyValueHeads: 8,
		HeadDim: 128, IntermediateSize: 16384, NumLayers: 32},
	"minitron-4b": {Architecture: "NemotronForCausalLM", VocabSize: 256000, HiddenSize: 3072, NumAttentionHeads: 24, NumKeyValueHeads: 8,
		HeadDim: 128, IntermediateSize: 9216, NumLayers: 32},
	// Llama-3.1-8B: 8.03B parameters.
	"llama-3.1-8b": {Architecture: "LlamaForCausalLM", VocabSize: 128256, HiddenSize: 4096, NumAttentionHeads: 32, NumKeyValueHeads: 8,
		HeadDim: 128, IntermediateSize: 14336, NumLayers: 32},
}

// KnownArchs lists the architecture names teacher_arch accepts.
func KnownArchs() []string {
	var s []string
	for k := range knownArchs {
		s = append(s, k)
	}
	sort.Strings(s)
	return s
}

// Config is the architecture as a model config; nil when the recipe does
// not describe it.
func (a Arch) Config() (*model.Config, error) {
	if a.Name != "" {
		k, ok := knownArchs[a.Name]
		if !ok {
			return nil, fmt.Errorf("recipes: teacher_arch %q is not a known architecture (known: %s); give its shape instead", a.Name, strings.Join(KnownArchs(), ", "))
		}
		a = k
	}
	if a == (Arch{}) {
		return nil, nil
	}
	b, _ := json.Marshal(map[string]any{"architectures": []string{a.Architecture}, "vocab_size": a.VocabSize, "hidden_size": a.HiddenSize,
		"num_attention_heads": a.NumAttentionHeads, "num_key_value_heads": a.NumKeyValueHeads, "head_dim": a.HeadDim,
		"intermediate_size": a.IntermediateSize, "num_hidden_layers": a.NumLayers, "tie_word_embeddings": a.TieWordEmbeddings})
	c, err := model.ParseConfig(b)
	if err != nil {
		return nil, fmt.Errorf("recipes: teacher_arch: %w", err)
	}
	return c, nil
}

// PlanOptions are the hardware assumptions of a plan's estimates.
type PlanOptions struct {
	// MFU is the model FLOPs utilization assumed (0.4: 40%).
	MFU float64
	// PeakTFLOPs is one GPU's dense bf16 peak (989: an H100 SXM).
	PeakTFLOPs float64
}

// DefaultPlanOptions: 40% MFU of an H100 SXM's 989 dense bf16 TFLOP/s.
var DefaultPlanOptions = PlanOptions{MFU: 0.4, PeakTFLOPs: 989}

// Plan is what a recipe will do, stage by stage, worked out without
// reading any file the recipe names.
type Plan struct {
	Recipe        string      `json:"recipe"`
	Out           string      `json:"out"`
	MFU           float64     `json:"mfu"`
	PeakTFLOPs    float64     `json:"peak_tflops"`
	Stages        []PlanStage `json:"stages"`
	TotalFLOPs    float64     `json:"total_flops"`
	TotalGPUHours float64     `json:"total_gpu_hours"`
}

// PlanStage is one stage of a plan. Unknown values are null in JSON.
type PlanStage struct {
	Name string `json:"name"`
	Kind string `json:"kind"`
	// Source is the model (or, for data, the inputs) the stage reads.
	Source  string    `json:"source"`
	Teacher string    `json:"teacher"`
	Shape   PlanShape `json:"shape"`
	Out     string    `json:"out"`
	// Tokens processed: calibration, training or evaluation tokens.
	Tokens        *int64   `json:"tokens"`
	Params        *int64   `json:"params"`
	TeacherParams *int64   `json:"teacher_params,omitempty"`
	FLOPs         *float64 `json:"flops"`
	GPUHours      *float64 `json:"gpu_hours"`
	// Memory is a training stage's device memory per GPU at its
	// micro-batch (train.PlanMemory; the CUDA context's ~1 GiB not
	// counted), MicroBatch that micro-batch, and H200MicroBatch the
	// largest that fits one H200 (0: not even one sequence). Null when the
	// shapes are unknown or the stage does not train.
	Memory         *int64 `json:"memory_bytes,omitempty"`
	MicroBatch     int    `json:"micro_batch,omitempty"`
	H200MicroBatch *int   `json:"h200_max_micro_batch,omitempty"`
	Note           string `json:"note,omitempty"`
}

// h200Bytes is an H200's memory as its driver reports it (143,771 MiB),
// less the ~1 GiB of CUDA context and cuBLAS workspace PlanMemory leaves
// out.
const h200Bytes = 143771<<20 - 1<<30

// memory fills a training stage's memory plan on the recipe's device.
func (st *PlanStage) memory(device string, c *train.Config, student, teacher *model.Config) {
	if student == nil {
		return
	}
	spec := train.MemorySpec{Student: student, Teacher: teacher, Distill: teacher != nil, Optimizer: c.Optimizer,
		Rows: c.Train.MicroBatch * c.Data.SeqLen, FloatBytes: 2, GPUs: 1}
	if strings.EqualFold(device, "cpu") {
		spec.FloatBytes = 4
	}
	m := train.PlanMemory(spec).Total()
	st.Memory, st.MicroBatch = &m, c.Train.MicroBatch
	if spec.FloatBytes == 2 {
		mb := train.MaxMicroBatch(spec, c.Data.SeqLen, h200Bytes, 1024)
		st.H200MicroBatch = &mb
	}
}

// PlanShape is the shape of a stage's model; unknown dimensions are null.
type PlanShape struct {
	HiddenSize        *int `json:"hidden_size"`
	NumAttentionHeads *int `json:"num_attention_heads"`
	IntermediateSize  *int `json:"intermediate_size"`
	NumLayers         *int `json:"num_layers"`
}

// shape is a possibly partial model shape: cfg when fully known.
type shape struct {
	cfg                   *model.Config
	hidden, heads, ffn, L int // 0: unknown
}

func fullShape(c *model.Config) shape {
	if c == nil {
		return shape{}
	}
	return shape{cfg: c, hidden: c.HiddenSize, heads: c.NumHeads, ffn: c.IntermediateSize, L: c.NumLayers}
}

func (s shape) plan() PlanShape {
	p := func(v int) *int {
		if v == 0 {
			return nil
		}
		return &v
	}
	return PlanShape{p(s.hidden), p(s.heads), p(s.ffn), p(s.L)}
}

func (s shape) params() *int64 {
	if s.cfg == nil {
		return nil
	}
	n, _ := s.cfg.NumParams()
	return &n
}

// pruned applies prune targets to a possibly unknown source.
func (s shape) pruned(p PruneStage) shape {
	if s.cfg != nil {
		if t, errs := targetShape(s.cfg, p); len(errs) == 0 {
			return fullShape(t)
		}
		return shape{}
	}
	t := shape{hidden: p.HiddenSize, heads: p.NumAttentionHeads, ffn: p.IntermediateSize, L: p.NumLayers}
	return t
}

// forwardFLOPs is the forward pass's cost per token of a sequence of T
// tokens: 2 per weight of every matrix product (lm_head included, the
// embedding lookup not) plus causal attention's scores and weighted sum.
func forwardFLOPs(c *model.Config, T int) float64 {
	_, nonEmb := c.NumParams()
	matmul := float64(nonEmb) + float64(c.VocabSize)*float64(c.HiddenSize)
	attn := 2 * float64(c.NumLayers) * float64(T) * float64(c.NumHeads*c.HeadDim) // 4·T·H·hd per layer, halved by the causal mask
	return 2*matmul + attn
}

// Plan works out the recipe's stages, shapes, token budgets and compute
// without reading any file it names. Shapes derive from teacher_arch;
// without it they are unknown except the dimensions the prune targets set.
func (r *Recipe) Plan(opt PlanOptions) (*Plan, error) {
	if opt.MFU <= 0 || opt.MFU > 1 || opt.PeakTFLOPs <= 0 {
		return nil, fmt.Errorf("recipes: MFU %v must be in (0, 1] and the peak %v TFLOP/s positive", opt.MFU, opt.PeakTFLOPs)
	}
	tcfg, err := r.TeacherArch.Config()
	if err != nil {
		return nil, err
	}
	p := &Plan{Recipe: r.Name, Out: r.Out, MFU: opt.MFU, PeakTFLOPs: opt.PeakTFLOPs}
	teacher := fullShape(tcfg)
	i64 := func(v int64) *int64 { return &v }
	cost := func(st *PlanStage, flops float64) {
		h := flops / (opt.PeakTFLOPs * 1e12 * opt.MFU) / 3600
		st.FLOPs, st.GPUHours = &flops, &h
		p.TotalFLOPs += flops
		p.TotalGPUHours += h
	}
	zero := func(st *PlanStage) { cost(st, 0) }
	shapes := make([]shape, len(r.Steps))
	shapeOf := func(s string, i int) (shape, string) {
		x, err := r.resolve(s, i)
		if err != nil {
			return shape{}, s
		}
		dir := filepath.Clean(r.dirOf(x))
		switch x.kind {
		case "step":
			return shapes[x.step], dir
		case "dir":
			return shape{}, dir
		}
		return teacher, dir
	}
	var inputs []string
	for _, d := range r.Data.Datasets {
		if d.Path != "" {
			inputs = append(inputs, filepath.Clean(r.path(d.Path)))
		} else {
			for _, in := range d.Inputs {
				inputs = append(inputs, filepath.Clean(r.path(in)))
			}
		}
	}
	seq := r.Data.SeqLen
	for _, sg := range r.stages() {
		st := PlanStage{Name: sg.name, Kind: sg.kind}
		switch sg.kind {
		case KindData:
			st.Source, st.Out = strings.Join(inputs, ", "), filepath.Join(r.Out, "data")
			st.Note = "tokenizes the inputs (on the CPU); prepared datasets are used as they are"
			zero(&st)
		case KindTeacherCorrection:
			st.Source, st.Shape, st.Params = filepath.Clean(r.path(r.Teacher)), teacher.plan(), teacher.params()
			st.Out = r.correctionDir()
			c := r.correctionConfig(nil)
			st.Tokens = i64(trainTokens(c))
			st.Note = fmt.Sprintf("next-token fine-tuning at peak LR %.3g, %d warmup steps", c.Optimizer.LR, c.Optimizer.Warmup)
			if teacher.cfg != nil {
				cost(&st, 3*forwardFLOPs(teacher.cfg, seq)*float64(*st.Tokens))
			}
			st.memory(r.Device, c, teacher.cfg, nil)
		case KindImportance:
			step := r.Steps[sg.step]
			src, dir := shapeOf(step.Source, sg.step)
			st.Source, st.Shape, st.Params, st.Out = dir, src.plan(), src.params(), r.scoresPath(sg.step)
			c := step.Calibration
			st.Tokens = i64(int64(c.Samples) * int64(c.SeqLen))
			passes := 1
			if step.Importance.Depth && src.L > 0 {
				passes += src.L // the loss without each layer
			}
			st.Note = fmt.Sprintf("%d calibration sequences of %d tokens, %d forward passes over them", c.Samples, c.SeqLen, passes)
			if src.cfg != nil {
				cost(&st, float64(passes)*forwardFLOPs(src.cfg, c.SeqLen)*float64(*st.Tokens))
			}
		case KindPrune:
			step := r.Steps[sg.step]
			src, dir := shapeOf(step.Source, sg.step)
			shapes[sg.step] = src.pruned(step.Prune)
			tgt := shapes[sg.step]
			st.Source, st.Shape, st.Params, st.Out = dir, tgt.plan(), tgt.params(), r.prunedDir(sg.step)
			st.Tokens = i64(0)
			if sp := src.params(); sp != nil && st.Params != nil {
				st.Note = fmt.Sprintf("%s -> %s parameters (%.1f%%)", count(*sp), count(*st.Params), 100*float64(*st.Params)/float64(*sp))
			}
			zero(&st)
		case KindDistill:
			step := r.Steps[sg.step]
			tgt := shapes[sg.step]
			tch, tdir := shapeOf(step.Teacher, sg.step)
			st.Source, st.Teacher, st.Shape, st.Params, st.Out = r.prunedDir(sg.step), tdir, tgt.plan(), tgt.params(), r.distillDir(sg.step)
			st.TeacherParams = tch.params()
			c := r.distillConfig(sg.step, "", nil)
			st.Tokens = i64(trainTokens(&c.Config))
			st.Note = fmt.Sprintf("%d steps of %d tokens, peak LR %.3g", c.TotalSteps(), c.TokensPerStep(), c.Optimizer.LR)
			if tgt.cfg != nil && tch.cfg != nil {
				// Student forward and backward, teacher forward.
				cost(&st, (3*forwardFLOPs(tgt.cfg, seq)+forwardFLOPs(tch.cfg, seq))*float64(*st.Tokens))
				st.memory(r.Device, &c.Config, tgt.cfg, tch.cfg)
			}
		case KindEval:
			st.Source = r.FinalStudent()
			st.Out = filepath.Join(r.Out, "eval")
			models := []shape{teacher}
			if r.TeacherCorrection.Enabled {
				models = append(models, teacher)
			}
			for _, s := range shapes {
				models = append(models, s, s)
			}
			// val ce on the last distillation's validation sequences
			// (eval.batches micro-batches); the benchmarks not counted.
			dc := r.distillConfig(len(r.Steps)-1, "", nil)
			n := dc.Eval.Batches * dc.Train.MicroBatch
			tok := int64(n) * int64(seq)
			st.Tokens = i64(tok * int64(len(models)))
			st.Note = fmt.Sprintf("val ce on %d held-out sequences for each of %d models (benchmarks not counted)", n, len(models))
			var f float64
			known := true
			for _, m := range models {
				if m.cfg == nil {
					known = false
					break
				}
				f += forwardFLOPs(m.cfg, seq) * float64(tok)
			}
			if known {
				cost(&st, f)
			}
		case KindExport:
			last := shapes[len(shapes)-1]
			st.Source, st.Shape, st.Params, st.Out = r.FinalStudent(), last.plan(), last.params(), filepath.Join(r.Out, "export")
			st.Tokens = i64(0)
			st.Note = "formats: " + strings.Join(r.Export.Formats, ", ")
			zero(&st)
		}
		p.Stages = append(p.Stages, st)
	}
	return p, nil
}

// Text renders the plan for people.
func (p *Plan) Text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "recipe %s: %d stages, outputs in %s\n", p.Recipe, len(p.Stages), p.Out)
	fmt.Fprintf(&b, "compute estimated at %.0f%% MFU of %.0f TFLOP/s per GPU (bf16 dense; 989 is an H100 SXM)\n", 100*p.MFU, p.PeakTFLOPs)
	unknown := "unknown"
	for i, s := range p.Stages {
		fmt.Fprintf(&b, "\n%2d. %s (%s)\n", i+1, s.Name, s.Kind)
		if s.Source != "" {
			fmt.Fprintf(&b, "      reads    %s\n", s.Source)
		}
		if s.Teacher != "" {
			tp := ""
			if s.TeacherParams != nil {
				tp = fmt.Sprintf(" (%s parameters)", count(*s.TeacherParams))
			}
			fmt.Fprintf(&b, "      teacher  %s%s\n", s.Teacher, tp)
		}
		fmt.Fprintf(&b, "      writes   %s\n", s.Out)
		if s.Shape != (PlanShape{}) {
			v := func(x *int) string {
				if x == nil {
					return "?"
				}
				return fmt.Sprint(*x)
			}
			params := unknown
			if s.Params != nil {
				params = count(*s.Params)
			}
			fmt.Fprintf(&b, "      shape    hidden %s, %s heads, MLP %s, %s layers: %s parameters\n",
				v(s.Shape.HiddenSize), v(s.Shape.NumAttentionHeads), v(s.Shape.IntermediateSize), v(s.Shape.NumLayers), params)
		}
		if s.Tokens != nil && *s.Tokens > 0 {
			fmt.Fprintf(&b, "      tokens   %s\n", count(*s.Tokens))
		}
		if s.FLOPs != nil && *s.FLOPs > 0 {
			fmt.Fprintf(&b, "      compute  %.3g FLOPs, %s GPU-hours\n", *s.FLOPs, hours(*s.GPUHours))
		} else if s.FLOPs == nil {
			fmt.Fprintf(&b, "      compute  unknown (the model shapes are not all known; give teacher_arch)\n")
		}
		if s.Memory != nil {
			gib := float64(*s.Memory) / (1 << 30)
			switch {
			case s.H200MicroBatch == nil: // the CPU
				fmt.Fprintf(&b, "      memory   %.2f GiB at micro-batch %d\n", gib, s.MicroBatch)
			default:
				fits := "does not fit one H200"
				if *s.H200MicroBatch > 0 {
					fits = fmt.Sprintf("one H200 fits micro-batches <= %d", *s.H200MicroBatch)
				}
				fmt.Fprintf(&b, "      memory   %.1f GiB per GPU at micro-batch %d (and ~1 GiB of CUDA context); %s\n", gib, s.MicroBatch, fits)
			}
		}
		if s.Note != "" {
			fmt.Fprintf(&b, "      note     %s\n", s.Note)
		}
	}
	fmt.Fprintf(&b, "\ntotal: %.3g FLOPs, %s GPU-hours at %.0f%% MFU (stages of unknown cost not counted)\n", p.TotalFLOPs, hours(p.TotalGPUHours), 100*p.MFU)
	return b.String()
}

func hours(h float64) string {
	switch {
	case h >= 100:
		return fmt.Sprintf("%.0f", h)
	case h >= 0.1:
		return fmt.Sprintf("%.1f", h)
	}
	return fmt.Sprintf("%.2g", h)
}

// trainTokens is a run's token budget in whole steps.
func trainTokens(c *train.Config) int64 { return int64(c.TotalSteps()) * c.TokensPerStep() }
