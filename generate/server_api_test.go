package generate

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"math"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/minitron/minitron/tokenizer"
)

// sseChunks posts a streaming request and returns its data chunks, checking
// that the stream ends with [DONE].
func sseChunks(t *testing.T, url, path string, body map[string]any) []map[string]any {
	t.Helper()
	body["stream"] = true
	b, _ := json.Marshal(body)
	resp, err := http.Post(url+path, "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	var out []map[string]any
	done := false
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		if line == "[DONE]" {
			done = true
			break
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("bad chunk %q", line)
		}
		out = append(out, m)
	}
	if !done {
		t.Fatal("stream ended without [DONE]")
	}
	return out
}

// logSoftmax is a float64 log-softmax of one row of logits.
func logSoftmax(row []float32) []float64 {
	mx := math.Inf(-1)
	for _, v := range row {
		mx = math.Max(mx, float64(v))
	}
	var s float64
	for _, v := range row {
		s += math.Exp(float64(v) - mx)
	}
	out := make([]float64, len(row))
	for i, v := range row {
		out[i] = float64(v) - mx - math.Log(s)
	}
	return out
}

// TestServerChoices: n choices and several prompts per request; choice j
// of a prompt is what Generate gives sequence j of a batch of copies of
// that prompt with the same seed, and choices are indexed prompt × n + j.
func TestServerChoices(t *testing.T) {
	ts := startServer(t, ServerOptions{MaxTokens: 64})
	texts := []string{"func main() {", "type T struct"}
	const n = 3
	code, r := apiCall(t, "POST", ts.url+"/v1/completions", `{"prompt": ["func main() {", "type T struct"], "n": 3, "max_tokens": 12, "temperature": 0.9, "seed": 7}`)
	if code != 200 {
		t.Fatalf("status %d %v", code, r)
	}
	choices := r["choices"].([]any)
	if len(choices) != len(texts)*n {
		t.Fatalf("%d choices", len(choices))
	}
	completion := 0
	for p, text := range texts {
		ids := append([]int32{ts.tok.BOS()}, ts.tok.Encode(text)...)
		batch := make([][]int32, n)
		for j := range batch {
			batch[j] = ids
		}
		res, err := Generate(context.Background(), ts.m, batch, Options{MaxNewTokens: 12, Temperature: 0.9, TopP: 1, Seed: 7, Stop: []int32{ts.tok.EOS()}})
		if err != nil {
			t.Fatal(err)
		}
		distinct := map[string]bool{}
		for j := range n {
			want := strings.TrimPrefix(ts.tok.Decode(append(slices.Clone(ids), res.Tokens[j]...)), ts.tok.Decode(ids))
			c := choices[p*n+j].(map[string]any)
			if int(c["index"].(float64)) != p*n+j || c["text"] != want {
				t.Errorf("prompt %d choice %d: index %v text %q, want %d %q", p, j, c["index"], c["text"], p*n+j, want)
			}
			distinct[want] = true
			completion += len(res.Tokens[j])
		}
		if len(distinct) < 2 {
			t.Errorf("prompt %d: the %d choices are all the same", p, n)
		}
	}
	u := r["usage"].(map[string]any)
	if int(u["completion_tokens"].(float64)) != completion {
		t.Errorf("usage %v, want %d completion tokens", u, completion)
	}
	// Token-id prompts in a list give the same as their text.
	ids0 := append([]int32{ts.tok.BOS()}, ts.tok.Encode(texts[0])...)
	ids1 := append([]int32{ts.tok.BOS()}, ts.tok.Encode(texts[1])...)
	b, _ := json.Marshal(map[string]any{"prompt": [][]int32{ids0, ids1}, "n": 3, "max_tokens": 12, "temperature": 0.9, "seed": 7})
	_, r2 := apiCall(t, "POST", ts.url+"/v1/completions", string(b))
	for i, c := range r2["choices"].([]any) {
		if c.(map[string]any)["text"] != choices[i].(map[string]any)["text"] {
			t.Errorf("token prompts, choice %d: %q, text prompts %q", i, c.(map[string]any)["text"], choices[i].(map[string]any)["text"])
		}
	}
}

