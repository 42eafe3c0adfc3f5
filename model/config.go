package model

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"sort"
	"strings"
)

// Arch is an architecture family.
type Arch string

// Supported architectures.
const (
	Nemotron Arch = "nemotron"
	Llama    Arch = "llama"
)

// architectures maps config.json "architectures" entries to families.
var architectures = map[string]Arch{
	"NemotronForCausalLM": Nemotron,
	"LlamaForCausalLM":    Llama,
}

// Supported lists the architecture names this package loads.
func Supported() []string {
	var s []string
	for k := range architectures {
		s = append(s, k)
	}
	sort.Strings(s)
	return s
}

// RopeScaling is the Llama-3.1 style frequency scaling ("llama3") or linear
// position scaling.
type RopeScaling struct {
	Type                 string  `json:"rope_type"`
	Factor               float64 `json:"factor"`
	LowFreqFactor        float64 `json:"low_freq_factor,omitempty"`
	HighFreqFactor       float64 `json:"high_freq_factor,omitempty"`
	OriginalMaxPositions int     `json:"original_max_position_embeddings,omitempty"`
}

// Config is a model's shape and hyperparameters, read from config.json.
type Config struct {
	Architecture     string // e.g. "NemotronForCausalLM"
	Arch             Arch
	VocabSize        int
	HiddenSize       int
	NumLayers        int
	NumHeads         int
	NumKVHeads       int
	HeadDim          int
	IntermediateSize int
	MaxPositions     int
	NormEps          float64
	RopeTheta        float64
	// PartialRotary is the fraction of each head's dims that is rotated.
	PartialRotary    float64
	RopeScaling      *RopeScaling
	TieEmbeddings    bool
	HiddenAct        string
	BOS              int   // -1 if unset
	EOS              []int // may be empty
	InitializerRange float64
	DType            string // torch_dtype / dtype as written, "" if absent

	// raw keeps every key of the source file so writing a derived config
	// preserves what this package does not interpret.
	raw map[string]any
}

// RotaryDim is the number of rotated dims per head (even).
func (c *Config) RotaryDim() int {
	d := int(float64(c.HeadDim) * c.PartialRotary)
	return d - d%2
}

// InvFreq returns the RoPE inverse frequencies, scaling applied, computed in
// float64 as the reference implementation's float64 run does.
func (c *Config) InvFreq() []float32 {
	rot := c.RotaryDim()
	f := make([]float64, rot/2)
	for i := range f {
		f[i] = 1 / math.Pow(c.RopeTheta, float64(2*i)/float64(rot))
	}
	if s := c.RopeScaling; s != nil {
		switch s.Type {
		case "linear":
			for i := range f {
				f[i] /= s.Factor
			}
		case "llama3":
			old := float64(s.OriginalMaxPositions)
			lowWave := old / s.LowFreqFactor
			highWave := old / s.HighFreqFactor
			for i, inv := range f {
				wave := 2 * math.Pi / inv
				switch {
				case wave < highWave:
					// high frequency: unchanged
				case wave > lowWave:
					f[i] = inv / s.Factor
				default:
					smooth := (old/wave - s.LowFreqFactor) / (s.HighFreqFactor - s.LowFreqFactor)
					f[i] = (1-smooth)*inv/s.Factor + smooth*inv
				}
			}
		}
	}
	out := make([]float32, len(f))
	for i, v := range f {
		out[i] = float32(v)
	}
	return out
}

// LoadConfig reads and validates a config.json.
func LoadConfig(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("model: %w", err)
	}
	c, err := ParseConfig(b)
	if err != nil {
		return nil, fmt.Errorf("model: %s: %w", path, err)
	}
	return c, nil
}

