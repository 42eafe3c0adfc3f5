package export

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/minitron/minitron/checkpoints"
	"github.com/minitron/minitron/model"
	"github.com/minitron/minitron/tokenizer"
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

// GGUF writes the model in src as a GGUF v3 file for llama.cpp: its tensor
// names; Nemotron's LayerNorm1P weights with the +1 folded in; Llama's Q/K
// rows permuted for interleaved rotary; the rotary dimension count, and key
// and value lengths (head_dim, which may differ from hidden/heads after
// pruning); the SentencePiece vocabulary with scores and token types.
// Matrices are stored as dtype (f32, f16, bf16, q8_0), vectors as f32.
func GGUF(src, out, dtype string) error {
	ty, ok := ggufTypes[dtype]
	if !ok {
		return fmt.Errorf("export: GGUF dtype %q: use f32, f16, bf16 or q8_0", dtype)
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
	spPath := filepath.Join(src, "tokenizer.model")
	sp, err := tokenizer.LoadSentencePiece(spPath)
	if err != nil {
		if os.IsNotExist(err) || strings.Contains(err.Error(), "no such file") {
			return fmt.Errorf("export: GGUF export needs the SentencePiece tokenizer.model in %s (byte-level tokenizer.json vocabularies are not supported yet)", src)
		}
		return err
	}
	if sp.VocabSize() > cfg.VocabSize {
		return fmt.Errorf("export: the tokenizer has %d pieces, the model's vocabulary %d", sp.VocabSize(), cfg.VocabSize)
	}
	ts, err := checkpoints.Open(src)
	if err != nil {
		return err
	}
	defer ts.Close()
	params := cfg.Params()
	if ty.ggml == checkpoints.GGMLQ8_0 {
		for _, p := range params {
			if len(p.Shape) == 2 && p.Shape[1]%32 != 0 {
				return fmt.Errorf("export: %s has rows of %d values; q8_0 stores blocks of 32 (export as f16 or bf16, or prune to multiples of 32)", p.Name, p.Shape[1])
			}
		}
	}
	a := func(k string) string { return arch + "." + k }
	kvs := []checkpoints.GGUFKV{
		{Key: "general.architecture", Value: arch},
		{Key: "general.name", Value: filepath.Base(filepath.Clean(src))},
		{Key: "general.file_type", Value: ty.ftype},
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
	pieces := sp.Pieces()
	var toks []string
	var scores []float32
	var types []int32
	for _, p := range pieces {
		toks, scores, types = append(toks, p.Text), append(scores, p.Score), append(types, int32(p.Type))
	}
	for i := len(pieces); i < cfg.VocabSize; i++ { // padded embeddings beyond the tokenizer
		toks, scores, types = append(toks, fmt.Sprintf("[PAD%d]", i)), append(scores, 0), append(types, 5)
	}
	kvs = append(kvs,
		checkpoints.GGUFKV{Key: "tokenizer.ggml.model", Value: "llama"},
		checkpoints.GGUFKV{Key: "tokenizer.ggml.tokens", Value: toks},
		checkpoints.GGUFKV{Key: "tokenizer.ggml.scores", Value: scores},
		checkpoints.GGUFKV{Key: "tokenizer.ggml.token_type", Value: types},
		checkpoints.GGUFKV{Key: "tokenizer.ggml.unknown_token_id", Value: uint32(sp.Unknown())},
		checkpoints.GGUFKV{Key: "tokenizer.ggml.add_bos_token", Value: true},
		checkpoints.GGUFKV{Key: "tokenizer.ggml.add_eos_token", Value: false},
	)
	bos, eos := int(sp.BOS()), int(sp.EOS())
	if cfg.BOS >= 0 {
		bos = cfg.BOS
	}
	if len(cfg.EOS) > 0 {
		eos = cfg.EOS[0]
	}
	if bos >= 0 {
		kvs = append(kvs, checkpoints.GGUFKV{Key: "tokenizer.ggml.bos_token_id", Value: uint32(bos)})
	}
	if eos >= 0 {
		kvs = append(kvs, checkpoints.GGUFKV{Key: "tokenizer.ggml.eos_token_id", Value: uint32(eos)})
	}
	if p := sp.Pad(); p >= 0 {
		kvs = append(kvs, checkpoints.GGUFKV{Key: "tokenizer.ggml.padding_token_id", Value: uint32(p)})
	}
	for _, p := range params {
		if _, ok := ts.Info(p.Name); !ok {
			return fmt.Errorf("export: %s: missing tensor %q", src, p.Name)
		}
		t := ty.ggml
		if len(p.Shape) == 1 {
			t = checkpoints.GGMLF32
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
	if err := os.MkdirAll(filepath.Dir(filepath.Clean(out)), 0o755); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	return checkpoints.WriteGGUF(out, kvs, tensors)
}