type legacyLogprobs struct {
	Tokens        []string             `json:"tokens"`
	TokenLogprobs []*float64           `json:"token_logprobs"`
	TopLogprobs   []map[string]float64 `json:"top_logprobs"`
	TextOffset    []int                `json:"text_offset"`
}

type legacyChoice struct {
	Text         string          `json:"text"`
	Index        int             `json:"index"`
	Logprobs     *legacyLogprobs `json:"logprobs"`
	FinishReason string          `json:"finish_reason"`
}

func completionChoices(t *testing.T, url string, body any) []legacyChoice {
	t.Helper()
	b, _ := json.Marshal(body)
	resp, err := http.Post(url+"/v1/completions", "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r struct {
		Choices []legacyChoice `json:"choices"`
		Error   any            `json:"error"`
	}
	json.NewDecoder(resp.Body).Decode(&r)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %v", resp.StatusCode, r.Error)
	}
	return r.Choices
}

// checkLogprobs compares an echoed choice's logprobs with a float64
// log-softmax of full-sequence logits (no KV cache) over seq, the tokens it
// should list; the first has no log-probability.
func checkLogprobs(t *testing.T, ts *testServer, c legacyChoice, seq []int32, top int) {
	t.Helper()
	lp := c.Logprobs
	if lp == nil || len(lp.Tokens) != len(seq) || len(lp.TokenLogprobs) != len(seq) || len(lp.TopLogprobs) != len(seq) || len(lp.TextOffset) != len(seq) {
		t.Fatalf("logprobs %+v for %d tokens", lp, len(seq))
	}
	V := ts.m.Config.VocabSize
	lg, err := Logits(ts.m, 1, len(seq), seq)
	if err != nil {
		t.Fatal(err)
	}
	if lp.TokenLogprobs[0] != nil || lp.TopLogprobs[0] != nil {
		t.Errorf("first token: logprob %v top %v, want null", lp.TokenLogprobs[0], lp.TopLogprobs[0])
	}
	for i := 1; i < len(seq); i++ {
		want := logSoftmax(lg[(i-1)*V : i*V])
		got := lp.TokenLogprobs[i]
		if got == nil || math.Abs(*got-want[seq[i]]) > 1e-4 {
			t.Fatalf("token %d (%d): logprob %v, want %.6f", i, seq[i], got, want[seq[i]])
		}
		order := make([]int, V)
		for k := range order {
			order[k] = k
		}
		slices.SortStableFunc(order, func(a, b int) int {
			if want[a] > want[b] {
				return -1
			}
			if want[a] < want[b] {
				return 1
			}
			return 0
		})
		if len(lp.TopLogprobs[i]) > top {
			t.Fatalf("token %d: %d top logprobs, asked %d", i, len(lp.TopLogprobs[i]), top)
		}
		var vals []float64
		for _, v := range lp.TopLogprobs[i] {
			vals = append(vals, v)
		}
		slices.Sort(vals)
		slices.Reverse(vals)
		for k, v := range vals {
			if math.Abs(v-want[order[k]]) > 1e-4 {
				t.Fatalf("token %d: top %d logprob %.6f, want %.6f", i, k, v, want[order[k]])
			}
		}
	}
	// Offsets are characters into the text; each token's text sits there.
	runes := []rune(c.Text)
	for i := range lp.TextOffset {
		end := len(runes)
		if i+1 < len(lp.TextOffset) {
			end = lp.TextOffset[i+1]
		}
		if lp.TextOffset[i] > end || end > len(runes) {
			t.Fatalf("offsets %v for text of %d characters", lp.TextOffset, len(runes))
		}
		if seg := string(runes[lp.TextOffset[i]:end]); seg != lp.Tokens[i] && seg != "" {
			t.Errorf("token %d %q at offset %d, text there %q", i, lp.Tokens[i], lp.TextOffset[i], seg)
		}
	}
}

