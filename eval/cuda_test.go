package eval

import (
	"context"
	"math"
	"testing"

	"github.com/minitron/minitron/backend/cuda"
	"github.com/minitron/minitron/backend/cuda/emu"
	"github.com/minitron/minitron/model"
)

// TestScoreCUDAStandIns: scoring on the CUDA backend (here on the CPU
// stand-ins for the CUDA libraries: the same host code and kernels as on a
// GPU) gives the CPU's log-likelihoods within bfloat16's precision, through
// the shared-prefix KV-cache copies.
func TestScoreCUDAStandIns(t *testing.T) {
	emu.Setenv(t, emu.Dir(t))
	b, err := cuda.Open(cuda.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	m, err := model.Load("../models/tiny-teacher", b, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Free()
	ref, tok := tinyTeacher(t)
	// Short documents: the stand-ins run kernels on the CPU, slowly.
	docs := benchmarkDocs(t, BuildOptions{Limit: 1})
	want, err := Score(context.Background(), ref, tok, docs, ScoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, opt := range []ScoreOptions{{}} {
		got, err := Score(context.Background(), m, tok, docs, opt)
		if err != nil {
			t.Fatal(err)
		}
		worst := 0.0
		for d := range docs {
			for r := range docs[d].Requests {
				e := math.Abs(got[d][r]-want[d][r]) / math.Max(1, math.Abs(want[d][r]))
				worst = max(worst, e)
			}
		}
		t.Logf("plain %v: worst relative error %.3g", opt.Plain, worst)
		if worst > 5e-2 {
			t.Errorf("plain %v: log-likelihoods differ from the CPU's by up to %.3g (relative)", opt.Plain, worst)
		}
	}
}
