package export

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/minitron/minitron/backend"
	"github.com/minitron/minitron/backend/cpu"
	"github.com/minitron/minitron/checkpoints"
	"github.com/minitron/minitron/model"
	"github.com/minitron/minitron/tokenizer"
)

const tokPath = "../testdata/tokenizer/spm-nemotron-style.model"

// source writes a random model of arch with the 4000-piece tokenizer.
func source(t *testing.T, arch string, hidden, heads, kv, headDim, ffn int) string {
	t.Helper()
	act := map[string]string{"NemotronForCausalLM": "relu2", "LlamaForCausalLM": "silu"}[arch]
	cfg, err := model.ParseConfig([]byte(`{"architectures":["` + arch + `"],"vocab_size":4000,"hidden_size":` + itoa(hidden) +
		`,"num_hidden_layers":2,"num_attention_heads":` + itoa(heads) + `,"num_key_value_heads":` + itoa(kv) + `,"head_dim":` + itoa(headDim) +
		`,"intermediate_size":` + itoa(ffn) + `,"hidden_act":"` + act + `","bos_token_id":1,"eos_token_id":2,"initializer_range":0.05}`))
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.Random(cfg, cpu.New(), 3)
	if err != nil {
		t.Fatal(err)
	}
	// Non-trivial norms, so the +1 folding shows.
	for i, p := range m.Params {
		if p.Role.IsNorm() {
			v, _ := m.Backend.ToFloat32(m.Weights[i])
			for j := range v {
				v[j] = 0.01 * float32(j%7)
			}
			nt, _ := m.Backend.FromFloat32(v, p.Shape...)
			m.Backend.Copy(m.Weights[i], nt)
		}
	}
	return save(t, m, tokPath, "tokenizer.model")
}

// save writes a model in float32 and a copy of a tokenizer file under name.
func save(t *testing.T, m *model.Model, tokFile, name string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "src")
	os.MkdirAll(dir, 0o755)
	if err := m.Save(dir, backend.F32, 1<<30); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(tokFile)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, name), b, 0o644)
	return dir
}

func itoa(i int) string { b, _ := json.Marshal(i); return string(b) }

func logits(t *testing.T, dir string) []float32 {
	m, err := model.Load(dir, cpu.New(), nil)
	if err != nil {
		t.Fatal(err)
	}
	ids := []int32{1, 400, 17, 3999, 256, 9}
	a, _ := m.NewActivations(len(ids), false)
	lg, err := m.Forward(a, model.Input{B: 1, T: len(ids), IDs: ids}, model.Options{})
	if err != nil {
		t.Fatal(err)
	}
	v, _ := m.Backend.ToFloat32(lg)
	return v
}

func TestHF(t *testing.T) {
	src := source(t, "NemotronForCausalLM", 64, 4, 2, 24, 96) // head_dim*heads != hidden
	out := filepath.Join(t.TempDir(), "hf")
	if err := HF(src, out, backend.F32, 200000); err != nil {
		t.Fatal(err)
	}
	a, b := logits(t, src), logits(t, out)
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("logit %d: %v after export, %v before", i, b[i], a[i])
		}
	}
	cfgText, _ := os.ReadFile(filepath.Join(out, "config.json"))
	var cfg map[string]any
	json.Unmarshal(cfgText, &cfg)
	for _, k := range []string{"head_dim", "partial_rotary_factor", "rope_theta", "rope_parameters", "torch_dtype"} {
		if _, ok := cfg[k]; !ok {
			t.Errorf("config.json lacks %s", k)
		}
	}
	for _, f := range []string{checkpoints.IndexFile, "generation_config.json", "tokenizer.model", "tokenizer.json", "tokenizer_config.json"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Errorf("missing %s", f)
		}
	}
	// The generated tokenizer.json encodes and decodes every sample of the
	// sentencepiece library's goldens as the library did.
	js, err := tokenizer.LoadJSON(filepath.Join(out, "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	var golden struct {
		Samples []struct {
			Text    string  `json:"text"`
			IDs     []int32 `json:"ids"`
			Decoded string  `json:"decoded"`
		} `json:"samples"`
	}
	gb, err := os.ReadFile(strings.TrimSuffix(tokPath, ".model") + ".golden.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(gb, &golden); err != nil || len(golden.Samples) < 5 {
		t.Fatalf("goldens: %d samples, %v", len(golden.Samples), err)
	}
	for _, g := range golden.Samples {
		if strings.Contains(g.Text, "<s>") || strings.Contains(g.Text, "</s>") {
			// Hugging Face tokenizers match special tokens written in the
			// text; sentencepiece encodes them as plain text.
			continue
		}
		if got := js.Encode(g.Text); !slices.Equal(got, g.IDs) {
			t.Errorf("tokenizer.json encodes %q as %v, sentencepiece %v", g.Text, got, g.IDs)
		}
		if got := js.Decode(g.IDs); got != g.Decoded {
			t.Errorf("tokenizer.json decodes %v as %q, sentencepiece %q", g.IDs, got, g.Decoded)
		}
	}
	if err := HF(src, out, backend.BF16, 0); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Fatalf("overwriting: %v", err)
	}
}

