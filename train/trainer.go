package train

import (
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/minitron/minitron/backend"
	"github.com/minitron/minitron/data"
	"github.com/minitron/minitron/model"
)

// Objective is the loss a trainer minimizes. Plain training uses
// CrossEntropy; distillation supplies its own.
type Objective interface {
	// LossAndGrad computes the mean loss of a micro-batch and accumulates
	// scale × its gradient into g.
	LossAndGrad(m *model.Model, a *model.Activations, in model.Input, targets []int32, scale float32, g *model.Grads) (float64, error)
	// Loss computes the validation loss of a micro-batch.
	Loss(m *model.Model, a *model.Activations, in model.Input, targets []int32) (float64, error)
}

// CrossEntropy is next-token prediction.
type CrossEntropy struct{}

// LossAndGrad implements Objective.
func (CrossEntropy) LossAndGrad(m *model.Model, a *model.Activations, in model.Input, targets []int32, scale float32, g *model.Grads) (float64, error) {
	return m.LossAndGrad(a, in, targets, scale, g)
}

// Loss implements Objective.
func (CrossEntropy) Loss(m *model.Model, a *model.Activations, in model.Input, targets []int32) (float64, error) {
	return m.Loss(a, in, targets, model.Options{})
}

// Param is a trainable tensor an objective owns beside the model's (the
// projection of distillation's hidden-state loss), with its gradient.
type Param struct {
	Name string
	W, G backend.Tensor
}

// ParamOwner is implemented by objectives with parameters of their own.
// The trainer zeroes their gradients before each step (the objective
// accumulates into them), clips them with the model's in the global norm,
// updates them with AdamW (no weight decay), and checkpoints them and
// their moments; they are not part of the exported model.
type ParamOwner interface{ Params() []Param }

// RefsConsumer is implemented by objectives that need to know which
// dataset sequences a micro-batch holds (an offline teacher cache); it is
// told before each LossAndGrad or Loss when the batcher can say.
type RefsConsumer interface{ SetRefs(refs []data.SeqRef) }

type refsBatcher interface{ Refs() []data.SeqRef }

// Batcher supplies sequences of SeqLen()+1 tokens (inputs and targets).
type Batcher interface {
	Batch(n int) ([]int32, error)
	Cursor() data.Cursor
	SetCursor(data.Cursor) error
	SeqLen() int
}

// Trainer holds a model, its optimizer state and the training position.
type Trainer struct {
	Cfg   *Config
	Model *model.Model
	Obj   Objective
	Data  Batcher
	// Step is the number of optimizer steps taken; Tokens the tokens trained on.
	Step   int
	Tokens int64
	Total  int

	grads *model.Grads
	acts  *model.Activations
	extra []Param // the objective's own parameters
	// slots are the tensors AdamW updates: the model's parameters in table
	// order, then the objective's.
	slots []slot
	// dp is the rank's part of a data-parallel run (NewShardedTrainer),
	// which replaces the slots' moments and master copies; nil on one
	// device.
	dp *sharded
	// identities are recorded in checkpoints (RunOptions.Identities).
	identities map[string]string
}

// slot is one parameter as the optimizer sees it.
type slot struct {
	w      backend.Tensor // the weight forward and backward read
	master backend.Tensor // its float32 master copy, or nil: w is updated in place
	g      backend.Tensor // the gradient
	m, v   backend.Tensor // the moments
	decay  bool
}

// target is the tensor AdamW updates.
func (s *slot) target() backend.Tensor {
	if s.master != nil {
		return s.master
	}
	return s.w
}

// StepStats describes one optimizer step.
type StepStats struct {
	Step     int     `json:"step"`
	Loss     float64 `json:"loss"`
	LR       float64 `json:"lr"`
	GradNorm float64 `json:"grad_norm"`
	Tokens   int64   `json:"tokens"`
}