// TestServerLogprobs drives the server as lm-evaluation-harness's
// local-completions model does (token-id prompts, echo, logprobs 1,
// max_tokens 0 or 1, temperature 0) and checks every log-probability
// against a log-softmax of full-sequence logits (computed without the KV
// cache the server scores prompts through, in chunks).
func TestServerLogprobs(t *testing.T) {
	ts := startServer(t, ServerOptions{MaxTokens: 64})
	// Score prompts 5 positions at a time, so chunk boundaries fall inside
	// them (the default holds 64 MB of logits).
	ts.eng.promptChunk = 5
	ctx := append([]int32{ts.tok.BOS()}, ts.tok.Encode("func Add(a, b int) int {")...)
	cont := ts.tok.Encode(" return a + b }")
	p1 := append(slices.Clone(ctx), cont...)
	p2 := append([]int32{ts.tok.BOS()}, ts.tok.Encode("héllo wörld ✓")...)
	t.Run("max_tokens 0", func(t *testing.T) {
		cs := completionChoices(t, ts.url, map[string]any{"model": "tiny", "prompt": [][]int32{p1, p2}, "max_tokens": 0, "echo": true, "logprobs": 1, "temperature": 0, "seed": 1234})
		if len(cs) != 2 {
			t.Fatalf("%d choices", len(cs))
		}
		for i, p := range [][]int32{p1, p2} {
			if cs[i].Index != i || cs[i].Text != ts.tok.Decode(p) || cs[i].FinishReason != "length" {
				t.Errorf("choice %d: index %d text %q finish %s", i, cs[i].Index, cs[i].Text, cs[i].FinishReason)
			}
			checkLogprobs(t, ts, cs[i], p, 1)
			if strings.Join(cs[i].Logprobs.Tokens[1:], "") != cs[i].Text {
				t.Errorf("tokens %q do not spell the text %q", cs[i].Logprobs.Tokens, cs[i].Text)
			}
		}
		// What lm-eval computes: the continuation's log-likelihood.
		var sum float64
		for _, v := range cs[0].Logprobs.TokenLogprobs[len(ctx):] {
			sum += *v
		}
		if sum >= 0 || math.IsNaN(sum) {
			t.Errorf("continuation log-likelihood %v", sum)
		}
	})
	t.Run("echo with greedy tokens", func(t *testing.T) {
		cs := completionChoices(t, ts.url, map[string]any{"prompt": [][]int32{p1}, "max_tokens": 5, "echo": true, "logprobs": 3, "temperature": 0})
		res, err := Generate(context.Background(), ts.m, [][]int32{p1}, Options{MaxNewTokens: 5, Stop: []int32{ts.tok.EOS()}})
		if err != nil {
			t.Fatal(err)
		}
		all := append(slices.Clone(p1), res.Tokens[0]...)
		checkLogprobs(t, ts, cs[0], all, 3)
		if cs[0].Text != ts.tok.Decode(all) {
			t.Errorf("text %q, want %q", cs[0].Text, ts.tok.Decode(all))
		}
		// Greedy: every generated token is its position's most likely.
		for i := len(p1); i < len(all); i++ {
			best := -math.MaxFloat64
			for _, v := range cs[0].Logprobs.TopLogprobs[i] {
				best = math.Max(best, v)
			}
			if *cs[0].Logprobs.TokenLogprobs[i] != best {
				t.Errorf("generated token %d: logprob %v, best %v", i, *cs[0].Logprobs.TokenLogprobs[i], best)
			}
		}
		// Without echo the same generated tokens are listed alone.
		plain := completionChoices(t, ts.url, map[string]any{"prompt": [][]int32{p1}, "max_tokens": 5, "logprobs": 3, "temperature": 0})
		lp := plain[0].Logprobs
		if len(lp.Tokens) != len(res.Tokens[0]) || plain[0].Text != strings.TrimPrefix(cs[0].Text, ts.tok.Decode(p1)) {
			t.Fatalf("without echo: %+v, text %q", lp, plain[0].Text)
		}
		for i := range lp.Tokens {
			// Scored in a prefill of one row or of every row: float32
			// sums in another order.
			if math.Abs(*lp.TokenLogprobs[i]-*cs[0].Logprobs.TokenLogprobs[len(p1)+i]) > 1e-5 || lp.Tokens[i] != cs[0].Logprobs.Tokens[len(p1)+i] {
				t.Errorf("token %d: %q %v without echo, %q %v with", i, lp.Tokens[i], *lp.TokenLogprobs[i],
					cs[0].Logprobs.Tokens[len(p1)+i], *cs[0].Logprobs.TokenLogprobs[len(p1)+i])
			}
		}
		if lp.TextOffset[0] != 0 {
			t.Errorf("offsets %v, want them from the start of the text", lp.TextOffset)
		}
	})
	t.Run("stop token listed last", func(t *testing.T) {
		res, err := Generate(context.Background(), ts.m, [][]int32{p1}, Options{MaxNewTokens: 6})
		if err != nil {
			t.Fatal(err)
		}
		stop := res.Tokens[0][2]
		first := slices.Index(res.Tokens[0], stop)
		st := startServer(t, ServerOptions{MaxTokens: 64, Stop: []int32{stop}})
		cs := completionChoices(t, st.url, map[string]any{"prompt": [][]int32{p1}, "max_tokens": 6, "echo": true, "logprobs": 1, "temperature": 0})
		want := append(slices.Clone(p1), res.Tokens[0][:first+1]...)
		if cs[0].FinishReason != "stop" || cs[0].Text != ts.tok.Decode(want[:len(want)-1]) {
			t.Fatalf("finish %s, text %q", cs[0].FinishReason, cs[0].Text)
		}
		checkLogprobs(t, ts, cs[0], want, 1)
	})
	t.Run("streamed", func(t *testing.T) {
		chunks := sseChunks(t, ts.url, "/v1/completions", map[string]any{"prompt": "func main() {", "max_tokens": 6, "logprobs": 2, "temperature": 0, "echo": true})
		var text strings.Builder
		var tokens []string
		for _, c := range chunks {
			ch := c["choices"].([]any)[0].(map[string]any)
			text.WriteString(ch["text"].(string))
			if lp, ok := ch["logprobs"].(map[string]any); ok {
				for _, tk := range lp["tokens"].([]any) {
					tokens = append(tokens, tk.(string))
				}
			}
		}
		full := completionChoices(t, ts.url, map[string]any{"prompt": "func main() {", "max_tokens": 6, "logprobs": 2, "temperature": 0, "echo": true})
		if text.String() != full[0].Text || !slices.Equal(tokens, full[0].Logprobs.Tokens) {
			t.Fatalf("streamed %q %q, whole %q %q", text.String(), tokens, full[0].Text, full[0].Logprobs.Tokens)
		}
	})
}