func TestGGUF(t *testing.T) {
	for _, c := range []struct {
		arch                     string
		hidden, heads, kv, hd, f int
	}{
		{"NemotronForCausalLM", 64, 4, 2, 24, 96}, // key/value length 24, 4 heads: 96 != 64
		{"LlamaForCausalLM", 64, 4, 2, 16, 128},
	} {
		for _, dt := range []string{"f32", "f16", "bf16", "q8_0"} {
			t.Run(c.arch+"/"+dt, func(t *testing.T) {
				src := source(t, c.arch, c.hidden, c.heads, c.kv, c.hd, c.f)
				out := filepath.Join(t.TempDir(), "m.gguf")
				if err := GGUF(src, out, dt); err != nil {
					t.Fatal(err)
				}
				checkGGUF(t, src, out, dt)
			})
		}
	}
}

func checkGGUF(t *testing.T, src, out, dt string) {
	g, err := checkpoints.ReadGGUF(out)
	if err != nil {
		t.Fatal(err)
	}
	cfg, _ := model.LoadConfig(filepath.Join(src, "config.json"))
	arch := ggufArch[cfg.Arch]
	if g.Version != 3 || g.KV["general.architecture"] != arch {
		t.Fatalf("version %d architecture %v", g.Version, g.KV["general.architecture"])
	}
	want := map[string]any{
		arch + ".embedding_length": uint32(cfg.HiddenSize), arch + ".block_count": uint32(cfg.NumLayers),
		arch + ".feed_forward_length": uint32(cfg.IntermediateSize), arch + ".attention.head_count": uint32(cfg.NumHeads),
		arch + ".attention.head_count_kv": uint32(cfg.NumKVHeads), arch + ".attention.key_length": uint32(cfg.HeadDim),
		arch + ".attention.value_length": uint32(cfg.HeadDim), arch + ".rope.dimension_count": uint32(cfg.RotaryDim()),
		arch + ".rope.freq_base": float32(cfg.RopeTheta), "general.file_type": ggufTypes[dt].ftype,
		"tokenizer.ggml.model": "llama", "tokenizer.ggml.bos_token_id": uint32(1), "tokenizer.ggml.eos_token_id": uint32(2),
		"general.quantization_version": uint32(2), "tokenizer.ggml.add_bos_token": true,
	}
	for k, v := range want {
		if g.KV[k] != v {
			t.Errorf("%s = %v (%T), want %v (%T)", k, g.KV[k], g.KV[k], v, v)
		}
	}
	sp, _ := tokenizer.LoadSentencePiece(tokPath)
	toks, _ := g.KV["tokenizer.ggml.tokens"].([]string)
	scores, _ := g.KV["tokenizer.ggml.scores"].([]float32)
	types, _ := g.KV["tokenizer.ggml.token_type"].([]int32)
	for i, p := range sp.Pieces() {
		if toks[i] != p.Text || scores[i] != p.Score || int(types[i]) != p.Type {
			t.Fatalf("vocabulary entry %d: %q %v %v, want %q %v %v", i, toks[i], scores[i], types[i], p.Text, p.Score, p.Type)
		}
	}
	ts, _ := checkpoints.Open(src)
	defer ts.Close()
	if len(g.Tensors) != len(cfg.Params()) {
		t.Fatalf("%d tensors, want %d", len(g.Tensors), len(cfg.Params()))
	}
	for _, p := range cfg.Params() {
		got, info, err := g.Tensor(ggufName(p))
		if err != nil {
			t.Fatal(err)
		}
		if len(info.Shape) != len(p.Shape) || info.Shape[0] != p.Shape[0] {
			t.Fatalf("%s: shape %v, want %v", p.Name, info.Shape, p.Shape)
		}
		v, _ := ts.Float32(p.Name)
		// Expected values: the transforms llama.cpp expects, written out
		// from their definitions.
		switch {
		case cfg.Arch == model.Nemotron && strings.HasSuffix(p.Name, "norm.weight"):
			for i := range v {
				v[i]++
			}
		case cfg.Arch == model.Llama && (p.Role == model.QProj || p.Role == model.KProj):
			heads := cfg.NumHeads
			if p.Role == model.KProj {
				heads = cfg.NumKVHeads
			}
			hd, cols := cfg.HeadDim, cfg.HiddenSize
			perm := make([]float32, len(v))
			// reshape(heads, 2, hd/2, cols).swapaxes(1, 2)
			for h := range heads {
				for a := range 2 {
					for b := range hd / 2 {
						copy(perm[((h*(hd/2)+b)*2+a)*cols:][:cols], v[((h*2+a)*(hd/2)+b)*cols:][:cols])
					}
				}
			}
			v = perm
		}
		typ := ggufTypes[dt].ggml
		switch {
		case len(p.Shape) == 1:
			typ = checkpoints.GGMLF32
		case typ == checkpoints.GGMLQ8_0 && p.Shape[1]%32 != 0:
			typ = checkpoints.GGMLF16 // llama.cpp's converter falls back so too
		}
		if info.Type != typ {
			t.Fatalf("%s: type %d, want %d", p.Name, info.Type, typ)
		}
		for i := range v {
			w := v[i]
			switch typ {
			case checkpoints.GGMLF16:
				w = backend.F16ToF32(backend.F32ToF16(w))
			case checkpoints.GGMLBF16:
				w = backend.BF16ToF32(backend.F32ToBF16(w))
			}
			tol := 0.0
			if typ == checkpoints.GGMLQ8_0 {
				blk := v[i/32*32 : i/32*32+32]
				var amax float64
				for _, x := range blk {
					amax = math.Max(amax, math.Abs(float64(x)))
				}
				// Half a quantization step, plus the f16 rounding of the block
				// scale times the largest code (127 · 2^-11 relative).
				d := amax / 127
				tol = d*(0.5+127.0/2048) + 1e-7
			}
			if math.Abs(float64(got[i]-w)) > tol {
				t.Fatalf("%s[%d] = %v, want %v (tolerance %v)", p.Name, i, got[i], w, tol)
			}
		}
	}
}

