package train

import (
	"fmt"
	"path/filepath"

	"github.com/minitron/minitron/backend"
	"github.com/minitron/minitron/checkpoints"
	"github.com/minitron/minitron/data"
	"github.com/minitron/minitron/dist"
	"github.com/minitron/minitron/model"
)

// Data-parallel training with sharded optimizer state (ZeRO stage 1, as
// Megatron-LM's distributed optimizer): every rank (GPU) holds the whole
// model and runs its part of each step's micro-batches; the gradients
// are reduce-scattered so that each rank ends up with the sum over all
// ranks of its shard of them; each rank updates the master weights and
// Adam moments of its shard only, and all-gathers the updated weights.
//
// The trainable tensors (the model's parameters in table order, then the
// objective's) are laid out in one flat vector, each starting at a
// multiple of flatAlign elements, padded at the end to a multiple of
// world·flatAlign elements; rank r's shard is the r-th of world equal
// parts. The model's weights and gradients are views into two flat
// buffers, so that each collective is one call. Padding is zero and stays
// zero (its gradient is zero, and so is its update).
//
// The global batch is micro_batch × accumulation sequences whatever the
// number of ranks: micro-batch k of a step goes to rank k/(accumulation/
// world), and is the same data on any number of ranks (the data order is
// a function of the step and k only), so runs on 1, 2 or 8 GPUs follow
// the same trajectory up to the rounding of the reduction order.

// flatAlign is the alignment of each tensor in the flat vector, in
// elements (128 bytes of bfloat16, 256 of float32).
const flatAlign = 64

// flatEntry is one trainable tensor in the flat vector.
type flatEntry struct {
	name  string // checkpoint name: the parameter's, or "extra." + the objective's
	off   int    // first element in the flat vector
	n     int
	decay bool
	param int // index in Model.Params, or -1
	extra int // index in the objective's parameters, or -1
}

// flatLayout places the trainable tensors of a run over world ranks.
type flatLayout struct {
	entries []flatEntry
	total   int // padded length, world·shard
	shard   int
	world   int
}

func roundUp(n, k int) int { return (n + k - 1) / k * k }

// newLayout lays out m's parameters and the objective's for world ranks.
func newLayout(cfg *Config, m *model.Model, extra []Param, world int) flatLayout {
	l := flatLayout{world: world}
	off := 0
	for i, p := range m.Params {
		n := backend.Numel(p.Shape)
		l.entries = append(l.entries, flatEntry{name: p.Name, off: off, n: n, decay: cfg.Optimizer.Decays(p.Role, p.Shape), param: i, extra: -1})
		off = roundUp(off+n, flatAlign)
	}
	for i, p := range extra {
		n := backend.Numel(p.W.Shape())
		l.entries = append(l.entries, flatEntry{name: "extra." + p.Name, off: off, n: n, param: -1, extra: i})
		off = roundUp(off+n, flatAlign)
	}
	l.total = roundUp(max(off, 1), world*flatAlign)
	l.shard = l.total / world
	return l
}

// sharded is a rank's part of data-parallel training: the flat buffers
// behind the model's weights (the backend's float type) and gradients
// (optimizer.grad_dtype), and the optimizer state of the rank's shard.
type sharded struct {
	comm           dist.Comm
	lay            flatLayout
	wflat, gflat   backend.Tensor // [total] weights, gradients
	wshard, gshard backend.Tensor // this rank's shard of each (views)
	master         backend.Tensor // [shard] float32 master weights; nil when the weights are float32 or master_weights is off
	m, v           backend.Tensor // [shard] Adam moments
	segs           []segment      // the shard cut at tensor boundaries
}

// segment is the part of one tensor inside the rank's shard, with views
// of what AdamW reads and writes there.
type segment struct {
	e          int // index of the entry
	at, n      int // first element within the shard, count
	w, g, m, v backend.Tensor
}

// start returns the segment's first element within its tensor.
func (s *sharded) start(sg segment) int {
	return s.comm.Rank()*s.lay.shard + sg.at - s.lay.entries[sg.e].off
}

