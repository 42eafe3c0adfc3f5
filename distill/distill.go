// Package distill trains a student on a teacher's distribution: forward KL
// (teacher ‖ student) on the logits at a temperature, as Minitron does,
// optionally mixed with next-token cross-entropy or replaced by reverse KL.
// The teacher runs in the same step without gradients (online). The loss
// is computed a chunk of rows at a time, so full logits of a large
// vocabulary never exist at once, and plugs into the training loop of
// package train: same checkpoints, resumption and metrics.
package distill

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/minitron/minitron/backend"
	"github.com/minitron/minitron/config"
	"github.com/minitron/minitron/data"
	"github.com/minitron/minitron/model"
	"github.com/minitron/minitron/train"
)

// KD configures the distillation loss.
type KD struct {
	// Temperature softens both distributions; the loss is scaled by T² so
	// gradient magnitudes do not depend on it (Hinton et al.). Minitron
	// uses 1.
	Temperature float64 `yaml:"temperature"`
	// CEWeight adds this much next-token cross-entropy (Minitron: 0).
	CEWeight float64 `yaml:"ce_weight"`
	// Reverse uses KL(student ‖ teacher) instead.
	Reverse bool `yaml:"reverse"`
	// Intermediate adds the intermediate-state loss (for depth-pruned
	// students; needs the online teacher).
	Intermediate Intermediate `yaml:"intermediate"`
}

// Intermediate is Minitron's intermediate-state loss: for each pair of a
// student and a teacher hidden state, the mean over tokens of
// 1 − cos(W·h_student, h_teacher), with one learned linear map W from the
// student's hidden size to the teacher's (trained with the student, kept
// in checkpoints, not exported). The pairs' mean L_is is added to the
// logit loss as α·L_is. W starts as the channel selection pruning made:
// student channel i is teacher channel Channels[i].
type Intermediate struct {
	// Layers pairs hidden states [student layer, teacher layer], each the
	// output of that layer counting from 1; the last layer's output is the
	// state before the final norm. Empty: no intermediate loss unless
	// Embedding.
	Layers [][2]int `yaml:"layers"`
	// Site is where the states of Layers are taken: "output" (the
	// residual stream; the default) or "norm" (after LayerNorm: the norm
	// at the input of the next layer, the final norm after the last
	// layer), the paper's choice (arXiv:2407.14679 §3).
	Site string `yaml:"site"`
	// Embedding adds the pair of embedding outputs (the paper's L_emb).
	Embedding bool `yaml:"embedding"`
	// Weight is α. 0 (the default) balances the two losses each step,
	// α = L_logits / L_is with α held constant for the gradient, as the
	// Minitron paper weighs them.
	Weight float64 `yaml:"weight"`
	// Channels gives, for each student hidden channel, the teacher channel
	// it was pruned from (W starts with W[Channels[i]][i] = 1). Default:
	// the student's prune report when it was pruned from the teacher
	// itself; otherwise the identity on the first channels.
	Channels []int `yaml:"channels,flow,omitempty"`
}

// Used reports whether the intermediate-state loss is on.
func (in Intermediate) Used() bool { return len(in.Layers) > 0 || in.Embedding }

// statePair is one term of the intermediate loss: hidden states s of the
// student and t of the teacher (0 the embedding output, l the output of
// layer l), after LayerNorm when norm.
type statePair struct {
	s, t int
	norm bool
}

func (in Intermediate) pairs() []statePair {
	var ps []statePair
	if in.Embedding {
		ps = append(ps, statePair{0, 0, false})
	}
	for _, p := range in.Layers {
		ps = append(ps, statePair{p[0], p[1], in.Site == "norm"})
	}
	return ps
}

// Config is a training configuration plus the teacher and the loss.
type Config struct {
	train.Config `yaml:",inline"`
	Teacher      Teacher `yaml:"teacher"`
	KD           KD      `yaml:"kd"`
}

// Teacher names the teacher: a model run in each step (online), or a cache
// of its top-k log-probabilities made by CacheTeacher (offline).
type Teacher struct {
	Model string `yaml:"model"`
	Cache string `yaml:"cache"`
}

// Default returns the defaults of a distillation run.
func Default() Config {
	return Config{Config: train.Default(), KD: KD{Temperature: 1}}
}

// Load reads a distillation config file with overrides.
func Load(path string, overrides []string) (*Config, error) {
	c := Default()
	if err := config.Load(path, &c, overrides); err != nil {
		return nil, err
	}
	return &c, c.Validate()
}

