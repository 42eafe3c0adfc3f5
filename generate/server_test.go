package generate

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minitron/minitron/backend/cpu"
	"github.com/minitron/minitron/model"
	"github.com/minitron/minitron/tokenizer"
)

type testServer struct {
	url  string
	srv  *http.Server
	eng  *Engine
	m    *model.Model
	tok  tokenizer.Tokenizer
	stop context.CancelFunc
}

// startServer runs an engine and server on loopback over a random model
// with the 4000-piece tokenizer.
func startServer(t testing.TB, opt ServerOptions) *testServer {
	t.Helper()
	tok, err := tokenizer.LoadSentencePiece("../testdata/tokenizer/spm-nemotron-style.model")
	if err != nil {
		t.Fatal(err)
	}
	return startServerWith(t, tok, opt)
}

// startServerWith runs a server over a random model sized for tok.
func startServerWith(t testing.TB, tok tokenizer.Tokenizer, opt ServerOptions) *testServer {
	t.Helper()
	cfg, err := model.ParseConfig([]byte(fmt.Sprintf(`{"architectures":["NemotronForCausalLM"],"vocab_size":%d,"hidden_size":32,"num_hidden_layers":2,
		"num_attention_heads":4,"num_key_value_heads":2,"head_dim":8,"intermediate_size":64,"initializer_range":0.3,"bos_token_id":%d,"eos_token_id":%d}`,
		tok.VocabSize(), tok.BOS(), tok.EOS())))
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.Random(cfg, cpu.New(), 11)
	if err != nil {
		t.Fatal(err)
	}
	eng, err := NewEngine(m, 4, 256)
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	go eng.Run(ctx)
	opt.ModelName = "tiny"
	s, err := NewServer(eng, tok, opt)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: s.Handler()}
	go srv.Serve(ln)
	ts := &testServer{url: "http://" + ln.Addr().String(), srv: srv, eng: eng, m: m, tok: tok, stop: stop}
	t.Cleanup(func() { srv.Close(); stop() })
	return ts
}