// NewShardedTrainer prepares rank comm.Rank() of a data-parallel run on
// m, whose weights move into one flat buffer (its Weights become views)
// and start as rank 0's. batches is the process's data loader, from which
// the run, not the trainer, draws; objectives own parameters on every
// rank alike. Every rank of the communicator calls it at the same time.
func NewShardedTrainer(cfg *Config, m *model.Model, obj Objective, batches Batcher, comm dist.Comm) (*Trainer, error) {
	world := comm.Size()
	if err := CheckGPUs(cfg, world); err != nil {
		return nil, err
	}
	if batches.SeqLen() != cfg.Data.SeqLen {
		return nil, fmt.Errorf("train: data gives sequences of %d tokens, the config says %d", batches.SeqLen(), cfg.Data.SeqLen)
	}
	t := &Trainer{Cfg: cfg, Model: m, Obj: obj, Data: batches, Total: cfg.TotalSteps()}
	if po, ok := obj.(ParamOwner); ok {
		t.extra = po.Params()
	}
	s := &sharded{comm: comm, lay: newLayout(cfg, m, t.extra, world)}
	t.dp = s
	if err := t.setupSharded(); err != nil {
		t.Free()
		return nil, err
	}
	return t, nil
}

// CheckGPUs says whether a run of cfg can be split among gpus GPUs: the
// accumulation micro-batches of a step are, so their number must be a
// multiple of gpus.
func CheckGPUs(cfg *Config, gpus int) error {
	if a := cfg.Train.Accumulation; a%gpus != 0 {
		return fmt.Errorf("train: train.accumulation %d does not divide among %d GPUs: the global batch is micro_batch × accumulation whatever the number of GPUs, so accumulation must be a multiple of it (e.g. %d)",
			a, gpus, roundUp(a, gpus))
	}
	return nil
}

func (t *Trainer) setupSharded() error {
	s, m, b := t.dp, t.Model, t.Model.Backend
	lay := s.lay
	var err error
	if s.wflat, err = b.New(b.FloatDType(), lay.total); err != nil {
		return fmt.Errorf("train: the flat weight buffer (%d elements): %w", lay.total, err)
	}
	// Gradients accumulate, and are reduced, in optimizer.grad_dtype.
	o := t.Cfg.Optimizer
	if s.gflat, err = b.New(o.GradientDType(), lay.total); err != nil {
		return fmt.Errorf("train: the flat gradient buffer (%d elements): %w", lay.total, err)
	}
	ws := make([]backend.Tensor, len(m.Params))
	gs := make([]backend.Tensor, len(m.Params))
	for _, e := range lay.entries {
		var shape []int
		if e.param >= 0 {
			shape = m.Params[e.param].Shape
		} else {
			shape = t.extra[e.extra].W.Shape()
		}
		w, err := b.View(s.wflat, e.off, shape...)
		if err != nil {
			return err
		}
		g, err := b.View(s.gflat, e.off, shape...)
		if err != nil {
			return err
		}
		if e.param < 0 {
			if err := b.Copy(w, t.extra[e.extra].W); err != nil {
				return err
			}
			continue
		}
		if err := b.Copy(w, m.Weights[e.param]); err != nil {
			return err
		}
		b.Free(m.Weights[e.param])
		ws[e.param], gs[e.param] = w, g
	}
	m.SetWeights(ws)
	t.grads = m.GradsOf(gs)
	// Every replica starts from rank 0's weights.
	if err := s.comm.Broadcast(s.wflat, 0); err != nil {
		return err
	}
	if err := t.copyExtrasOut(); err != nil {
		return err
	}
	lo := s.comm.Rank() * lay.shard
	if s.wshard, err = b.View(s.wflat, lo, lay.shard); err != nil {
		return err
	}
	if s.gshard, err = b.View(s.gflat, lo, lay.shard); err != nil {
		return err
	}
	if o.MasterWeights && b.FloatDType() != backend.F32 {
		if s.master, err = b.New(backend.F32, lay.shard); err != nil {
			return fmt.Errorf("train: master weights of the shard: %w", err)
		}
		if err := b.Copy(s.master, s.wshard); err != nil {
			return err
		}
	}
	dt := o.MomentDType()
	if s.m, err = b.New(dt, lay.shard); err != nil {
		return fmt.Errorf("train: moments of the shard: %w", err)
	}
	if s.v, err = b.New(dt, lay.shard); err != nil {
		return fmt.Errorf("train: moments of the shard: %w", err)
	}
	target := s.target()
	for i, e := range lay.entries {
		a, z := max(e.off, lo), min(e.off+e.n, lo+lay.shard)
		if a >= z {
			continue
		}
		sg := segment{e: i, at: a - lo, n: z - a}
		for _, x := range []struct {
			dst *backend.Tensor
			src backend.Tensor
		}{{&sg.w, target}, {&sg.g, s.gshard}, {&sg.m, s.m}, {&sg.v, s.v}} {
			if *x.dst, err = b.View(x.src, sg.at, sg.n); err != nil {
				return err
			}
		}
		s.segs = append(s.segs, sg)
	}
	t.acts, err = m.NewActivations(t.Cfg.Train.MicroBatch*t.Cfg.Data.SeqLen, true)
	return err
}

