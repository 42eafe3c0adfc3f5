package export

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/minitron/minitron/checkpoints"
	"github.com/minitron/minitron/model"
)

// GGUF dtypes and their llama.cpp file types (general.file_type).
var ggufTypes = map[string]struct {
	ggml, ftype uint32
}{
	"f32":  {checkpoints.GGMLF32, 0},
	"f16":  {checkpoints.GGMLF16, 1},
	"q8_0": {checkpoints.GGMLQ8_0, 7},
	"bf16": {checkpoints.GGMLBF16, 32},
}

// ggufArch maps our architectures to llama.cpp's names.
var ggufArch = map[model.Arch]string{model.Llama: "llama", model.Nemotron: "nemotron"}

// ggufName maps a Hugging Face parameter name to llama.cpp's tensor name.
func ggufName(p model.Param) string {
	blk := func(s string) string { return fmt.Sprintf("blk.%d.%s", p.Layer, s) }
	suffix := ".weight"
	if strings.HasSuffix(p.Name, ".bias") {
		suffix = ".bias"
	}
	switch p.Role {
	case model.Embed:
		return "token_embd.weight"
	case model.LMHead:
		return "output.weight"
	case model.FinalNormWeight, model.FinalNormBias:
		return "output_norm" + suffix
	case model.InputNormWeight, model.InputNormBias:
		return blk("attn_norm" + suffix)
	case model.PostNormWeight, model.PostNormBias:
		return blk("ffn_norm" + suffix)
	case model.QProj:
		return blk("attn_q.weight")
	case model.KProj:
		return blk("attn_k.weight")
	case model.VProj:
		return blk("attn_v.weight")
	case model.OProj:
		return blk("attn_output.weight")
	case model.GateProj:
		return blk("ffn_gate.weight")
	case model.UpProj:
		return blk("ffn_up.weight")
	case model.DownProj:
		return blk("ffn_down.weight")
	}
	return p.Name
}

// permuteRotary reorders the rows of a Q or K projection from the
// rotate-half layout (Hugging Face) to the interleaved one llama.cpp's
// llama architecture expects: within each head, row i of the first half and
// row i of the second half become rows 2i and 2i+1.
func permuteRotary(w []float32, heads, headDim, cols int) []float32 {
	out := make([]float32, len(w))
	half := headDim / 2
	for h := range heads {
		for i := range half {
			for j := range 2 {
				src := (h*headDim + j*half + i) * cols
				dst := (h*headDim + 2*i + j) * cols
				copy(out[dst:dst+cols], w[src:src+cols])
			}
		}
	}
	return out
}

// GGUFOptions configure a GGUF export.
type GGUFOptions struct {
	DType string // f32, f16, bf16 or q8_0
	// Warn receives what llama.cpp users should know (tensors kept in f16,
	// shapes llama.cpp refuses); nil prints to stderr.
	Warn func(msg string)
}

// GGUF writes the model in src as a GGUF v3 file for llama.cpp, warning on
// stderr; see ExportGGUF.
func GGUF(src, out, dtype string) error { return ExportGGUF(src, out, GGUFOptions{DType: dtype}) }

// ggufQuantVersion is ggml's GGML_QNT_VERSION, the layout version of its
// quantized types (q8_0's blocks).
const ggufQuantVersion = 2

