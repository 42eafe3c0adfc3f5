package recipes

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
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
	// OnStep receives the training steps of the teacher correction and
	// the distillations (for a progress display), with the stage's name.
	OnStep    func(stage string, m train.Metric, total int)
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

func (r *Recipe) markerPath(stage string) string {
	return filepath.Join(r.Out, "."+strings.ReplaceAll(stage, "/", ".")+".done.json")
}

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
	ss := r.stages()
	from, until := 0, len(ss)-1
	var err error
	if opt.From != "" {
		if from, err = r.StageIndex(opt.From); err != nil {
			return nil, err
		}
	}
	if opt.Until != "" {
		if until, err = r.StageIndex(opt.Until); err != nil {
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
	// Forced stages lose their markers (and training runs their checkpoints).
	if opt.From != "" {
		for _, sg := range ss[from:] {
			os.Remove(r.markerPath(sg.name))
			switch sg.kind {
			case KindDistill:
				os.RemoveAll(r.distillDir(sg.step))
			case KindTeacherCorrection:
				os.RemoveAll(r.correctionDir())
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
	st := &state{r: r, opt: opt, tok: tok, teacherID: teacherID, logf: logf, keys: map[string]string{}, dirIDs: map[string]string{}, validated: map[int]bool{}}
	for i, sg := range ss {
		if i > until {
			break
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		start := time.Now()
		skipped, err := st.run(ctx, sg)
		if err != nil {
			return nil, fmt.Errorf("recipes: stage %s: %w", sg.name, err)
		}
		if skipped {
			sum.Skipped = append(sum.Skipped, sg.name)
			logf("stage %-10s up to date, skipped", sg.name)
		} else {
			logf("stage %-10s done in %v", sg.name, time.Since(start).Round(time.Millisecond))
		}
	}
	sum.Report, sum.Student = st.report, r.FinalStudent()
	return sum, nil
}

// state carries what stages hand to one another.
type state struct {
	r         *Recipe
	opt       RunOptions
	tok       tokenizer.Tokenizer
	teacherID string
	logf      func(string, ...any)
	keys      map[string]string // stage name -> inputs checksum
	dirIDs    map[string]string // model directory -> identity
	datasets  []train.Dataset
	report    *Report
	// validated: the steps whose distillation validated its final step
	// in this process (on opt.Backend), by step index.
	validated map[int]bool
}

func (s *state) key(stage string) string { return s.keys[stage] }

// stepStage names step i's stage of a kind.
func (r *Recipe) stepStage(i int, kind string) string {
	if r.Steps[i].Name == "" {
		return kind
	}
	return r.Steps[i].Name + "/" + kind
}

// modelKey identifies the model a reference of step i names: what made
// it (a stage's key) or, for a directory, its files.
func (s *state) modelKey(name string, i int) (string, error) {
	r := s.r
	x, err := r.resolve(name, i)
	if err != nil {
		return "", err
	}
	switch x.kind {
	case RefTeacher:
		if r.TeacherCorrection.Enabled {
			return s.key(KindTeacherCorrection), nil
		}
		return s.teacherID, nil
	case RefOriginalTeacher:
		return s.teacherID, nil
	case "step":
		return s.key(r.stepStage(x.step, KindDistill)), nil
	}
	if id, ok := s.dirIDs[x.dir]; ok {
		return id, nil
	}
	id, err := model.DirIdentity(x.dir)
	s.dirIDs[x.dir] = id
	return id, err
}

// modelDir is the directory a reference of step i names.
func (s *state) modelDir(name string, i int) string {
	x, _ := s.r.resolve(name, i)
	return s.r.dirOf(x)
}

// onStep forwards a training stage's steps.
func (s *state) onStep(stage string) func(train.Metric, int) {
	if s.opt.OnStep == nil {
		return nil
	}
	return func(m train.Metric, total int) { s.opt.OnStep(stage, m, total) }
}

// run runs one stage unless its marker matches its inputs.
func (s *state) run(ctx context.Context, sg stage) (bool, error) {
	r := s.r
	var key string
	switch sg.kind {
	case KindData:
		return s.prepare(ctx)

	case KindTeacherCorrection:
		cfg := r.correctionConfig(s.datasets)
		key = checksum(s.key(KindData), s.teacherID, cfg.Data, cfg.Train, cfg.Optimizer)
		s.keys[sg.name] = key
		if r.done(sg.name, key) {
			return true, nil
		}
		out := r.correctionDir()
		res, err := train.Run(ctx, cfg, train.RunOptions{Out: out, Backend: s.opt.Backend, Log: s.opt.Log, OnStep: s.onStep(sg.name), Interrupt: s.opt.Interrupt,
			KeyName: correctionKey, NewRun: fmt.Sprintf("rerun the recipe with --from %s, which deletes its checkpoints (or from an earlier stage)", sg.name)})
		if err != nil {
			return false, err
		}
		s.logf("corrected the teacher in %d steps (%d tokens): val ce %.4f", res.Steps, res.Tokens, res.ValLoss)
		return false, r.finish(sg.name, key)

	case KindImportance:
		st := r.Steps[sg.step]
		src, err := s.modelKey(st.Source, sg.step)
		if err != nil {
			return false, err
		}
		key = checksum(s.key(KindData), src, st.Calibration, st.Importance)
		s.keys[sg.name] = key
		if r.done(sg.name, key) {
			return true, nil
		}
		return false, s.importance(ctx, sg, key)

	case KindPrune:
		st := r.Steps[sg.step]
		src, err := s.modelKey(st.Source, sg.step)
		if err != nil {
			return false, err
		}
		key = checksum(s.key(r.stepStage(sg.step, KindImportance)), src, st.Prune)
		s.keys[sg.name] = key
		if r.done(sg.name, key) {
			return true, nil
		}
		return false, s.prune(ctx, sg, key)

	case KindDistill:
		i := sg.step
		cfg := r.distillConfig(i, r.prunedDir(i), s.datasets)
		if in := &cfg.KD.Intermediate; (len(in.Layers) > 0 || in.Embedding) && len(in.Channels) == 0 {
			ch, err := r.channelMap(i)
			if err != nil {
				return false, err
			}
			in.Channels = ch
		}
		tk, err := s.modelKey(r.Steps[i].Teacher, i)
		if err != nil {
			return false, err
		}
		key = checksum(s.key(r.stepStage(i, KindPrune)), s.key(KindData), tk, cfg.Data, cfg.Train, cfg.Optimizer, cfg.KD)
		s.keys[sg.name] = key
		if r.done(sg.name, key) {
			return true, nil
		}
		// A distillation already under way resumes, when nothing but its
		// length changed; train.Run refuses any other change, naming the
		// recipe's keys (its checkpoints are not thrown away).
		out := r.distillDir(i)
		res, _, err := distill.Run(ctx, cfg, train.RunOptions{Out: out, Backend: s.opt.Backend, Log: s.opt.Log, OnStep: s.onStep(sg.name), Interrupt: s.opt.Interrupt,
			KeyName: recipeKey, NewRun: fmt.Sprintf("rerun the recipe with --from %s, which deletes its checkpoints (or from an earlier stage)", sg.name)})
		if err != nil {
			return false, err
		}
		s.logf("distilled %d steps (%d tokens) from %s: val ce %.4f", res.Steps, res.Tokens, cfg.Teacher.Model, res.ValLoss)
		s.validated[i] = res.ResumedFrom < res.Steps
		return false, r.finish(sg.name, key)

	case KindEval:
		var parts []any
		for _, m := range s.evalModels() {
			parts = append(parts, m.key)
		}
		key = checksum(parts, r.Eval)
		s.keys[sg.name] = key
		if r.done(sg.name, key) {
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

	case KindExport:
		key = checksum(s.key(r.stepStage(len(r.Steps)-1, KindDistill)), r.Export)
		s.keys[sg.name] = key
		if r.done(sg.name, key) {
			return true, nil
		}
		final := r.FinalStudent()
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
		return false, r.finish(sg.name, key)
	}
	return false, fmt.Errorf("unknown stage %q", sg.name)
}

// prepare is the data stage: datasets given as inputs are tokenized unless
// their manifest already matches the inputs and the tokenizer. The stage is
// up to date (and its marker left alone) when nothing was prepared and the
// datasets and split settings are those of its marker.
func (s *state) prepare(ctx context.Context) (bool, error) {
	r := s.r
	var manifests []string
	s.datasets = nil
	prepared := false
	for _, d := range r.Data.Datasets {
		dir := r.path(d.Path)
		if dir == "" {
			dir = filepath.Join(r.Out, "data", d.Name)
			var inputs []string
			for _, in := range d.Inputs {
				inputs = append(inputs, r.path(in))
			}
			before, _ := data.ReadManifest(dir)
			var once sync.Once
			m, err := data.Prepare(ctx, data.PrepareOptions{Inputs: inputs, Include: d.Include, Out: dir, Tokenizer: s.tok,
				TokenizerPath: r.path(r.Tokenizer), TextField: d.TextField, SplitLines: d.SplitLines, AddEOS: true,
				Progress: func(done, total int64) {
					once.Do(func() { s.logf("preparing dataset %s from %s", d.Name, strings.Join(inputs, ", ")) })
					if s.opt.Progress != nil {
						s.opt.Progress("data "+d.Name, done, total)
					}
				}})
			if err != nil {
				return false, err
			}
			if before == nil || !before.Created.Equal(m.Created) {
				prepared = true
				s.logf("prepared dataset %s: %d tokens in %s", d.Name, m.Tokens, dir)
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
	key := checksum(manifests, r.Data.SeqLen, r.Data.ValFraction)
	s.keys[KindData] = key
	if !prepared && r.done(KindData, key) {
		return true, nil
	}
	return false, r.finish(KindData, key)
}

// channelMap maps step i's student's hidden channels to its teacher's
// (student channel c is teacher channel map[c]) through the prune reports
// of the steps from the teacher down to the student; nil when the teacher
// is not the model the chain started from.
func (r *Recipe) channelMap(i int) ([]int, error) {
	t, err := r.resolve(r.Steps[i].Teacher, i)
	if err != nil {
		return nil, err
	}
	same := func(a, b ref) bool {
		teacher := func(x ref) bool { return x.kind == RefTeacher || x.kind == RefOriginalTeacher } // the same channels
		return teacher(a) && teacher(b) || a.kind == b.kind && a.step == b.step && a.dir == b.dir
	}
	var m []int
	for cur := i; ; {
		rep, err := prune.ReadReport(r.prunedDir(cur))
		if err != nil {
			return nil, err
		}
		if m == nil {
			m = append([]int(nil), rep.Kept.Hidden...)
		} else {
			for c := range m {
				m[c] = rep.Kept.Hidden[m[c]]
			}
		}
		src, err := r.resolve(r.Steps[cur].Source, cur)
		if err != nil {
			return nil, err
		}
		if same(src, t) {
			return m, nil
		}
		if src.kind != "step" {
			return nil, nil
		}
		cur = src.step
	}
}

func (s *state) importance(ctx context.Context, sg stage, key string) error {
	r := s.r
	st := r.Steps[sg.step]
	name := st.Calibration.Dataset
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
	trainSplit, _, err := ds.Split(r.Data.SeqLen, r.Data.ValFraction)
	if err != nil {
		return err
	}
	c, err := data.CalibrationFrom(trainSplit, st.Calibration.Samples, st.Calibration.SeqLen, st.Calibration.Seed)
	if err != nil {
		return err
	}
	src := s.modelDir(st.Source, sg.step)
	m, err := model.Load(src, s.opt.Backend, nil)
	if err != nil {
		return err
	}
	defer m.Free()
	imp := st.Importance
	sc, err := importance.Estimate(ctx, m, c.IDs, st.Calibration.Samples, st.Calibration.SeqLen, importance.Options{
		Agg: importance.Aggregation{Seq: imp.SeqAgg, Batch: imp.BatchAgg}, NeuronSite: imp.NeuronSite, Depth: imp.Depth, BatchSize: imp.BatchSize,
		Progress: func(done, total int) {
			if s.opt.Progress != nil {
				s.opt.Progress(sg.name, int64(done), int64(total))
			}
		}})
	if err != nil {
		return err
	}
	sc.Meta["model"] = src
	maps.Copy(sc.Meta, c.Meta())
	sc.Meta["calibration_source"] = dir
	sc.Meta["calibration_split"] = fmt.Sprintf("train (val_fraction %v, sequences of %d tokens)", r.Data.ValFraction, r.Data.SeqLen)
	if err := os.MkdirAll(filepath.Dir(r.scoresPath(sg.step)), 0o755); err != nil {
		return err
	}
	if err := sc.Save(r.scoresPath(sg.step)); err != nil {
		return err
	}
	s.logf("scored %s on %d calibration sequences of %d tokens (loss %.4f)", src, st.Calibration.Samples, st.Calibration.SeqLen, sc.CalibrationLoss)
	return r.finish(sg.name, key)
}

func (s *state) prune(ctx context.Context, sg stage, key string) error {
	r := s.r
	st := r.Steps[sg.step]
	out := r.prunedDir(sg.step)
	os.RemoveAll(out)
	scores, err := importance.Load(r.scoresPath(sg.step))
	if err != nil {
		return err
	}
	src := s.modelDir(st.Source, sg.step)
	scfg, err := model.LoadConfig(filepath.Join(src, "config.json"))
	if err != nil {
		return err
	}
	p := st.Prune
	plan, err := prune.NewPlan(scfg, scores, prune.Targets{Hidden: p.HiddenSize, Heads: p.NumAttentionHeads, FFN: p.IntermediateSize,
		Layers: p.NumLayers, DropLayers: p.DropLayers, DepthMetric: p.DepthMetric, Divisor: p.Divisor})
	if err != nil {
		return err
	}
	rep, err := prune.Apply(ctx, plan, src, prune.ApplyOptions{Out: out, ScoresPath: r.scoresPath(sg.step), ScoresMeta: scores.Meta})
	if err != nil {
		return err
	}
	// The tokenizer goes along, wherever the recipe took it from.
	if err := train.CopyTokenizer(r.path(r.Tokenizer), out); err != nil {
		return err
	}
	s.logf("pruned %s to %d layers, hidden %d, %d heads, MLP %d: %d -> %d parameters", src,
		rep.ShapeAfter.Layers, rep.ShapeAfter.Hidden, rep.ShapeAfter.Heads, rep.ShapeAfter.FFN, rep.ParamsBefore, rep.ParamsAfter)
	return r.finish(sg.name, key)
}

// evalModel is a model the eval stage measures; tokens are those the
// recipe trained it on (-1: unknown, the teacher).
type evalModel struct {
	name, dir, key string
	tokens         int64
}

// evalModels lists the models the eval stage measures: the teacher (and
// the corrected teacher), then each step's pruned model and student; the
// last is the final student.
func (s *state) evalModels() []evalModel {
	r := s.r
	ms := []evalModel{{"teacher", r.path(r.Teacher), s.teacherID, -1}}
	if r.TeacherCorrection.Enabled {
		ms = append(ms, evalModel{"teacher (corrected)", r.dirOf(ref{kind: RefTeacher}), s.key(KindTeacherCorrection), distilledTokens(r.correctionDir())})
	}
	for i, st := range r.Steps {
		prefix := ""
		if st.Name != "" {
			prefix = st.Name + ": "
		}
		ms = append(ms, evalModel{prefix + "pruned, before distillation", r.prunedDir(i), s.key(r.stepStage(i, KindPrune)), 0},
			evalModel{prefix + "student (distilled)", r.studentDir(i), s.key(r.stepStage(i, KindDistill)), distilledTokens(r.distillDir(i))})
	}
	return ms
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
	// The held-out sequences the distillations validate on (every step's
	// the same: they share data and sequence length).
	last := len(r.Steps) - 1
	dc := r.distillConfig(last, r.prunedDir(last), s.datasets)
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
	recorded := s.recordedCEs(dc)
	rep := &Report{}
	for _, mm := range s.evalModels() {
		rec, reuse := recorded[filepath.Clean(mm.dir)]
		var m *model.Model
		var mc *model.Config
		if !reuse || len(r.Eval.Tasks) > 0 || mm.dir == r.FinalStudent() {
			if m, err = model.Load(mm.dir, s.opt.Backend, nil); err != nil {
				return err
			}
			mc = m.Config
		} else if mc, err = model.LoadConfig(filepath.Join(mm.dir, "config.json")); err != nil {
			return err
		}
		var res *eval.Result
		if reuse {
			res = &eval.Result{Loss: rec.ce, Perplexity: math.Exp(rec.ce), Tokens: int64(len(val) * (len(val[0]) - 1))}
			s.logf("%s: val ce %.4f, from the validation at step %d of %s (the same held-out sequences and model)", mm.name, rec.ce, rec.step, rec.run)
		} else if res, err = eval.PerplexityOn(ctx, m, val, dc.Train.MicroBatch); err != nil {
			m.Free()
			return err
		}
		total, nonEmb := mc.NumParams()
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
		if mm.dir == r.FinalStudent() {
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
		if m != nil {
			m.Free()
		}
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

// recordedCEs returns, by model directory, the cross-entropies on the
// evaluation's held-out sequences (those of want's validation) that the
// steps' distillations measured at their final validation in this process
// and that stand for the eval stage's (finalValidation): a final student's
// val_ce, a teacher's val_teacher_ce.
func (s *state) recordedCEs(want *distill.Config) map[string]recordedCE {
	r := s.r
	out := map[string]recordedCE{}
	for i := range r.Steps {
		if !s.validated[i] {
			continue
		}
		cfg := r.distillConfig(i, r.prunedDir(i), s.datasets)
		student, teacher, why := finalValidation(r.distillDir(i), cfg, want, s.opt.Backend.FloatDType())
		if why != "" {
			s.logf("the val ce of %s is measured again: %s", r.studentDir(i), why) // the teacher's may still be reused
		}
		if student != nil {
			out[filepath.Clean(r.studentDir(i))] = *student
		}
		if teacher != nil {
			out[filepath.Clean(cfg.Teacher.Model)] = *teacher
		}
	}
	return out
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
