// Package backend defines the contract every compute backend implements: tensors
// that live on a device, and a small set of coarse operations (matmul, norms,
// rotary embedding, attention, activations, losses) with their backward passes.
//
// The contract is written for bfloat16 device tensors and a GPU implementation;
// backend/cpu is the float32 reference. backend/backendtest checks every backend
// against float64 references.
package backend

import "fmt"

// Tensor is a dense, row-major array that lives on one backend. Only the
// backend that made a tensor may read or write it.
type Tensor interface {
	Shape() []int
	DType() DType
}

// Rows returns the number of rows of t seen as a matrix [rows, last dim].
func Rows(t Tensor) int {
	s := t.Shape()
	if len(s) == 0 {
		return 1
	}
	return Numel(s) / s[len(s)-1]
}

// Cols returns the size of the last dimension of t.
func Cols(t Tensor) int {
	s := t.Shape()
	if len(s) == 0 {
		return 1
	}
	return s[len(s)-1]
}

// RoPE describes rotary position embedding on heads of width HeadDim. The
// first RotDim dimensions of each head are rotated in the rotate-half
// convention (pairs i and i+RotDim/2); the rest pass through (partial rotary).
type RoPE struct {
	HeadDim int
	RotDim  int
	// InvFreq holds RotDim/2 inverse frequencies, scaling (llama3) already applied.
	InvFreq []float32
}

// Attn describes causal grouped-query attention over a batch.
//
// q is [B*T, Heads*HeadDim]. k and v are [S*KVRows, KVHeads*HeadDim]: the
// keys of sequence b are rows Slot(b)*KVRows .. +KVRows-1, where Slot(b) is
// Slots[b], or b when Slots is nil (then S = B). Query i of sequence b sits
// at position Past[b]+i and attends keys 0..Past[b]+i. Query head h uses KV
// head h/(Heads/KVHeads).
type Attn struct {
	B, T                    int
	Heads, KVHeads, HeadDim int
	KVRows                  int
	Past                    []int // nil means no keys before the queries
	Slots                   []int // cache slot of each sequence; nil: slot b
	Scale                   float32
}

// Slot returns the key/value slot of sequence b.
func (a Attn) Slot(b int) int {
	if a.Slots == nil {
		return b
	}
	return a.Slots[b]
}

// Check validates the description against tensor shapes.
func (a Attn) Check(q, k, v Tensor) error {
	if a.Heads <= 0 || a.KVHeads <= 0 || a.Heads%a.KVHeads != 0 || a.HeadDim <= 0 {
		return fmt.Errorf("backend: attention: %d heads in %d KV heads of width %d is not a valid grouping", a.Heads, a.KVHeads, a.HeadDim)
	}
	if a.KVRows < a.T {
		return fmt.Errorf("backend: attention: KVRows %d < T %d", a.KVRows, a.T)
	}
	if Rows(q) != a.B*a.T || Cols(q) != a.Heads*a.HeadDim {
		return fmt.Errorf("backend: attention: q is %v, want [%d, %d]", q.Shape(), a.B*a.T, a.Heads*a.HeadDim)
	}
	for _, t := range []Tensor{k, v} {
		if a.Slots == nil && Rows(t) != a.B*a.KVRows || Rows(t)%a.KVRows != 0 || Cols(t) != a.KVHeads*a.HeadDim {
			return fmt.Errorf("backend: attention: k/v is %v, want [%d, %d]", t.Shape(), a.B*a.KVRows, a.KVHeads*a.HeadDim)
		}
	}
	if a.Slots != nil {
		if len(a.Slots) != a.B {
			return fmt.Errorf("backend: attention: %d slots for batch %d", len(a.Slots), a.B)
		}
		n := Rows(k) / a.KVRows
		seen := map[int]bool{}
		for b, s := range a.Slots {
			if s < 0 || s >= n || seen[s] {
				return fmt.Errorf("backend: attention: sequence %d has slot %d of %d (slots must be distinct)", b, s, n)
			}
			seen[s] = true
		}
	}
	if a.Past != nil {
		if len(a.Past) != a.B {
			return fmt.Errorf("backend: attention: %d past lengths for batch %d", len(a.Past), a.B)
		}
		for b, p := range a.Past {
			if p < 0 || p+a.T > a.KVRows {
				return fmt.Errorf("backend: attention: sequence %d: %d past + %d new keys exceed the %d rows of the cache", b, p, a.T, a.KVRows)
			}
		}
	}
	return nil
}