// ExportGGUF writes the model in src as a GGUF v3 file for llama.cpp: its
// tensor names; Nemotron's LayerNorm1P weights with the +1 folded in;
// Llama's Q/K rows permuted for interleaved rotary; the rotary dimension
// count, and key and value lengths (head_dim, which may differ from
// hidden/heads after pruning); the vocabulary (SentencePiece with scores and
// token types, or byte-level BPE with its merges and llama.cpp's name for
// its pre-tokenizer). Matrices are stored as the dtype (f32, f16, bf16,
// q8_0), vectors as f32; under q8_0 a matrix whose rows are not blocks of
// 32 stays f16, as llama.cpp's converter does.
func ExportGGUF(src, out string, opt GGUFOptions) error {
	warn := opt.Warn
	if warn == nil {
		warn = func(msg string) { fmt.Fprintln(os.Stderr, "warning: "+msg) }
	}
	ty, ok := ggufTypes[opt.DType]
	if !ok {
		return fmt.Errorf("export: GGUF dtype %q: use f32, f16, bf16 or q8_0", opt.DType)
	}
	cfg, err := model.LoadConfig(filepath.Join(src, "config.json"))
	if err != nil {
		return err
	}
	arch, ok := ggufArch[cfg.Arch]
	if !ok {
		return fmt.Errorf("export: llama.cpp has no GGUF architecture for %s", cfg.Architecture)
	}
	if cfg.RotaryDim() != cfg.HeadDim && cfg.Arch == model.Llama {
		return fmt.Errorf("export: partial rotary on the llama architecture is not expressible in GGUF")
	}
	if cfg.Arch == model.Nemotron && cfg.NumHeads*cfg.HeadDim != cfg.HiddenSize {
		warn(fmt.Sprintf("llama.cpp's nemotron architecture needs num_attention_heads × head_dim = hidden_size (here %d × %d = %d, hidden_size %d): llama.cpp will refuse this file (\"tensor 'blk.0.attn_q.weight' has wrong shape\"); prune to heads × head_dim = hidden for llama.cpp",
			cfg.NumHeads, cfg.HeadDim, cfg.NumHeads*cfg.HeadDim, cfg.HiddenSize))
	}
	voc, err := readVocab(src, cfg)
	if err != nil {
		return err
	}
	ts, err := checkpoints.Open(src)
	if err != nil {
		return err
	}
	defer ts.Close()
	params := cfg.Params()
	a := func(k string) string { return arch + "." + k }
	kvs := []checkpoints.GGUFKV{
		{Key: "general.architecture", Value: arch},
		{Key: "general.name", Value: filepath.Base(filepath.Clean(src))},
		{Key: "general.file_type", Value: ty.ftype},
		{Key: "general.quantization_version", Value: uint32(ggufQuantVersion)},
		{Key: "general.alignment", Value: uint32(checkpoints.GGUFAlignment)},
		{Key: a("context_length"), Value: uint32(cfg.MaxPositions)},
		{Key: a("embedding_length"), Value: uint32(cfg.HiddenSize)},
		{Key: a("block_count"), Value: uint32(cfg.NumLayers)},
		{Key: a("feed_forward_length"), Value: uint32(cfg.IntermediateSize)},
		{Key: a("attention.head_count"), Value: uint32(cfg.NumHeads)},
		{Key: a("attention.head_count_kv"), Value: uint32(cfg.NumKVHeads)},
		{Key: a("attention.key_length"), Value: uint32(cfg.HeadDim)},
		{Key: a("attention.value_length"), Value: uint32(cfg.HeadDim)},
		{Key: a("rope.freq_base"), Value: float32(cfg.RopeTheta)},
		{Key: a("rope.dimension_count"), Value: uint32(cfg.RotaryDim())},
		{Key: a("vocab_size"), Value: uint32(cfg.VocabSize)},
	}
	if cfg.Arch == model.Nemotron {
		kvs = append(kvs, checkpoints.GGUFKV{Key: a("attention.layer_norm_epsilon"), Value: float32(cfg.NormEps)})
	} else {
		kvs = append(kvs, checkpoints.GGUFKV{Key: a("attention.layer_norm_rms_epsilon"), Value: float32(cfg.NormEps)})
	}
	var tensors []checkpoints.GGUFTensor
	if s := cfg.RopeScaling; s != nil {
		switch s.Type {
		case "linear":
			kvs = append(kvs, checkpoints.GGUFKV{Key: a("rope.scaling.type"), Value: "linear"}, checkpoints.GGUFKV{Key: a("rope.scaling.factor"), Value: float32(s.Factor)})
		case "llama3":
			// llama.cpp takes Llama-3.1 scaling as per-frequency divisors.
			plain := *cfg
			plain.RopeScaling = nil
			base, scaled := plain.InvFreq(), cfg.InvFreq()
			factors := make([]float32, len(base))
			for i := range factors {
				factors[i] = base[i] / scaled[i]
			}
			tensors = append(tensors, checkpoints.GGUFTensor{Name: "rope_freqs.weight", Shape: []int{len(factors)}, Type: checkpoints.GGMLF32,
				Data: func() ([]float32, error) { return factors, nil }})
		}
	}
	kvs = append(kvs, voc.kvs()...)
	var fallback []string
	for _, p := range params {
		if _, ok := ts.Info(p.Name); !ok {
			return fmt.Errorf("export: %s: missing tensor %q", src, p.Name)
		}
		t := ty.ggml
		switch {
		case len(p.Shape) == 1:
			t = checkpoints.GGMLF32
		case t == checkpoints.GGMLQ8_0 && p.Shape[len(p.Shape)-1]%32 != 0:
			t = checkpoints.GGMLF16
			fallback = append(fallback, fmt.Sprintf("%s (rows of %d)", ggufName(p), p.Shape[len(p.Shape)-1]))
		}
		tensors = append(tensors, checkpoints.GGUFTensor{Name: ggufName(p), Shape: p.Shape, Type: t, Data: func() ([]float32, error) {
			v, err := ts.Float32(p.Name, p.Shape...)
			if err != nil {
				return nil, err
			}
			ts.Release(p.Name)
			switch {
			case cfg.Arch == model.Nemotron && (p.Role == model.InputNormWeight || p.Role == model.PostNormWeight || p.Role == model.FinalNormWeight):
				for i := range v {
					v[i]++
				}
			case cfg.Arch == model.Llama && p.Role == model.QProj:
				v = permuteRotary(v, cfg.NumHeads, cfg.HeadDim, cfg.HiddenSize)
			case cfg.Arch == model.Llama && p.Role == model.KProj:
				v = permuteRotary(v, cfg.NumKVHeads, cfg.HeadDim, cfg.HiddenSize)
			}
			return v, nil
		}})
	}
	if len(fallback) > 0 {
		warn(fmt.Sprintf("q8_0 stores rows in blocks of 32 values; %d tensor(s) stay f16: %s", len(fallback), strings.Join(fallback, ", ")))
	}
	if err := os.MkdirAll(filepath.Dir(filepath.Clean(out)), 0o755); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	return checkpoints.WriteGGUF(out, kvs, tensors)
}
