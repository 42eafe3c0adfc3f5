package model

import (
	"math/rand/v2"
	"testing"
)

// TestCacheMatchesFullForward decodes token by token with the KV cache and
// compares every step's logits with the full forward pass; two sequences of
// different lengths share the cache, prefilled together with padding.
func TestCacheMatchesFullForward(t *testing.T) {
	for _, name := range fixtureModels {
		t.Run(name, func(t *testing.T) {
			m, _ := loadFixture(t, name)
			V := m.Config.VocabSize
			r := rand.New(rand.NewPCG(3, 4))
			lens := []int{19, 11}
			prefill := []int{7, 3}
			seqs := make([][]int32, 2)
			full := make([][]float32, 2)
			for s, n := range lens {
				seqs[s] = make([]int32, n)
				for i := range seqs[s] {
					seqs[s][i] = int32(r.IntN(V))
				}
				a, err := m.NewActivations(n, false)
				if err != nil {
					t.Fatal(err)
				}
				lg, err := m.Forward(a, Input{B: 1, T: n, IDs: seqs[s]}, Options{})
				if err != nil {
					t.Fatal(err)
				}
				full[s], _ = m.Backend.ToFloat32(lg)
			}
			cache, err := m.NewCache(2, 24)
			if err != nil {
				t.Fatal(err)
			}
			// Prefill both, right-padded to 7, logits of every real row.
			T := 7
			ids := make([]int32, 2*T)
			var rows []int32
			for s := range 2 {
				copy(ids[s*T:], seqs[s][:prefill[s]])
				for i := range prefill[s] {
					rows = append(rows, int32(s*T+i))
				}
			}
			a, _ := m.NewActivations(2*T, false)
			lg, err := m.Forward(a, Input{B: 2, T: T, IDs: ids, Past: []int{0, 0}, LogitRows: rows}, Options{Cache: cache})
			if err != nil {
				t.Fatal(err)
			}
			got, _ := m.Backend.ToFloat32(lg)
			k := 0
			for s := range 2 {
				for i := range prefill[s] {
					if e := relErr(got[k*V:(k+1)*V], full[s][i*V:(i+1)*V]); e > 1e-5 {
						t.Fatalf("prefill seq %d pos %d: relative error %.3g", s, i, e)
					}
					k++
				}
			}
			// Then one token per step for both sequences.
			step, _ := m.NewActivations(2, false)
			pos := append([]int(nil), prefill...)
			for pos[0] < lens[0] {
				next := []int32{seqs[0][pos[0]], 0}
				past := []int{pos[0], min(pos[1], lens[1]-1)}
				if pos[1] < lens[1] {
					next[1] = seqs[1][pos[1]]
				}
				lg, err := m.Forward(step, Input{B: 2, T: 1, IDs: next, Past: past}, Options{Cache: cache})
				if err != nil {
					t.Fatal(err)
				}
				got, _ := m.Backend.ToFloat32(lg)
				for s := range 2 {
					if pos[s] >= lens[s] {
						continue
					}
					if e := relErr(got[s*V:(s+1)*V], full[s][pos[s]*V:(pos[s]+1)*V]); e > 1e-5 {
						t.Fatalf("decode seq %d pos %d: relative error %.3g", s, pos[s], e)
					}
					pos[s]++
				}
			}
		})
	}
}

func TestForwardErrors(t *testing.T) {
	m, _ := loadFixture(t, "nemotron-tiny")
	a, _ := m.NewActivations(2, false)
	if _, err := m.Forward(a, Input{B: 1, T: 2, IDs: []int32{1, 512}}, Options{}); err == nil {
		t.Fatal("token id = vocab accepted")
	}
	if _, err := m.Forward(a, Input{B: 1, T: 3, IDs: []int32{1, 2, 3}}, Options{}); err == nil {
		t.Fatal("wrong row count accepted")
	}
	c, _ := m.NewCache(1, 2)
	if _, err := m.Forward(a, Input{B: 1, T: 2, IDs: []int32{1, 2}, Past: []int{1}}, Options{Cache: c}); err == nil {
		t.Fatal("cache overflow accepted")
	}
}

// TestCacheSlots: sequences in arbitrary cache slots, joining at different
// times, give the full-forward logits.
func TestCacheSlots(t *testing.T) {
	m, _ := loadFixture(t, "llama-tiny")
	V := m.Config.VocabSize
	seqs := [][]int32{{3, 9, 27, 81, 243}, {7, 49, 343 % 512, 2401 % 512}}
	full := make([][]float32, 2)
	for i, s := range seqs {
		a, _ := m.NewActivations(len(s), false)
		lg, _ := m.Forward(a, Input{B: 1, T: len(s), IDs: s}, Options{})
		full[i], _ = m.Backend.ToFloat32(lg)
	}
	c, _ := m.NewCache(4, 8)
	// Sequence 0 goes to slot 3, prefilled with 2 tokens; sequence 1 to
	// slot 1, prefilled with 3.
	for i, p := range []struct{ slot, n int }{{3, 2}, {1, 3}} {
		a, _ := m.NewActivations(p.n, false)
		if _, err := m.Forward(a, Input{B: 1, T: p.n, IDs: seqs[i][:p.n], Past: []int{0}, Slots: []int{p.slot}}, Options{Cache: c}); err != nil {
			t.Fatal(err)
		}
	}
	// One step for both, in the order (slot 1, slot 3).
	a, _ := m.NewActivations(2, false)
	lg, err := m.Forward(a, Input{B: 2, T: 1, IDs: []int32{seqs[1][3], seqs[0][2]}, Past: []int{3, 2}, Slots: []int{1, 3}}, Options{Cache: c})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := m.Backend.ToFloat32(lg)
	if e := relErr(got[:V], full[1][3*V:4*V]); e > 1e-5 {
		t.Fatalf("sequence 1: relative error %.3g", e)
	}
	if e := relErr(got[V:], full[0][2*V:3*V]); e > 1e-5 {
		t.Fatalf("sequence 0: relative error %.3g", e)
	}
	if _, err := m.Forward(a, Input{B: 2, T: 1, IDs: []int32{1, 2}, Past: []int{0, 0}, Slots: []int{1, 1}}, Options{Cache: c}); err == nil {
		t.Fatal("a slot used twice was accepted")
	}
}