// YAML renders the whole effective configuration, teacher and loss
// included (what config.yaml of a run holds).
func (c *Config) YAML() ([]byte, error) { return config.Marshal(c) }

// Validate checks the configuration. Its error is a *config.Invalid
// listing every problem.
func (c *Config) Validate() error {
	e := &config.Invalid{Prefix: "distill"}
	c.Config.Check(e)
	if (c.Teacher.Model == "") == (c.Teacher.Cache == "") {
		e.Addf("give exactly one of {teacher.model} (online) or {teacher.cache} (an offline top-k cache)")
	}
	if !(c.KD.Temperature > 0) {
		e.Addf("{kd.temperature} %v must be positive", c.KD.Temperature)
	}
	if c.KD.CEWeight < 0 {
		e.Addf("{kd.ce_weight} %v must be >= 0", c.KD.CEWeight)
	}
	if in := c.KD.Intermediate; in.Used() {
		if in.Site != "" && in.Site != "output" && in.Site != "norm" {
			e.Addf("{kd.intermediate.site} %q: use output (the residual stream) or norm (after LayerNorm)", in.Site)
		}
		if c.Teacher.Cache != "" {
			e.Addf("{kd.intermediate} needs the teacher's hidden states; use {teacher.model} (online), not {teacher.cache}")
		}
		if in.Weight < 0 {
			e.Addf("{kd.intermediate.weight} %v must be >= 0 (0 balances it with the logit loss)", in.Weight)
		}
	}
	return e.Err()
}

// Objective is the distillation loss, against an online teacher or an
// offline cache of its top-k log-probabilities.
type Objective struct {
	Teacher *model.Model
	Cache   *TeacherCache
	KD      KD
	// Missing is the cache's policy for the mass outside the top k.
	Missing string

	refs  []data.SeqRef
	b     backend.Backend
	vocab int

	acts   map[int]*model.Activations
	tlog   backend.Tensor // teacher logits of one chunk
	ce     backend.Tensor // copy of student logits for the CE term
	closs  backend.Tensor // CE per row of a chunk
	kloss  backend.Tensor // KL per row of a chunk
	sumKL  float64
	sumCE  float64
	sumTCE float64 // teacher cross-entropy (validation)
	rowsKL int
	rowsCE int
	tcl    backend.Tensor

	// validation sums since BeginEval: student CE, teacher CE, KL, rows
	val struct {
		student, teacher, kl float64
		ceRows, klRows       int
		// since is set by BeginEval and cleared by BeginStep: Extra shows
		// the validation on the validation's line only.
		since bool
	}
	// the current step's sums over its micro-batches, since BeginStep
	step struct {
		kl, ce         float64
		klRows, ceRows int
		open           bool
	}

	// The teacher's final-norm states of validation batches: validation
	// reads the same batches each time, and the teacher does not change.
	valHidden []cachedHidden
	valBytes  int64

	// intermediate-state loss
	pairs       []statePair
	proj, projG backend.Tensor   // W [Dt, Ds] and its gradient
	tHid        []backend.Tensor // the teacher's states of the pairs, [N, Dt]
	u, hl       backend.Tensor   // W·h [N, Dt] (then its gradient); per-row losses
	alpha, lis  float64          // the latest step's α and L_is
	pairsDone   bool
}

// NewObjective checks that teacher and student share a vocabulary.
func NewObjective(teacher, student *model.Model, kd KD) (*Objective, error) {
	if teacher.Config.VocabSize != student.Config.VocabSize {
		return nil, fmt.Errorf("distill: the teacher has a vocabulary of %d tokens and the student %d; they must share one tokenizer",
			teacher.Config.VocabSize, student.Config.VocabSize)
	}
	o := &Objective{Teacher: teacher, KD: kd, acts: map[int]*model.Activations{}, b: teacher.Backend, vocab: teacher.Config.VocabSize}
	if err := o.initIntermediate(teacher, student); err != nil {
		return nil, err
	}
	return o, nil
}

