package model

import (
	"math"
	"strings"
	"testing"
)

func TestConfigStyles(t *testing.T) {
	v5, err := LoadConfig("../testdata/hf/nemotron-odd/config.json")
	if err != nil {
		t.Fatal(err)
	}
	// The same model as a transformers-4 era hub config: rope_theta at the
	// top level, rope_percent, no head_dim (hidden/heads would be wrong here,
	// so head_dim stays explicit), eos as a list.
	v4, err := ParseConfig([]byte(`{
		"architectures": ["NemotronForCausalLM"], "model_type": "nemotron",
		"vocab_size": 300, "hidden_size": 80, "num_hidden_layers": 3,
		"num_attention_heads": 6, "num_key_value_heads": 2, "head_dim": 16,
		"intermediate_size": 200, "norm_eps": 1e-5, "rope_theta": 10000.0,
		"rope_percent": 0.5, "hidden_act": "relu2", "bos_token_id": 2, "eos_token_id": [3, 4],
		"tie_word_embeddings": false}`))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []*Config{v5, v4} {
		if c.Arch != Nemotron || c.HeadDim != 16 || c.RotaryDim() != 8 || c.RopeTheta != 10000 || c.NumKVHeads != 2 || c.BOS != 2 || c.EOS[0] != 3 {
			t.Fatalf("%+v", c)
		}
	}
	if len(v4.EOS) != 2 {
		t.Fatalf("eos %v", v4.EOS)
	}
	// head_dim absent: hidden / heads. partial_rotary_factor spelled out.
	c, err := ParseConfig([]byte(`{"architectures": ["NemotronForCausalLM"], "vocab_size": 10, "hidden_size": 64,
		"num_hidden_layers": 1, "num_attention_heads": 4, "intermediate_size": 8, "partial_rotary_factor": 0.25, "rope_theta": 500}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.HeadDim != 16 || c.NumKVHeads != 4 || c.RotaryDim() != 4 || c.RopeTheta != 500 {
		t.Fatalf("%+v", c)
	}
	if inv := c.InvFreq(); len(inv) != 2 || inv[0] != 1 || math.Abs(float64(inv[1])-math.Pow(500, -0.5)) > 1e-7 {
		t.Fatalf("inv freq %v", inv)
	}
}

func TestLlama3RopeScaling(t *testing.T) {
	// Llama-3.1-8B's rotary settings, in the transformers-4 style.
	c, err := ParseConfig([]byte(`{"architectures": ["LlamaForCausalLM"], "vocab_size": 10, "hidden_size": 4096,
		"num_hidden_layers": 1, "num_attention_heads": 32, "num_key_value_heads": 8, "intermediate_size": 8,
		"rms_norm_eps": 1e-5, "rope_theta": 500000.0, "max_position_embeddings": 131072,
		"rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
		"original_max_position_embeddings": 8192, "rope_type": "llama3"}}`))
	if err != nil {
		t.Fatal(err)
	}
	inv := c.InvFreq()
	if len(inv) != 64 {
		t.Fatalf("%d frequencies", len(inv))
	}
	base := func(i int) float64 { return math.Pow(500000, -float64(2*i)/128) }
	for i, f := range inv {
		wave := 2 * math.Pi / base(i)
		var want float64
		switch {
		case wave < 8192/4.0: // short wavelengths keep their frequency
			want = base(i)
		case wave > 8192/1.0: // long wavelengths are slowed by the factor
			want = base(i) / 8
		default: // in between, interpolate on 8192/wave
			s := (8192/wave - 1) / (4 - 1)
			want = (1-s)*base(i)/8 + s*base(i)
		}
		if math.Abs(float64(f)-want) > 1e-6*want {
			t.Fatalf("inv_freq[%d] = %v, want %v", i, f, want)
		}
	}
	if inv[0] != 1 || math.Abs(float64(inv[63])-base(63)/8) > 1e-12 {
		t.Fatalf("ends %v %v", inv[0], inv[63])
	}
	// transformers-5 style gives the same.
	c5, err := ParseConfig([]byte(`{"architectures": ["LlamaForCausalLM"], "vocab_size": 10, "hidden_size": 4096,
		"num_hidden_layers": 1, "num_attention_heads": 32, "num_key_value_heads": 8, "intermediate_size": 8,
		"rope_parameters": {"rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
		"original_max_position_embeddings": 8192, "rope_type": "llama3"}}`))
	if err != nil {
		t.Fatal(err)
	}
	for i, f := range c5.InvFreq() {
		if f != inv[i] {
			t.Fatalf("v5 inv_freq[%d] = %v, v4 %v", i, f, inv[i])
		}
	}
}

func TestConfigErrors(t *testing.T) {
	cases := map[string]struct{ json, want string }{
		"unknown architecture": {`{"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}`, "LlamaForCausalLM, NemotronForCausalLM"},
		"missing field":        {`{"architectures": ["LlamaForCausalLM"], "vocab_size": 10, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 4}`, "hidden_size is missing"},
		"bad grouping":         {`{"architectures": ["LlamaForCausalLM"], "vocab_size": 10, "hidden_size": 12, "num_hidden_layers": 1, "num_attention_heads": 3, "num_key_value_heads": 2, "intermediate_size": 4}`, "not a multiple of num_key_value_heads"},
		"wrong type":           {`{"architectures": ["LlamaForCausalLM"], "vocab_size": "10"}`, "vocab_size must be an integer"},
		"invalid json":         {`{"architectures": `, "invalid JSON"},
		"yarn":                 {`{"architectures": ["LlamaForCausalLM"], "vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 4, "rope_scaling": {"rope_type": "yarn", "factor": 4}}`, `"yarn" is not supported`},
		"biases":               {`{"architectures": ["LlamaForCausalLM"], "vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 4, "attention_bias": true}`, "bias"},
		"head_dim ambiguous":   {`{"architectures": ["LlamaForCausalLM"], "vocab_size": 10, "hidden_size": 10, "num_hidden_layers": 1, "num_attention_heads": 3, "intermediate_size": 4}`, "add head_dim"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := ParseConfig([]byte(c.json))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want %q", err, c.want)
			}
		})
	}
}

