// Package train trains models: AdamW with decoupled weight decay, warmup
// and cosine/linear/constant learning-rate schedules, clipping by global
// gradient norm, gradient accumulation, periodic validation, and atomic
// checkpoints from which a killed run resumes bit for bit.
package train

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math"
	"strings"

	"github.com/minitron/minitron/backend"
	"github.com/minitron/minitron/config"
)

// Config is a training run. Defaults come from Default; a YAML file and
// --set overrides are applied on top.
type Config struct {
	Model      ModelConfig      `yaml:"model"`
	Data       DataConfig       `yaml:"data"`
	Train      LoopConfig       `yaml:"train"`
	Optimizer  OptimizerConfig  `yaml:"optimizer"`
	Eval       EvalConfig       `yaml:"eval"`
	Checkpoint CheckpointConfig `yaml:"checkpoint"`
	Device     string           `yaml:"device"`
}

// ModelConfig chooses the starting point: fresh weights from a config.json
// (drawn with init_seed from its initializer_range) or a checkpoint.
type ModelConfig struct {
	Config     string `yaml:"config"`
	Checkpoint string `yaml:"checkpoint"`
	InitSeed   uint64 `yaml:"init_seed"`
	// Tokenizer is copied into exported checkpoints (optional).
	Tokenizer string `yaml:"tokenizer"`
}

// Dataset is one prepared dataset of a blend.
type Dataset struct {
	Path   string  `yaml:"path"`
	Weight float64 `yaml:"weight"`
}

// DataConfig selects and shapes the training data.
type DataConfig struct {
	Datasets    []Dataset `yaml:"datasets"`
	SeqLen      int       `yaml:"seq_len"`
	ValFraction float64   `yaml:"val_fraction"`
	Seed        uint64    `yaml:"seed"`
	Shuffle     bool      `yaml:"shuffle"`
}

// LoopConfig sizes the run: sequences per micro-batch, micro-batches per
// optimizer step, and the length as steps or a token budget.
type LoopConfig struct {
	MicroBatch   int   `yaml:"micro_batch"`
	Accumulation int   `yaml:"accumulation"`
	Steps        int   `yaml:"steps"`
	Tokens       int64 `yaml:"tokens"`
	LogEvery     int   `yaml:"log_every"`
}

// OptimizerConfig is AdamW and its schedule.
type OptimizerConfig struct {
	LR          float64 `yaml:"lr"`
	MinLR       float64 `yaml:"min_lr"`
	Warmup      int     `yaml:"warmup"`
	Schedule    string  `yaml:"schedule"` // cosine, linear, constant
	Beta1       float64 `yaml:"beta1"`
	Beta2       float64 `yaml:"beta2"`
	Eps         float64 `yaml:"eps"`
	WeightDecay float64 `yaml:"weight_decay"`
	// DecayAll also decays norms and embeddings (off by default).
	DecayAll bool    `yaml:"decay_norms_and_embeddings"`
	Clip     float64 `yaml:"clip"` // global gradient norm; 0 disables
	// StateDType stores the moments m and v: f32 (default) or bf16, which
	// halves the optimizer's memory (on a GPU, bf16 moments are written
	// with stochastic rounding). On the CPU both are float32.
	StateDType string `yaml:"state_dtype"`
}

// MomentDType returns the dtype of the optimizer moments.
func (o OptimizerConfig) MomentDType() backend.DType {
	if o.StateDType == "bf16" {
		return backend.BF16
	}
	return backend.F32
}

// EvalConfig is the periodic validation.
type EvalConfig struct {
	Every   int `yaml:"every"`   // steps; 0 only at the end
	Batches int `yaml:"batches"` // micro-batches of validation sequences
}

// CheckpointConfig is when and how checkpoints are written.
type CheckpointConfig struct {
	Every int `yaml:"every"` // steps; 0 only at the end
	Keep  int `yaml:"keep"`  // newest checkpoints kept
	// ExportDType is the dtype of the final model directory (bf16, f16,
	// f32); checkpoints themselves are float32 so resumption is exact.
	ExportDType string `yaml:"export_dtype"`
}

// Default returns the defaults every run starts from.
func Default() Config {
	return Config{
		Data:       DataConfig{SeqLen: 256, ValFraction: 0.01, Seed: 1234, Shuffle: true},
		Train:      LoopConfig{MicroBatch: 8, Accumulation: 1, LogEvery: 10},
		Optimizer:  OptimizerConfig{LR: 3e-4, MinLR: 3e-5, Warmup: 100, Schedule: "cosine", Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, WeightDecay: 0.1, Clip: 1, StateDType: "f32"},
		Eval:       EvalConfig{Every: 100, Batches: 8},
		Checkpoint: CheckpointConfig{Every: 500, Keep: 2, ExportDType: "bf16"},
		Device:     "cpu",
	}
}

// Load reads a training config file with overrides.
func Load(path string, overrides []string) (*Config, error) {
	c := Default()
	if err := config.Load(path, &c, overrides); err != nil {
		return nil, err
	}
	return &c, c.Validate()
}