// PastOf returns the number of keys before the first query of sequence b.
func (a Attn) PastOf(b int) int {
	if a.Past == nil {
		return 0
	}
	return a.Past[b]
}

// Backend is the op contract. Float tensors are stored in FloatDType; int
// tensors are I32. Ops return an error for mismatched shapes and never panic
// on bad arguments; an op a backend lacks returns ErrNotImplemented.
//
// Conventions: matrices are row-major; "N" is the number of rows (tokens).
// Forward ops overwrite their outputs. Backward ops overwrite activation
// gradients (dx) and accumulate (+=) parameter gradients (dw, dbias, dtable).
// Outputs may alias inputs only where an op says so.
type Backend interface {
	Name() string
	// FloatDType is the storage type of activations, weights and gradients
	// on this backend (F32 on the CPU, BF16 on a GPU); callers pass it to New
	// for such tensors.
	FloatDType() DType

	// New makes a zero-filled tensor. dt is BF16 or F32 for a float tensor,
	// or I32. F32 asks for full float32 storage, which callers use where
	// bfloat16 would lose too much (normalization statistics, log-sum-exp,
	// per-row losses, optimizer moments); BF16 allows bfloat16 storage and
	// a backend without it stores float32. Every float op accepts float
	// tensors of either storage for any argument and computes in float32.
	New(dt DType, shape ...int) (Tensor, error)
	// FromFloat32 makes a FloatDType tensor holding data. The backend may keep
	// data as its storage: the caller must not use data afterwards.
	FromFloat32(data []float32, shape ...int) (Tensor, error)
	// FromInt32 makes an I32 tensor; like FromFloat32 it may keep data.
	FromInt32(data []int32, shape ...int) (Tensor, error)
	// Write copies len(data) == Numel values from the host into a float
	// tensor, rounding them to its storage.
	Write(t Tensor, data []float32) error
	// ToFloat32 copies a float tensor to the host.
	ToFloat32(t Tensor) ([]float32, error)
	// ToInt32 copies an I32 tensor to the host.
	ToInt32(t Tensor) ([]int32, error)
	// View returns a tensor sharing t's storage, starting offset elements in.
	View(t Tensor, offset int, shape ...int) (Tensor, error)
	// Copy copies src into dst (same number of elements, same kind).
	Copy(dst, src Tensor) error
	// Fill sets every element of a float tensor to v.
	Fill(t Tensor, v float32) error
	// Free releases t's storage; t must not be used afterwards. Views of t
	// must be dropped first.
	Free(t Tensor)
	// Sync waits for queued work and reports its first error.
	Sync() error

	// MatMul computes c = alpha*op(a)*op(b) + beta*c, op(x) = x or xᵀ.
	// c is [M,N]; op(a) is [M,K]; op(b) is [K,N]. A linear layer y = x Wᵀ
	// with W [out,in] is MatMul(y, x, W, false, true, 1, 0).
	MatMul(c, a, b Tensor, transA, transB bool, alpha, beta float32) error

	// Embedding gathers rows: out[i] = table[ids[i]]. out [N,D], table [V,D], ids [N].
	Embedding(out, table, ids Tensor) error
	// EmbeddingBackward accumulates dtable[ids[i]] += dout[i].
	EmbeddingBackward(dtable, dout, ids Tensor) error

	// LayerNorm: out = (x-mean)*rstd*(w+wOffset) + bias over the last dim of
	// x [N,D]; bias may be nil. stats [N,2] receives (mean, rstd) per row and
	// may be nil when no backward follows. Nemotron's LayerNorm1P uses wOffset 1.
	LayerNorm(out, stats, x, w, bias Tensor, eps, wOffset float32) error
	// LayerNormBackward: dx overwritten; dw, dbias accumulated (dbias may be nil).
	LayerNormBackward(dx, dw, dbias, dout, x, w, stats Tensor, wOffset float32) error
	// RMSNorm: out = x*rstd*w, rstd = 1/sqrt(mean(x²)+eps); stats [N] gets rstd (may be nil).
	RMSNorm(out, stats, x, w Tensor, eps float32) error
	// RMSNormBackward: dx overwritten; dw accumulated.
	RMSNormBackward(dx, dw, dout, x, w, stats Tensor) error

	// RoPE rotates x [N, heads*HeadDim] in place; pos [N] holds each row's
	// position. inverse rotates by -angle, which is the backward pass.
	RoPE(x, pos Tensor, r RoPE, inverse bool) error

	// Attention computes causal softmax(q kᵀ * Scale) v into out [B*T, Heads*HeadDim].
	// lse [B*T, Heads] receives the log-sum-exp of each softmax row (may be
	// nil when no backward follows).
	Attention(out, lse, q, k, v Tensor, a Attn) error
	// AttentionBackward overwrites dq, dk, dv given dout and the forward's
	// out and lse. dk and dv have k's shape; every row of the slots the
	// sequences use is overwritten (zero where no query sees the key, as
	// past the cached and new keys); rows of other slots are left alone.
	AttentionBackward(dq, dk, dv, dout, out, lse, q, k, v Tensor, a Attn) error

	// ReLU2: out = max(x,0)². out may alias x.
	ReLU2(out, x Tensor) error
	// ReLU2Backward: dx = dout * 2*max(x,0). dx may alias dout.
	ReLU2Backward(dx, dout, x Tensor) error
	// SwiGLU: out = silu(gate)*up. out may alias gate or up.
	SwiGLU(out, gate, up Tensor) error
	// SwiGLUBackward overwrites dgate and dup (either may alias dout).
	SwiGLUBackward(dgate, dup, dout, gate, up Tensor) error

	// Add: out = a + b elementwise (same shapes). out may alias a or b.
	Add(out, a, b Tensor) error
	// ScatterRows: dst[rows[i]] = src[i]; rows I32 [N].
	ScatterRows(dst, src, rows Tensor) error
	// GatherRows: dst[i] = src[rows[i]]; rows I32 [N].
	GatherRows(dst, src, rows Tensor) error

	// SquaredNorm returns the sum of the squares of every element of the
	// given float tensors (of either storage), accumulated in float64 in a
	// fixed order, so the result is the same on every run. A device backend
	// reduces all of them on the device and reads the one result back: the
	// global gradient norm costs one synchronization, not one per tensor.
	SquaredNorm(ts ...Tensor) (float64, error)
	// Scale multiplies a float tensor by alpha in place.
	Scale(t Tensor, alpha float32) error
	// AdamW applies one decoupled-weight-decay Adam step to w with gradient
	// g (multiplied by p.GradScale first) and moments m, v, as PyTorch's
	// AdamW does: w -= lr*wd*w; m, v updated; w -= lr/bc1 * m/(sqrt(v)/sqrt(bc2)+eps).
	// w, g, m and v may each have either float storage. A backend that
	// stores bfloat16 may round w, m and v stochastically, drawing its
	// noise from (p.Step, p.Seed) and the element's index (p.Offset on).
	AdamW(w, g, m, v Tensor, p AdamW) error

	// KLDiv computes, per row of student logits [N,V], T²·KL(p‖q) between
	// the teacher's distribution p = softmax(teacher/T) and the student's
	// q = softmax(student/T) (or T²·KL(q‖p) with Reverse), into losses [N].
	// If dstudent is non-nil it receives p.Scale × d(loss)/d(student)
	// (T·(q−p) for the forward direction); it may alias student.
	KLDiv(losses, dstudent, student, teacher Tensor, p KL) error
	// KLTopK is KLDiv against a teacher given by its top-k token ids [N,K]
	// (I32) and log-probabilities at temperature T [N,K]; p.Missing says
	// how the probability mass outside the k tokens is treated.
	KLTopK(losses, dstudent, student, ids, logp Tensor, p KL) error

	// CosineLoss computes, per row of u and v [N,D], losses [N] = 1 − cos(u, v)
	// with cos = u·v / (max(‖u‖, 1e-8)·max(‖v‖, 1e-8)). If du is non-nil it
	// receives scale × d(loss)/d(u); it may alias u.
	CosineLoss(losses, du, u, v Tensor, scale float32) error

	// CrossEntropy computes per-row losses [N] = logsumexp(logits) - logits[target]
	// for logits [N,V] and I32 targets [N]; a negative target ignores the row
	// (loss 0, zero gradient). If dlogits is non-nil it receives
	// scale*(softmax(logits) - onehot(target)); dlogits may alias logits.
	CrossEntropy(losses, dlogits, logits, targets Tensor, scale float32) error
}

