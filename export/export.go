// Package export writes students in the formats serving stacks load:
// Hugging Face directories (transformers 4.44+ and 5, vLLM) and GGUF files
// for llama.cpp and ollama.
package export

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/minitron/minitron/backend"
	"github.com/minitron/minitron/checkpoints"
	"github.com/minitron/minitron/diskio"
	"github.com/minitron/minitron/model"
	"github.com/minitron/minitron/tokenizer"
)

// HF writes the model in src as a Hugging Face directory: config.json with
// an explicit head_dim (and Nemotron's partial_rotary_factor) that both
// transformers 4 and 5 read, safetensors in dtype dt sharded at maxShard
// bytes with an index, the tokenizer files (tokenizer.json generated from a
// SentencePiece BPE model when the source has none, so fast tokenizers
// work) and generation_config.json (the source's, or made from config.json).
// The directory appears when complete.
func HF(src, out string, dt backend.DType, maxShard int64) error {
	cfg, err := model.LoadConfig(filepath.Join(src, "config.json"))
	if err != nil {
		return err
	}
	ts, err := checkpoints.Open(src)
	if err != nil {
		return err
	}
	defer ts.Close()
	var es []checkpoints.Entry
	for _, p := range cfg.Params() {
		if _, ok := ts.Info(p.Name); !ok {
			return fmt.Errorf("export: %s: missing tensor %q", src, p.Name)
		}
		es = append(es, checkpoints.Entry{Name: p.Name, DType: dt, Shape: p.Shape, Data: func() ([]byte, error) {
			v, err := ts.Float32(p.Name, p.Shape...)
			if err != nil {
				return nil, err
			}
			ts.Release(p.Name)
			return checkpoints.EncodeFloat32(dt, v)
		}})
	}
	return diskio.WriteDir(out, false, func(tmp string) error {
		if _, err := checkpoints.WriteSharded(tmp, es, maxShard, map[string]string{"format": "pt"}); err != nil {
			return err
		}
		c := *cfg
		c.DType = map[backend.DType]string{backend.BF16: "bfloat16", backend.F16: "float16", backend.F32: "float32"}[dt]
		b, err := c.JSON()
		if err != nil {
			return err
		}
		// torch_dtype (transformers 4) and dtype (5) both name the weights.
		var m map[string]any
		json.Unmarshal(b, &m)
		m["torch_dtype"], m["dtype"] = c.DType, c.DType
		if b, err = json.MarshalIndent(m, "", "  "); err != nil {
			return err
		}
		if err := diskio.WriteFileAtomic(filepath.Join(tmp, "config.json"), append(b, '\n')); err != nil {
			return err
		}
		if err := tokenizerFiles(src, tmp, cfg); err != nil {
			return err
		}
		if _, err := os.Stat(filepath.Join(tmp, "generation_config.json")); err == nil {
			return nil // the source's, copied with the tokenizer
		}
		gen := map[string]any{"_from_model_config": true}
		if cfg.BOS >= 0 {
			gen["bos_token_id"] = cfg.BOS
		}
		if len(cfg.EOS) == 1 {
			gen["eos_token_id"] = cfg.EOS[0]
		} else if len(cfg.EOS) > 1 {
			gen["eos_token_id"] = cfg.EOS
		}
		gb, _ := json.MarshalIndent(gen, "", "  ")
		return diskio.WriteFileAtomic(filepath.Join(tmp, "generation_config.json"), append(gb, '\n'))
	})
}

// tokenizerFiles copies the tokenizer and generation files and writes what
// fast tokenizers need.
func tokenizerFiles(src, dst string, cfg *model.Config) error {
	names, err := tokenizer.CopyDirFiles(src, dst)
	if err != nil {
		return err
	}
	copied := map[string]bool{}
	for _, n := range names {
		copied[n] = true
	}
	if !copied["tokenizer.model"] {
		return nil
	}
	sp, err := tokenizer.LoadSentencePiece(filepath.Join(src, "tokenizer.model"))
	if err != nil {
		return err
	}
	if !copied["tokenizer.json"] {
		if b, err := sp.TokenizerJSON(); err == nil {
			if b, err = withBOS(b, sp); err != nil {
				return err
			}
			if err := diskio.WriteFileAtomic(filepath.Join(dst, "tokenizer.json"), b); err != nil {
				return err
			}
			copied["tokenizer.json"] = true
		}
	}
	if !copied["tokenizer_config.json"] {
		tc := map[string]any{"model_max_length": cfg.MaxPositions, "add_bos_token": true, "add_eos_token": false, "clean_up_tokenization_spaces": false}
		if copied["tokenizer.json"] {
			tc["tokenizer_class"] = "PreTrainedTokenizerFast"
		} else {
			tc["tokenizer_class"] = "LlamaTokenizer"
		}
		if b := sp.BOS(); b >= 0 {
			tc["bos_token"] = sp.Piece(b)
		}
		if e := sp.EOS(); e >= 0 {
			tc["eos_token"] = sp.Piece(e)
		}
		tc["unk_token"] = sp.Piece(sp.Unknown())
		b, _ := json.MarshalIndent(tc, "", "  ")
		return diskio.WriteFileAtomic(filepath.Join(dst, "tokenizer_config.json"), append(b, '\n'))
	}
	return nil
}

// withBOS gives a generated tokenizer.json the post-processor that adds
// BOS, as tokenizer_config.json's add_bos_token (written true) says:
// Hugging Face's tokenizers libraries take BOS from the post-processor
// alone. It is the TemplateProcessing transformers' Llama converter writes:
// "<s> $A" for one sequence, "<s> $A <s> $B" for a pair.
func withBOS(tokJSON []byte, sp *tokenizer.SentencePiece) ([]byte, error) {
	b := sp.BOS()
	if b < 0 {
		return tokJSON, nil
	}
	var doc map[string]any
	if err := json.Unmarshal(tokJSON, &doc); err != nil {
		return nil, fmt.Errorf("export: generated tokenizer.json: %v", err)
	}
	bos := sp.Piece(b)
	special := func(typeID int) map[string]any {
		return map[string]any{"SpecialToken": map[string]any{"id": bos, "type_id": typeID}}
	}
	seq := func(id string, typeID int) map[string]any {
		return map[string]any{"Sequence": map[string]any{"id": id, "type_id": typeID}}
	}
	doc["post_processor"] = map[string]any{
		"type":           "TemplateProcessing",
		"single":         []any{special(0), seq("A", 0)},
		"pair":           []any{special(0), seq("A", 0), special(1), seq("B", 1)},
		"special_tokens": map[string]any{bos: map[string]any{"id": bos, "ids": []int32{b}, "tokens": []string{bos}}},
	}
	return json.MarshalIndent(doc, "", "  ")
}

// SourceDType is the dtype of a checkpoint's weights (of its first matrix),
// the default of an export.
func SourceDType(src string) (backend.DType, error) {
	cfg, err := model.LoadConfig(filepath.Join(src, "config.json"))
	if err != nil {
		return 0, err
	}
	ts, err := checkpoints.Open(src)
	if err != nil {
		return 0, err
	}
	defer ts.Close()
	for _, p := range cfg.Params() {
		if info, ok := ts.Info(p.Name); ok && len(p.Shape) == 2 {
			return info.DType, nil
		}
	}
	return 0, fmt.Errorf("export: %s holds none of the model's matrices", src)
}
