// Package train trains models: AdamW with decoupled weight decay, warmup
// and cosine/linear/constant learning-rate schedules, clipping by global
// gradient norm, gradient accumulation, periodic validation, and atomic
// checkpoints from which a killed run resumes bit for bit.
package train

import (
	"crypto/sha256"
	"encoding/hex"
	"math"
	"strings"

	"github.com/minitron/minitron/backend"
	"github.com/minitron/minitron/config"
	"github.com/minitron/minitron/model"
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

// OptimizerConfig is AdamW, its schedule and the precision of training.
// Where each default comes from:
//
//   - beta1 0.9, beta2 0.95, eps 1e-8, weight_decay 0.1, clip 1.0: GPT-3
//     (Brown et al. 2020, appendix B), the values Megatron-LM's GPT and
//     Nemotron pretraining configurations use (Megatron's bare argument
//     defaults are beta2 0.999 and weight decay 0.01).
//   - schedule cosine to min_lr = lr/10: GPT-3's decay to 10% of the peak.
//   - lr 3e-4 and warmup 100: this project's choice for small models;
//     recipes set their papers' values.
//   - decay matrices: Megatron-LM's parameter groups (megatron/core/
//     optimizer: no decay for biases and 1-D parameters).
//   - master_weights true, grad_dtype f32, state_dtype f32: Megatron-LM /
//     NeMo mixed precision with bf16 (float32 main parameters,
//     accumulate_allreduce_grads_in_fp32, float32 Adam state), the setup
//     the published Minitron models were trained with; mixed-precision
//     training as in Micikevicius et al. 2018.
type OptimizerConfig struct {
	LR          float64 `yaml:"lr"`
	MinLR       float64 `yaml:"min_lr"`
	Warmup      int     `yaml:"warmup"`
	Schedule    string  `yaml:"schedule"` // cosine, linear, constant
	Beta1       float64 `yaml:"beta1"`
	Beta2       float64 `yaml:"beta2"`
	Eps         float64 `yaml:"eps"`
	WeightDecay float64 `yaml:"weight_decay"`
	// Decay says which parameters weight decay applies to: matrices (every
	// weight with two or more dimensions, the embeddings and lm_head
	// included; norm weights and biases not: Megatron-LM's rule), or
	// no_embeddings (matrices except the embeddings and lm_head), or all.
	Decay string  `yaml:"decay"`
	Clip  float64 `yaml:"clip"` // global gradient norm; 0 disables
	// MasterWeights keeps a float32 copy of every weight the backend stores
	// in bfloat16 (the GPU): AdamW updates the copy and the bfloat16
	// weight used by forward and backward is refreshed from it, rounded
	// to nearest, after each step. false updates the bfloat16 weights in
	// place with stochastic rounding, which saves 4 bytes per parameter
	// but lets updates far below one bf16 unit of a weight (the end of a
	// cosine schedule) move it only through rounding noise. The CPU
	// backend stores float32 weights and needs no copy.
	MasterWeights bool `yaml:"master_weights"`
	// GradDType stores the gradients, which are accumulated across the
	// micro-batches of a step: f32 (default) or bf16, which halves their
	// memory but rounds the running sum at every micro-batch (about 1.7%
	// relative error after 288 of them). On the CPU both are float32.
	GradDType string `yaml:"grad_dtype"`
	// StateDType stores the moments m and v: f32 (default) or bf16, which
	// halves the optimizer's memory (on a GPU, bf16 moments are written
	// with stochastic rounding). On the CPU both are float32.
	//
	// All-bf16 training, for setups short of memory, is master_weights:
	// false, grad_dtype: bf16, state_dtype: bf16 (8 bytes per parameter
	// instead of 18; its cost in accuracy is measured in docs/numerics.md).
	StateDType string `yaml:"state_dtype"`
}

// Weight-decay policies (OptimizerConfig.Decay).
const (
	DecayMatrices     = "matrices"
	DecayNoEmbeddings = "no_embeddings"
	DecayAll          = "all"
)

// MomentDType returns the dtype of the optimizer moments.
func (o OptimizerConfig) MomentDType() backend.DType {
	if o.StateDType == "bf16" {
		return backend.BF16
	}
	return backend.F32
}

// GradientDType returns the dtype of the gradient accumulators.
func (o OptimizerConfig) GradientDType() backend.DType {
	if o.GradDType == "bf16" {
		return backend.BF16
	}
	return backend.F32
}

// Decays reports whether weight decay applies to a parameter of the given
// role and shape under the configured policy.
func (o OptimizerConfig) Decays(role model.Role, shape []int) bool {
	switch o.Decay {
	case DecayAll:
		return true
	case DecayNoEmbeddings:
		if role == model.Embed || role == model.LMHead {
			return false
		}
	}
	return len(shape) >= 2
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
		Data:  DataConfig{SeqLen: 256, ValFraction: 0.01, Seed: 1234, Shuffle: true},
		Train: LoopConfig{MicroBatch: 8, Accumulation: 1, LogEvery: 10},
		Optimizer: OptimizerConfig{LR: 3e-4, MinLR: 3e-5, Warmup: 100, Schedule: "cosine", Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, WeightDecay: 0.1,
			Decay: DecayMatrices, Clip: 1, MasterWeights: true, GradDType: "f32", StateDType: "f32"},
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

// Validate checks the configuration before any work. Its error is a
// *config.Invalid listing every problem.
func (c *Config) Validate() error {
	e := &config.Invalid{Prefix: "train"}
	c.Check(e)
	return e.Err()
}

// Check adds the configuration's problems to e (a larger configuration
// that embeds this one validates both at once).
func (c *Config) Check(e *config.Invalid) {
	if (c.Model.Config == "") == (c.Model.Checkpoint == "") {
		e.Addf("give exactly one of {model.config} (fresh weights) or {model.checkpoint}")
	}
	if len(c.Data.Datasets) == 0 {
		e.Addf("{data.datasets}: no datasets")
	}
	for i, d := range c.Data.Datasets {
		if d.Path == "" {
			e.Addf("{data.datasets}[%d].path: no path", i)
		}
		if d.Weight <= 0 {
			e.Addf("{data.datasets}[%d].weight %v (%s) must be positive", i, d.Weight, d.Path)
		}
	}
	if c.Data.SeqLen < 1 {
		e.Addf("{data.seq_len} %d must be positive", c.Data.SeqLen)
	}
	if c.Data.ValFraction < 0 || c.Data.ValFraction >= 1 {
		e.Addf("{data.val_fraction} %v must be in [0, 1)", c.Data.ValFraction)
	}
	if c.Train.MicroBatch < 1 {
		e.Addf("{train.micro_batch} %d must be at least 1", c.Train.MicroBatch)
	}
	if c.Train.Accumulation < 1 {
		e.Addf("{train.accumulation} %d must be at least 1", c.Train.Accumulation)
	}
	switch {
	case c.Train.Steps < 0:
		e.Addf("{train.steps} %d must be positive", c.Train.Steps)
	case c.Train.Tokens < 0:
		e.Addf("{train.tokens} %d must be positive", c.Train.Tokens)
	case c.Train.Steps == 0 && c.Train.Tokens == 0:
		e.Addf("give the length of the run: {train.steps}, or {train.tokens} (a token budget)")
	case c.Train.Steps > 0 && c.Train.Tokens > 0:
		e.Addf("give {train.steps} (%d) or {train.tokens} (%d), not both", c.Train.Steps, c.Train.Tokens)
	}
	o := c.Optimizer
	if !(o.LR > 0) {
		e.Addf("{optimizer.lr} %v must be positive", o.LR)
	}
	if o.MinLR < 0 || o.MinLR > o.LR {
		e.Addf("{optimizer.min_lr} %v must be in [0, {optimizer.lr} %v]", o.MinLR, o.LR)
	}
	if o.Warmup < 0 {
		e.Addf("{optimizer.warmup} %d must be >= 0", o.Warmup)
	}
	switch o.Schedule {
	case "cosine", "linear", "constant":
	default:
		e.Addf("{optimizer.schedule} %q: use cosine, linear or constant", o.Schedule)
	}
	if o.Beta1 < 0 || o.Beta1 >= 1 {
		e.Addf("{optimizer.beta1} %v must be in [0, 1)", o.Beta1)
	}
	if o.Beta2 < 0 || o.Beta2 >= 1 {
		e.Addf("{optimizer.beta2} %v must be in [0, 1)", o.Beta2)
	}
	if !(o.Eps > 0) {
		e.Addf("{optimizer.eps} %v must be positive", o.Eps)
	}
	if o.WeightDecay < 0 {
		e.Addf("{optimizer.weight_decay} %v must be >= 0", o.WeightDecay)
	}
	if o.Clip < 0 {
		e.Addf("{optimizer.clip} %v must be >= 0 (0 disables clipping)", o.Clip)
	}
	switch o.GradDType {
	case "", "f32", "bf16":
	default:
		e.Addf("{optimizer.grad_dtype} %q: use f32 or bf16", o.GradDType)
	}
	switch o.StateDType {
	case "", "f32", "bf16":
	default:
		e.Addf("{optimizer.state_dtype} %q: use f32 or bf16", o.StateDType)
	}
	switch o.Decay {
	case "", DecayMatrices, DecayNoEmbeddings, DecayAll:
	default:
		e.Addf("{optimizer.decay} %q: use %s (Megatron's rule: weights of two or more dimensions), %s or %s", o.Decay, DecayMatrices, DecayNoEmbeddings, DecayAll)
	}
	if c.Eval.Every < 0 {
		e.Addf("{eval.every} %d must be >= 0 (0: only at the end)", c.Eval.Every)
	}
	if c.Eval.Batches < 0 {
		e.Addf("{eval.batches} %d must be >= 0", c.Eval.Batches)
	}
	if c.Checkpoint.Every < 0 {
		e.Addf("{checkpoint.every} %d must be >= 0 (0: only at the end)", c.Checkpoint.Every)
	}
	if c.Checkpoint.Keep < 1 {
		e.Addf("{checkpoint.keep} %d must be at least 1", c.Checkpoint.Keep)
	}
	switch c.Checkpoint.ExportDType {
	case "bf16", "f16", "f32":
	default:
		e.Addf("{checkpoint.export_dtype} %q: use bf16, f16 or f32", c.Checkpoint.ExportDType)
	}
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
	d := c.resumable()
	d.Device = DeviceKind(d.Device)
	return hashYAML(d)
}

// resumes reports whether a checkpoint of fingerprint fp continues this
// configuration: fp is its fingerprint, or the one it had with the device
// as given (before the GPUs were left out), or its legacyFingerprint.
func (c *Config) resumes(fp string) bool {
	legacy := c.legacyFingerprint()
	return fp == c.fingerprint() || fp == hashYAML(c.resumable()) || (legacy != "" && fp == legacy)
}

// DeviceKind is a device setting without its GPU numbers: cpu or cuda.
func DeviceKind(dev string) string {
	d := strings.ToLower(strings.TrimSpace(dev))
	if d == "gpu" || strings.HasPrefix(d, "cuda") {
		return "cuda"
	}
	return d
}

// resumable is c without what may change between a run and its resumption.
func (c *Config) resumable() Config {
	d := *c
	d.Train.Steps, d.Train.Tokens, d.Train.LogEvery = 0, 0, 0
	d.Checkpoint.Every, d.Checkpoint.Keep = 0, 0
	d.Eval.Every = 0
	return d
}

func hashYAML(v any) string {
	b, _ := config.Marshal(v)
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// legacyFingerprint is the fingerprint c would have had before the
// optimizer's decay, master_weights and grad_dtype keys existed (when a
// boolean decay_norms_and_embeddings chose between decaying only matrices
// other than the embeddings and lm_head, and everything), so such runs
// resume: it is "" unless c asks for exactly what those runs did
// (decay no_embeddings or all; float32 gradients and master weights,
// which on the CPU those runs had).
func (c *Config) legacyFingerprint() string {
	o := c.Optimizer
	if (o.Decay != DecayNoEmbeddings && o.Decay != DecayAll) || !o.MasterWeights || o.GradientDType() != backend.F32 {
		return ""
	}
	type legacyOptimizer struct {
		LR          float64 `yaml:"lr"`
		MinLR       float64 `yaml:"min_lr"`
		Warmup      int     `yaml:"warmup"`
		Schedule    string  `yaml:"schedule"`
		Beta1       float64 `yaml:"beta1"`
		Beta2       float64 `yaml:"beta2"`
		Eps         float64 `yaml:"eps"`
		WeightDecay float64 `yaml:"weight_decay"`
		DecayAll    bool    `yaml:"decay_norms_and_embeddings"`
		Clip        float64 `yaml:"clip"`
		StateDType  string  `yaml:"state_dtype"`
	}
	type legacyConfig struct {
		Model      ModelConfig      `yaml:"model"`
		Data       DataConfig       `yaml:"data"`
		Train      LoopConfig       `yaml:"train"`
		Optimizer  legacyOptimizer  `yaml:"optimizer"`
		Eval       EvalConfig       `yaml:"eval"`
		Checkpoint CheckpointConfig `yaml:"checkpoint"`
		Device     string           `yaml:"device"`
	}
	d := c.resumable()
	return hashYAML(legacyConfig{d.Model, d.Data, d.Train, legacyOptimizer{o.LR, o.MinLR, o.Warmup, o.Schedule, o.Beta1, o.Beta2, o.Eps, o.WeightDecay,
		o.Decay == DecayAll, o.Clip, o.StateDType}, d.Eval, d.Checkpoint, d.Device})
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