// initIntermediate checks the pairs and makes the projection.
func (o *Objective) initIntermediate(teacher, student *model.Model) error {
	in := o.KD.Intermediate
	if !in.Used() {
		return nil
	}
	seen := map[int]bool{}
	for _, p := range in.Layers {
		if p[0] < 1 || p[0] > student.Config.NumLayers || p[1] < 1 || p[1] > teacher.Config.NumLayers {
			return fmt.Errorf("distill: kd.intermediate.layers pair %v: the student has layers 1..%d and the teacher 1..%d",
				p, student.Config.NumLayers, teacher.Config.NumLayers)
		}
		if seen[p[0]] {
			return fmt.Errorf("distill: kd.intermediate.layers pairs student layer %d twice", p[0])
		}
		seen[p[0]] = true
	}
	o.pairs = in.pairs()
	b := o.b
	dt, ds := teacher.Config.HiddenSize, student.Config.HiddenSize
	w := make([]float32, dt*ds)
	switch {
	case len(in.Channels) == 0:
		for i := range min(dt, ds) {
			w[i*ds+i] = 1
		}
	case len(in.Channels) != ds:
		return fmt.Errorf("distill: kd.intermediate.channels has %d entries; the student has %d hidden channels", len(in.Channels), ds)
	default:
		for i, c := range in.Channels {
			if c < 0 || c >= dt {
				return fmt.Errorf("distill: kd.intermediate.channels[%d] = %d: the teacher has channels 0..%d", i, c, dt-1)
			}
			w[c*ds+i] = 1
		}
	}
	var err error
	if o.proj, err = b.New(b.FloatDType(), dt, ds); err != nil {
		return err
	}
	if err := b.Write(o.proj, w); err != nil {
		return err
	}
	// float32: it accumulates over the micro-batches of a step (as the
	// model's gradients do by default), and it is small.
	o.projG, err = b.New(backend.F32, dt, ds)
	return err
}

// Params returns the projection of the intermediate-state loss, when it is
// used (train.ParamOwner).
func (o *Objective) Params() []train.Param {
	if o.proj == nil {
		return nil
	}
	return []train.Param{{Name: "intermediate_projection", W: o.proj, G: o.projG}}
}

// NewCachedObjective distills from a teacher cache. The cache must cover
// the dataset the student trains on, at its sequence length.
func NewCachedObjective(cache *TeacherCache, student *model.Model, kd KD, seqLen int, datasets []*data.Manifest) (*Objective, error) {
	m := cache.Manifest
	if m.Vocab != student.Config.VocabSize {
		return nil, fmt.Errorf("distill: the cached teacher has a vocabulary of %d tokens and the student %d; they must share one tokenizer", m.Vocab, student.Config.VocabSize)
	}
	if m.SeqLen != seqLen {
		return nil, fmt.Errorf("distill: the teacher cache %s holds sequences of %d tokens; the run uses %d (set data.seq_len to %d)", cache.Dir, m.SeqLen, seqLen, m.SeqLen)
	}
	if len(datasets) != 1 || DatasetID(datasets[0]) != m.DatasetID {
		return nil, fmt.Errorf("distill: the teacher cache %s was made for dataset %s; a cached teacher trains on exactly that dataset", cache.Dir, m.Dataset)
	}
	if float64(kd.Temperature) != m.Temperature {
		return nil, fmt.Errorf("distill: the teacher cache holds probabilities at temperature %v; kd.temperature is %v", m.Temperature, kd.Temperature)
	}
	if kd.Reverse && m.Missing == backend.MissingRenormalize {
		return nil, fmt.Errorf("distill: reverse KL needs a cache made with the uniform missing-mass policy")
	}
	return &Objective{Cache: cache, KD: kd, Missing: m.Missing, acts: map[int]*model.Activations{}, b: student.Backend, vocab: student.Config.VocabSize}, nil
}

// SetRefs receives the dataset sequences of the next batch (train.RefsConsumer).
func (o *Objective) SetRefs(refs []data.SeqRef) { o.refs = refs }

func (o *Objective) teacherHidden(in model.Input) (backend.Tensor, error) {
	return o.teacherHiddenObs(in, nil)
}

// teacherHiddenObs runs the teacher, calling obs at each site.
func (o *Objective) teacherHiddenObs(in model.Input, obs model.Observer) (backend.Tensor, error) {
	n := in.B * in.T
	a, ok := o.acts[n]
	if !ok {
		var err error
		if a, err = o.Teacher.NewActivations(n, false); err != nil {
			return nil, err
		}
		o.acts[n] = a
	}
	return o.Teacher.Hidden(a, in, model.Options{Observer: obs})
}