// target is what AdamW updates: the master weights, or the weights.
func (s *sharded) target() backend.Tensor {
	if s.master != nil {
		return s.master
	}
	return s.wshard
}

// freeSharded releases the flat buffers and the shard's state; the
// model's weights, views into them, are gone with them.
func (t *Trainer) freeSharded() {
	b := t.Model.Backend
	for _, x := range []backend.Tensor{t.dp.wflat, t.dp.gflat, t.dp.master, t.dp.m, t.dp.v} {
		if x != nil {
			b.Free(x)
		}
	}
	t.dp = nil
}

// copyExtrasOut copies the objective's parameters from the gathered
// weights into its own tensors.
func (t *Trainer) copyExtrasOut() error {
	s, b := t.dp, t.Model.Backend
	for _, e := range s.lay.entries {
		if e.extra < 0 {
			continue
		}
		w, err := b.View(s.wflat, e.off, e.n)
		if err != nil {
			return err
		}
		if err := b.Copy(t.extra[e.extra].W, w); err != nil {
			return err
		}
	}
	return nil
}

// microBatch is micro_batch sequences of seq_len+1 tokens, with where
// they came from when the loader can say.
type microBatch struct {
	seqs []int32
	refs []data.SeqRef
}

// draw takes the next micro-batch of n sequences from b.
func draw(b Batcher, n int) (microBatch, error) {
	seqs, err := b.Batch(n)
	if err != nil {
		return microBatch{}, err
	}
	mb := microBatch{seqs: seqs}
	if rb, ok := b.(refsBatcher); ok {
		mb.refs = rb.Refs()
	}
	return mb, nil
}

// skipper is implemented by loaders that can move past sequences without
// reading them.
type skipper interface{ Skip(n int) }

// skip moves b past n sequences.
func skip(b Batcher, n int) error {
	if s, ok := b.(skipper); ok {
		s.Skip(n)
		return nil
	}
	_, err := b.Batch(n)
	return err
}

// lossAndGrad runs one micro-batch forward and backward, accumulating
// scale × its gradient.
func (t *Trainer) lossAndGrad(mb microBatch, scale float32) (float64, error) {
	n, T := t.Cfg.Train.MicroBatch, t.Cfg.Data.SeqLen
	ids, targets := split(mb.seqs, n, T)
	if rc, ok := t.Obj.(RefsConsumer); ok && mb.refs != nil {
		rc.SetRefs(mb.refs)
	}
	return t.Obj.LossAndGrad(t.Model, t.acts, model.Input{B: n, T: T, IDs: ids}, targets, scale, t.grads)
}

// evalLoss is the validation loss of one micro-batch.
func (t *Trainer) evalLoss(mb microBatch) (float64, error) {
	n, T := t.Cfg.Train.MicroBatch, t.Cfg.Data.SeqLen
	ids, targets := split(mb.seqs, n, T)
	if rc, ok := t.Obj.(RefsConsumer); ok && mb.refs != nil {
		rc.SetRefs(mb.refs)
	}
	return t.Obj.Loss(t.Model, t.acts, model.Input{B: n, T: T, IDs: ids}, targets)
}

