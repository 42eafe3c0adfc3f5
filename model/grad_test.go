package model

import (
	"math"
	"testing"
)

// TestParityLossAndGrads: the loss and the gradient of every parameter
// match transformers' (float64) within 1e-4 relative error.
func TestParityLossAndGrads(t *testing.T) {
	for _, name := range fixtureModels {
		t.Run(name, func(t *testing.T) {
			m, g := loadFixture(t, name)
			ids, shape := goldenIDs(t, g, "input_ids")
			a, err := m.NewActivations(len(ids), true)
			if err != nil {
				t.Fatal(err)
			}
			grads, err := m.NewGrads()
			if err != nil {
				t.Fatal(err)
			}
			in := Input{B: shape[0], T: shape[1], IDs: ids}
			loss, err := m.LossAndGrad(a, in, NextTokenTargets(ids, shape[0], shape[1]), 1, grads)
			if err != nil {
				t.Fatal(err)
			}
			want := golden(t, g, "loss")[0]
			if math.Abs(loss-float64(want)) > 1e-5*math.Abs(float64(want)) {
				t.Errorf("loss %v, want %v", loss, want)
			}
			worst := 0.0
			for i, p := range m.Params {
				got, _ := m.Backend.ToFloat32(grads.T[i])
				e := relErr(got, golden(t, g, "grad."+p.Name))
				worst = max(worst, e)
				if e > 1e-4 {
					t.Errorf("grad.%s: relative error %.3g", p.Name, e)
				}
			}
			t.Logf("loss %.6f, worst gradient relative error %.3g", loss, worst)
			// Gradients accumulate: a second pass doubles them.
			before, _ := m.Backend.ToFloat32(grads.T[3])
			if _, err := m.LossAndGrad(a, in, NextTokenTargets(ids, shape[0], shape[1]), 1, grads); err != nil {
				t.Fatal(err)
			}
			after, _ := m.Backend.ToFloat32(grads.T[3])
			for j := range before {
				if math.Abs(float64(after[j]-2*before[j])) > 1e-5*(1+math.Abs(float64(before[j]))) {
					t.Fatalf("gradients do not accumulate: %v then %v", before[j], after[j])
				}
			}
		})
	}
}

// TestTiedEmbeddings: with tied embeddings the model uses the embedding as
// lm_head, and its gradient is the sum of both uses.
func TestTiedEmbeddings(t *testing.T) {
	untied, g := loadFixture(t, "llama-tiny")
	ids, shape := goldenIDs(t, g, "input_ids")
	// Make lm_head equal to the embedding in the untied model.
	emb, _ := untied.Backend.ToFloat32(untied.Embed)
	lm, _ := untied.Backend.FromFloat32(emb, untied.Config.VocabSize, untied.Config.HiddenSize)
	untied.Backend.Copy(untied.LMHead, lm)
	cfg := *untied.Config
	cfg.TieEmbeddings = true
	tied, err := New(&cfg, untied.Backend)
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range tied.Params {
		for j, q := range untied.Params {
			if p.Name == q.Name {
				tied.Backend.Copy(tied.Weights[i], untied.Weights[j])
			}
		}
	}
	in := Input{B: shape[0], T: shape[1], IDs: ids}
	tg := NextTokenTargets(ids, shape[0], shape[1])
	run := func(m *Model) (float64, *Grads) {
		a, _ := m.NewActivations(len(ids), true)
		gr, _ := m.NewGrads()
		loss, err := m.LossAndGrad(a, in, tg, 1, gr)
		if err != nil {
			t.Fatal(err)
		}
		return loss, gr
	}
	lu, gu := run(untied)
	lt, gt := run(tied)
	if math.Abs(lu-lt) > 1e-6 {
		t.Fatalf("loss tied %v untied %v", lt, lu)
	}
	ge, _ := untied.Backend.ToFloat32(gu.Embed)
	gl, _ := untied.Backend.ToFloat32(gu.LMHead)
	want := make([]float32, len(ge))
	for i := range ge {
		want[i] = ge[i] + gl[i]
	}
	got, _ := tied.Backend.ToFloat32(gt.Embed)
	if e := relErr(got, want); e > 1e-6 {
		t.Fatalf("tied embedding gradient: relative error %.3g", e)
	}
}

func TestLossMatchesGolden(t *testing.T) {
	for _, name := range fixtureModels {
		m, g := loadFixture(t, name)
		ids, shape := goldenIDs(t, g, "input_ids")
		for _, keep := range []bool{false, true} {
			a, _ := m.NewActivations(len(ids), keep)
			loss, err := m.Loss(a, Input{B: shape[0], T: shape[1], IDs: ids}, NextTokenTargets(ids, shape[0], shape[1]), Options{})
			if err != nil {
				t.Fatal(err)
			}
			if want := float64(golden(t, g, "loss")[0]); math.Abs(loss-want) > 1e-5*want {
				t.Fatalf("%s: loss %v, want %v", name, loss, want)
			}
		}
	}
}

// TestLossChunks: the loss and the gradients do not depend on how many
// rows of logits exist at once (one chunk of 600 rows against chunks of
// 256, 256 and 88), for LossAndGrad and Loss.
func TestLossChunks(t *testing.T) {
	m, _ := loadFixture(t, "nemotron-tiny")
	const B, T = 2, 300
	ids := make([]int32, B*T)
	for i := range ids {
		ids[i] = int32((i*7919 + 13) % m.Config.VocabSize)
	}
	in := Input{B: B, T: T, IDs: ids}
	targets := NextTokenTargets(ids, B, T)
	run := func(elems int) (float64, float64, [][]float32) {
		saved := lossChunkElems
		lossChunkElems = elems
		defer func() { lossChunkElems = saved }()
		a, err := m.NewActivations(B*T, true)
		if err != nil {
			t.Fatal(err)
		}
		defer a.Free(m.Backend)
		g, err := m.NewGrads()
		if err != nil {
			t.Fatal(err)
		}
		defer g.Free(m.Backend)
		loss, err := m.LossAndGrad(a, in, targets, 1, g)
		if err != nil {
			t.Fatal(err)
		}
		eval, err := m.Loss(a, in, targets, Options{})
		if err != nil {
			t.Fatal(err)
		}
		var grads [][]float32
		for _, x := range g.T {
			v, _ := m.Backend.ToFloat32(x)
			grads = append(grads, v)
		}
		return loss, eval, grads
	}
	if n := LossChunk(m.Config.VocabSize); n < B*T {
		t.Fatalf("a chunk of %d rows at vocabulary %d: the test needs one chunk for all %d rows", n, m.Config.VocabSize, B*T)
	}
	l1, e1, g1 := run(lossChunkElems)
	l3, e3, g3 := run(0)
	if math.Abs(l1-l3) > 1e-6*math.Abs(l1) || math.Abs(e1-e3) > 1e-6*math.Abs(e1) {
		t.Errorf("losses: one chunk %v and %v, three chunks %v and %v", l1, e1, l3, e3)
	}
	for i, p := range m.Params {
		if e := relErr(g3[i], g1[i]); e > 1e-5 {
			t.Errorf("grad.%s: relative error %.3g between one chunk and three", p.Name, e)
		}
	}
}
