package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/minitron/minitron/backend"
	"github.com/minitron/minitron/backend/cpu"
	"github.com/minitron/minitron/generate"
	"github.com/minitron/minitron/model"
	"github.com/minitron/minitron/tokenizer"
)

// The interoperability tests drive minitron's outputs with third-party
// tools from the npm registry (testdata/interop/package.json, pinned by
// its lockfile): OpenAI's Node client against `minitron serve`, llama.cpp
// (node-llama-cpp 3.21.1's prebuilt CPU build) on exported GGUF files, and
// Hugging Face's tokenizers.js on exported tokenizer.json files.
// MINITRON_NODE_INTEROP names a directory holding those scripts and their
// installed node_modules (.ci/run makes one); without it they skip, unless
// MINITRON_REQUIRE_NODE=1, when they fail. MINITRON_NODE names the node
// binary (default: node on PATH).

const tinyTeacher = "../../models/tiny-teacher"

func nodeProject(t *testing.T) string {
	t.Helper()
	// Hand what these tests load back to the OS: a subprocess started
	// later counts its parent's memory at fork time in its peak RSS, which
	// other tests measure.
	t.Cleanup(func() {
		runtime.GC()
		debug.FreeOSMemory()
	})
	dir := os.Getenv("MINITRON_NODE_INTEROP")
	if dir == "" {
		if os.Getenv("MINITRON_REQUIRE_NODE") == "1" {
			t.Fatal("MINITRON_REQUIRE_NODE=1 but MINITRON_NODE_INTEROP is not set")
		}
		t.Skip("MINITRON_NODE_INTEROP not set (the Node interop project; see .ci/run)")
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules")); err != nil {
		t.Fatalf("MINITRON_NODE_INTEROP=%s has no node_modules: %v", dir, err)
	}
	return dir
}

// node runs a script of the interop project and decodes its JSON output.
func node(t *testing.T, dir string, out any, script string, args ...string) {
	t.Helper()
	bin := os.Getenv("MINITRON_NODE")
	if bin == "" {
		bin = "node"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{filepath.Join(dir, script)}, args...)...)
	cmd.Dir = dir
	var stderr strings.Builder
	cmd.Stderr = &stderr
	b, err := cmd.Output()
	if err != nil {
		t.Fatalf("node %s: %v\n%s", script, err, stderr.String())
	}
	if err := json.Unmarshal(b, out); err != nil {
		t.Fatalf("node %s printed %q: %v", script, b, err)
	}
}