// cachedHidden is the teacher's final-norm output for one batch of ids
// and, once a validation has computed it, the teacher's cross-entropy
// summed over the batch's rows for the targets it was computed with.
type cachedHidden struct {
	b, t    int
	ids     []int32
	h       backend.Tensor
	targets []int32 // nil until tce is known
	tce     float64
}

// valCacheBytes bounds the memory that validation's teacher states take.
const valCacheBytes = 256 << 20

// teacherHiddenCached is teacherHidden for validation: a batch seen before
// gets its stored states; a new one is run and, while the cache has room,
// stored. The second result is the batch's entry in o.valHidden, -1 when
// it is not kept.
func (o *Objective) teacherHiddenCached(in model.Input) (backend.Tensor, int, error) {
	for i, c := range o.valHidden {
		if c.b == in.B && c.t == in.T && slices.Equal(c.ids, in.IDs) {
			return c.h, i, nil
		}
	}
	h, err := o.teacherHidden(in)
	if err != nil {
		return nil, -1, err
	}
	size := int64(backend.Numel(h.Shape())) * 4
	if o.valBytes+size > valCacheBytes {
		return h, -1, nil
	}
	c, err := o.b.New(o.b.FloatDType(), h.Shape()...)
	if err != nil {
		return nil, -1, err
	}
	if err := o.b.Copy(c, h); err != nil {
		o.b.Free(c)
		return nil, -1, err
	}
	o.valHidden = append(o.valHidden, cachedHidden{b: in.B, t: in.T, ids: slices.Clone(in.IDs), h: c})
	o.valBytes += size
	return c, len(o.valHidden) - 1, nil
}

// intermediateBuffers sizes the buffers of the intermediate loss for n rows.
func (o *Objective) intermediateBuffers(n int) error {
	b := o.b
	dt := o.proj.Shape()[0]
	if o.u != nil && backend.Rows(o.u) == n {
		return nil
	}
	for _, t := range append(o.tHid, o.u, o.hl) {
		if t != nil {
			b.Free(t)
		}
	}
	o.tHid = o.tHid[:0]
	var err error
	for range o.pairs {
		t, err := b.New(b.FloatDType(), n, dt)
		if err != nil {
			return err
		}
		o.tHid = append(o.tHid, t)
	}
	if o.u, err = b.New(b.FloatDType(), n, dt); err != nil {
		return err
	}
	o.hl, err = b.New(backend.F32, n)
	return err
}

// intermediateLoss returns the mean over tokens of 1 − cos(W·h, t) for one
// pair, leaving W·h in o.u.
func (o *Objective) intermediateLoss(h, t backend.Tensor) (float64, error) {
	b := o.b
	if err := b.MatMul(o.u, h, o.proj, false, true, 1, 0); err != nil {
		return 0, err
	}
	if err := b.CosineLoss(o.hl, nil, o.u, t, 0); err != nil {
		return 0, err
	}
	v, err := b.ToFloat32(o.hl)
	if err != nil {
		return 0, err
	}
	var s float64
	for _, x := range v {
		s += float64(x)
	}
	return s / float64(len(v)), nil
}

// hiddenLoss is the student side of the intermediate loss for one
// micro-batch whose student activations are a.
func (o *Objective) hiddenLoss(a *model.Activations) *model.HiddenLoss {
	hl := &model.HiddenLoss{}
	for _, p := range o.pairs {
		if p.norm {
			hl.Norms = append(hl.Norms, p.s)
		} else {
			hl.Layers = append(hl.Layers, p.s)
		}
	}
	state := func(p statePair) backend.Tensor {
		if p.norm {
			return a.NormOut(p.s)
		}
		return a.H[p.s]
	}
	o.pairsDone = false
	grad := func(norm bool) func(l int, h, dh backend.Tensor, scale float32, logitLoss float64) error {
		return func(l int, h, dh backend.Tensor, scale float32, logitLoss float64) error {
			b := o.b
			if !o.pairsDone {
				// All pairs' losses first, for α: the forward pass is complete.
				var sum float64
				for i, p := range o.pairs {
					v, err := o.intermediateLoss(state(p), o.tHid[i])
					if err != nil {
						return err
					}
					sum += v
				}
				o.lis = sum / float64(len(o.pairs))
				o.alpha = o.KD.Intermediate.Weight
				if o.alpha == 0 && o.lis > 1e-12 {
					o.alpha = logitLoss / o.lis
				}
				o.pairsDone = true
			}
			k := 0
			for i, p := range o.pairs {
				if p.s == l && p.norm == norm {
					k = i
				}
			}
			n := backend.Rows(h)
			if err := b.MatMul(o.u, h, o.proj, false, true, 1, 0); err != nil {
				return err
			}
			// d(α·L_is)/d(W·h), in place of W·h: L_is averages pairs and rows.
			g := scale * float32(o.alpha/float64(len(o.pairs)*n))
			if err := b.CosineLoss(o.hl, o.u, o.u, o.tHid[k], g); err != nil {
				return err
			}
			if err := b.MatMul(dh, o.u, o.proj, false, false, 1, 1); err != nil {
				return err
			}
			return b.MatMul(o.projG, o.u, h, true, false, 1, 1)
		}
	}
	hl.Grad, hl.NormGrad = grad(false), grad(true)
	return hl
}