// ParseConfig decodes config.json text in either the transformers-4 style
// (rope_theta, partial_rotary_factor or rope_percent, rope_scaling) or the
// transformers-5 style (rope_parameters).
func ParseConfig(b []byte) (*Config, error) {
	var raw map[string]any
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("invalid JSON: %w", err)
	}
	c := &Config{raw: raw, BOS: -1}
	p := fields{raw: raw}
	archs, _ := raw["architectures"].([]any)
	for _, a := range archs {
		if s, ok := a.(string); ok {
			if f, ok := architectures[s]; ok {
				c.Architecture, c.Arch = s, f
				break
			}
		}
	}
	if c.Arch == "" {
		mt, _ := raw["model_type"].(string)
		switch mt {
		case "nemotron":
			c.Architecture, c.Arch = "NemotronForCausalLM", Nemotron
		case "llama":
			c.Architecture, c.Arch = "LlamaForCausalLM", Llama
		default:
			return nil, fmt.Errorf("unsupported architecture %v (model_type %q); supported: %s", raw["architectures"], mt, strings.Join(Supported(), ", "))
		}
	}
	c.VocabSize = p.int("vocab_size", 0)
	c.HiddenSize = p.int("hidden_size", 0)
	c.NumLayers = p.int("num_hidden_layers", 0)
	c.NumHeads = p.int("num_attention_heads", 0)
	c.IntermediateSize = p.int("intermediate_size", 0)
	c.NumKVHeads = p.int("num_key_value_heads", c.NumHeads)
	c.MaxPositions = p.int("max_position_embeddings", 4096)
	if p.has("head_dim") && raw["head_dim"] != nil {
		c.HeadDim = p.int("head_dim", 0)
	} else if c.NumHeads > 0 {
		if c.HiddenSize%c.NumHeads != 0 {
			p.fail("head_dim is absent and hidden_size %d is not a multiple of num_attention_heads %d; add head_dim", c.HiddenSize, c.NumHeads)
		}
		c.HeadDim = c.HiddenSize / c.NumHeads
	}
	c.InitializerRange = p.float("initializer_range", 0.02)
	c.TieEmbeddings = p.bool("tie_word_embeddings", false)
	c.BOS = p.int("bos_token_id", -1)
	c.EOS = p.ints("eos_token_id")
	if s, ok := raw["torch_dtype"].(string); ok {
		c.DType = s
	} else if s, ok := raw["dtype"].(string); ok {
		c.DType = s
	}
	switch c.Arch {
	case Nemotron:
		c.NormEps = p.float("norm_eps", p.float("layer_norm_eps", 1e-5))
		c.HiddenAct = p.str("hidden_act", "relu2")
		c.PartialRotary = 0.5
	case Llama:
		c.NormEps = p.float("rms_norm_eps", 1e-6)
		c.HiddenAct = p.str("hidden_act", "silu")
		c.PartialRotary = 1
	}
	// Rotary settings: top-level keys first, then rope_parameters (v5) wins.
	c.RopeTheta = p.float("rope_theta", 10000)
	if p.has("partial_rotary_factor") {
		c.PartialRotary = p.float("partial_rotary_factor", c.PartialRotary)
	} else if p.has("rope_percent") {
		c.PartialRotary = p.float("rope_percent", c.PartialRotary)
	}
	if rs, ok := raw["rope_scaling"].(map[string]any); ok {
		c.RopeScaling = p.scaling("rope_scaling", rs)
	}
	if rp, ok := raw["rope_parameters"].(map[string]any); ok {
		q := fields{raw: rp, prefix: "rope_parameters."}
		c.RopeTheta = q.float("rope_theta", c.RopeTheta)
		c.PartialRotary = q.float("partial_rotary_factor", c.PartialRotary)
		if s := p.scaling("rope_parameters", rp); s != nil {
			c.RopeScaling = s
		}
		p.errs = append(p.errs, q.errs...)
	}
	if p.bool("attention_bias", false) || p.bool("mlp_bias", false) {
		p.fail("attention_bias / mlp_bias are set; biased projections are not supported for %s", c.Architecture)
	}
	if len(p.errs) > 0 {
		return nil, fmt.Errorf("%s", strings.Join(p.errs, "; "))
	}
	return c, c.Validate()
}