type completion struct {
	Choices []struct {
		Text         string  `json:"text"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Usage struct {
		PromptTokens     int `json:"prompt_tokens"`
		CompletionTokens int `json:"completion_tokens"`
	} `json:"usage"`
	Error *struct {
		Message string `json:"message"`
	} `json:"error"`
}

func post(t *testing.T, url string, body any) (int, completion) {
	t.Helper()
	code, c, err := postErr(url, body)
	if err != nil {
		t.Fatal(err)
	}
	return code, c
}

// postErr is post for goroutines other than the test's.
func postErr(url string, body any) (int, completion, error) {
	var b []byte
	switch x := body.(type) {
	case string:
		b = []byte(x)
	default:
		b, _ = json.Marshal(x)
	}
	resp, err := http.Post(url+"/v1/completions", "application/json", bytes.NewReader(b))
	if err != nil {
		return 0, completion{}, err
	}
	defer resp.Body.Close()
	var c completion
	json.NewDecoder(resp.Body).Decode(&c)
	return resp.StatusCode, c, nil
}

// stream posts a streaming request and returns the concatenated text and
// the finish reason.
func stream(t *testing.T, url string, body map[string]any) (string, string) {
	t.Helper()
	text, finish, err := streamErr(url, body)
	if err != nil {
		t.Fatal(err)
	}
	return text, finish
}

// streamErr is stream for goroutines other than the test's.
func streamErr(url string, body map[string]any) (string, string, error) {
	body["stream"] = true
	b, _ := json.Marshal(body)
	resp, err := http.Post(url+"/v1/completions", "application/json", bytes.NewReader(b))
	if err != nil {
		return "", "", err
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		return "", "", fmt.Errorf("content type %q", ct)
	}
	var text strings.Builder
	finish, done := "", false
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "data: ") {
			continue
		}
		data := strings.TrimPrefix(line, "data: ")
		if data == "[DONE]" {
			done = true
			break
		}
		var c completion
		if err := json.Unmarshal([]byte(data), &c); err != nil {
			return "", "", fmt.Errorf("bad chunk %q", data)
		}
		text.WriteString(c.Choices[0].Text)
		if c.Choices[0].FinishReason != nil {
			finish = *c.Choices[0].FinishReason
		}
	}
	if !done {
		return "", "", fmt.Errorf("stream ended without [DONE]")
	}
	return text.String(), finish, nil
}

// direct generates the same request without the engine or the server.
func direct(t *testing.T, ts *testServer, prompt string, opt Options) string {
	t.Helper()
	text, err := directErr(ts, prompt, opt)
	if err != nil {
		t.Fatal(err)
	}
	return text
}

// directErr is direct for goroutines other than the test's.
func directErr(ts *testServer, prompt string, opt Options) (string, error) {
	ids := append([]int32{ts.tok.BOS()}, ts.tok.Encode(prompt)...)
	opt.Stop = []int32{ts.tok.EOS()}
	res, err := Generate(context.Background(), ts.m, [][]int32{ids}, opt)
	if err != nil {
		return "", err
	}
	return strings.TrimPrefix(ts.tok.Decode(append(ids, res.Tokens[0]...)), ts.tok.Decode(ids)), nil
}

func TestServerCompletions(t *testing.T) {
	ts := startServer(t, ServerOptions{MaxTokens: 64})
	req := map[string]any{"prompt": "func main() {", "max_tokens": 20, "temperature": 0.9, "top_k": 50, "seed": 7}
	code, c := post(t, ts.url, req)
	if code != 200 || len(c.Choices) != 1 {
		t.Fatalf("status %d %+v", code, c)
	}
	want := direct(t, ts, "func main() {", Options{MaxNewTokens: 20, Temperature: 0.9, TopK: 50, TopP: 1, Seed: 7})
	if c.Choices[0].Text != want {
		t.Fatalf("server %q, direct %q", c.Choices[0].Text, want)
	}
	if c.Usage.PromptTokens == 0 || c.Usage.CompletionTokens == 0 {
		t.Fatalf("usage %+v", c.Usage)
	}
	text, finish := stream(t, ts.url, req)
	if text != want || (finish != "length" && finish != "stop") {
		t.Fatalf("stream %q (%s), want %q", text, finish, want)
	}
	// Concurrent clients, each with its own seed: batched together, each
	// gets exactly its own continuation.
	var wg sync.WaitGroup
	errs := make(chan error, 12)
	for i := range 12 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			prompt := fmt.Sprintf("var x%d = ", i)
			body := map[string]any{"prompt": prompt, "max_tokens": 16 + i, "temperature": 0.8, "seed": i}
			var got string
			if i%2 == 0 {
				var err error
				if got, _, err = streamErr(ts.url, body); err != nil {
					errs <- fmt.Errorf("client %d: %w", i, err)
					return
				}
			} else {
				code, c, err := postErr(ts.url, body)
				if err != nil || code != 200 {
					errs <- fmt.Errorf("client %d: status %d, %v", i, code, err)
					return
				}
				got = c.Choices[0].Text
			}
			w, err := directErr(ts, prompt, Options{MaxNewTokens: 16 + i, Temperature: 0.8, TopP: 1, Seed: uint64(i)})
			if err != nil || got != w {
				errs <- fmt.Errorf("client %d: %q, want %q (%v)", i, got, w, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestServerStopStrings(t *testing.T) {
	ts := startServer(t, ServerOptions{})
	req := map[string]any{"prompt": "type T struct", "max_tokens": 40, "temperature": 0, "seed": 1}
	_, c := post(t, ts.url, req)
	full := c.Choices[0].Text
	if len(full) < 10 { // greedy with a fixed seed: the same text every run
		t.Fatalf("continuation too short to cut: %q", full)
	}
	stop := full[len(full)/2 : len(full)/2+3]
	req["stop"] = []string{stop, "never-appears"}
	_, c = post(t, ts.url, req)
	want := full[:strings.Index(full, stop)]
	if c.Choices[0].Text != want || *c.Choices[0].FinishReason != "stop" {
		t.Fatalf("with stop %q: %q (%s), want %q", stop, c.Choices[0].Text, *c.Choices[0].FinishReason, want)
	}
	if text, finish := stream(t, ts.url, req); text != want || finish != "stop" {
		t.Fatalf("streamed with stop %q: %q (%s), want %q", stop, text, finish, want)
	}
}

// apiCall sends a request and decodes the JSON answer.
func apiCall(t *testing.T, method, url, body string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s %s: answer is not JSON: %q", method, url, b)
	}
	return resp.StatusCode, m
}

// TestServerErrors: every error is OpenAI's error object with a message
// saying what is wrong (and no package prefix), the right status, type
// and code.
func TestServerErrors(t *testing.T) {
	ts := startServer(t, ServerOptions{MaxTokens: 32, MaxPromptTokens: 20, MaxBodyBytes: 1 << 10})
	long := strings.Repeat("func main() {} ", 20)
	cases := []struct {
		method, path, body string
		code               int
		typ, errCode, want string
	}{
		{"POST", "/v1/completions", `{"prompt": "x", "max_tokens": `, 400, "invalid_request_error", "", "invalid JSON"},
		{"POST", "/v1/completions", `{"max_tokens": 3}`, 400, "invalid_request_error", "", "prompt is required"},
		{"POST", "/v1/completions", `{"prompt": "x", "max_tokens": 33}`, 400, "invalid_request_error", "", "max_tokens 33"},
		{"POST", "/v1/completions", `{"prompt": "` + long + `"}`, 400, "invalid_request_error", "", "at most 20"},
		{"POST", "/v1/completions", `{"prompt": "x", "n": 0}`, 400, "invalid_request_error", "", "n 0"},
		{"POST", "/v1/completions", `{"prompt": "x", "temperature": 3}`, 400, "invalid_request_error", "", "temperature"},
		{"POST", "/v1/completions", `{"prompt": [1, 2, 99999]}`, 400, "invalid_request_error", "", "token id 99999 is outside the vocabulary"},
		{"POST", "/v1/completions", `{"prompt": {"a": 1}}`, 400, "invalid_request_error", "", "prompt must be"},
		{"POST", "/v1/completions", `{"prompt": "x", "logprobs": 21}`, 400, "invalid_request_error", "", "logprobs 21"},
		{"POST", "/v1/completions", `{"prompt": [` + strings.Repeat("5,", 240) + `5], "max_tokens": 30}`, 400, "invalid_request_error", "", "at most 20"},
		{"POST", "/v1/completions", `{"prompt": "x", "model": "gpt-4"}`, 404, "invalid_request_error", "model_not_found", `"gpt-4" does not exist`},
		{"POST", "/v1/completions", `{"prompt": "` + strings.Repeat("x", 2000) + `"}`, 413, "invalid_request_error", "", "larger than 1024 bytes"},
		{"POST", "/v1/chat/completions", `{"messages": [{"role": "user", "content": "hi"}]}`, 400, "invalid_request_error", "", "no chat template"},
		{"GET", "/v1/completions", ``, 405, "invalid_request_error", "method_not_allowed", "use POST"},
		{"POST", "/v1/models", `{}`, 405, "invalid_request_error", "method_not_allowed", "use GET"},
		{"GET", "/v1/nothing", ``, 404, "invalid_request_error", "not_found", "no such endpoint"},
		{"GET", "/v1/models/gpt-4", ``, 404, "invalid_request_error", "model_not_found", `"gpt-4" does not exist`},
	}
	for _, c := range cases {
		t.Run(c.method+" "+c.path+" "+c.body[:min(len(c.body), 40)], func(t *testing.T) {
			code, r := apiCall(t, c.method, ts.url+c.path, c.body)
			e, _ := r["error"].(map[string]any)
			if code != c.code || e == nil {
				t.Fatalf("status %d, body %v; want %d and an error object", code, r, c.code)
			}
			msg, _ := e["message"].(string)
			if !strings.Contains(msg, c.want) || strings.HasPrefix(msg, "generate:") {
				t.Errorf("message %q, want one saying %q without a package prefix", msg, c.want)
			}
			for _, k := range []string{"message", "type", "param", "code"} {
				if _, ok := e[k]; !ok {
					t.Errorf("error object lacks %q: %v", k, e)
				}
			}
			if e["type"] != c.typ {
				t.Errorf("type %v, want %s", e["type"], c.typ)
			}
			if want := any(c.errCode); c.errCode == "" {
				if e["code"] != nil {
					t.Errorf("code %v, want null", e["code"])
				}
			} else if e["code"] != want {
				t.Errorf("code %v, want %s", e["code"], c.errCode)
			}
		})
	}
	code, r := apiCall(t, "GET", ts.url+"/v1/models", "")
	data, _ := r["data"].([]any)
	if code != 200 || len(data) != 1 || data[0].(map[string]any)["id"] != "tiny" {
		t.Errorf("models: %d %v", code, r)
	}
	if code, r := apiCall(t, "GET", ts.url+"/v1/models/tiny", ""); code != 200 || r["id"] != "tiny" || r["object"] != "model" {
		t.Errorf("models/tiny: %d %v", code, r)
	}
	if code, _ := apiCall(t, "GET", ts.url+"/health", ""); code != 200 {
		t.Errorf("health %d", code)
	}
}

// TestServerAliases: a model is found by its name and its aliases only.
func TestServerAliases(t *testing.T) {
	ts := startServer(t, ServerOptions{Aliases: []string{"gpt-3.5-turbo-instruct", "org/tiny-v2"}})
	for _, name := range []string{"tiny", "gpt-3.5-turbo-instruct", "org/tiny-v2", ""} {
		code, r := post(t, ts.url, map[string]any{"prompt": "x", "max_tokens": 2, "model": name})
		if code != 200 {
			t.Errorf("model %q: status %d %+v", name, code, r.Error)
		}
	}
	if code, r := apiCall(t, "GET", ts.url+"/v1/models/org/tiny-v2", ""); code != 200 || r["id"] != "org/tiny-v2" {
		t.Errorf("models/org/tiny-v2: %d %v", code, r)
	}
	_, r := apiCall(t, "GET", ts.url+"/v1/models", "")
	if data, _ := r["data"].([]any); len(data) != 3 {
		t.Errorf("models list %v", r)
	}
	if code, _ := post(t, ts.url, map[string]any{"prompt": "x", "model": "tiny-v2"}); code != 404 {
		t.Errorf("unknown name: status %d", code)
	}
}

// TestServerLimitsAndDisconnects: beyond the concurrency limit requests
// get 429; a client that leaves mid-stream frees its slot.
func TestServerLimitsAndDisconnects(t *testing.T) {
	ts := startServer(t, ServerOptions{MaxConcurrent: 1, MaxTokens: 200})
	b, _ := json.Marshal(map[string]any{"prompt": "package main", "max_tokens": 200, "temperature": 1, "stream": true, "seed": 3})
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "POST", ts.url+"/v1/completions", bytes.NewReader(b))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(resp.Body)
	if _, err := r.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	if code, r := apiCall(t, "POST", ts.url+"/v1/completions", `{"prompt": "x"}`); code != http.StatusTooManyRequests || r["error"].(map[string]any)["type"] != "rate_limit_exceeded" {
		t.Fatalf("over the limit: status %d %v", code, r)
	}
	cancel() // the client goes away mid-stream
	resp.Body.Close()
	deadline := time.Now().Add(5 * time.Second)
	for ts.eng.Running() > 0 {
		if time.Now().After(deadline) {
			t.Fatal("the engine still runs the abandoned request")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if code, _ := post(t, ts.url, map[string]any{"prompt": "x", "max_tokens": 3}); code != 200 {
		t.Fatalf("after the disconnect: status %d", code)
	}
}

// TestServerGracefulShutdown: shutting down lets a stream in flight finish.
func TestServerGracefulShutdown(t *testing.T) {
	ts := startServer(t, ServerOptions{MaxTokens: 200})
	b, _ := json.Marshal(map[string]any{"prompt": "package main", "max_tokens": 150, "temperature": 1, "stream": true, "seed": 5})
	resp, err := http.Post(ts.url+"/v1/completions", "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	shut := make(chan error, 1)
	go func() { shut <- ts.srv.Shutdown(context.Background()) }()
	body, err := io.ReadAll(resp.Body)
	if err != nil || !strings.HasSuffix(strings.TrimSpace(string(body)), "data: [DONE]") {
		t.Fatalf("stream during shutdown: %v, ends %q", err, string(body[max(0, len(body)-40):]))
	}
	if err := <-shut; err != nil {
		t.Fatal(err)
	}
}