func TestConfigJSONRoundTrip(t *testing.T) {
	for _, name := range fixtureModels {
		c, err := LoadConfig("../testdata/hf/" + name + "/config.json")
		if err != nil {
			t.Fatal(err)
		}
		c.HiddenSize, c.IntermediateSize = 48, 96
		b, err := c.JSON()
		if err != nil {
			t.Fatal(err)
		}
		d, err := ParseConfig(b)
		if err != nil {
			t.Fatal(err)
		}
		if d.HiddenSize != 48 || d.IntermediateSize != 96 || d.HeadDim != c.HeadDim || d.RotaryDim() != c.RotaryDim() || d.NormEps != c.NormEps {
			t.Fatalf("%+v", d)
		}
		s := string(b)
		for _, key := range []string{`"head_dim"`, `"rope_theta"`, `"rope_parameters"`, `"transformers_version"`} {
			if !strings.Contains(s, key) {
				t.Errorf("%s: written config lacks %s", name, key)
			}
		}
		if c.Arch == Nemotron && !strings.Contains(s, `"partial_rotary_factor"`) {
			t.Errorf("nemotron config lacks partial_rotary_factor")
		}
	}
}

func TestParamTable(t *testing.T) {
	c, _ := LoadConfig("../testdata/hf/nemotron-tiny/config.json")
	ps := c.Params()
	if len(ps) != 24 || ps[0].Name != "model.embed_tokens.weight" || ps[len(ps)-1].Name != "lm_head.weight" {
		t.Fatalf("table %v", ps)
	}
	total, nonEmb := c.NumParams()
	// 2*(512*64) embeddings; per layer 4 norms*64 + q 64*64 + k,v 2*32*64 + o 64*64 + up, down 2*192*64; final norm 2*64.
	perLayer := 4*64 + 64*64 + 2*32*64 + 64*64 + 2*192*64
	if wantNon := int64(2*perLayer + 2*64); nonEmb != wantNon || total != wantNon+2*512*64 {
		t.Fatalf("params %d / %d", total, nonEmb)
	}
	c.TieEmbeddings = true
	if ps := c.Params(); ps[len(ps)-1].Role == LMHead {
		t.Fatal("tied lm_head listed")
	}
}

// TestForwardFLOPs against a count by hand: a Llama block with hidden 4,
// 2 heads of 2 (1 KV head), MLP 8, vocabulary 10, untied, 1 layer.
func TestForwardFLOPs(t *testing.T) {
	c, err := ParseConfig([]byte(`{"architectures":["LlamaForCausalLM"],"vocab_size":10,"hidden_size":4,"num_hidden_layers":1,
		"num_attention_heads":2,"num_key_value_heads":1,"head_dim":2,"intermediate_size":8,"tie_word_embeddings":false}`))
	if err != nil {
		t.Fatal(err)
	}
	// Weights per token: q 4×4, k 4×2, v 4×2, o 4×4, gate, up and down
	// 4×8 each, two RMSNorms and the final one of 4, the LM head 10×4:
	// 16+8+8+16+96+12+40 = 196 multiply-adds. Attention over 3 tokens:
	// 6 visible pairs × 2 heads × 2 dims × 2 products.
	want := 2*3*196.0 + 2*6*2*2*2
	if got := c.ForwardFLOPs(1, 3); got != want {
		t.Fatalf("%v FLOPs, want %v", got, want)
	}
}
