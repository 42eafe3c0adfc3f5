package main

import (
	"fmt"
	"path/filepath"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/minitron/minitron/checkpoints"
	"github.com/minitron/minitron/model"
)

func newInspect() *cobra.Command {
	var seq, batch int
	cmd := &cobra.Command{
		Use:   "inspect DIR",
		Short: "Describe a checkpoint: architecture, shape, parameters, dtypes, size and memory needs",
		Long: `inspect reads a checkpoint directory's config.json and safetensors headers
(no weights are loaded) and prints the architecture, the shape, total and
non-embedding parameter counts, the dtypes on disk, the bytes on disk, and the
memory needed to run the model (float32 weights, activations, KV cache) and
to train it with AdamW.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir := args[0]
			cfg, err := model.LoadConfig(filepath.Join(dir, "config.json"))
			if err != nil {
				return err
			}
			ts, err := checkpoints.Open(dir)
			if err != nil {
				return err
			}
			defer ts.Close()
			dtypes := map[string]int64{}
			var disk int64
			for _, f := range ts.Files() {
				for _, t := range f.Tensors {
					dtypes[t.DType.String()] += int64(t.Numel())
				}
			}
			disk = model.DirSize(dir)
			var missing []string
			for _, p := range cfg.Params() {
				info, ok := ts.Info(p.Name)
				if !ok {
					missing = append(missing, p.Name)
					continue
				}
				if fmt.Sprint(info.Shape) != fmt.Sprint(p.Shape) {
					return fmt.Errorf("%s: tensor %q has shape %v, the config implies %v", info.File, p.Name, info.Shape, p.Shape)
				}
			}
			total, nonEmb := cfg.NumParams()
			w := cmd.OutOrStdout()
			if !cmd.Flags().Changed("seq-len") {
				seq = trainingRecord(dir, cfg).SeqLen
			} else if seq > cfg.MaxPositions {
				fmt.Fprintf(cmd.ErrOrStderr(), "warning: --seq-len %d is beyond the model's context of %d tokens\n", seq, cfg.MaxPositions)
			}
			fmt.Fprintf(w, "model         %s\n", dir)
			fmt.Fprintf(w, "architecture  %s\n", cfg.Architecture)
			fmt.Fprintf(w, "shape         layers %d, hidden %d, heads %d (KV %d, head_dim %d), MLP %d, vocab %d\n",
				cfg.NumLayers, cfg.HiddenSize, cfg.NumHeads, cfg.NumKVHeads, cfg.HeadDim, cfg.IntermediateSize, cfg.VocabSize)
			fmt.Fprintf(w, "rotary        %d of %d dims per head, theta %g", cfg.RotaryDim(), cfg.HeadDim, cfg.RopeTheta)
			if cfg.RopeScaling != nil {
				fmt.Fprintf(w, ", %s scaling x%g", cfg.RopeScaling.Type, cfg.RopeScaling.Factor)
			}
			fmt.Fprintln(w)
			fmt.Fprintf(w, "parameters    %s total (%d), %s non-embedding (%d)\n", count(total), total, count(nonEmb), nonEmb)
			var dts []string
			for k, v := range dtypes {
				dts = append(dts, fmt.Sprintf("%s %s", k, count(v)))
			}
			sort.Strings(dts)
			fmt.Fprintf(w, "dtypes        %s\n", strings.Join(dts, ", "))
			fmt.Fprintf(w, "on disk       %s in %d file(s)\n", human(disk), len(ts.Files()))
			n := batch * seq
			run := cfg.WeightBytes() + cfg.InferenceActivationBytes(seq, 1) + cfg.KVCacheBytes(1, seq)
			fmt.Fprintf(w, "to run        %s (float32 weights %s, activations and KV cache for %d tokens %s)\n",
				human(run), human(cfg.WeightBytes()), seq, human(run-cfg.WeightBytes()))
			fmt.Fprintf(w, "to train      %s (weights, gradients, AdamW moments %s; activations for %d×%d tokens %s)\n",
				human(cfg.TrainingBytes(n)), human(4*cfg.WeightBytes()), batch, seq, human(cfg.TrainingActivationBytes(n)))
			if len(missing) > 0 {
				return fmt.Errorf("%s lacks %d tensor(s) the config requires, e.g. %q", dir, len(missing), missing[0])
			}
			return nil
		},
	}
	cmd.Flags().IntVar(&seq, "seq-len", 0, "sequence length used for the memory estimates (default: the training run's, else the model's context)")
	cmd.Flags().IntVar(&batch, "batch", 8, "batch size used for the training memory estimate")
	return cmd
}