// AdamW holds the hyperparameters of one optimizer step.
type AdamW struct {
	LR, Beta1, Beta2, Eps, WeightDecay float32
	// Step is the 1-based step number, for bias correction.
	Step int
	// GradScale multiplies the gradient before use (clipping, averaging).
	GradScale float32
	// Seed identifies the tensor being updated (its index in the parameter
	// table, say): stochastic rounding mixes it with Step, so tensors of the
	// same shape do not share their rounding noise. Backends that round to
	// nearest (or store float32) ignore it.
	Seed uint32
	// Offset is the index, within the whole tensor, of w's first element
	// when w, g, m and v are views of a part of it (a data-parallel
	// shard): the rounding noise of an element depends on its index in the
	// tensor, so a tensor updated in parts is rounded as it is whole.
	Offset int
}

// KL parameterizes the distillation losses.
type KL struct {
	Temperature float32
	Reverse     bool    // KL(student‖teacher) instead of KL(teacher‖student)
	Scale       float32 // multiplies the gradient
	// Missing is the top-k policy for the teacher's probability mass
	// outside the k tokens: MissingRenormalize (drop it, rescale the k) or
	// MissingUniform (spread it evenly over the other tokens).
	Missing string
}

// Top-k missing-mass policies.
const (
	MissingRenormalize = "renormalize"
	MissingUniform     = "uniform"
)

