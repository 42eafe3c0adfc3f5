package train

import (
	"github.com/minitron/minitron/backend"
	"github.com/minitron/minitron/model"
)

// MemorySpec describes a training or distillation run for PlanMemory.
type MemorySpec struct {
	Student *model.Config
	// Teacher is the online teacher of distillation; nil for plain
	// training or an offline teacher cache.
	Teacher *model.Config
	// Distill marks distillation (its loss buffers), CacheK the top-k of
	// an offline teacher cache (0 without one).
	Distill bool
	CacheK  int
	// Optimizer gives the precision of gradients, master weights and
	// moments.
	Optimizer OptimizerConfig
	// Rows is the tokens of one micro-batch (micro_batch × seq_len).
	Rows int
	// FloatBytes is the storage of weights and activations: 2 on a GPU
	// (bfloat16), 4 on the CPU.
	FloatBytes int
	// GPUs is the number of data-parallel ranks sharing the optimizer
	// state (master weights and moments sharded as Megatron-LM's
	// distributed optimizer, ZeRO stage 1, does); 1 without sharding.
	GPUs int
	// Recompute estimates full activation recomputation (only each
	// layer's input kept for backward; not implemented yet).
	Recompute bool
}

// MemoryPlan is the memory of one device, in bytes, by component.
type MemoryPlan struct {
	Spec           MemorySpec
	StudentParams  int64
	TeacherParams  int64
	Weights        int64 // the weights forward and backward read
	Master         int64 // float32 master copies (sharded)
	Grads          int64 // gradient accumulators
	Moments        int64 // Adam m and v (sharded)
	Teacher        int64 // the online teacher's weights
	Activations    int64 // the student's forward+backward workspace
	TeacherForward int64 // the teacher's forward workspace
	LossBuffers    int64 // distillation's logit chunks and per-row losses
}

// Total is the sum of the components.
func (p MemoryPlan) Total() int64 {
	return p.Weights + p.Master + p.Grads + p.Moments + p.Teacher + p.Activations + p.TeacherForward + p.LossBuffers
}

// PerParam returns the bytes per student parameter of weights, gradients,
// master weights and moments with the state sharded over the GPUs.
func (p MemoryPlan) PerParam() float64 {
	return float64(p.Weights+p.Grads+p.Master+p.Moments) / float64(max(p.StudentParams, 1))
}

// storage returns the bytes per element of dt on a device whose float
// storage is floatBytes wide: a bfloat16 request is float32 on the CPU.
func storage(dt backend.DType, floatBytes int) int64 {
	if dt == backend.BF16 && floatBytes == 2 {
		return 2
	}
	return 4
}

// PlanMemory computes the device memory of a run from its configuration:
// every tensor the trainer, the model and the distillation objective
// allocate, the way they allocate them. Not counted: the CUDA context,
// cuBLAS workspaces and the allocator's rounding (together about 1 GiB).
//
// Per student parameter with the defaults on a GPU: 2 bytes of bfloat16
// weights, 4 of float32 gradients, 4 of master weights and 8 of moments,
// 18 in all; sharded over N GPUs, 6 + 12/N (Megatron-LM's distributed
// optimizer table, "float16 param, fp32 grads"). All-bf16 (no master
// weights, bf16 gradients and moments) is 8 bytes, 4 + 4/N sharded.
func PlanMemory(s MemorySpec) MemoryPlan {
	gpus := int64(max(s.GPUs, 1))
	p := MemoryPlan{Spec: s}
	p.StudentParams, _ = s.Student.NumParams()
	n := p.StudentParams
	fb := int64(s.FloatBytes)
	o := s.Optimizer
	shard := func(b int64) int64 { return (b + gpus - 1) / gpus }
	p.Weights = n * fb
	if o.MasterWeights && fb != 4 {
		p.Master = shard(4 * n)
	}
	p.Grads = n * storage(o.GradientDType(), s.FloatBytes)
	p.Moments = shard(2 * n * storage(o.MomentDType(), s.FloatBytes))
	p.Activations = s.Student.TrainingActivationElems(s.Rows, s.Recompute).Bytes(s.FloatBytes)
	if s.Teacher != nil {
		p.TeacherParams, _ = s.Teacher.NumParams()
		p.Teacher = p.TeacherParams * fb
		p.TeacherForward = s.Teacher.ForwardActivationElems(s.Rows).Bytes(s.FloatBytes)
	}
	if s.Distill {
		// Teacher logits and a copy of the student's for one chunk of rows,
		// three per-row float32 losses; a cached teacher's ids and
		// log-probabilities of the chunk.
		rows := int64(min(s.Rows, model.LossChunk(s.Student.VocabSize))) // the rows of logits the losses hold at once
		v := int64(s.Student.VocabSize)
		p.LossBuffers = 2*rows*v*fb + 3*4*rows + 8*rows*int64(s.CacheK)
	}
	return p
}

// MaxMicroBatch returns the largest micro-batch (in sequences of seqLen
// tokens, up to limit) whose plan fits in budget bytes, or 0 if none does.
func MaxMicroBatch(s MemorySpec, seqLen int, budget int64, limit int) int {
	best := 0
	for b := 1; b <= limit; b++ {
		s.Rows = b * seqLen
		if PlanMemory(s).Total() > budget {
			break
		}
		best = b
	}
	return best
}