// writeJSONFile writes v to a temporary file and returns its path.
func writeJSONFile(t *testing.T, v any) string {
	t.Helper()
	b, _ := json.Marshal(v)
	p := filepath.Join(t.TempDir(), "data.json")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// sampleTexts are the tokenizer test samples and the lines of a Go source
// file: 318 texts for the tiny teacher's vocabulary.
func sampleTexts(t *testing.T, golden string) []string {
	t.Helper()
	var g struct {
		Samples []struct {
			Text string `json:"text"`
		} `json:"samples"`
	}
	b, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	json.Unmarshal(b, &g)
	var out []string
	for _, s := range g.Samples {
		out = append(out, s.Text)
	}
	return out
}

func goLines(t *testing.T, n int) []string {
	src, err := os.ReadFile("../../generate/server.go")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(string(src), "\n") {
		if strings.TrimSpace(l) != "" && len(out) < n {
			out = append(out, l)
		}
	}
	return out
}

// sampleIDs is `minitron sample`'s greedy continuation of prompt ids.
func sampleIDs(t *testing.T, dir string, prompt []int32, n int) []int32 {
	t.Helper()
	var ps []string
	for _, id := range prompt {
		ps = append(ps, strconv.Itoa(int(id)))
	}
	r := mustRun(t, "sample", "--model", dir, "--prompt-ids", strings.Join(ps, ","), "--temperature", "0",
		"--max-new-tokens", strconv.Itoa(n), "--ignore-eos", "--ids")
	var ids []int32
	for _, f := range strings.Fields(r.stdout) {
		v, err := strconv.Atoi(f)
		if err != nil {
			t.Fatalf("sample printed %q", r.stdout)
		}
		ids = append(ids, int32(v))
	}
	return ids[len(prompt):]
}

// TestInteropLlamaCpp: llama.cpp loads the exported GGUF files (the tiny
// teacher in f32 and q8_0; a Llama-shaped model with Llama 3's byte-level
// tokenizer in f32), tokenizes texts exactly as minitron does, and
// continues a prompt greedily with the tokens `minitron sample` gives.
func TestInteropLlamaCpp(t *testing.T) {
	dir := nodeProject(t)
	tmp := t.TempDir()
	spTexts := append(sampleTexts(t, "../../testdata/tokenizer/spm-nemotron-style.golden.json"), goLines(t, 298)...)
	blDir := byteLevelModel(t, filepath.Join(tmp, "bytelevel"))
	blTexts := sampleTexts(t, "../../testdata/tokenizer/bytelevel-llama3-3k.golden.json")
	type job struct {
		Model  string   `json:"model"`
		Texts  []string `json:"texts"`
		Prompt []int32  `json:"prompt"`
		N      int      `json:"n"`
		// Special: added tokens' text maps to them, as in Hugging Face's
		// tokenizers (byte-level tokenizer.json); SentencePiece reads such
		// text as text.
		Special bool `json:"special"`
		src     string
	}
	var jobs []job
	for _, c := range []struct{ src, dtype string }{{tinyTeacher, "f32"}, {tinyTeacher, "q8_0"}, {blDir, "f32"}} {
		out := filepath.Join(tmp, filepath.Base(c.src)+"-"+c.dtype+".gguf")
		mustRun(t, "export", "--model", c.src, "--format", "gguf", "--dtype", c.dtype, "--out", out)
		tok, err := tokenizer.Open(c.src)
		if err != nil {
			t.Fatal(err)
		}
		texts := spTexts
		if c.src == blDir {
			texts = blTexts
		}
		prompt := append([]int32{tok.BOS()}, tok.Encode("func (s *Server) Handler() http.Handler {")...)
		jobs = append(jobs, job{Model: out, Texts: texts, Prompt: prompt, N: 30, Special: c.src == blDir, src: c.src})
	}
	var got []struct {
		Model        string    `json:"model"`
		Tokens       [][]int32 `json:"tokens"`
		BOS          *int32    `json:"bos"`
		Continuation []int32   `json:"continuation"`
	}
	node(t, dir, &got, "llama-gguf.mjs", writeJSONFile(t, jobs))
	if len(got) != len(jobs) {
		t.Fatalf("%d results for %d models", len(got), len(jobs))
	}
	for i, j := range jobs {
		t.Run(filepath.Base(j.Model), func(t *testing.T) {
			tok, _ := tokenizer.Open(j.src)
			r := got[i]
			if r.BOS == nil || *r.BOS != tok.BOS() {
				t.Errorf("llama.cpp's BOS %v, minitron's %d", r.BOS, tok.BOS())
			}
			differ := 0
			for k, text := range j.Texts {
				if want := tok.Encode(text); !slices.Equal(r.Tokens[k], want) {
					if differ++; differ <= 3 {
						t.Errorf("%q: llama.cpp %v, minitron %v", text, r.Tokens[k], want)
					}
				}
			}
			if differ > 0 {
				t.Errorf("%d of %d texts tokenized differently", differ, len(j.Texts))
			}
			want := sampleIDs(t, j.src, j.Prompt, j.N)
			if !slices.Equal(r.Continuation, want) {
				t.Errorf("greedy continuation: llama.cpp %v, minitron sample %v", r.Continuation, want)
			}
		})
	}
}

// byteLevelModel writes a random Llama-shaped model with Llama 3's
// byte-level tokenizer (the 3k-merge test file), in a subprocess. Its
// weights are large enough that greedy choices are not near ties.
func byteLevelModel(t *testing.T, dir string) string {
	t.Helper()
	runHelper(t, "writeByteLevel", dir)
	return dir
}

func writeByteLevel(dir string) error {
	cfg, err := model.ParseConfig([]byte(`{"architectures":["LlamaForCausalLM"],"vocab_size":2715,"hidden_size":64,"num_hidden_layers":2,
		"num_attention_heads":4,"num_key_value_heads":2,"intermediate_size":128,"hidden_act":"silu","initializer_range":0.2,
		"max_position_embeddings":256,"bos_token_id":2459,"eos_token_id":2460}`))
	if err != nil {
		return err
	}
	m, err := model.Random(cfg, cpu.New(), 9)
	if err != nil {
		return err
	}
	os.MkdirAll(dir, 0o755)
	if err := m.Save(dir, backend.F32, 1<<30); err != nil {
		return err
	}
	b, err := os.ReadFile("../../testdata/tokenizer/bytelevel-llama3-3k.tokenizer.json")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "tokenizer.json"), b, 0o644)
}