func (o *Objective) buffers(rows, v int) error {
	b := o.b
	if o.tlog != nil && backend.Rows(o.tlog) >= rows {
		return nil
	}
	for _, t := range []backend.Tensor{o.tlog, o.ce, o.closs, o.kloss, o.tcl} {
		if t != nil {
			b.Free(t)
		}
	}
	var err error
	if o.tcl, err = b.New(backend.F32, rows); err != nil {
		return err
	}
	if o.tlog, err = b.New(b.FloatDType(), rows, v); err != nil {
		return err
	}
	if o.ce, err = b.New(b.FloatDType(), rows, v); err != nil {
		return err
	}
	if o.closs, err = b.New(backend.F32, rows); err != nil {
		return err
	}
	o.kloss, err = b.New(backend.F32, rows)
	return err
}

// chunkLoss makes the per-chunk loss: KL against the teacher's logits of
// the same rows, plus CEWeight × cross-entropy. Rows are weighted so the
// summed loss is the mean KL plus CEWeight × the mean CE. Without
// gradients it also sums the teacher's cross-entropy, unless knownTCE (a
// validation that has it from an earlier pass over the batch).
func (o *Objective) chunkLoss(tfinal backend.Tensor, targets []int32, withGrad, knownTCE bool, seqLen int) (model.ChunkLoss, func(), error) {
	b := o.b
	n := len(targets)
	v := o.vocab
	d := 0
	if o.Teacher != nil {
		d = o.Teacher.Config.HiddenSize
	} else if len(o.refs)*seqLen != n {
		return nil, nil, fmt.Errorf("distill: the batch does not say which dataset sequences it holds (%d refs for %d rows); a cached teacher needs a data loader", len(o.refs), n)
	}
	ceRows := 0
	for _, t := range targets {
		if t >= 0 {
			ceRows++
		}
	}
	tg, err := b.FromInt32(append([]int32(nil), targets...), n)
	if err != nil {
		return nil, nil, err
	}
	if err := o.buffers(min(n, model.LossChunk(v)), v); err != nil {
		return nil, nil, err
	}
	T := float32(o.KD.Temperature)
	f := func(r0, r1 int, logits, losses backend.Tensor, scale float32) error {
		rows := r1 - r0
		var tl backend.Tensor
		if o.Teacher != nil {
			tf, err := b.View(tfinal, r0*d, rows, d)
			if err != nil {
				return err
			}
			if tl, err = b.View(o.tlog, 0, rows, v); err != nil {
				return err
			}
			if err := b.MatMul(tl, tf, o.Teacher.LMHead, false, true, 1, 0); err != nil {
				return err
			}
		}
		kl, err := b.View(o.kloss, 0, rows)
		if err != nil {
			return err
		}
		cl, err := b.View(o.closs, 0, rows)
		if err != nil {
			return err
		}
		tv, err := b.View(tg, r0, rows)
		if err != nil {
			return err
		}
		useCE := o.KD.CEWeight > 0 || !withGrad
		var ce backend.Tensor
		if useCE {
			// The gradient of the CE term needs a copy of the logits, which
			// the KL's gradient overwrites; without gradients both only read
			// them.
			ce = logits
			var dce backend.Tensor
			if withGrad {
				if ce, err = b.View(o.ce, 0, rows, v); err != nil {
					return err
				}
				if err := b.Copy(ce, logits); err != nil {
					return err
				}
				dce = ce
			}
			if err := b.CrossEntropy(cl, dce, ce, tv, scale*float32(o.KD.CEWeight)/float32(max(ceRows, 1))); err != nil {
				return err
			}
		}
		var dst backend.Tensor
		if withGrad {
			dst = logits
		}
		p := backend.KL{Temperature: T, Reverse: o.KD.Reverse, Scale: scale / float32(n), Missing: o.Missing}
		if o.Teacher != nil {
			if err := b.KLDiv(kl, dst, logits, tl, p); err != nil {
				return err
			}
		} else if err := o.cachedKL(kl, dst, logits, r0, r1, seqLen, p); err != nil {
			return err
		}
		if withGrad && o.KD.CEWeight > 0 {
			if err := b.Add(logits, logits, ce); err != nil {
				return err
			}
		}
		klv, err := b.ToFloat32(kl)
		if err != nil {
			return err
		}
		if !withGrad && o.Teacher != nil && !knownTCE {
			tcl, err := b.View(o.tcl, 0, rows)
			if err != nil {
				return err
			}
			if err := b.CrossEntropy(tcl, nil, tl, tv, 1); err != nil {
				return err
			}
			tv, err := b.ToFloat32(tcl)
			if err != nil {
				return err
			}
			for i, x := range tv {
				if targets[r0+i] >= 0 {
					o.sumTCE += float64(x)
				}
			}
		}
		var clv []float32
		if useCE {
			if clv, err = b.ToFloat32(cl); err != nil {
				return err
			}
		}
		per := make([]float32, rows)
		for i := range per {
			per[i] = klv[i] / float32(n)
			o.sumKL += float64(klv[i])
			o.rowsKL++
			if clv != nil && targets[r0+i] >= 0 {
				per[i] += float32(o.KD.CEWeight) * clv[i] / float32(max(ceRows, 1))
				o.sumCE += float64(clv[i])
				o.rowsCE++
			}
		}
		return b.Write(losses, per)
	}
	return f, func() { b.Free(tg) }, nil
}

