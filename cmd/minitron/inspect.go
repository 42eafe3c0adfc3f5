package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/minitron/minitron/backend"
	"github.com/minitron/minitron/checkpoints"
	"github.com/minitron/minitron/config"
	"github.com/minitron/minitron/distill"
	"github.com/minitron/minitron/model"
	"github.com/minitron/minitron/train"
)

func newInspect() *cobra.Command {
	var seq, batch, gpus int
	var cfgPath string
	var sets []string
	var recompute bool
	cmd := &cobra.Command{
		Use:   "inspect DIR | inspect --config FILE.yaml",
		Short: "Describe a checkpoint (architecture, shape, parameters, dtypes, size, memory), or the memory plan of a training config",
		Long: `inspect reads a checkpoint directory's config.json and safetensors headers
(no weights are loaded) and prints the architecture, the shape, total and
non-embedding parameter counts, the dtypes on disk, the bytes on disk, and the
memory needed to run the model (float32 weights, activations, KV cache) and
to train it with AdamW on the CPU.

With --config FILE.yaml (a train or distill configuration, with --set
overrides), it prints the memory plan of that run on its device, per GPU:
weights, float32 master weights, gradients and Adam moments in the dtypes the
optimizer section asks for, the online teacher, and the activations of one
micro-batch; and the largest micro-batch that fits on an H100 80GB and on an
H200. Only config.json files are read: model.config (or model.checkpoint's),
and teacher.model's (a directory, or for inspect its config.json itself).
--gpus N shards master weights and moments over N data-parallel ranks, as
Megatron-LM's distributed optimizer (ZeRO-1) does; --recompute estimates full
activation recomputation (not implemented in training yet).`,
		Args: cobra.RangeArgs(0, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if cfgPath != "" {
				if len(args) > 0 {
					return fmt.Errorf("inspect: give a checkpoint directory or --config, not both")
				}
				return inspectPlan(cmd.OutOrStdout(), cfgPath, sets, gpus, recompute)
			}
			if len(args) != 1 {
				return fmt.Errorf("inspect: give a checkpoint directory, or --config FILE.yaml for a training plan")
			}
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
			fmt.Fprintf(w, "to train      %s on the CPU (weights, gradients, AdamW moments %s; activations for %d×%d tokens %s)\n",
				human(cfg.TrainingBytes(n)), human(4*cfg.WeightBytes()), batch, seq, human(cfg.TrainingActivationBytes(n)))
			if len(missing) > 0 {
				return fmt.Errorf("%s lacks %d tensor(s) the config requires, e.g. %q", dir, len(missing), missing[0])
			}
			return nil
		},
	}
	cmd.Flags().IntVar(&seq, "seq-len", 0, "sequence length used for the memory estimates (default: the training run's, else the model's context)")
	cmd.Flags().IntVar(&batch, "batch", 8, "batch size used for the training memory estimate")
	cmd.Flags().StringVar(&cfgPath, "config", "", "a train or distill configuration (YAML): print its memory plan instead")
	cmd.Flags().StringArrayVar(&sets, "set", nil, "override a value of --config: `key.path=value`, e.g. --set optimizer.state_dtype=bf16 (repeatable)")
	cmd.Flags().IntVar(&gpus, "gpus", 1, "with --config: data-parallel GPUs sharing the optimizer state (master weights and moments sharded)")
	cmd.Flags().BoolVar(&recompute, "recompute", false, "with --config: estimate activations with full recomputation (each layer's input kept only)")
	return cmd
}

// GPU memory as the driver reports it (nvidia-smi's MiB).
var planGPUs = []struct {
	name  string
	bytes int64
}{{"H100 80GB", 81559 << 20}, {"H200", 143771 << 20}}

// shapeConfig reads a model's config.json from a directory, or the file
// itself when path names one.
func shapeConfig(path string) (*model.Config, error) {
	if st, err := os.Stat(path); err == nil && !st.IsDir() {
		return model.LoadConfig(path)
	}
	return model.LoadConfig(filepath.Join(path, "config.json"))
}