// TestInteropTokenizersJS: tokenizers.js, reading an exported model's
// generated tokenizer.json, adds BOS (from its post-processor) and then
// the same ids as minitron. Texts holding "<s>" or "</s>" are left out:
// there Hugging Face's fast tokenizers split out the control tokens, which
// SentencePiece (and so minitron on tokenizer.model) reads as text.
func TestInteropTokenizersJS(t *testing.T) {
	dir := nodeProject(t)
	out := filepath.Join(t.TempDir(), "hf")
	mustRun(t, "export", "--model", tinyTeacher, "--format", "hf", "--out", out)
	texts := slices.DeleteFunc(sampleTexts(t, "../../testdata/tokenizer/spm-nemotron-style.golden.json"), func(s string) bool {
		return strings.Contains(s, "<s>") || strings.Contains(s, "</s>")
	})
	var got [][]int32
	node(t, dir, &got, "tokenizers-encode.mjs", out, writeJSONFile(t, texts))
	tok, err := tokenizer.Open(tinyTeacher)
	if err != nil {
		t.Fatal(err)
	}
	for i, text := range texts {
		if want := append([]int32{tok.BOS()}, tok.Encode(text)...); !slices.Equal(got[i], want) {
			t.Errorf("%q: tokenizers.js %v, minitron %v", text, got[i], want)
		}
	}
}

// startServe runs `minitron serve` on a free port and returns its base URL.
func startServe(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command(os.Args[0], append([]string{"serve", "--addr", "127.0.0.1:0"}, args...)...)
	cmd.Env = append(os.Environ(), "MINITRON_RUN_MAIN=1")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
		}
	})
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			if _, rest, ok := strings.Cut(line, " on http://"); ok && strings.HasPrefix(line, "serving ") {
				addr <- "http://" + strings.Fields(rest)[0]
			}
		}
		close(addr)
	}()
	select {
	case a, ok := <-addr:
		if !ok {
			t.Fatal("serve exited before listening")
		}
		return a
	case <-time.After(2 * time.Minute):
		t.Fatal("serve did not start listening")
	}
	return ""
}