// NewTrainer prepares optimizer state and workspaces for m: gradients in
// optimizer.grad_dtype, moments in optimizer.state_dtype, and, with
// optimizer.master_weights, a float32 copy of every weight the backend
// stores in bfloat16 (copied from the weight now; restored exactly from a
// checkpoint on resume).
func NewTrainer(cfg *Config, m *model.Model, obj Objective, batches Batcher) (*Trainer, error) {
	if batches.SeqLen() != cfg.Data.SeqLen {
		return nil, fmt.Errorf("train: data gives sequences of %d tokens, the config says %d", batches.SeqLen(), cfg.Data.SeqLen)
	}
	t := &Trainer{Cfg: cfg, Model: m, Obj: obj, Data: batches, Total: cfg.TotalSteps()}
	o, b := cfg.Optimizer, m.Backend
	var err error
	if t.grads, err = m.NewGradsIn(o.GradientDType()); err != nil {
		return nil, err
	}
	add := func(name string, w, g backend.Tensor, decay bool) error {
		t.slots = append(t.slots, slot{w: w, g: g, decay: decay}) // Free releases what is made
		s := &t.slots[len(t.slots)-1]
		var err error
		if s.m, err = b.New(o.MomentDType(), w.Shape()...); err != nil {
			return fmt.Errorf("train: moments of %s: %w", name, err)
		}
		if s.v, err = b.New(o.MomentDType(), w.Shape()...); err != nil {
			return fmt.Errorf("train: moments of %s: %w", name, err)
		}
		if o.MasterWeights && w.DType() != backend.F32 {
			if s.master, err = b.New(backend.F32, w.Shape()...); err != nil {
				return fmt.Errorf("train: master weights of %s: %w", name, err)
			}
			if err := b.Copy(s.master, w); err != nil {
				return err
			}
		}
		return nil
	}
	for i, p := range m.Params {
		if err := add(p.Name, m.Weights[i], t.grads.T[i], o.Decays(p.Role, p.Shape)); err != nil {
			t.Free()
			return nil, err
		}
	}
	if po, ok := obj.(ParamOwner); ok {
		t.extra = po.Params()
		for _, p := range t.extra {
			if err := add(p.Name, p.W, p.G, false); err != nil {
				t.Free()
				return nil, err
			}
		}
	}
	if t.acts, err = m.NewActivations(cfg.Train.MicroBatch*cfg.Data.SeqLen, true); err != nil {
		t.Free()
		return nil, err
	}
	return t, nil
}

// Free releases the trainer's buffers (not the model, except in a
// data-parallel run, whose model weights live in the trainer's buffer).
func (t *Trainer) Free() {
	b := t.Model.Backend
	if t.dp != nil {
		t.freeSharded()
	}
	if t.grads != nil {
		t.grads.Free(b)
	}
	for _, s := range t.slots {
		for _, x := range []backend.Tensor{s.m, s.v, s.master} {
			if x != nil {
				b.Free(x)
			}
		}
	}
	t.slots = nil
	if t.acts != nil {
		t.acts.Free(b)
	}
}

// modelWeights returns the values of the model's parameters as the
// optimizer holds them: the float32 master copies where there are any,
// else the weights themselves. In a data-parallel run each rank holds a
// share of the master copies only: the weights.
func (t *Trainer) modelWeights() []backend.Tensor {
	if t.dp != nil {
		return t.Model.Weights
	}
	ws := make([]backend.Tensor, len(t.Model.Params))
	for i := range ws {
		ws[i] = t.slots[i].target()
	}
	return ws
}

// split turns a batch of sequences into inputs and next-token targets.
func split(seqs []int32, n, seqLen int) (ids, targets []int32) {
	ids = make([]int32, n*seqLen)
	targets = make([]int32, n*seqLen)
	for s := range n {
		row := seqs[s*(seqLen+1) : (s+1)*(seqLen+1)]
		copy(ids[s*seqLen:], row[:seqLen])
		copy(targets[s*seqLen:], row[1:])
	}
	return ids, targets
}

// TrainStep runs one optimizer step: accumulation micro-batches, global
// norm clipping, AdamW.
func (t *Trainer) TrainStep() (StepStats, error) {
	cfg, b := t.Cfg, t.Model.Backend
	if err := t.grads.Zero(b); err != nil {
		return StepStats{}, err
	}
	for _, p := range t.extra {
		if err := b.Fill(p.G, 0); err != nil {
			return StepStats{}, err
		}
	}
	if ss, ok := t.Obj.(StepSummer); ok {
		ss.BeginStep()
	}
	var loss float64
	for range cfg.Train.Accumulation {
		mb, err := draw(t.Data, cfg.Train.MicroBatch)
		if err != nil {
			return StepStats{}, err
		}
		l, err := t.lossAndGrad(mb, 1/float32(cfg.Train.Accumulation))
		if err != nil {
			return StepStats{}, err
		}
		loss += l / float64(cfg.Train.Accumulation)
	}
	if err := t.checkLoss(loss); err != nil {
		return StepStats{}, err
	}
	// The global norm in one reduction on the device, read back once.
	gs := make([]backend.Tensor, len(t.slots))
	for i, s := range t.slots {
		gs[i] = s.g
	}
	sq, err := b.SquaredNorm(gs...)
	if err != nil {
		return StepStats{}, err
	}
	u := t.update(sq)
	for i, s := range t.slots {
		if err := b.AdamW(s.target(), s.g, s.m, s.v, u.adamW(s.decay, uint32(i))); err != nil {
			return StepStats{}, err
		}
		if s.master != nil {
			// The bfloat16 weight is the master rounded to nearest.
			if err := b.Copy(s.w, s.master); err != nil {
				return StepStats{}, err
			}
		}
	}
	return t.finishStep(u, loss)
}