// TestGGUFWarnings: q8_0 keeps rows that are not blocks of 32 in f16 and
// says which; a Nemotron shape llama.cpp refuses (heads × head_dim ≠
// hidden) is exported with a warning that says so.
func TestGGUFWarnings(t *testing.T) {
	cases := []struct {
		name                     string
		hidden, heads, kv, hd, f int
		dtype                    string
		want                     []string
	}{
		{"q8_0 rows of 80", 80, 5, 1, 16, 96, "q8_0", []string{"stay f16", "token_embd.weight (rows of 80)", "blk.1.attn_output.weight (rows of 80)"}},
		{"heads × head_dim ≠ hidden", 64, 4, 2, 24, 96, "f16", []string{"4 × 24 = 96", "wrong shape"}},
		{"loadable", 64, 4, 2, 16, 96, "q8_0", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			src := source(t, "NemotronForCausalLM", c.hidden, c.heads, c.kv, c.hd, c.f)
			out := filepath.Join(t.TempDir(), "m.gguf")
			var warnings []string
			if err := ExportGGUF(src, out, GGUFOptions{DType: c.dtype, Warn: func(m string) { warnings = append(warnings, m) }}); err != nil {
				t.Fatal(err)
			}
			all := strings.Join(warnings, "\n")
			if (len(c.want) == 0) != (len(warnings) == 0) {
				t.Fatalf("warnings %q", warnings)
			}
			for _, w := range c.want {
				if !strings.Contains(all, w) {
					t.Errorf("warnings %q lack %q", all, w)
				}
			}
			checkGGUF(t, src, out, c.dtype)
		})
	}
}