// TestServerStreamUsage: with stream_options.include_usage the last chunk
// has no choices and the usage; without it no chunk has usage.
func TestServerStreamUsage(t *testing.T) {
	ts := startServer(t, ServerOptions{MaxTokens: 64, ChatTemplate: chatMLish})
	for _, path := range []string{"/v1/completions", "/v1/chat/completions"} {
		body := func() map[string]any {
			m := map[string]any{"max_tokens": 7, "temperature": 0, "n": 2}
			if path == "/v1/completions" {
				m["prompt"] = "var x = "
			} else {
				m["messages"] = []map[string]string{{"role": "user", "content": "var x = "}}
			}
			return m
		}
		b := body()
		b["stream_options"] = map[string]any{"include_usage": true}
		chunks := sseChunks(t, ts.url, path, b)
		last := chunks[len(chunks)-1]
		u, _ := last["usage"].(map[string]any)
		if cs := last["choices"].([]any); len(cs) != 0 || u == nil {
			t.Fatalf("%s: last chunk %v", path, last)
		}
		tokens := 0
		for _, c := range chunks[:len(chunks)-1] {
			if v, ok := c["usage"]; !ok || v != nil {
				t.Errorf("%s: chunk before the last has usage %v", path, v)
			}
			if c["choices"].([]any)[0].(map[string]any)["finish_reason"] == "length" {
				tokens += 7
			}
		}
		if int(u["completion_tokens"].(float64)) != tokens || tokens != 14 || u["prompt_tokens"].(float64) <= 0 {
			t.Errorf("%s: usage %v, want 14 completion tokens", path, u)
		}
		for _, c := range sseChunks(t, ts.url, path, body()) {
			if _, ok := c["usage"]; ok {
				t.Errorf("%s: usage without include_usage: %v", path, c)
			}
		}
	}
}