// Arg describes one float argument of an op for its shape check: the name
// used in errors, the tensor, the matrix shape it must have (a vector of
// Rows*Cols elements passes where either is 1), and whether it may be nil.
type Arg struct {
	What       string
	T          Tensor
	Rows, Cols int
	Optional   bool
}

// Need is a required argument; Maybe one that may be nil.
func Need(what string, t Tensor, rows, cols int) Arg  { return Arg{what, t, rows, cols, false} }
func Maybe(what string, t Tensor, rows, cols int) Arg { return Arg{what, t, rows, cols, true} }

// MatMulShape returns the dimensions of c = op(a)·op(b) (c [m,n], op(a)
// [m,k], op(b) [k,n]) or an error when the shapes do not fit.
func MatMulShape(c, a, b Tensor, transA, transB bool) (m, n, k int, err error) {
	m, k = Rows(a), Cols(a)
	if transA {
		m, k = k, m
	}
	kb, n := Rows(b), Cols(b)
	if transB {
		kb, n = n, kb
	}
	if k != kb {
		return 0, 0, 0, fmt.Errorf("backend: MatMul: inner dimensions differ: op(a) is [%d,%d], op(b) is [%d,%d]", m, k, kb, n)
	}
	if Rows(c) != m || Cols(c) != n {
		return 0, 0, 0, ShapeError("MatMul", "c", c.Shape(), m, n)
	}
	return m, n, k, nil
}

// ShapeError formats a shape mismatch for an op.
func ShapeError(op string, what string, got []int, want ...int) error {
	return fmt.Errorf("backend: %s: %s has shape %v, want %v", op, what, got, want)
}
