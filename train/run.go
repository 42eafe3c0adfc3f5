package train

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/minitron/minitron/backend"
	"github.com/minitron/minitron/config"
	"github.com/minitron/minitron/data"
	"github.com/minitron/minitron/diskio"
	"github.com/minitron/minitron/dist"
	"github.com/minitron/minitron/model"
)

// MetricsFile is the per-step log of a run directory.
const MetricsFile = "metrics.jsonl"

// FinalDir is where a finished run exports its model.
const FinalDir = "final"

// ErrInterrupted is returned when a run stopped early on request, after
// writing a checkpoint; rerunning resumes it.
var ErrInterrupted = errors.New("train: interrupted; a checkpoint was written and rerunning the same command resumes")

// Metric is one line of metrics.jsonl: a training step (loss, the
// objective optimized) or a validation (val_ce, the model's cross-entropy
// on the held-out split).
type Metric struct {
	Step     int      `json:"step"`
	Loss     *float64 `json:"loss,omitempty"`
	ValCE    *float64 `json:"val_ce,omitempty"`
	LR       *float64 `json:"lr,omitempty"`
	GradNorm *float64 `json:"grad_norm,omitempty"`
	Tokens   int64    `json:"tokens"`
	TokPerS  float64  `json:"tok_per_s,omitempty"`
	Elapsed  float64  `json:"elapsed_s"`
	// Extra holds objective-specific values (distillation's kl on the
	// step's batch; at a validation val_kl and val_teacher_ce).
	Extra map[string]float64 `json:"extra,omitempty"`
}