// chatMLish is a ChatML template around the test tokenizer's own
// control tokens, so the rendered text holds <s> and </s>.
const chatMLish = "{{ bos_token }}{% for m in messages %}{{ '[' + m['role'] + '] ' + m['content'] + eos_token }}{% endfor %}{% if add_generation_prompt %}{{ '[assistant] ' }}{% endif %}"

// TestServerChat: the conversation is rendered, its special tokens mapped
// to their ids, and the reply is what Generate gives those ids; streamed
// deltas add up to it.
func TestServerChat(t *testing.T) {
	ts := startServer(t, ServerOptions{MaxTokens: 40, ChatTemplate: chatMLish, SpecialTokens: map[string]string{"bos_token": "<s>", "eos_token": "</s>"}})
	messages := []map[string]any{
		{"role": "system", "content": "You write Go."},
		{"role": "user", "content": []map[string]string{{"type": "text", "text": "func "}, {"type": "text", "text": "main"}}},
	}
	// The rendering, tokenized by hand: control tokens by id, text between.
	var ids []int32
	ids = append(ids, ts.tok.BOS())
	ids = append(ids, ts.tok.Encode("[system] You write Go.")...)
	ids = append(ids, ts.tok.EOS())
	ids = append(ids, ts.tok.Encode("[user] func main")...)
	ids = append(ids, ts.tok.EOS())
	ids = append(ids, ts.tok.Encode("[assistant] ")...)
	res, err := Generate(context.Background(), ts.m, [][]int32{ids, ids}, Options{MaxNewTokens: 20, Temperature: 0.7, TopP: 1, Seed: 3, Stop: []int32{ts.tok.EOS()}})
	if err != nil {
		t.Fatal(err)
	}
	want := func(j int) string {
		return strings.TrimPrefix(ts.tok.Decode(append(slices.Clone(ids), res.Tokens[j]...)), ts.tok.Decode(ids))
	}
	body := map[string]any{"model": "tiny", "messages": messages, "max_tokens": 20, "temperature": 0.7, "seed": 3, "n": 2}
	b, _ := json.Marshal(body)
	code, r := apiCall(t, "POST", ts.url+"/v1/chat/completions", string(b))
	if code != 200 || r["object"] != "chat.completion" {
		t.Fatalf("status %d %v", code, r)
	}
	for j, c := range r["choices"].([]any) {
		m := c.(map[string]any)["message"].(map[string]any)
		if m["role"] != "assistant" || m["content"] != want(j) {
			t.Errorf("choice %d: %v, want %q", j, m, want(j))
		}
	}
	if u := r["usage"].(map[string]any); int(u["prompt_tokens"].(float64)) != len(ids) {
		t.Errorf("usage %v, want %d prompt tokens", u, len(ids))
	}
	chunks := sseChunks(t, ts.url, "/v1/chat/completions", body)
	text := make([]string, 2)
	roles := make([]int, 2)
	finish := make([]string, 2)
	for _, c := range chunks {
		if c["object"] != "chat.completion.chunk" {
			t.Fatalf("chunk %v", c)
		}
		ch := c["choices"].([]any)[0].(map[string]any)
		j := int(ch["index"].(float64))
		d := ch["delta"].(map[string]any)
		if d["role"] == "assistant" {
			roles[j]++
		}
		if s, ok := d["content"].(string); ok {
			text[j] += s
		}
		if f, ok := ch["finish_reason"].(string); ok {
			finish[j] = f
		}
	}
	for j := range 2 {
		if text[j] != want(j) || roles[j] != 1 || finish[j] != res.Finish[j] {
			t.Errorf("streamed choice %d: %q (roles %d, finish %q), want %q (%s)", j, text[j], roles[j], finish[j], want(j), res.Finish[j])
		}
	}
	// Chat logprobs: one entry per generated token, greedy ones the best.
	b, _ = json.Marshal(map[string]any{"messages": messages, "max_tokens": 4, "temperature": 0, "logprobs": true, "top_logprobs": 2})
	_, r = apiCall(t, "POST", ts.url+"/v1/chat/completions", string(b))
	content := r["choices"].([]any)[0].(map[string]any)["logprobs"].(map[string]any)["content"].([]any)
	if len(content) != 4 {
		t.Fatalf("logprobs content %v", content)
	}
	var spelled []byte
	for _, e := range content {
		e := e.(map[string]any)
		top := e["top_logprobs"].([]any)
		if len(top) != 2 || top[0].(map[string]any)["logprob"] != e["logprob"] {
			t.Errorf("entry %v", e)
		}
		for _, x := range e["bytes"].([]any) {
			spelled = append(spelled, byte(x.(float64)))
		}
	}
	reply := r["choices"].([]any)[0].(map[string]any)["message"].(map[string]any)["content"].(string)
	if string(spelled) != reply {
		t.Errorf("logprobs bytes spell %q, the reply is %q", spelled, reply)
	}
	// Errors: a template's raise_exception and bad messages are 400s.
	st := startServer(t, ServerOptions{ChatTemplate: "{{ raise_exception('Only user and assistant roles are supported!') }}"})
	code, r = apiCall(t, "POST", st.url+"/v1/chat/completions", `{"messages": [{"role": "user", "content": "x"}]}`)
	if msg := r["error"].(map[string]any)["message"].(string); code != 400 || !strings.Contains(msg, "Only user and assistant roles are supported!") {
		t.Errorf("raise_exception: %d %v", code, r)
	}
	for _, bad := range []string{`{"messages": []}`, `{"messages": [{"content": "x"}]}`, `{"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}`} {
		if code, _ := apiCall(t, "POST", ts.url+"/v1/chat/completions", bad); code != 400 {
			t.Errorf("%s: status %d", bad, code)
		}
	}
}