// TestGGUFByteLevel exports a Llama-shaped model with Llama 3's byte-level
// tokenizer.json (the 3k-merge test file) the way llama.cpp's converter
// does: model gpt2, pre-tokenizer llama-bpe, tokens by id, added tokens as
// control tokens, the merges in order, BOS <|begin_of_text|> added.
func TestGGUFByteLevel(t *testing.T) {
	js := "../testdata/tokenizer/bytelevel-llama3-3k.tokenizer.json"
	src := byteLevelSource(t, js, 2715)
	out := filepath.Join(t.TempDir(), "m.gguf")
	if err := GGUF(src, out, "f32"); err != nil {
		t.Fatal(err)
	}
	g, err := checkpoints.ReadGGUF(out)
	if err != nil {
		t.Fatal(err)
	}
	var raw struct {
		AddedTokens []struct {
			ID      int    `json:"id"`
			Content string `json:"content"`
		} `json:"added_tokens"`
		Model struct {
			Vocab  map[string]int `json:"vocab"`
			Merges []string       `json:"merges"`
		} `json:"model"`
	}
	b, _ := os.ReadFile(js)
	json.Unmarshal(b, &raw)
	for k, v := range map[string]any{"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "llama-bpe", "tokenizer.ggml.add_bos_token": true,
		"tokenizer.ggml.bos_token_id": uint32(2459), "tokenizer.ggml.eos_token_id": uint32(2460)} {
		if g.KV[k] != v {
			t.Errorf("%s = %v, want %v", k, g.KV[k], v)
		}
	}
	toks, _ := g.KV["tokenizer.ggml.tokens"].([]string)
	types, _ := g.KV["tokenizer.ggml.token_type"].([]int32)
	merges, _ := g.KV["tokenizer.ggml.merges"].([]string)
	if len(toks) != 2715 || len(types) != 2715 {
		t.Fatalf("%d tokens, %d types", len(toks), len(types))
	}
	for text, id := range raw.Model.Vocab {
		if toks[id] != text || types[id] != 1 {
			t.Fatalf("token %d: %q type %d, want %q type 1", id, toks[id], types[id], text)
		}
	}
	for _, a := range raw.AddedTokens {
		if toks[a.ID] != a.Content || types[a.ID] != 3 {
			t.Fatalf("added token %d: %q type %d, want %q type 3", a.ID, toks[a.ID], types[a.ID], a.Content)
		}
	}
	if len(merges) != len(raw.Model.Merges) || merges[0] != raw.Model.Merges[0] || merges[len(merges)-1] != raw.Model.Merges[len(merges)-1] {
		t.Fatalf("%d merges, first %q", len(merges), merges[:1])
	}
	if _, ok := g.KV["tokenizer.ggml.scores"]; ok {
		t.Error("a BPE vocabulary has no scores")
	}
}

