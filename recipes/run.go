package recipes

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/minitron/minitron/backend"
	"github.com/minitron/minitron/data"
	"github.com/minitron/minitron/diskio"
	"github.com/minitron/minitron/distill"
	"github.com/minitron/minitron/eval"
	"github.com/minitron/minitron/export"
	"github.com/minitron/minitron/generate"
	"github.com/minitron/minitron/importance"
	"github.com/minitron/minitron/model"
	"github.com/minitron/minitron/prune"
	"github.com/minitron/minitron/tokenizer"
	"github.com/minitron/minitron/train"
)

// RunOptions are the parts of a run that are not in the recipe.
type RunOptions struct {
	From, Until string // stage names; empty: all
	Backend     backend.Backend
	Log         io.Writer // one-line progress messages
	// Progress receives (stage, done, total) for long stages.
	Progress func(stage string, done, total int64)
	// OnStep receives distillation steps (for a progress display).
	OnStep    func(m train.Metric, total int)
	Interrupt <-chan struct{}
}

// ModelReport is one column of the final table.
type ModelReport struct {
	Name         string `json:"name"`
	Dir          string `json:"dir"`
	Params       int64  `json:"params"`
	NonEmbParams int64  `json:"non_embedding_params"`
	// ValCE is the cross-entropy on the distillation's validation
	// sequences (Tokens of them), the student's the same quantity as the
	// distillation's val_ce; Perplexity is its exponential.
	ValCE      float64 `json:"val_ce"`
	Perplexity float64 `json:"perplexity"`
	Tokens     int64   `json:"tokens"`
	// TrainTokens are the tokens the recipe trained the model on (the
	// student's distillation), -1 when unknown (the teacher).
	TrainTokens int64              `json:"train_tokens"`
	Tasks       []*eval.TaskResult `json:"tasks,omitempty"`
}

// SampleReport is one generation.
type SampleReport struct {
	Prompt string `json:"prompt"`
	Text   string `json:"text"`
}

// Report is what the eval stage measured.
type Report struct {
	Models  []ModelReport  `json:"models"`
	Samples []SampleReport `json:"samples"`
}

// Summary is a finished run.
type Summary struct {
	Out     string
	Report  *Report
	Student string // final student directory
	Skipped []string
}

// marker records a finished stage and the checksum of its inputs.
type marker struct {
	Stage    string    `json:"stage"`
	Inputs   string    `json:"inputs"`
	Finished time.Time `json:"finished"`
}

func (r *Recipe) markerPath(stage string) string { return filepath.Join(r.Out, "."+stage+".done.json") }

func (r *Recipe) done(stage, inputs string) bool {
	b, err := os.ReadFile(r.markerPath(stage))
	if err != nil {
		return false
	}
	var m marker
	return json.Unmarshal(b, &m) == nil && m.Inputs == inputs
}

func (r *Recipe) finish(stage, inputs string) error {
	b, _ := json.MarshalIndent(marker{Stage: stage, Inputs: inputs, Finished: time.Now().UTC()}, "", "  ")
	return diskio.WriteFileAtomic(r.markerPath(stage), append(b, '\n'))
}

