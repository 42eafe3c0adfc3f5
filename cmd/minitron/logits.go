package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/minitron/minitron/backend"
	"github.com/minitron/minitron/checkpoints"
	"github.com/minitron/minitron/model"
)

func newLogits() *cobra.Command {
	var modelDir, in, out, dev string
	var grads bool
	cmd := &cobra.Command{
		Use:   "logits --model DIR --input IN.safetensors --output OUT.safetensors",
		Short: "Compute logits for token ids, for comparison with other implementations",
		Long: `logits runs the model on the input_ids tensor of IN (int64 or int32, shape
[batch, seq]) and writes the logits (float32, [batch, seq, vocab]) to OUT as
the tensor "logits". OUT is written atomically.

With --grads, OUT also gets "loss" (float32 [1], the mean next-token
cross-entropy over positions 0..seq-2 of every row) and "grad.<name>" for
every parameter: d loss / d parameter, named as in the checkpoint.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ids, b, t, err := readInputIDs(in)
			if err != nil {
				return err
			}
			be, err := openBackend(dev)
			if err != nil {
				return err
			}
			m, err := loadModel(modelDir, be)
			if err != nil {
				return err
			}
			for i, id := range ids {
				if int(id) >= m.Config.VocabSize {
					return fmt.Errorf("%s: input_ids[%d, %d] = %d is outside the model's vocabulary of %d", in, i/t, i%t, id, m.Config.VocabSize)
				}
			}
			if grads && t < 2 {
				return fmt.Errorf("%s: --grads needs sequences of at least 2 tokens (input_ids is [%d, %d])", in, b, t)
			}
			a, err := m.NewActivations(b*t, grads)
			if err != nil {
				return err
			}
			lg, err := m.Forward(a, model.Input{B: b, T: t, IDs: ids}, model.Options{})
			if err != nil {
				return err
			}
			v, err := be.ToFloat32(lg)
			if err != nil {
				return err
			}
			entries := []checkpoints.Entry{checkpoints.FloatEntry("logits", backend.F32, []int{b, t, m.Config.VocabSize}, v)}
			if grads {
				g, err := m.NewGrads()
				if err != nil {
					return err
				}
				loss, err := m.LossAndGrad(a, model.Input{B: b, T: t, IDs: ids}, model.NextTokenTargets(ids, b, t), 1, g)
				if err != nil {
					return err
				}
				entries = append(entries, checkpoints.FloatEntry("loss", backend.F32, []int{1}, []float32{float32(loss)}))
				for i, p := range m.Params {
					gv, err := be.ToFloat32(g.T[i])
					if err != nil {
						return err
					}
					entries = append(entries, checkpoints.FloatEntry("grad."+p.Name, backend.F32, p.Shape, gv))
				}
			}
			return checkpoints.WriteFile(out, entries, map[string]string{"model": modelDir})
		},
	}
	cmd.Flags().StringVar(&modelDir, "model", "", "checkpoint directory (config.json + safetensors)")
	cmd.Flags().StringVar(&in, "input", "", "safetensors file holding input_ids [batch, seq] (int64 or int32)")
	cmd.Flags().StringVar(&out, "output", "", "safetensors file to write the logits to")
	cmd.Flags().BoolVar(&grads, "grads", false, "also write the loss and the gradient of every parameter")
	addDevice(cmd, &dev)
	for _, f := range []string{"model", "input", "output"} {
		cmd.MarkFlagRequired(f)
	}
	return cmd
}

// readInputIDs reads input_ids [B,T] from a safetensors file.
func readInputIDs(path string) ([]int32, int, int, error) {
	ts, err := checkpoints.Open(path)
	if err != nil {
		return nil, 0, 0, err
	}
	defer ts.Close()
	v, shape, err := ts.Int64("input_ids")
	if err != nil {
		return nil, 0, 0, err
	}
	if len(shape) == 1 {
		shape = []int{1, shape[0]}
	}
	if len(shape) != 2 || shape[0] == 0 || shape[1] == 0 {
		return nil, 0, 0, fmt.Errorf("%s: input_ids has shape %v, want [batch, seq] with both > 0", path, shape)
	}
	ids := make([]int32, len(v))
	for i, x := range v {
		if x < 0 || x > 1<<31-1 {
			return nil, 0, 0, fmt.Errorf("%s: input_ids[%d, %d] = %d is not a valid token id", path, i/shape[1], i%shape[1], x)
		}
		ids[i] = int32(x)
	}
	return ids, shape[0], shape[1], nil
}