// cachedKL is the KL of rows [r0, r1) against the cached top-k teacher.
func (o *Objective) cachedKL(kl, dst, logits backend.Tensor, r0, r1, seqLen int, p backend.KL) error {
	K := o.Cache.Manifest.K
	ids := make([]int32, 0, (r1-r0)*K)
	logp := make([]float32, 0, (r1-r0)*K)
	for r := r0; r < r1; r++ {
		ci, cl, err := o.Cache.Sequence(o.refs[r/seqLen].Sequence)
		if err != nil {
			return err
		}
		pos := r % seqLen
		ids = append(ids, ci[pos*K:(pos+1)*K]...)
		logp = append(logp, cl[pos*K:(pos+1)*K]...)
	}
	it, err := o.b.FromInt32(ids, r1-r0, K)
	if err != nil {
		return err
	}
	defer o.b.Free(it)
	lt, err := o.b.New(backend.F32, r1-r0, K) // log-probabilities keep float32
	if err != nil {
		return err
	}
	if err := o.b.Write(lt, logp); err != nil {
		o.b.Free(lt)
		return err
	}
	defer o.b.Free(lt)
	return o.b.KLTopK(kl, dst, logits, it, lt, p)
}

// LossAndGrad implements train.Objective.
func (o *Objective) LossAndGrad(m *model.Model, a *model.Activations, in model.Input, targets []int32, scale float32, g *model.Grads) (float64, error) {
	var tfinal backend.Tensor
	if o.Teacher != nil {
		var obs model.Observer
		if o.proj != nil {
			if err := o.intermediateBuffers(in.B * in.T); err != nil {
				return 0, err
			}
			L := o.Teacher.Config.NumLayers
			obs = func(site model.Site, layer int, x backend.Tensor) error {
				for i, p := range o.pairs {
					var want bool
					switch site {
					case model.SiteEmbed:
						want = !p.norm && p.t == 0
					case model.SiteLayerOut:
						want = !p.norm && p.t == layer+1
					case model.SiteNorm1:
						want = p.norm && p.t == layer
					case model.SiteFinalNorm:
						want = p.norm && p.t == L
					}
					if want {
						if err := o.b.Copy(o.tHid[i], x); err != nil {
							return err
						}
					}
				}
				return nil
			}
		}
		var err error
		if tfinal, err = o.teacherHiddenObs(in, obs); err != nil {
			return 0, err
		}
	}
	o.sumKL, o.sumCE, o.rowsKL, o.rowsCE = 0, 0, 0, 0
	f, free, err := o.chunkLoss(tfinal, targets, true, false, in.T)
	if err != nil {
		return 0, err
	}
	defer free()
	var l float64
	if o.proj == nil {
		l, err = m.LossAndGradWith(a, in, f, scale, g)
	} else {
		l, err = m.LossAndGradHidden(a, in, f, o.hiddenLoss(a), scale, g)
	}
	if o.step.open {
		o.step.kl += o.sumKL
		o.step.ce += o.sumCE
		o.step.klRows += o.rowsKL
		o.step.ceRows += o.rowsCE
	}
	return l, err
}