// UnmarshalJSON reads a metrics line, val_loss (the name of val_ce in runs
// made before it) included.
func (m *Metric) UnmarshalJSON(b []byte) error {
	type plain Metric
	var v struct {
		plain
		Old *float64 `json:"val_loss"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*m = Metric(v.plain)
	if m.ValCE == nil {
		m.ValCE = v.Old
	}
	return nil
}

// RunOptions are the parts of a run that are not configuration.
type RunOptions struct {
	Out       string
	Backend   backend.Backend
	Objective Objective // nil: CrossEntropy
	// OnStep is called after every step and validation (progress display).
	OnStep func(m Metric, total int)
	// Log receives one-line messages (resuming, checkpoints, validation).
	Log io.Writer
	// Interrupt, when closed, stops the run after the current step with a
	// checkpoint (SIGINT).
	Interrupt <-chan struct{}
	// Extra returns objective-specific values to log with each step.
	Extra func() map[string]float64
	// Replicas, when given, make the run data-parallel: one per GPU this
	// process drives, in rank order, each run by its goroutine of Group.
	// Backend and Objective are then unused.
	Replicas []Replica
	Group    *dist.Group
	// Settings is the run's whole configuration when it is more than the
	// Config (a distillation's teacher and loss): config.yaml and every
	// checkpoint hold it, and a resumed run is compared with it key by key.
	// Nil: the Config.
	Settings any
	// Identities identify inputs the settings name only by path (a
	// teacher's weights), by the key naming them; a resumed run refuses
	// to go on when one changed. The datasets' are added by Run.
	Identities map[string]string
	// KeyName renames keys in resumption errors, for settings that are
	// part of a larger file (a recipe); nil keeps them.
	KeyName func(key string) string
	// NewRun says, in a resumption error, how to start a new run instead;
	// empty: with another output directory.
	NewRun string
}

// Replica is one rank of a data-parallel run.
type Replica struct {
	Backend   backend.Backend
	Comm      dist.Comm
	Objective Objective // nil: CrossEntropy
}

// Replicas pairs the backends of a process's GPUs with their members of
// the communicator.
func Replicas(bs []backend.Backend, cs []dist.Comm) []Replica {
	out := make([]Replica, len(bs))
	for i := range out {
		out[i] = Replica{Backend: bs[i], Comm: cs[i]}
	}
	return out
}

// Result summarizes a finished run.
type Result struct {
	Steps       int
	ResumedFrom int // step of the checkpoint resumed from, 0 if none
	TrainLoss   float64
	ValLoss     float64 // cross-entropy on the held-out split; NaN without validation
	FinalDir    string
	Tokens      int64
}

// valSeed orders the validation sequences.
const valSeed = 0x7a11d

// OpenData opens the configured datasets and returns the training and
// validation loaders; vocab is the model's vocabulary size.
func OpenData(cfg *Config, vocab int) (train, val *data.Loader, err error) {
	var tr, va []data.Source
	for i, d := range cfg.Data.Datasets {
		ds, err := data.Open(d.Path)
		if err != nil {
			return nil, nil, err
		}
		if v := ds.Manifest.Tokenizer.VocabSize; v > vocab {
			return nil, nil, fmt.Errorf("train: dataset %s was tokenized with a vocabulary of %d, the model has %d", d.Path, v, vocab)
		}
		t, v, err := ds.Split(cfg.Data.SeqLen, cfg.Data.ValFraction)
		if err != nil {
			return nil, nil, err
		}
		name := fmt.Sprintf("%d:%s", i, d.Path)
		tr = append(tr, data.Source{Name: name, Split: t, Weight: d.Weight})
		if v.Count > 0 {
			va = append(va, data.Source{Name: name, Split: v, Weight: d.Weight})
		}
	}
	if train, err = data.NewLoader(tr, cfg.Data.Seed, cfg.Data.Shuffle); err != nil {
		return nil, nil, err
	}
	if len(va) > 0 {
		// Shuffled with a fixed seed: the validation batches sample the
		// whole held-out split (which is made of blocks of consecutive
		// sequences), and are the same sequences for every run and seed.
		if val, err = data.NewLoader(va, valSeed, true); err != nil {
			return nil, nil, err
		}
	}
	return train, val, nil
}

// ValidationSequences returns the held-out sequences (SeqLen+1 tokens
// each) a run of cfg validates on: eval.batches micro-batches, always the
// same ones. eval.PerplexityOn measures other models on them, so their
// cross-entropy compares with the run's val_ce.
func ValidationSequences(cfg *Config, vocab int) ([][]int32, error) {
	_, val, err := OpenData(cfg, vocab)
	if err != nil {
		return nil, err
	}
	if val == nil || cfg.Eval.Batches == 0 {
		return nil, fmt.Errorf("train: no validation data (data.val_fraction %v, eval.batches %d)", cfg.Data.ValFraction, cfg.Eval.Batches)
	}
	var out [][]int32
	for range cfg.Eval.Batches * cfg.Train.MicroBatch {
		seq, _, err := val.Next(nil)
		if err != nil {
			return nil, err
		}
		out = append(out, seq)
	}
	return out, nil
}

// StartModel makes the model a run starts from: the newest checkpoint in
// out when resuming, else the configured checkpoint or fresh weights.
func StartModel(cfg *Config, out string, b backend.Backend) (*model.Model, string, error) {
	dirs, err := Checkpoints(out)
	if err != nil {
		return nil, "", err
	}
	if len(dirs) > 0 {
		resume := dirs[len(dirs)-1]
		m, err := model.Load(resume, b, nil)
		return m, resume, err
	}
	if cfg.Model.Checkpoint != "" {
		m, err := model.Load(cfg.Model.Checkpoint, b, nil)
		return m, "", err
	}
	mc, err := model.LoadConfig(cfg.Model.Config)
	if err != nil {
		return nil, "", err
	}
	m, err := model.Random(mc, b, cfg.Model.InitSeed)
	return m, "", err
}

// Run trains according to cfg into opt.Out, resuming from the newest
// complete checkpoint there, and exports the final model. With
// opt.Replicas it runs this process's ranks of a data-parallel run.
func Run(ctx context.Context, cfg *Config, opt RunOptions) (*Result, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if opt.Objective == nil {
		opt.Objective = CrossEntropy{}
	}
	if err := os.MkdirAll(opt.Out, 0o755); err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}
	var settings any = cfg
	if opt.Settings != nil {
		settings = opt.Settings
	}
	cfgYAML, err := config.Marshal(settings)
	if err != nil {
		return nil, err
	}
	var e engine
	var valData *data.Loader
	var resumeDir string
	if len(opt.Replicas) > 0 {
		p, err := startParallel(cfg, opt)
		if err != nil {
			return nil, err
		}
		e, valData, resumeDir = p, p.val, p.resumeDir
	} else {
		diskio.CleanTemporary(opt.Out)
		m, dir, err := StartModel(cfg, opt.Out, opt.Backend)
		if err != nil {
			return nil, err
		}
		trainData, val, err := OpenData(cfg, m.Config.VocabSize)
		if err != nil {
			return nil, err
		}
		t, err := NewTrainer(cfg, m, opt.Objective, trainData)
		if err != nil {
			return nil, err
		}
		e, valData, resumeDir = single{t}, val, dir
	}
	defer e.free()
	t := e.lead()
	writes := e.writes()
	logf := func(f string, a ...any) {
		if opt.Log != nil && writes {
			fmt.Fprintf(opt.Log, f+"\n", a...)
		}
	}
	res := &Result{ValLoss: nanValue()}
	ids, err := identities(cfg, opt.Identities)
	if err != nil {
		return nil, err
	}
	t.identities = ids
	if resumeDir != "" {
		st, err := readState(resumeDir)
		if err != nil {
			return nil, err
		}
		if err := checkResume(cfg, opt, st, resumeDir, cfgYAML, ids); err != nil {
			return nil, err
		}
		if err := e.resume(resumeDir, st); err != nil {
			return nil, err
		}
		res.ResumedFrom = st.Step
		logf("resuming from %s (step %d of %d)", resumeDir, st.Step, t.Total)
	}
	var mf *metricsFile
	if writes {
		if err := diskio.WriteFileAtomic(filepath.Join(opt.Out, "config.yaml"), cfgYAML); err != nil {
			return nil, err
		}
		if mf, err = openMetrics(filepath.Join(opt.Out, MetricsFile), t.Step); err != nil {
			return nil, err
		}
		defer mf.Close()
	}
	emit := func(mt Metric) error {
		if !writes {
			return nil
		}
		b, _ := json.Marshal(mt)
		if _, err := mf.Write(append(b, '\n')); err != nil {
			return fmt.Errorf("train: writing metrics: %w", err)
		}
		if opt.OnStep != nil {
			opt.OnStep(mt, t.Total)
		}
		return nil
	}
	validate := func() error {
		if valData == nil || cfg.Eval.Batches == 0 {
			return nil
		}
		if err := valData.SetCursor(data.Cursor{Counts: make([]int64, len(valData.Cursor().Counts))}); err != nil {
			return err
		}
		v, err := e.validate(valData, cfg.Eval.Batches)
		if err != nil {
			return err
		}
		res.ValLoss = v
		logf("step %d: validation ce %.4f", t.Step, v)
		return emit(Metric{Step: t.Step, ValCE: &v, Tokens: t.Tokens, Extra: extra(opt, true)})
	}
	checkpoint := func() error {
		dir, err := e.checkpoint(opt.Out, cfgYAML)
		if err != nil || !writes {
			return err
		}
		if err := mf.Sync(); err != nil {
			return err
		}
		logf("step %d: checkpoint %s", t.Step, dir)
		return prune(opt.Out, cfg.Checkpoint.Keep)
	}
	start := time.Now()
	startTokens := t.Tokens
	for t.Step < t.Total {
		st, err := e.step()
		if err != nil {
			return nil, err
		}
		res.TrainLoss = st.Loss
		el := time.Since(start).Seconds()
		loss, lr, gn := st.Loss, st.LR, st.GradNorm
		if err := emit(Metric{Step: st.Step, Loss: &loss, LR: &lr, GradNorm: &gn, Tokens: st.Tokens, Elapsed: el,
			TokPerS: float64(st.Tokens-startTokens) / el, Extra: extra(opt, false)}); err != nil {
			return nil, err
		}
		last := t.Step == t.Total
		if (cfg.Eval.Every > 0 && t.Step%cfg.Eval.Every == 0) || last {
			if err := validate(); err != nil {
				return nil, err
			}
		}
		asked := false
		select {
		case <-opt.Interrupt:
			asked = true
		case <-ctx.Done():
			asked = true
		default:
		}
		interrupted, err := e.stop(asked)
		if err != nil {
			return nil, err
		}
		if (cfg.Checkpoint.Every > 0 && t.Step%cfg.Checkpoint.Every == 0) || last || interrupted {
			if err := checkpoint(); err != nil {
				return nil, err
			}
		}
		if interrupted && !last {
			return nil, ErrInterrupted
		}
	}
	if res.ResumedFrom == t.Total && writes {
		logf("the run in %s is already complete (%d steps)", opt.Out, t.Total)
		// Its last losses are in the metrics it logged.
		if ms, err := ReadMetrics(opt.Out); err == nil {
			for _, mt := range ms {
				if mt.Loss != nil {
					res.TrainLoss = *mt.Loss
				}
				if mt.ValCE != nil {
					res.ValLoss = *mt.ValCE
				}
			}
		}
	}
	res.Steps, res.Tokens = t.Step, t.Tokens
	if !writes {
		return res, nil
	}
	dt, _ := backend.ParseDType(cfg.Checkpoint.ExportDType)
	res.FinalDir = filepath.Join(opt.Out, FinalDir)
	if err := ExportModel(res.FinalDir, t.Model, t.modelWeights(), dt, cfg.Model.Tokenizer); err != nil {
		return nil, err
	}
	return res, nil
}

// engine is what Run drives: the trainer of one device, or the ranks of
// a data-parallel run that this process drives.
type engine interface {
	// lead is the trainer whose position and model stand for the run's.
	lead() *Trainer
	// writes reports whether this process writes the logs, metrics,
	// checkpoints' shared files and the model (global rank 0's).
	writes() bool
	resume(dir string, st *State) error
	step() (StepStats, error)
	validate(val *data.Loader, batches int) (float64, error)
	// stop reports whether the run stops after this step: asked here or,
	// in a data-parallel run, in any process.
	stop(asked bool) (bool, error)
	checkpoint(out string, cfgYAML []byte) (string, error)
	free()
}

// single is the engine of one device.
type single struct{ t *Trainer }

func (s single) lead() *Trainer                                  { return s.t }
func (s single) writes() bool                                    { return true }
func (s single) resume(dir string, st *State) error              { return s.t.restore(dir, st) }
func (s single) step() (StepStats, error)                        { return s.t.TrainStep() }
func (s single) stop(asked bool) (bool, error)                   { return asked, nil }
func (s single) free()                                           { s.t.Free() }
func (s single) checkpoint(out string, y []byte) (string, error) { return s.t.save(out, y, "") }
func (s single) validate(val *data.Loader, batches int) (float64, error) {
	return s.t.Evaluate(val, batches)
}

// extra returns the objective's values for a validation line (the val_
// ones) or a step line (the others).
func extra(opt RunOptions, validation bool) map[string]float64 {
	if opt.Extra == nil {
		return nil
	}
	var out map[string]float64
	for k, v := range opt.Extra() {
		if strings.HasPrefix(k, "val_") == validation {
			if out == nil {
				out = map[string]float64{}
			}
			out[k] = v
		}
	}
	return out
}

func nanValue() float64 { var z float64; return z / z }

// metricsFile appends lines durably enough: it is synced at checkpoints.
type metricsFile struct {
	f *os.File
	w *bufio.Writer
}

func (m *metricsFile) Write(b []byte) (int, error) {
	n, err := m.w.Write(b)
	if err == nil {
		err = m.w.Flush()
	}
	return n, err
}

func (m *metricsFile) Sync() error  { return m.f.Sync() }
func (m *metricsFile) Close() error { m.w.Flush(); return m.f.Close() }

// openMetrics opens the metrics log for appending after keeping only the
// lines of steps up to step (those after the resumed checkpoint are redone).
func openMetrics(path string, step int) (*metricsFile, error) {
	var keep [][]byte
	if f, err := os.Open(path); err == nil {
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<16), 1<<24)
		for sc.Scan() {
			var mt Metric
			if json.Unmarshal(sc.Bytes(), &mt) != nil {
				break // a torn last line
			}
			if mt.Step > step {
				break
			}
			keep = append(keep, append(append([]byte(nil), sc.Bytes()...), '\n'))
		}
		f.Close()
	}
	err := diskio.WriteAtomic(path, func(w io.Writer) error {
		for _, l := range keep {
			if _, err := w.Write(l); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}
	return &metricsFile{f: f, w: bufio.NewWriter(f)}, nil
}

// ReadMetrics loads a run's metrics log.
func ReadMetrics(dir string) ([]Metric, error) {
	f, err := os.Open(filepath.Join(dir, MetricsFile))
	if err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}
	defer f.Close()
	var out []Metric
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<16), 1<<24)
	for sc.Scan() {
		var mt Metric
		if err := json.Unmarshal(sc.Bytes(), &mt); err != nil {
			continue
		}
		out = append(out, mt)
	}
	return out, sc.Err()
}