// byteLevelSource writes a random Llama-shaped model with a tokenizer.json
// and no tokenizer.model.
func byteLevelSource(t *testing.T, tokJSON string, vocab int) string {
	t.Helper()
	cfg, err := model.ParseConfig([]byte(`{"architectures":["LlamaForCausalLM"],"vocab_size":` + itoa(vocab) + `,"hidden_size":64,"num_hidden_layers":2,
		"num_attention_heads":4,"num_key_value_heads":2,"intermediate_size":128,"hidden_act":"silu","initializer_range":0.05,"bos_token_id":2459,"eos_token_id":2460}`))
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.Random(cfg, cpu.New(), 5)
	if err != nil {
		t.Fatal(err)
	}
	return save(t, m, tokJSON, "tokenizer.json")
}

func TestGGUFErrors(t *testing.T) {
	src := source(t, "NemotronForCausalLM", 64, 4, 2, 16, 96)
	out := filepath.Join(t.TempDir(), "m.gguf")
	// bos_token_id beyond the tokenizer's 4000 pieces (the model has 4096 rows).
	b, _ := os.ReadFile(filepath.Join(src, "config.json"))
	var cfg map[string]any
	json.Unmarshal(b, &cfg)
	cfg["bos_token_id"], cfg["vocab_size"] = 4050, 4096
	b, _ = json.Marshal(cfg)
	bad := filepath.Join(t.TempDir(), "bad")
	os.MkdirAll(bad, 0o755)
	os.WriteFile(filepath.Join(bad, "config.json"), b, 0o644)
	tok, _ := os.ReadFile(tokPath)
	os.WriteFile(filepath.Join(bad, "tokenizer.model"), tok, 0o644)
	if err := GGUF(bad, out, "f16"); err == nil || !strings.Contains(err.Error(), "bos_token_id 4050 is not in the tokenizer's vocabulary of 4000") {
		t.Fatalf("bad bos: %v", err)
	}
	if _, err := os.Stat(out); err == nil {
		t.Fatal("a failed export left a file")
	}
	os.Remove(filepath.Join(src, "tokenizer.model"))
	if err := GGUF(src, out, "f16"); err == nil || !strings.Contains(err.Error(), "tokenizer.model nor tokenizer.json") {
		t.Fatalf("no tokenizer: %v", err)
	}
	if err := GGUF(src, out, "q4_k"); err == nil || !strings.Contains(err.Error(), "q4_k") {
		t.Fatalf("bad dtype: %v", err)
	}
}

// TestHFDefaults: a float32 model's dtype is float32, and the generated
// tokenizer.json adds BOS through a TemplateProcessing post-processor.
func TestHFDefaults(t *testing.T) {
	src := source(t, "LlamaForCausalLM", 64, 4, 2, 16, 128)
	dt, err := SourceDType(src)
	if err != nil || dt != backend.F32 {
		t.Fatalf("source dtype %v %v", dt, err)
	}
	out := filepath.Join(t.TempDir(), "hf")
	if err := HF(src, out, dt, 0); err != nil {
		t.Fatal(err)
	}
	if dt, _ := SourceDType(out); dt != backend.F32 {
		t.Fatalf("exported as %v", dt)
	}
	b, _ := os.ReadFile(filepath.Join(out, "tokenizer.json"))
	var doc struct {
		Post struct {
			Type   string `json:"type"`
			Single []struct {
				SpecialToken *struct {
					ID string `json:"id"`
				} `json:"SpecialToken"`
				Sequence *struct {
					ID string `json:"id"`
				} `json:"Sequence"`
			} `json:"single"`
			Special map[string]struct {
				IDs []int `json:"ids"`
			} `json:"special_tokens"`
		} `json:"post_processor"`
	}
	json.Unmarshal(b, &doc)
	p := doc.Post
	if p.Type != "TemplateProcessing" || len(p.Single) != 2 || p.Single[0].SpecialToken == nil || p.Single[0].SpecialToken.ID != "<s>" ||
		p.Single[1].Sequence == nil || len(p.Special["<s>"].IDs) != 1 || p.Special["<s>"].IDs[0] != 1 {
		t.Fatalf("post_processor %+v", p)
	}
}
