package model

import (
	"fmt"
	"testing"

	"github.com/minitron/minitron/backend"
	"github.com/minitron/minitron/backend/cpu"
)

// allocCounter is the CPU backend presented as a bfloat16 device, counting
// the elements of every tensor made with New by the storage asked for.
type allocCounter struct {
	backend.Backend
	e Elems
}

func (a *allocCounter) FloatDType() backend.DType { return backend.BF16 }

func (a *allocCounter) New(dt backend.DType, shape ...int) (backend.Tensor, error) {
	n := int64(backend.Numel(shape))
	switch dt {
	case backend.BF16:
		a.e.Float += n
	case backend.F32:
		a.e.F32 += n
	case backend.I32:
		a.e.I32 += n
	}
	return a.Backend.New(dt, shape...)
}

// TestMemoryEstimates: hand-computed workspace sizes for a small shape,
// and the estimates equal what a forward and backward pass (or a forward
// pass) actually allocates, tensor storage by tensor storage.
func TestMemoryEstimates(t *testing.T) {
	// Hand count for Nemotron, D=8, heads 2 × 4 (q=8), KV 1 × 4 (kv=4),
	// F=16, V=10, L=2, n=3 rows:
	//   per layer floats n·(n1 8 + q 8 + k 4 + v 4 + att 8 + n2 8 + up 16 +
	//   act 16) = 3·72 = 216, f32 n·(lse 2 + two norms' stats 4) = 18;
	//   layers 2·216 = 432; H 3·3·8 = 72, Mid 2·3·8 = 48; final 24;
	//   backward 3·(5·8 + 2·8 + 2·4 + 2·16) = 288; logits 3·10 = 30
	//   → floats 894; f32 2·18 + final stats 6 + losses 3 = 45; i32 ids
	//   and positions 6.
	c := &Config{Arch: Nemotron, HiddenSize: 8, NumHeads: 2, NumKVHeads: 1, HeadDim: 4, IntermediateSize: 16, VocabSize: 10, NumLayers: 2}
	if got, want := c.TrainingActivationElems(3, false), (Elems{894, 45, 6}); got != want {
		t.Errorf("hand count: training workspace %+v, want %+v", got, want)
	}
	if got, want := c.TrainingActivationElems(3, false).Bytes(2), int64(894*2+4*51); got != want {
		t.Errorf("bytes at bf16 %d, want %d", got, want)
	}
	// Recomputation keeps one layer's activations and one Mid:
	// floats 894 − 216 − 24 = 654, f32 45 − 18 = 27.
	if got, want := c.TrainingActivationElems(3, true), (Elems{654, 27, 6}); got != want {
		t.Errorf("hand count with recomputation %+v, want %+v", got, want)
	}
	// Forward only: one layer (act shares up): 3·(8+8+4+4+8+8+16) = 168,
	// stream and final 48; f32 3·2 (lse) + 3·4 + 3·2 = 24; i32 6.
	if got, want := c.ForwardActivationElems(3), (Elems{216, 24, 6}); got != want {
		t.Errorf("hand count: forward workspace %+v, want %+v", got, want)
	}

	for _, name := range fixtureModels {
		for _, n := range []int{1, 2} {
			t.Run(fmt.Sprintf("%s/B=%d", name, n), func(t *testing.T) {
				cfg, err := LoadConfig("../testdata/hf/" + name + "/config.json")
				if err != nil {
					t.Fatal(err)
				}
				ac := &allocCounter{Backend: cpu.New()}
				m, err := Random(cfg, ac, 1)
				if err != nil {
					t.Fatal(err)
				}
				T := 5
				ids := make([]int32, n*T)
				for i := range ids {
					ids[i] = int32(i % cfg.VocabSize)
				}
				in := Input{B: n, T: T, IDs: ids}
				g, err := m.NewGrads()
				if err != nil {
					t.Fatal(err)
				}
				ac.e = Elems{}
				a, err := m.NewActivations(n*T, true)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := m.LossAndGrad(a, in, NextTokenTargets(ids, n, T), 1, g); err != nil {
					t.Fatal(err)
				}
				if want := cfg.TrainingActivationElems(n*T, false); ac.e != want {
					t.Errorf("training allocated %+v, the estimate is %+v", ac.e, want)
				}
				ac.e = Elems{}
				fa, err := m.NewActivations(n*T, false)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := m.Hidden(fa, in, Options{}); err != nil {
					t.Fatal(err)
				}
				if want := cfg.ForwardActivationElems(n * T); ac.e != want {
					t.Errorf("forward allocated %+v, the estimate is %+v", ac.e, want)
				}
			})
		}
	}
}