// checkLoss refuses a step whose loss is not finite.
func (t *Trainer) checkLoss(loss float64) error {
	if math.IsNaN(loss) || math.IsInf(loss, 0) {
		return fmt.Errorf("train: step %d: the loss is %v; lower the learning rate or check the data", t.Step+1, loss)
	}
	return nil
}

// stepUpdate is what the optimizer applies in a step: the global gradient
// norm, the clipping scale it implies and the learning rate.
type stepUpdate struct {
	step      int
	lr, norm  float64
	scale     float32
	optimizer OptimizerConfig
}

// update prepares the next step's update from the squared global norm.
func (t *Trainer) update(sq float64) stepUpdate {
	u := stepUpdate{step: t.Step + 1, norm: math.Sqrt(sq), scale: 1, optimizer: t.Cfg.Optimizer}
	if c := u.optimizer.Clip; c > 0 && u.norm > c {
		u.scale = float32(c / u.norm)
	}
	u.lr = t.Cfg.LR(u.step, t.Total)
	return u
}

// adamW is the AdamW step of a tensor, with weight decay or without;
// seed tells the tensor's stochastic rounding noise from the others'.
func (u stepUpdate) adamW(decay bool, seed uint32) backend.AdamW {
	o := u.optimizer
	p := backend.AdamW{LR: float32(u.lr), Beta1: float32(o.Beta1), Beta2: float32(o.Beta2), Eps: float32(o.Eps), Step: u.step, GradScale: u.scale, Seed: seed}
	if decay {
		p.WeightDecay = float32(o.WeightDecay)
	}
	return p
}

// finishStep advances the position past a step and waits for its work.
func (t *Trainer) finishStep(u stepUpdate, loss float64) (StepStats, error) {
	t.Step = u.step
	t.Tokens += t.Cfg.TokensPerStep()
	return StepStats{Step: u.step, Loss: loss, LR: u.lr, GradNorm: u.norm, Tokens: t.Tokens}, t.Model.Backend.Sync()
}

// EvalStarter is implemented by objectives that accumulate their own
// validation statistics: BeginEval is called before each validation.
type EvalStarter interface{ BeginEval() }

// Evaluate returns the mean validation loss over up to batches
// micro-batches of val, read in order.
func (t *Trainer) Evaluate(val Batcher, batches int) (float64, error) {
	if s, ok := t.Obj.(EvalStarter); ok {
		s.BeginEval()
	}
	var sum float64
	for range batches {
		mb, err := draw(val, t.Cfg.Train.MicroBatch)
		if err != nil {
			return 0, err
		}
		l, err := t.evalLoss(mb)
		if err != nil {
			return 0, err
		}
		sum += l
	}
	return sum / float64(max(batches, 1)), nil
}

// RandomBatcher yields uniformly random token sequences (benchmarks, tests).
type RandomBatcher struct {
	Vocab, Len int
	Seed       uint64
	drawn      int64
}

// Batch implements Batcher: sequence k depends only on the seed and k.
func (r *RandomBatcher) Batch(n int) ([]int32, error) {
	out := make([]int32, 0, n*(r.Len+1))
	for range n {
		g := rand.New(rand.NewPCG(r.Seed, uint64(r.drawn)))
		for range r.Len + 1 {
			out = append(out, int32(g.IntN(r.Vocab)))
		}
		r.drawn++
	}
	return out, nil
}

// Cursor implements Batcher.
func (r *RandomBatcher) Cursor() data.Cursor {
	return data.Cursor{Drawn: r.drawn, Counts: []int64{r.drawn}}
}

// SetCursor implements Batcher.
func (r *RandomBatcher) SetCursor(c data.Cursor) error { r.drawn = c.Drawn; return nil }

// Skip moves past n sequences.
func (r *RandomBatcher) Skip(n int) { r.drawn += int64(n) }

// SeqLen implements Batcher.
func (r *RandomBatcher) SeqLen() int { return r.Len }