// Validate checks the configuration before any work.
func (c *Config) Validate() error {
	var errs []string
	add := func(f string, a ...any) { errs = append(errs, fmt.Sprintf(f, a...)) }
	if (c.Model.Config == "") == (c.Model.Checkpoint == "") {
		add("model: give exactly one of model.config (fresh weights) or model.checkpoint")
	}
	if len(c.Data.Datasets) == 0 {
		add("data.datasets: no datasets")
	}
	for i, d := range c.Data.Datasets {
		if d.Path == "" {
			add("data.datasets[%d]: no path", i)
		}
		if d.Weight <= 0 {
			add("data.datasets[%d] (%s): weight %v must be positive", i, d.Path, d.Weight)
		}
	}
	if c.Data.SeqLen < 1 {
		add("data.seq_len %d must be positive", c.Data.SeqLen)
	}
	if c.Data.ValFraction < 0 || c.Data.ValFraction >= 1 {
		add("data.val_fraction %v must be in [0, 1)", c.Data.ValFraction)
	}
	if c.Train.MicroBatch < 1 || c.Train.Accumulation < 1 {
		add("train.micro_batch and train.accumulation must be at least 1")
	}
	if (c.Train.Steps > 0) == (c.Train.Tokens > 0) {
		add("train: give exactly one of train.steps or train.tokens (a token budget)")
	}
	o := c.Optimizer
	if o.LR <= 0 || o.MinLR < 0 || o.MinLR > o.LR {
		add("optimizer: lr %v must be positive and min_lr %v in [0, lr]", o.LR, o.MinLR)
	}
	if o.Warmup < 0 {
		add("optimizer.warmup %d must be >= 0", o.Warmup)
	}
	switch o.Schedule {
	case "cosine", "linear", "constant":
	default:
		add("optimizer.schedule %q: use cosine, linear or constant", o.Schedule)
	}
	if o.Beta1 < 0 || o.Beta1 >= 1 || o.Beta2 < 0 || o.Beta2 >= 1 || o.Eps <= 0 || o.WeightDecay < 0 || o.Clip < 0 {
		add("optimizer: need 0 <= beta1, beta2 < 1, eps > 0, weight_decay >= 0, clip >= 0")
	}
	switch o.StateDType {
	case "", "f32", "bf16":
	default:
		add("optimizer.state_dtype %q: use f32 or bf16", o.StateDType)
	}
	if c.Eval.Every < 0 || c.Eval.Batches < 0 || c.Checkpoint.Every < 0 || c.Checkpoint.Keep < 1 {
		add("eval.every, eval.batches, checkpoint.every must be >= 0 and checkpoint.keep >= 1")
	}
	switch c.Checkpoint.ExportDType {
	case "bf16", "f16", "f32":
	default:
		add("checkpoint.export_dtype %q: use bf16, f16 or f32", c.Checkpoint.ExportDType)
	}
	if len(errs) > 0 {
		return fmt.Errorf("train: invalid config:\n  %s", joinLines(errs))
	}
	return nil
}

func joinLines(s []string) string {
	out := ""
	for i, x := range s {
		if i > 0 {
			out += "\n  "
		}
		out += x
	}
	return out
}

// TokensPerStep is the number of tokens one optimizer step trains on.
func (c *Config) TokensPerStep() int64 {
	return int64(c.Train.MicroBatch) * int64(c.Train.Accumulation) * int64(c.Data.SeqLen)
}

// TotalSteps resolves a token budget into steps.
func (c *Config) TotalSteps() int {
	if c.Train.Steps > 0 {
		return c.Train.Steps
	}
	return int((c.Train.Tokens + c.TokensPerStep() - 1) / c.TokensPerStep())
}

// YAML renders the effective configuration.
func (c *Config) YAML() ([]byte, error) { return config.Marshal(c) }

// fingerprint identifies what a resumed run must share with the saved one:
// everything but the length of the run and the checkpoint cadence, and
// which GPUs and how many (a run resumes on another number of GPUs).
func (c *Config) fingerprint() string {
	d := *c
	d.Device = DeviceKind(d.Device)
	return d.rawFingerprint()
}

// resumes reports whether a checkpoint of fingerprint fp continues this
// configuration (also when fp was made with the device as given, by a
// version that did not leave out the GPUs).
func (c *Config) resumes(fp string) bool { return fp == c.fingerprint() || fp == c.rawFingerprint() }

// DeviceKind is a device setting without its GPU numbers: cpu or cuda.
func DeviceKind(dev string) string {
	d := strings.ToLower(strings.TrimSpace(dev))
	if d == "gpu" || strings.HasPrefix(d, "cuda") {
		return "cuda"
	}
	return d
}

func (c *Config) rawFingerprint() string {
	d := *c
	d.Train.Steps, d.Train.Tokens, d.Train.LogEvery = 0, 0, 0
	d.Checkpoint.Every, d.Checkpoint.Keep = 0, 0
	d.Eval.Every = 0
	b, _ := config.Marshal(d)
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// LR is the learning rate at a 1-based step: linear warmup from 0, then the
// schedule from lr down to min_lr at the last step.
func (c *Config) LR(step, total int) float64 {
	o := c.Optimizer
	if step <= o.Warmup && o.Warmup > 0 {
		return o.LR * float64(step) / float64(o.Warmup)
	}
	span := total - o.Warmup
	if span <= 0 {
		return o.LR
	}
	p := math.Min(1, float64(step-o.Warmup)/float64(span))
	switch o.Schedule {
	case "cosine":
		return o.MinLR + 0.5*(o.LR-o.MinLR)*(1+math.Cos(math.Pi*p))
	case "linear":
		return o.LR + (o.MinLR-o.LR)*p
	}
	return o.LR
}