// Loss implements train.Objective for validation: it returns the student's
// cross-entropy (comparable with a run trained without a teacher) and keeps
// the teacher's cross-entropy and the KL for Extra. Both models run once;
// the three losses come from one pass over their logits. The teacher's
// final-norm states of a batch and its cross-entropy are kept (up to
// valCacheBytes) and reused when validation sees the batch again: the
// teacher's trunk and its cross-entropy are then skipped, its LM head runs
// on the kept states for the KL, and the losses are the same to the bit.
// Validation uses no intermediate states, so the cache serves the
// intermediate-state loss too.
func (o *Objective) Loss(m *model.Model, a *model.Activations, in model.Input, targets []int32) (float64, error) {
	sfinal, err := m.Hidden(a, in, model.Options{})
	if err != nil {
		return 0, err
	}
	var tfinal backend.Tensor
	kept := -1
	if o.Teacher != nil {
		if tfinal, kept, err = o.teacherHiddenCached(in); err != nil {
			return 0, err
		}
	}
	var c *cachedHidden
	if kept >= 0 {
		c = &o.valHidden[kept]
	}
	knownTCE := c != nil && c.targets != nil && slices.Equal(c.targets, targets)
	o.sumKL, o.rowsKL, o.sumCE, o.rowsCE, o.sumTCE = 0, 0, 0, 0, 0
	f, free, err := o.chunkLoss(tfinal, targets, false, knownTCE, in.T)
	if err != nil {
		return 0, err
	}
	defer free()
	if _, err := m.LogitsChunked(sfinal, f); err != nil {
		return 0, err
	}
	switch {
	case knownTCE:
		o.sumTCE = c.tce
	case c != nil:
		c.targets, c.tce = slices.Clone(targets), o.sumTCE
	}
	o.val.student += o.sumCE
	o.val.teacher += o.sumTCE
	o.val.kl += o.sumKL
	o.val.ceRows += o.rowsCE
	o.val.klRows += o.rowsKL
	return o.sumCE / float64(max(o.rowsCE, 1)), nil
}

// BeginEval starts a new validation (train.EvalStarter).
func (o *Objective) BeginEval() {
	o.val.student, o.val.teacher, o.val.kl, o.val.ceRows, o.val.klRows = 0, 0, 0, 0, 0
	o.val.since = true
}

// ValidationLosses returns the student's and teacher's cross-entropy and
// the KL over the validation batches since BeginEval.
func (o *Objective) ValidationLosses() (student, teacher, kl float64) {
	r, k := float64(max(o.val.ceRows, 1)), float64(max(o.val.klRows, 1))
	return o.val.student / r, o.val.teacher / r, o.val.kl / k
}

// Extra reports the latest step's kl (and train_ce, the student's
// cross-entropy on the batch, when it is part of the loss), over its
// micro-batches, of every GPU, in a training run (else over the latest
// micro-batch), and after a validation val_kl and val_teacher_ce on the
// held-out batches. The intermediate loss and its α are the latest
// micro-batch's.
func (o *Objective) Extra() map[string]float64 {
	kl, ce, klRows, ceRows := o.sumKL, o.sumCE, o.rowsKL, o.rowsCE
	if o.step.open {
		kl, ce, klRows, ceRows = o.step.kl, o.step.ce, o.step.klRows, o.step.ceRows
	}
	e := map[string]float64{"kl": kl / float64(max(klRows, 1))}
	if o.proj != nil {
		e["intermediate"], e["intermediate_alpha"] = o.lis, o.alpha
	}
	if ceRows > 0 {
		e["train_ce"] = ce / float64(ceRows)
	}
	if o.val.ceRows > 0 && o.val.since {
		_, teacher, kl := o.ValidationLosses()
		if o.Teacher != nil {
			e["val_teacher_ce"] = teacher
		}
		e["val_kl"] = kl
	}
	return e
}