// checksum hashes values (configs, upstream checksums) into a stage key.
func checksum(parts ...any) string {
	h := sha256.New()
	enc := json.NewEncoder(h)
	for _, p := range parts {
		enc.Encode(p)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Run executes the recipe's stages.
func Run(ctx context.Context, r *Recipe, opt RunOptions) (*Summary, error) {
	if err := r.Validate(); err != nil {
		return nil, err
	}
	stages := Stages()
	from, until := 0, len(stages)-1
	var err error
	if opt.From != "" {
		if from, err = StageIndex(opt.From); err != nil {
			return nil, err
		}
	}
	if opt.Until != "" {
		if until, err = StageIndex(opt.Until); err != nil {
			return nil, err
		}
	}
	if from > until {
		return nil, fmt.Errorf("recipes: --from %s comes after --until %s", opt.From, opt.Until)
	}
	logf := func(f string, a ...any) {
		if opt.Log != nil {
			fmt.Fprintf(opt.Log, f+"\n", a...)
		}
	}
	if err := os.MkdirAll(r.Out, 0o755); err != nil {
		return nil, fmt.Errorf("recipes: %w", err)
	}
	// Forced stages lose their markers (and distillation its checkpoints).
	for i := from; i < len(stages); i++ {
		if opt.From != "" {
			os.Remove(r.markerPath(stages[i]))
			if stages[i] == "distill" {
				os.RemoveAll(r.distillDir())
			}
		}
	}
	tok, err := tokenizer.Open(r.path(r.Tokenizer))
	if err != nil {
		return nil, err
	}
	teacherID, err := model.DirIdentity(r.path(r.Teacher))
	if err != nil {
		return nil, err
	}
	sum := &Summary{Out: r.Out}
	st := &state{r: r, opt: opt, tok: tok, teacherID: teacherID, logf: logf, keys: map[string]string{}}
	for i, stage := range stages {
		if i > until {
			break
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		start := time.Now()
		skipped, err := st.run(ctx, stage)
		if err != nil {
			return nil, fmt.Errorf("recipes: stage %s: %w", stage, err)
		}
		if skipped {
			sum.Skipped = append(sum.Skipped, stage)
			logf("stage %-10s up to date, skipped", stage)
		} else {
			logf("stage %-10s done in %v", stage, time.Since(start).Round(time.Millisecond))
		}
	}
	sum.Report, sum.Student = st.report, r.studentDir()
	return sum, nil
}

// state carries what stages hand to one another.
type state struct {
	r         *Recipe
	opt       RunOptions
	tok       tokenizer.Tokenizer
	teacherID string
	logf      func(string, ...any)
	keys      map[string]string // stage -> inputs checksum
	datasets  []train.Dataset
	report    *Report
}

func (s *state) key(stage string) string { return s.keys[stage] }

// run runs one stage unless its marker matches its inputs.
func (s *state) run(ctx context.Context, stage string) (bool, error) {
	r := s.r
	var key string
	switch stage {
	case "data":
		// Preparing is itself skipped when inputs and tokenizer are
		// unchanged (it checks their checksums).
		var manifests []string
		s.datasets = nil
		for _, d := range r.Data.Datasets {
			dir := r.path(d.Path)
			if dir == "" {
				dir = r.datasetDir(d.Name)
				var inputs []string
				for _, in := range d.Inputs {
					inputs = append(inputs, r.path(in))
				}
				s.logf("preparing dataset %s from %s", d.Name, strings.Join(inputs, ", "))
				_, err := data.Prepare(ctx, data.PrepareOptions{Inputs: inputs, Include: d.Include, Out: dir, Tokenizer: s.tok,
					TokenizerPath: r.path(r.Tokenizer), TextField: d.TextField, SplitLines: d.SplitLines, AddEOS: true,
					Progress: func(done, total int64) {
						if s.opt.Progress != nil {
							s.opt.Progress("data "+d.Name, done, total)
						}
					}})
				if err != nil {
					return false, err
				}
			}
			m, err := data.ReadManifest(dir)
			if err != nil {
				return false, err
			}
			if m.Tokenizer.Hash != s.tok.Hash() {
				return false, fmt.Errorf("dataset %s was tokenized with another tokenizer than the recipe's (%s)", dir, r.path(r.Tokenizer))
			}
			var shards []string
			for _, sh := range m.Shards {
				shards = append(shards, sh.SHA256)
			}
			manifests = append(manifests, d.Name, checksum(shards))
			s.datasets = append(s.datasets, train.Dataset{Path: dir, Weight: d.Weight})
		}
		key = checksum(manifests, r.Data.SeqLen, r.Data.ValFraction)
		s.keys["data"] = key
		return false, s.r.finish("data", key)

	case "importance":
		key = checksum(s.key("data"), s.teacherID, r.Calibration, r.Importance)
		s.keys[stage] = key
		if r.done(stage, key) {
			return true, nil
		}
		return false, s.importance(ctx, key)

	case "prune":
		key = checksum(s.key("importance"), s.teacherID, r.Prune)
		s.keys[stage] = key
		if r.done(stage, key) {
			return true, nil
		}
		out := r.prunedDir()
		os.RemoveAll(out)
		scores, err := importance.Load(r.scoresPath())
		if err != nil {
			return false, err
		}
		tcfg, err := model.LoadConfig(filepath.Join(r.path(r.Teacher), "config.json"))
		if err != nil {
			return false, err
		}
		p := r.Prune
		plan, err := prune.NewPlan(tcfg, scores, prune.Targets{Hidden: p.HiddenSize, Heads: p.NumAttentionHeads, FFN: p.IntermediateSize,
			Layers: p.NumLayers, DropLayers: p.DropLayers, DepthMetric: p.DepthMetric, Divisor: p.Divisor})
		if err != nil {
			return false, err
		}
		rep, err := prune.Apply(ctx, plan, r.path(r.Teacher), prune.ApplyOptions{Out: out, ScoresPath: r.scoresPath(), ScoresMeta: scores.Meta})
		if err != nil {
			return false, err
		}
		// The tokenizer goes along, wherever the recipe took it from.
		if err := train.CopyTokenizer(r.path(r.Tokenizer), out); err != nil {
			return false, err
		}
		s.logf("pruned to %d layers, hidden %d, %d heads, MLP %d: %d -> %d parameters",
			rep.ShapeAfter.Layers, rep.ShapeAfter.Hidden, rep.ShapeAfter.Heads, rep.ShapeAfter.FFN, rep.ParamsBefore, rep.ParamsAfter)
		return false, r.finish(stage, key)

	case "distill":
		cfg := r.distillConfig(r.prunedDir(), s.datasets)
		key = checksum(s.key("prune"), s.key("data"), s.teacherID, cfg.Data, cfg.Train, cfg.Optimizer, cfg.KD)
		s.keys[stage] = key
		if r.done(stage, key) {
			return true, nil
		}
		// A distillation already under way resumes, when nothing but its
		// length changed; train.Run refuses any other change, naming the
		// recipe's keys (its checkpoints are not thrown away).
		out := r.distillDir()
		res, _, err := distill.Run(ctx, cfg, train.RunOptions{Out: out, Backend: s.opt.Backend, Log: s.opt.Log, OnStep: s.opt.OnStep, Interrupt: s.opt.Interrupt,
			KeyName: recipeKey, NewRun: "rerun the recipe with --from distill, which deletes its checkpoints (or from an earlier stage)"})
		if err != nil {
			return false, err
		}
		s.logf("distilled %d steps (%d tokens): val ce %.4f", res.Steps, res.Tokens, res.ValLoss)
		return false, r.finish(stage, key)

	case "eval":
		key = checksum(s.key("distill"), r.Eval)
		s.keys[stage] = key
		if r.done(stage, key) {
			b, err := os.ReadFile(r.reportPath())
			if err == nil {
				var rep Report
				if json.Unmarshal(b, &rep) == nil {
					s.report = &rep
					return true, nil
				}
			}
		}
		return false, s.evaluate(ctx, key)

	case "export":
		key = checksum(s.key("distill"), r.Export)
		s.keys[stage] = key
		if r.done(stage, key) {
			return true, nil
		}
		final := r.studentDir()
		os.RemoveAll(r.exportDir())
		for _, f := range r.Export.Formats {
			var dir string
			switch f {
			case "hf":
				dir = r.exportPath(f)
				dt, err := backend.ParseDType(r.Export.DType)
				if err != nil {
					return false, err
				}
				if err := export.HF(final, dir, dt, 5<<30); err != nil {
					return false, err
				}
			case "gguf":
				dir = r.exportPath(f)
				if err := export.GGUF(final, dir, r.Export.GGUFDType); err != nil {
					return false, err
				}
			}
			s.logf("exported the student to %s", dir)
		}
		return false, r.finish(stage, key)
	}
	return false, fmt.Errorf("unknown stage %q", stage)
}

func (s *state) importance(ctx context.Context, key string) error {
	r := s.r
	name := r.Calibration.Dataset
	dir := s.datasets[0].Path
	for i, d := range r.Data.Datasets {
		if d.Name == name {
			dir = s.datasets[i].Path
		}
	}
	ds, err := data.Open(dir)
	if err != nil {
		return err
	}
	defer ds.Close()
	c, err := data.Calibration(ds, r.Calibration.Samples, r.Calibration.SeqLen, r.Calibration.Seed)
	if err != nil {
		return err
	}
	m, err := model.Load(r.path(r.Teacher), s.opt.Backend, nil)
	if err != nil {
		return err
	}
	defer m.Free()
	imp := r.Importance
	sc, err := importance.Estimate(ctx, m, c.IDs, r.Calibration.Samples, r.Calibration.SeqLen, importance.Options{
		Agg: importance.Aggregation{Seq: imp.SeqAgg, Batch: imp.BatchAgg}, NeuronSite: imp.NeuronSite, Depth: imp.Depth, BatchSize: imp.BatchSize,
		Progress: func(done, total int) {
			if s.opt.Progress != nil {
				s.opt.Progress("importance", int64(done), int64(total))
			}
		}})
	if err != nil {
		return err
	}
	sc.Meta["model"] = r.path(r.Teacher)
	maps.Copy(sc.Meta, c.Meta())
	if err := os.MkdirAll(filepath.Dir(r.scoresPath()), 0o755); err != nil {
		return err
	}
	if err := sc.Save(r.scoresPath()); err != nil {
		return err
	}
	s.logf("scored %d calibration sequences of %d tokens (teacher loss %.4f)", r.Calibration.Samples, r.Calibration.SeqLen, sc.CalibrationLoss)
	return r.finish("importance", key)
}

// evaluate measures teacher, pruned and student on the first dataset's
// validation split and on the recipe's benchmarks, and samples from the
// student.
func (s *state) evaluate(ctx context.Context, key string) error {
	r := s.r
	tcfg, err := model.LoadConfig(filepath.Join(r.path(r.Teacher), "config.json"))
	if err != nil {
		return err
	}
	// The held-out sequences the distillation validates on.
	dc := r.distillConfig(r.prunedDir(), s.datasets)
	val, err := train.ValidationSequences(&dc.Config, tcfg.VocabSize)
	if err != nil {
		return err
	}
	var sandbox *eval.Sandbox
	for _, t := range r.Eval.Tasks {
		if t.Name == "humaneval" && sandbox == nil {
			if sandbox, err = eval.NewSandbox(ctx, "", 0, 0); err != nil {
				return err
			}
			s.logf("humaneval tests run with: %s", sandbox.Protections)
		}
	}
	rep := &Report{}
	student := r.studentDir()
	for _, mm := range []struct {
		name, dir string
		tokens    int64
	}{
		{"teacher", r.path(r.Teacher), -1},
		{"pruned, before distillation", r.prunedDir(), 0},
		{"student (distilled)", student, distilledTokens(r.distillDir())},
	} {
		m, err := model.Load(mm.dir, s.opt.Backend, nil)
		if err != nil {
			return err
		}
		res, err := eval.PerplexityOn(ctx, m, val, r.Distill.Train.MicroBatch)
		if err != nil {
			return err
		}
		total, nonEmb := m.Config.NumParams()
		mr := ModelReport{Name: mm.name, Dir: mm.dir, Params: total, NonEmbParams: nonEmb, ValCE: res.Loss, Perplexity: res.Perplexity,
			Tokens: res.Tokens, TrainTokens: mm.tokens}
		for _, t := range r.Eval.Tasks {
			start := time.Now()
			tr, err := s.benchmark(ctx, m, mm.name, t, sandbox)
			if err != nil {
				m.Free()
				return fmt.Errorf("%s on %s: %w", t.Name, mm.name, err)
			}
			tr.Seconds = time.Since(start).Seconds()
			s.logf("%s: %s", mm.name, strings.TrimSpace(eval.Table([]*eval.TaskResult{tr}, false)))
			mr.Tasks = append(mr.Tasks, tr)
		}
		rep.Models = append(rep.Models, mr)
		if mm.dir == student {
			for _, smp := range r.Eval.Samples {
				ids := tokenizer.EncodePrompt(s.tok, smp.Prompt)
				g, err := generate.Generate(ctx, m, [][]int32{ids}, generate.Options{MaxNewTokens: smp.MaxNewTokens,
					Temperature: smp.Temperature, TopK: smp.TopK, Seed: smp.Seed, Stop: []int32{s.tok.EOS()}})
				if err != nil {
					return err
				}
				full := s.tok.Decode(append(ids, g.Tokens[0]...))
				rep.Samples = append(rep.Samples, SampleReport{Prompt: smp.Prompt, Text: full})
			}
		}
		m.Free()
	}
	b, _ := json.MarshalIndent(rep, "", "  ")
	if err := os.MkdirAll(filepath.Dir(r.reportPath()), 0o755); err != nil {
		return err
	}
	if err := diskio.WriteFileAtomic(r.reportPath(), append(b, '\n')); err != nil {
		return err
	}
	s.report = rep
	return r.finish("eval", key)
}

// benchmark scores one model on one of the recipe's tasks.
func (s *state) benchmark(ctx context.Context, m *model.Model, who string, t EvalTask, sandbox *eval.Sandbox) (*eval.TaskResult, error) {
	r := s.r
	h := r.Eval.HumanEval
	opt := eval.Options{Shots: -1, Limit: t.Limit, Sandbox: sandbox,
		Score: eval.ScoreOptions{BOS: r.Eval.BOS, MaxLen: m.Config.MaxPositions},
		Code:  eval.CodeOptions{Samples: h.Samples, Temperature: h.Temperature, TopP: h.TopP, Seed: h.Seed, MaxNewTokens: h.MaxNewTokens, Slots: 32, BOS: r.Eval.BOS}}
	if t.NumFewshot != nil {
		opt.Shots = *t.NumFewshot
	}
	progress := func(done, total int) {
		if s.opt.Progress != nil {
			s.opt.Progress(t.Name+" ("+who+")", int64(done), int64(total))
		}
	}
	opt.Score.Progress, opt.Code.Progress = progress, progress
	return eval.Run(ctx, m, s.tok, t.Name, r.path(t.Path), opt)
}

// distilledTokens reads the tokens of the newest distillation checkpoint.
func distilledTokens(dir string) int64 {
	ckpts, err := train.Checkpoints(dir)
	if err != nil || len(ckpts) == 0 {
		return -1
	}
	b, err := os.ReadFile(filepath.Join(ckpts[len(ckpts)-1], "state.json"))
	if err != nil {
		return -1
	}
	var st train.State
	if json.Unmarshal(b, &st) != nil {
		return -1
	}
	return st.Tokens
}

// Table renders the report in the layout of the Minitron papers' Table 2:
// a column per model, rows for the parameters, the training tokens, each
// benchmark with its shots (in the papers' order; HellaSwag and ARC as
// acc_norm, HumanEval as pass@1, in percent), and the val ce (cross-entropy on the held-out split).
func (rep *Report) Table() string {
	var b strings.Builder
	w := 16
	for _, m := range rep.Models {
		w = max(w, len(m.Name)+2)
	}
	row := func(label string, cell func(m ModelReport) string) {
		fmt.Fprintf(&b, "%-28s", label)
		for _, m := range rep.Models {
			fmt.Fprintf(&b, "%*s", w, cell(m))
		}
		b.WriteString("\n")
	}
	row("", func(m ModelReport) string { return m.Name })
	row("Total params", func(m ModelReport) string { return count(m.Params) })
	row("Non-emb. params", func(m ModelReport) string { return count(m.NonEmbParams) })
	row("Training tokens", func(m ModelReport) string {
		if m.TrainTokens < 0 {
			return "-"
		}
		return count(m.TrainTokens)
	})
	// Benchmarks in the papers' order, each once per (task, shots).
	type bench struct {
		task  string
		shots int
	}
	var benches []bench
	seen := map[bench]bool{}
	for _, m := range rep.Models {
		for _, t := range m.Tasks {
			k := bench{t.Task, t.Shots}
			if !seen[k] {
				seen[k] = true
				benches = append(benches, k)
			}
		}
	}
	order := func(name string) int {
		for i, n := range eval.TaskNames() {
			if n == name {
				return i
			}
		}
		return len(eval.TaskNames())
	}
	sort.SliceStable(benches, func(i, j int) bool { return order(benches[i].task) < order(benches[j].task) })
	for _, bn := range benches {
		var label string
		var res *eval.TaskResult
		for _, m := range rep.Models {
			for _, t := range m.Tasks {
				if t.Task == bn.task && t.Shots == bn.shots && res == nil {
					res = t
				}
			}
		}
		switch {
		case res.PassAt != nil:
			label = fmt.Sprintf("%s(n=%d)(0) pass@1", bn.task, res.Samples)
		case res.AccNorm != nil:
			label = fmt.Sprintf("%s(%d) acc_norm", bn.task, bn.shots)
		default:
			label = fmt.Sprintf("%s(%d)", bn.task, bn.shots)
		}
		row(label, func(m ModelReport) string {
			for _, t := range m.Tasks {
				if t.Task == bn.task && t.Shots == bn.shots {
					return fmt.Sprintf("%.1f", 100*t.Primary().Value)
				}
			}
			return "-"
		})
	}
	row("val ce", func(m ModelReport) string { return fmt.Sprintf("%.4f", m.ValCE) })
	row("Perplexity", func(m ModelReport) string { return fmt.Sprintf("%.2f", m.Perplexity) })
	return b.String()
}

// count writes a count as the papers do: 4.2B, 94B, 2.6M.
func count(n int64) string {
	switch {
	case n >= 1e9:
		return fmt.Sprintf("%.1fB", float64(n)/1e9)
	case n >= 1e6:
		return fmt.Sprintf("%.1fM", float64(n)/1e6)
	case n >= 1e3:
		return fmt.Sprintf("%.1fK", float64(n)/1e3)
	}
	return fmt.Sprint(n)
}