// TestInteropOpenAIClient: OpenAI's official Node client drives `minitron
// serve`: models.list and retrieve, completions (plain, streamed with
// usage, stop strings, n with several prompts, echo with logprobs), chat
// completions (plain and streamed with usage), and a 404 for an unknown
// model. What it receives is checked against generation and log-softmax
// computed here without the server.
func TestInteropOpenAIClient(t *testing.T) {
	dir := nodeProject(t)
	template := "../../testdata/chat/chatml.jinja"
	url := startServe(t, "--model", tinyTeacher, "--slots", "4", "--chat-template", template)
	var got struct {
		Models     []string `json:"models"`
		Retrieved  string   `json:"retrieved"`
		Completion struct {
			Text, Finish string
			Usage        map[string]int
		} `json:"completion"`
		Streamed struct {
			Text, Finish string
			Usage        map[string]int
		} `json:"streamed"`
		Stopped  struct{ Text, Finish string } `json:"stopped"`
		Logprobs struct {
			Text          string               `json:"text"`
			Tokens        []string             `json:"tokens"`
			TokenLogprobs []*float64           `json:"token_logprobs"`
			TopLogprobs   []map[string]float64 `json:"top_logprobs"`
			TextOffset    []int                `json:"text_offset"`
		} `json:"logprobs"`
		Choices []struct {
			Index int
			Text  string
		} `json:"choices"`
		Chat struct {
			Object, Role, Content, Finish string
			Usage                         map[string]int
		} `json:"chat"`
		ChatStreamed struct {
			Content string
			Usage   map[string]int
		} `json:"chatStreamed"`
		UnknownModel struct {
			NotFound bool   `json:"notFound"`
			Status   int    `json:"status"`
			Code     string `json:"code"`
		} `json:"unknownModel"`
	}
	node(t, dir, &got, "openai-client.mjs", url+"/v1", "tiny-teacher")

	// What the server should have answered, computed without it (in a
	// subprocess, keeping the model out of this test process's memory).
	expPath := filepath.Join(t.TempDir(), "expected.json")
	runHelper(t, "openaiExpected", template, expPath)
	var exp openaiExpected
	b, err := os.ReadFile(expPath)
	if err != nil {
		t.Fatal(err)
	}
	json.Unmarshal(b, &exp)
	if !slices.Equal(got.Models, []string{"tiny-teacher"}) || got.Retrieved != "tiny-teacher" {
		t.Errorf("models %v, retrieved %q", got.Models, got.Retrieved)
	}
	want := exp.Completion
	if got.Completion.Text != want || got.Completion.Usage["completion_tokens"] != 20 {
		t.Errorf("completion %q (usage %v), want %q", got.Completion.Text, got.Completion.Usage, want)
	}
	if got.Streamed.Text != want || got.Streamed.Finish != got.Completion.Finish || fmt.Sprint(got.Streamed.Usage) != fmt.Sprint(got.Completion.Usage) {
		t.Errorf("streamed %+v, plain %+v", got.Streamed, got.Completion)
	}
	if i := strings.Index(want, "\n"); i >= 0 && (got.Stopped.Text != want[:i] || got.Stopped.Finish != "stop") {
		t.Errorf("with stop \\n: %+v, want %q", got.Stopped, want[:i])
	}
	// Echoed logprobs against a float64 log-softmax of full-sequence logits.
	lp := got.Logprobs
	if lp.Text != "package main" || len(lp.TokenLogprobs) != len(exp.Logprobs)+1 || lp.TokenLogprobs[0] != nil || lp.TopLogprobs[0] != nil {
		t.Fatalf("logprobs %+v, want %d tokens", lp, len(exp.Logprobs)+1)
	}
	for i, w := range exp.Logprobs {
		if v := lp.TokenLogprobs[i+1]; math.Abs(*v-w) > 1e-4 || len(lp.TopLogprobs[i+1]) != 2 {
			t.Errorf("token %d: logprob %v (top %v), want %.6f", i+1, *v, lp.TopLogprobs[i+1], w)
		}
	}
	var idx []int
	for p, ws := range exp.Choices {
		for j, w := range ws {
			c := got.Choices[p*2+j]
			idx = append(idx, c.Index)
			if c.Text != w {
				t.Errorf("prompt %d choice %d: %q, want %q", p, j, c.Text, w)
			}
		}
	}
	if !slices.Equal(idx, []int{0, 1, 2, 3}) {
		t.Errorf("choice indexes %v", idx)
	}
	wantChat, chatIDs := exp.Chat, exp.ChatPromptTokens
	if got.Chat.Object != "chat.completion" || got.Chat.Role != "assistant" || got.Chat.Content != wantChat || got.Chat.Usage["prompt_tokens"] != chatIDs {
		t.Errorf("chat %+v, want %q after %d prompt tokens", got.Chat, wantChat, chatIDs)
	}
	if got.ChatStreamed.Content != wantChat || fmt.Sprint(got.ChatStreamed.Usage) != fmt.Sprint(got.Chat.Usage) {
		t.Errorf("streamed chat %+v, want %q", got.ChatStreamed, wantChat)
	}
	if u := got.UnknownModel; !u.NotFound || u.Status != 404 || u.Code != "model_not_found" {
		t.Errorf("unknown model: %+v", u)
	}
}