// StepSummer is implemented by objectives that keep statistics of a step
// as sums over its micro-batches (distillation's KL): BeginStep starts a
// step, and in a data-parallel run the ranks' sums are added up (StepSums,
// then SetStepSums with the totals) so every rank reports the whole step.
type StepSummer interface {
	BeginStep()
	StepSums() []float64
	SetStepSums([]float64)
}

// EvalSummer is StepSummer for validation, which starts with BeginEval.
type EvalSummer interface {
	EvalSums() []float64
	SetEvalSums([]float64)
}

// shardedStep is one optimizer step of a data-parallel rank over its
// micro-batches of the global batch.
func (t *Trainer) shardedStep(mbs []microBatch) (StepStats, error) {
	s, b, cfg := t.dp, t.Model.Backend, t.Cfg
	if err := b.Fill(s.gflat, 0); err != nil {
		return StepStats{}, err
	}
	for _, p := range t.extra {
		if err := b.Fill(p.G, 0); err != nil {
			return StepStats{}, err
		}
	}
	ss, _ := t.Obj.(StepSummer)
	if ss != nil {
		ss.BeginStep()
	}
	a := float64(cfg.Train.Accumulation)
	var loss float64
	for _, mb := range mbs {
		l, err := t.lossAndGrad(mb, float32(1/a))
		if err != nil {
			return StepStats{}, err
		}
		loss += l / a
	}
	for _, e := range s.lay.entries {
		if e.extra >= 0 {
			g, err := b.View(s.gflat, e.off, e.n)
			if err != nil {
				return StepStats{}, err
			}
			if err := b.Copy(g, t.extra[e.extra].G); err != nil {
				return StepStats{}, err
			}
		}
	}
	if err := s.comm.ReduceScatter(s.gshard, s.gflat); err != nil {
		return StepStats{}, err
	}
	sq, err := b.SquaredNorm(s.gshard)
	if err != nil {
		return StepStats{}, err
	}
	sums := []float64{sq, loss}
	if ss != nil {
		sums = append(sums, ss.StepSums()...)
	}
	if err := s.comm.SumFloat64(sums); err != nil {
		return StepStats{}, err
	}
	if ss != nil {
		ss.SetStepSums(sums[2:])
	}
	loss = sums[1]
	if err := t.checkLoss(loss); err != nil {
		return StepStats{}, err
	}
	u := t.update(sums[0])
	for _, sg := range s.segs {
		p := u.adamW(s.lay.entries[sg.e].decay, uint32(sg.e))
		p.Offset = s.start(sg)
		if err := b.AdamW(sg.w, sg.g, sg.m, sg.v, p); err != nil {
			return StepStats{}, err
		}
	}
	if err := t.gatherWeights(); err != nil {
		return StepStats{}, err
	}
	return t.finishStep(u, loss)
}

// gatherWeights makes every rank's weights the bfloat16 rounding of the
// shards' master weights (or the shards' weights), and refreshes the
// objective's parameters from them.
func (t *Trainer) gatherWeights() error {
	s, b := t.dp, t.Model.Backend
	if s.master != nil {
		if err := b.Copy(s.wshard, s.master); err != nil {
			return err
		}
	}
	if err := s.comm.AllGather(s.wflat, s.wshard); err != nil {
		return err
	}
	return t.copyExtrasOut()
}

// shardedEvaluate returns the mean validation loss over total
// micro-batches, of which mbs are this rank's.
func (t *Trainer) shardedEvaluate(mbs []microBatch, total int) (float64, error) {
	if s, ok := t.Obj.(EvalStarter); ok {
		s.BeginEval()
	}
	var sum float64
	for _, mb := range mbs {
		l, err := t.evalLoss(mb)
		if err != nil {
			return 0, err
		}
		sum += l
	}
	sums := []float64{sum}
	es, _ := t.Obj.(EvalSummer)
	if es != nil {
		sums = append(sums, es.EvalSums()...)
	}
	if err := t.dp.comm.SumFloat64(sums); err != nil {
		return 0, err
	}
	if es != nil {
		es.SetEvalSums(sums[1:])
	}
	return sums[0] / float64(max(total, 1)), nil
}