// TestServerChatLlama3: Llama 3.1's chat template over Llama 3's
// byte-level tokenizer (the 3k-merge test file): the header and end-of-turn
// tokens the template writes become their ids, the text between is
// encoded, and <|eot_id|> shows in logprobs as itself.
func TestServerChatLlama3(t *testing.T) {
	tok, err := tokenizer.LoadJSON("../testdata/tokenizer/bytelevel-llama3-3k.tokenizer.json")
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile("../testdata/chat/llama-3.1.jinja")
	if err != nil {
		t.Fatal(err)
	}
	id := func(s string) int32 {
		ids := tok.Encode(s)
		if len(ids) != 1 {
			t.Fatalf("%q is not one token: %v", s, ids)
		}
		return ids[0]
	}
	eot := id("<|eot_id|>")
	ts := startServerWith(t, tok, ServerOptions{MaxTokens: 32, ChatTemplate: string(src), Stop: []int32{eot},
		SpecialTokens: map[string]string{"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}})
	var want []int32
	header := func(role string) {
		want = append(want, id("<|start_header_id|>"))
		want = append(want, tok.Encode(role)...)
		want = append(want, id("<|end_header_id|>"))
		want = append(want, tok.Encode("\n\n")...)
	}
	want = append(want, id("<|begin_of_text|>"))
	header("system")
	want = append(want, tok.Encode("Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n")...)
	want = append(want, eot)
	header("user")
	want = append(want, tok.Encode("Hello there")...)
	want = append(want, eot)
	header("assistant")
	res, err := Generate(context.Background(), ts.m, [][]int32{want}, Options{MaxNewTokens: 12, Stop: []int32{eot, tok.EOS()}})
	if err != nil {
		t.Fatal(err)
	}
	code, r := apiCall(t, "POST", ts.url+"/v1/chat/completions", `{"messages": [{"role": "user", "content": "Hello there"}], "max_tokens": 12, "temperature": 0, "logprobs": true}`)
	if code != 200 {
		t.Fatalf("status %d %v", code, r)
	}
	if u := r["usage"].(map[string]any); int(u["prompt_tokens"].(float64)) != len(want) {
		t.Fatalf("%v prompt tokens, want %d", u["prompt_tokens"], len(want))
	}
	c := r["choices"].([]any)[0].(map[string]any)
	text := strings.TrimPrefix(tok.Decode(append(slices.Clone(want), res.Tokens[0]...)), tok.Decode(want))
	if c["message"].(map[string]any)["content"] != text {
		t.Fatalf("reply %q, want %q", c["message"].(map[string]any)["content"], text)
	}
	// Special tokens show as themselves in logprobs; their text is "".
	cs := completionChoices(t, ts.url, map[string]any{"prompt": [][]int32{want[:12]}, "max_tokens": 0, "echo": true, "logprobs": 0})
	lp := cs[0].Logprobs
	specials := map[int32]bool{id("<|begin_of_text|>"): true, id("<|start_header_id|>"): true, id("<|end_header_id|>"): true}
	var spelled string
	for i, x := range want[:12] {
		if specials[x] {
			if lp.Tokens[i] != tok.Piece(x) {
				t.Errorf("token %d: %q, want %q", i, lp.Tokens[i], tok.Piece(x))
			}
			continue
		}
		spelled += lp.Tokens[i]
	}
	if cs[0].Text != tok.Decode(want[:12]) || spelled != cs[0].Text || !strings.HasPrefix(cs[0].Text, "system\n\nCutting") {
		t.Fatalf("text %q, spelled by the other tokens %q", cs[0].Text, spelled)
	}
}

// TestReadChatConfig: templates come from tokenizer_config.json (a string
// or the "default" of a named list) or chat_template.jinja, which wins.
func TestReadChatConfig(t *testing.T) {
	ts := startServer(t, ServerOptions{})
	cases := []struct {
		config, jinja, want string
		specials            map[string]string
	}{
		{`{"chat_template": "A{{ bos_token }}", "bos_token": {"content": "<s>"}, "eos_token": "</s>"}`, "", "A{{ bos_token }}", map[string]string{"bos_token": "<s>", "eos_token": "</s>"}},
		{`{"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]}`, "", "D", nil},
		{`{"chat_template": "A"}`, "J", "J", nil},
		{`{}`, "", "", nil},
	}
	for i, c := range cases {
		dir := t.TempDir()
		os.WriteFile(dir+"/tokenizer_config.json", []byte(c.config), 0o644)
		if c.jinja != "" {
			os.WriteFile(dir+"/chat_template.jinja", []byte(c.jinja), 0o644)
		}
		cc, err := ReadChatConfig(dir, ts.tok)
		if err != nil {
			t.Fatal(err)
		}
		if cc.Template != c.want {
			t.Errorf("case %d: template %q, want %q", i, cc.Template, c.want)
		}
		for k, v := range c.specials {
			if cc.Specials[k] != v {
				t.Errorf("case %d: %s %q, want %q", i, k, cc.Specials[k], v)
			}
		}
	}
	dir := t.TempDir()
	os.WriteFile(dir+"/tokenizer_config.json", []byte(`{"chat_template": [{"name": "x", "template": "T"}]}`), 0o644)
	if _, err := ReadChatConfig(dir, ts.tok); err == nil || !strings.Contains(err.Error(), "default") {
		t.Errorf("no default template: %v", err)
	}
}