// Validate checks the shape for consistency.
func (c *Config) Validate() error {
	var errs []string
	for _, f := range []struct {
		name string
		v    int
	}{{"vocab_size", c.VocabSize}, {"hidden_size", c.HiddenSize}, {"num_hidden_layers", c.NumLayers}, {"num_attention_heads", c.NumHeads},
		{"num_key_value_heads", c.NumKVHeads}, {"head_dim", c.HeadDim}, {"intermediate_size", c.IntermediateSize}} {
		if f.v <= 0 {
			errs = append(errs, fmt.Sprintf("%s is missing or not positive (%d)", f.name, f.v))
		}
	}
	if len(errs) == 0 && c.NumHeads%c.NumKVHeads != 0 {
		errs = append(errs, fmt.Sprintf("num_attention_heads %d is not a multiple of num_key_value_heads %d", c.NumHeads, c.NumKVHeads))
	}
	if c.PartialRotary <= 0 || c.PartialRotary > 1 {
		errs = append(errs, fmt.Sprintf("partial rotary factor %v must be in (0, 1]", c.PartialRotary))
	}
	if c.RopeTheta <= 0 {
		errs = append(errs, fmt.Sprintf("rope_theta %v must be positive", c.RopeTheta))
	}
	if c.NormEps <= 0 {
		errs = append(errs, fmt.Sprintf("norm epsilon %v must be positive", c.NormEps))
	}
	want := map[Arch]string{Nemotron: "relu2", Llama: "silu"}[c.Arch]
	if c.HiddenAct != want {
		errs = append(errs, fmt.Sprintf("hidden_act %q is not supported for %s (want %q)", c.HiddenAct, c.Architecture, want))
	}
	if s := c.RopeScaling; s != nil {
		switch s.Type {
		case "llama3":
			if s.Factor <= 0 || s.LowFreqFactor <= 0 || s.HighFreqFactor <= s.LowFreqFactor || s.OriginalMaxPositions <= 0 {
				errs = append(errs, "llama3 rope scaling needs factor, low_freq_factor < high_freq_factor and original_max_position_embeddings")
			}
		case "linear":
			if s.Factor <= 0 {
				errs = append(errs, "linear rope scaling needs a positive factor")
			}
		default:
			errs = append(errs, fmt.Sprintf("rope scaling type %q is not supported (supported: llama3, linear)", s.Type))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}

// fields reads typed values out of a decoded JSON object, collecting errors.
type fields struct {
	raw    map[string]any
	prefix string
	errs   []string
}

func (f *fields) has(k string) bool { _, ok := f.raw[k]; return ok }

func (f *fields) fail(format string, args ...any) {
	f.errs = append(f.errs, fmt.Sprintf(format, args...))
}

func (f *fields) int(k string, def int) int {
	v, ok := f.raw[k]
	if !ok || v == nil {
		return def
	}
	n, ok := v.(float64)
	if !ok || n != math.Trunc(n) {
		// Some configs list several ids; the first is the primary one.
		if l, isList := v.([]any); isList && len(l) > 0 {
			if n, ok := l[0].(float64); ok {
				return int(n)
			}
		}
		f.fail("%s%s must be an integer, got %v", f.prefix, k, v)
		return def
	}
	return int(n)
}

func (f *fields) ints(k string) []int {
	switch v := f.raw[k].(type) {
	case nil:
		return nil
	case float64:
		return []int{int(v)}
	case []any:
		var out []int
		for _, e := range v {
			n, ok := e.(float64)
			if !ok {
				f.fail("%s%s must hold integers, got %v", f.prefix, k, e)
				return nil
			}
			out = append(out, int(n))
		}
		return out
	default:
		f.fail("%s%s must be an integer or a list of integers, got %v", f.prefix, k, v)
		return nil
	}
}

func (f *fields) float(k string, def float64) float64 {
	v, ok := f.raw[k]
	if !ok || v == nil {
		return def
	}
	n, ok := v.(float64)
	if !ok {
		f.fail("%s%s must be a number, got %v", f.prefix, k, v)
		return def
	}
	return n
}

func (f *fields) bool(k string, def bool) bool {
	v, ok := f.raw[k]
	if !ok || v == nil {
		return def
	}
	b, ok := v.(bool)
	if !ok {
		f.fail("%s%s must be true or false, got %v", f.prefix, k, v)
		return def
	}
	return b
}

func (f *fields) str(k, def string) string {
	v, ok := f.raw[k]
	if !ok || v == nil {
		return def
	}
	s, ok := v.(string)
	if !ok {
		f.fail("%s%s must be a string, got %v", f.prefix, k, v)
		return def
	}
	return s
}

// scaling reads a rope scaling block; "default" (or none) means no scaling.
func (f *fields) scaling(where string, m map[string]any) *RopeScaling {
	q := fields{raw: m, prefix: where + "."}
	typ := q.str("rope_type", q.str("type", "default"))
	if typ == "default" {
		return nil
	}
	s := &RopeScaling{
		Type:                 typ,
		Factor:               q.float("factor", 0),
		LowFreqFactor:        q.float("low_freq_factor", 0),
		HighFreqFactor:       q.float("high_freq_factor", 0),
		OriginalMaxPositions: q.int("original_max_position_embeddings", 0),
	}
	f.errs = append(f.errs, q.errs...)
	return s
}

// JSON returns a config.json for c that transformers 4.44+ and 5.x both
// load: keys of the source config are kept, the shape is written from c,
// head_dim is explicit, and rotary settings are given in both styles.
func (c *Config) JSON() ([]byte, error) {
	out := map[string]any{}
	for k, v := range c.raw {
		out[k] = v
	}
	out["architectures"] = []string{c.Architecture}
	out["model_type"] = string(c.Arch)
	out["vocab_size"] = c.VocabSize
	out["hidden_size"] = c.HiddenSize
	out["num_hidden_layers"] = c.NumLayers
	out["num_attention_heads"] = c.NumHeads
	out["num_key_value_heads"] = c.NumKVHeads
	out["head_dim"] = c.HeadDim
	out["intermediate_size"] = c.IntermediateSize
	out["max_position_embeddings"] = c.MaxPositions
	out["tie_word_embeddings"] = c.TieEmbeddings
	out["hidden_act"] = c.HiddenAct
	out["initializer_range"] = c.InitializerRange
	out["rope_theta"] = c.RopeTheta
	delete(out, "rope_percent")
	rp := map[string]any{"rope_theta": c.RopeTheta, "rope_type": "default"}
	if c.Arch == Nemotron {
		out["norm_eps"] = c.NormEps
		out["partial_rotary_factor"] = c.PartialRotary
		rp["partial_rotary_factor"] = c.PartialRotary
	} else {
		out["rms_norm_eps"] = c.NormEps
	}
	if s := c.RopeScaling; s != nil {
		sc := map[string]any{"rope_type": s.Type, "factor": s.Factor}
		if s.Type == "llama3" {
			sc["low_freq_factor"] = s.LowFreqFactor
			sc["high_freq_factor"] = s.HighFreqFactor
			sc["original_max_position_embeddings"] = s.OriginalMaxPositions
		}
		out["rope_scaling"] = sc
		for k, v := range sc {
			rp[k] = v
		}
	} else {
		delete(out, "rope_scaling")
	}
	out["rope_parameters"] = rp
	if c.BOS >= 0 {
		out["bos_token_id"] = c.BOS
	}
	switch len(c.EOS) {
	case 0:
	case 1:
		out["eos_token_id"] = c.EOS[0]
	default:
		out["eos_token_id"] = c.EOS
	}
	b, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}
