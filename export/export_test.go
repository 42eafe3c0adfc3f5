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
	dir := filepath.Join(t.TempDir(), "src")
	os.MkdirAll(dir, 0o755)
	if err := m.Save(dir, backend.F32, 1<<30); err != nil {
		t.Fatal(err)
	}
	tok, _ := os.ReadFile(tokPath)
	os.WriteFile(filepath.Join(dir, "tokenizer.model"), tok, 0o644)
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
		if len(p.Shape) == 1 {
			typ = checkpoints.GGMLF32
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

func TestGGUFErrors(t *testing.T) {
	src := source(t, "NemotronForCausalLM", 80, 4, 2, 16, 96)
	out := filepath.Join(t.TempDir(), "m.gguf")
	if err := GGUF(src, out, "q8_0"); err == nil || !strings.Contains(err.Error(), "q8_0") {
		t.Fatalf("q8_0 with rows of 80: %v", err)
	}
	if _, err := os.Stat(out); err == nil {
		t.Fatal("a failed export left a file")
	}
	os.Remove(filepath.Join(src, "tokenizer.model"))
	if err := GGUF(src, out, "f16"); err == nil || !strings.Contains(err.Error(), "tokenizer.model") {
		t.Fatalf("no tokenizer: %v", err)
	}
	if err := GGUF(src, out, "q4_k"); err == nil || !strings.Contains(err.Error(), "q4_k") {
		t.Fatalf("bad dtype: %v", err)
	}
}