// openaiExpected is what TestInteropOpenAIClient's requests should get.
type openaiExpected struct {
	Completion       string     `json:"completion"` // "func main() {", 20 tokens at 0.8, seed 7
	Logprobs         []float64  `json:"logprobs"`   // of "package main"'s tokens after BOS
	Choices          [][]string `json:"choices"`    // "var a = ", "var b = ": 2 each at 1.0, seed 3
	Chat             string     `json:"chat"`
	ChatPromptTokens int        `json:"chat_prompt_tokens"`
}

func init() {
	// openaiExpected computes openaiExpected for the tiny teacher with
	// the chat template args[0] and writes it to args[1] as JSON.
	helpers["openaiExpected"] = func(args []string) error {
		m, err := model.Load(tinyTeacher, cpu.New(), nil)
		if err != nil {
			return err
		}
		tok, err := tokenizer.Open(tinyTeacher)
		if err != nil {
			return err
		}
		continuations := func(ids []int32, n int, opt generate.Options) ([]string, error) {
			batch := make([][]int32, n)
			for i := range batch {
				batch[i] = ids
			}
			opt.Stop, opt.TopP = []int32{tok.EOS()}, 1
			res, err := generate.Generate(context.Background(), m, batch, opt)
			if err != nil {
				return nil, err
			}
			var out []string
			for _, g := range res.Tokens {
				out = append(out, strings.TrimPrefix(tok.Decode(append(slices.Clone(ids), g...)), tok.Decode(ids)))
			}
			return out, nil
		}
		withBOS := func(s string) []int32 { return append([]int32{tok.BOS()}, tok.Encode(s)...) }
		var exp openaiExpected
		c, err := continuations(withBOS("func main() {"), 1, generate.Options{MaxNewTokens: 20, Temperature: 0.8, Seed: 7})
		if err != nil {
			return err
		}
		exp.Completion = c[0]
		ids := withBOS("package main")
		lg, err := generate.Logits(m, 1, len(ids), ids)
		if err != nil {
			return err
		}
		V := m.Config.VocabSize
		for i := 1; i < len(ids); i++ {
			row := lg[(i-1)*V : i*V]
			mx := math.Inf(-1)
			for _, v := range row {
				mx = math.Max(mx, float64(v))
			}
			var s float64
			for _, v := range row {
				s += math.Exp(float64(v) - mx)
			}
			exp.Logprobs = append(exp.Logprobs, float64(row[ids[i]])-mx-math.Log(s))
		}
		for _, p := range []string{"var a = ", "var b = "} {
			c, err := continuations(withBOS(p), 2, generate.Options{MaxNewTokens: 8, Temperature: 1, Seed: 3})
			if err != nil {
				return err
			}
			exp.Choices = append(exp.Choices, c)
		}
		src, err := os.ReadFile(args[0])
		if err != nil {
			return err
		}
		rendered, err := generate.RenderChat(string(src), map[string]string{"bos_token": "<s>", "eos_token": "</s>"},
			[]map[string]any{{"role": "system", "content": "You write Go."}, {"role": "user", "content": "Write a loop."}}, true)
		if err != nil {
			return err
		}
		chatIDs := tok.Encode(rendered)
		if c, err = continuations(chatIDs, 1, generate.Options{MaxNewTokens: 16, Temperature: 0.7, Seed: 11}); err != nil {
			return err
		}
		exp.Chat, exp.ChatPromptTokens = c[0], len(chatIDs)
		b, _ := json.Marshal(exp)
		return os.WriteFile(args[1], b, 0o644)
	}
	// writeByteLevel writes byteLevelModel's model into args[0].
	helpers["writeByteLevel"] = func(args []string) error { return writeByteLevel(args[0]) }
}