// inspectPlan prints the memory plan of a training or distillation config.
func inspectPlan(w io.Writer, path string, sets []string, gpus int, recompute bool) error {
	if gpus < 1 {
		return fmt.Errorf("inspect: --gpus %d must be at least 1", gpus)
	}
	c := distill.Default()
	if err := config.Load(path, &c, sets); err != nil {
		return err
	}
	if err := c.Config.Validate(); err != nil {
		return err
	}
	src := c.Model.Config
	if src == "" {
		src = c.Model.Checkpoint
	}
	student, err := shapeConfig(src)
	if err != nil {
		return err
	}
	spec := train.MemorySpec{Student: student, Optimizer: c.Optimizer, Rows: c.Train.MicroBatch * c.Data.SeqLen, FloatBytes: 4, GPUs: gpus, Recompute: recompute}
	device := "cpu (float32)"
	if d := strings.ToLower(c.Device); d != "cpu" {
		spec.FloatBytes = 2
		device = c.Device + " (bfloat16 weights and activations)"
	}
	teacher := "none"
	switch {
	case c.Teacher.Model != "":
		if spec.Teacher, err = shapeConfig(c.Teacher.Model); err != nil {
			return fmt.Errorf("inspect: teacher: %w", err)
		}
		spec.Distill = true
		tp, _ := spec.Teacher.NumParams()
		teacher = fmt.Sprintf("%s parameters, online (%s)", count(tp), c.Teacher.Model)
	case c.Teacher.Cache != "":
		spec.Distill = true
		teacher = fmt.Sprintf("offline cache %s, not made yet (its top-k buffers, under a MiB, not counted)", c.Teacher.Cache)
		if m, err := distill.ReadCacheManifest(c.Teacher.Cache); err == nil {
			spec.CacheK = m.K
			teacher = fmt.Sprintf("offline top-%d cache (%s)", m.K, c.Teacher.Cache)
		}
	}
	p := train.PlanMemory(spec)
	o := c.Optimizer
	dtName := func(dt backend.DType) string {
		if spec.FloatBytes == 4 {
			return "f32"
		}
		return strings.ToLower(dt.String())
	}
	master := "none (weights updated in place, stochastic rounding)"
	if spec.FloatBytes == 4 {
		master = "none needed (float32 weights)"
	} else if o.MasterWeights {
		master = "f32"
	}
	fmt.Fprintf(w, "training plan   %s on %s, per GPU", path, device)
	if gpus > 1 {
		fmt.Fprintf(w, " of %d (master weights and moments sharded)", gpus)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "student         %s parameters (%s), micro-batch %d × %d tokens\n", count(p.StudentParams), src, c.Train.MicroBatch, c.Data.SeqLen)
	fmt.Fprintf(w, "teacher         %s\n", teacher)
	fmt.Fprintf(w, "precision       gradients %s, master weights %s, moments %s: %.2f bytes per parameter\n",
		dtName(o.GradientDType()), master, dtName(o.MomentDType()), p.PerParam())
	acts := "activations"
	if recompute {
		acts += " (full recomputation)"
	}
	for _, r := range []struct {
		what string
		n    int64
	}{
		{"weights", p.Weights}, {"master weights", p.Master}, {"gradients", p.Grads}, {"Adam moments", p.Moments},
		{"teacher weights", p.Teacher}, {acts, p.Activations}, {"teacher forward", p.TeacherForward}, {"loss buffers", p.LossBuffers},
	} {
		if r.n > 0 {
			fmt.Fprintf(w, "  %-32s %10s\n", r.what, human(r.n))
		}
	}
	fmt.Fprintf(w, "  %-32s %10s  (plus about 1 GiB: CUDA context, cuBLAS workspace)\n", "total", human(p.Total()))
	if spec.FloatBytes == 2 {
		for _, g := range planGPUs {
			budget := g.bytes - 1<<30
			mb := train.MaxMicroBatch(spec, c.Data.SeqLen, budget, 1024)
			if mb == 0 {
				s1 := spec
				s1.Rows = c.Data.SeqLen
				fmt.Fprintf(w, "%-15s does not fit: one sequence of %d tokens needs %s of %s\n", g.name, c.Data.SeqLen, human(train.PlanMemory(s1).Total()+1<<30), human(g.bytes))
				continue
			}
			fmt.Fprintf(w, "%-15s fits micro-batches of up to %d × %d tokens (%s)\n", g.name, mb, c.Data.SeqLen, human(g.bytes))
		}
	}
	return nil
}
