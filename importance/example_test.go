package importance_test

import (
	"context"
	"fmt"
	"log"

	"github.com/minitron/minitron/backend/cpu"
	"github.com/minitron/minitron/checkpoints"
	"github.com/minitron/minitron/importance"
	"github.com/minitron/minitron/model"
)

// Load a model and score its heads, neurons, embedding channels and layers
// on calibration sequences (here the fixture's, a [N, T] int64 tensor of
// token ids; minitron importance draws them from a prepared dataset). The
// most important heads printed are those of the transformers reference
// scores in testdata/hf/nemotron-tiny.
func Example() {
	m, err := model.Load("../testdata/hf/nemotron-tiny", cpu.New(), nil)
	if err != nil {
		log.Fatal(err)
	}
	defer m.Free()
	calib, err := checkpoints.Open("../testdata/hf/nemotron-tiny/importance.safetensors")
	if err != nil {
		log.Fatal(err)
	}
	defer calib.Close()
	raw, shape, err := calib.Int64("calibration_ids")
	if err != nil {
		log.Fatal(err)
	}
	ids := make([]int32, len(raw))
	for i, v := range raw {
		ids[i] = int32(v)
	}
	// Minitron's defaults: mean over each sequence, L2 over the batch.
	s, err := importance.Estimate(context.Background(), m, ids, shape[0], shape[1], importance.Options{Depth: true})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%d calibration sequences of %d tokens\n", shape[0], shape[1])
	for l := range s.Head {
		best := 0
		for h, v := range s.Head[l] {
			if v > s.Head[l][best] {
				best = h
			}
		}
		fmt.Printf("layer %d: %d head scores (most important: head %d), %d neuron scores\n", l, len(s.Head[l]), best, len(s.Neuron[l]))
	}
	fmt.Printf("%d embedding-channel scores, %d layer scores\n", len(s.Embedding), len(s.LayerBI))
	// The scores go to a file for minitron prune: s.Save(path).

	// Output:
	// 4 calibration sequences of 24 tokens
	// layer 0: 4 head scores (most important: head 1), 192 neuron scores
	// layer 1: 4 head scores (most important: head 0), 192 neuron scores
	// 64 embedding-channel scores, 2 layer scores
}