// Free releases the objective's buffers and the teacher's workspaces.
func (o *Objective) Free() {
	b := o.b
	for _, a := range o.acts {
		a.Free(b)
	}
	for _, t := range append([]backend.Tensor{o.tlog, o.ce, o.closs, o.kloss, o.tcl, o.proj, o.projG, o.u, o.hl}, o.tHid...) {
		if t != nil {
			b.Free(t)
		}
	}
	for _, c := range o.valHidden {
		b.Free(c.h)
	}
	o.valHidden, o.valBytes = nil, 0
}

// Run distills according to cfg into out, resuming as train.Run does.
func Run(ctx context.Context, cfg *Config, opt train.RunOptions) (*train.Result, *Objective, error) {
	if err := cfg.Validate(); err != nil {
		return nil, nil, err
	}
	if len(opt.Replicas) > 0 {
		return runParallel(ctx, cfg, opt)
	}
	student, _, err := train.StartModel(&cfg.Config, opt.Out, opt.Backend)
	if err != nil {
		return nil, nil, err
	}
	obj, err := NewObjectiveFor(cfg, student, opt.Backend)
	student.Free()
	if err != nil {
		return nil, nil, err
	}
	opt.Objective = obj
	if opt.Extra == nil {
		opt.Extra = obj.Extra
	}
	if err := cfg.Prepare(&opt); err != nil {
		obj.Free()
		return nil, nil, err
	}
	res, err := train.Run(ctx, &cfg.Config, opt)
	obj.Free()
	return res, obj, err
}

// Prepare sets what a run of cfg records beyond its training settings:
// the whole configuration (config.yaml) and the identity of the teacher or
// its cache, which a resumed run checks.
func (c *Config) Prepare(opt *train.RunOptions) error {
	opt.Settings = c
	if opt.Identities == nil {
		opt.Identities = map[string]string{}
	}
	if c.Teacher.Model != "" {
		id, err := model.DirIdentity(c.Teacher.Model)
		if err != nil {
			return err
		}
		opt.Identities["teacher.model"] = id
	}
	if c.Teacher.Cache != "" {
		m, err := ReadCacheManifest(c.Teacher.Cache)
		if err != nil {
			return err
		}
		opt.Identities["teacher.cache"] = fmt.Sprintf("%s %s %d %g %s", m.TeacherID, m.DatasetID, m.K, m.Temperature, m.Missing)
	}
	return nil
}

// NewObjectiveFor builds the objective a config asks for: the teacher
// model loaded on b, or its cache opened and checked against the data.
func NewObjectiveFor(cfg *Config, student *model.Model, b backend.Backend) (*Objective, error) {
	if cfg.Teacher.Cache != "" {
		cache, err := OpenCache(cfg.Teacher.Cache)
		if err != nil {
			return nil, err
		}
		var ms []*data.Manifest
		for _, d := range cfg.Data.Datasets {
			m, err := data.ReadManifest(d.Path)
			if err != nil {
				return nil, err
			}
			ms = append(ms, m)
		}
		return NewCachedObjective(cache, student, cfg.KD, cfg.Data.SeqLen, ms)
	}
	teacher, err := model.Load(cfg.Teacher.Model, b, nil)
	if err != nil {
		return nil, fmt.Errorf("distill: teacher: %w", err)
	}
	kd := cfg.KD
	if in := &kd.Intermediate; in.Used() && len(in.Channels) == 0 {
		in.Channels = keptChannels(cfg.Model.Checkpoint, cfg.Teacher.Model)
	}
	return NewObjective(teacher, student, kd)
}

// keptChannels returns the teacher channel of each hidden channel of the
// student in dir, from the report pruning leaves there
// (prune-report.json), when the student was pruned from teacherDir itself;
// nil otherwise.
func keptChannels(dir, teacherDir string) []int {
	b, err := os.ReadFile(filepath.Join(dir, "prune-report.json"))
	if err != nil {
		return nil
	}
	var rep struct {
		Source string `json:"source"`
		Kept   struct {
			Hidden []int `json:"hidden"`
		} `json:"kept"`
	}
	if json.Unmarshal(b, &rep) != nil {
		return nil
	}
	a, errA := os.Stat(rep.Source)
	t, errT := os.Stat(teacherDir)
	if errA != nil || errT != nil || !os.SameFile(a, t) {
		return nil
	}
	return rep.Kept.Hidden
}