// drawShares draws the next count micro-batches of n sequences from b for
// the ranks [first, first+local) of world: micro-batch k goes to rank
// owner(k). Those of other processes' ranks are skipped, not read.
func drawShares(b Batcher, count, n, first, local int, owner func(k int) int) ([][]microBatch, error) {
	out := make([][]microBatch, local)
	for k := range count {
		r := owner(k) - first
		if r < 0 || r >= local {
			if err := skip(b, n); err != nil {
				return nil, err
			}
			continue
		}
		mb, err := draw(b, n)
		if err != nil {
			return nil, err
		}
		out[r] = append(out[r], mb)
	}
	return out, nil
}

// Sharded checkpoints. Each rank writes its shard of the optimizer state
// to optimizer-RRRRR-of-WWWWW.safetensors: for each tensor of the shard,
// pieces of at most shardPiece elements named KIND.NAME@START, where KIND
// is w (the master weights, or the weights when they are float32), m or v,
// NAME the tensor's checkpoint name and START the piece's first element
// within the tensor. A run resumes from them on any number of ranks (or
// on one device) by reading the pieces it needs; a run on several ranks
// also resumes from a checkpoint of one device (optimizer.safetensors).

const shardPiece = 1 << 26

func shardFile(rank, world int) string {
	return fmt.Sprintf("optimizer-%05d-of-%05d.safetensors", rank, world)
}

// saveShard writes this rank's shard file into dir.
func (t *Trainer) saveShard(dir string) error {
	s, b := t.dp, t.Model.Backend
	var es []checkpoints.Entry
	for _, sg := range s.segs {
		e := s.lay.entries[sg.e]
		for k := 0; k < sg.n; k += shardPiece {
			n := min(shardPiece, sg.n-k)
			for _, x := range []struct {
				kind string
				t    backend.Tensor
			}{{"w", sg.w}, {"m", sg.m}, {"v", sg.v}} {
				src := x.t
				at := k
				es = append(es, checkpoints.Entry{Name: fmt.Sprintf("%s.%s@%d", x.kind, e.name, s.start(sg)+k), DType: backend.F32, Shape: []int{n},
					Data: func() ([]byte, error) {
						piece, err := b.View(src, at, n)
						if err != nil {
							return nil, err
						}
						v, err := b.ToFloat32(piece)
						if err != nil {
							return nil, err
						}
						return checkpoints.EncodeFloat32(backend.F32, v)
					}})
			}
		}
	}
	meta := map[string]string{"step": fmt.Sprint(t.Step), "rank": fmt.Sprint(s.comm.Rank()), "world": fmt.Sprint(s.lay.world)}
	return checkpoints.WriteFile(filepath.Join(dir, shardFile(s.comm.Rank(), s.lay.world)), es, meta)
}

// restoreSharded loads this rank's shard of the optimizer state from a
// checkpoint of any number of ranks, then gathers the weights.
func (t *Trainer) restoreSharded(dir string) error {
	st, err := openOptimizerState(dir)
	if err != nil {
		return err
	}
	defer st.close()
	s, b := t.dp, t.Model.Backend
	for _, sg := range s.segs {
		e := s.lay.entries[sg.e]
		shape := t.entryShape(e)
		for _, x := range []struct {
			kind string
			t    backend.Tensor
		}{{"w", sg.w}, {"m", sg.m}, {"v", sg.v}} {
			v, err := st.read(x.kind, e.name, shape, s.start(sg), sg.n)
			if err != nil {
				return err
			}
			if err := b.Write(x.t, v); err != nil {
				return err
			}
		}
	}
	return t.gatherWeights()
}

func (t *Trainer) entryShape(e flatEntry) []int {
	if e.param >= 0 {
		return t.Model.Params[e.param].Shape
	}
	return t.extra[e.extra].W.Shape()
}
