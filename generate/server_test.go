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
func startServer(t *testing.T, opt ServerOptions) *testServer {
	t.Helper()
	cfg, err := model.ParseConfig([]byte(`{"architectures":["NemotronForCausalLM"],"vocab_size":4000,"hidden_size":32,"num_hidden_layers":2,
		"num_attention_heads":4,"num_key_value_heads":2,"head_dim":8,"intermediate_size":64,"initializer_range":0.3,"bos_token_id":1,"eos_token_id":2}`))
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.Random(cfg, cpu.New(), 11)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := tokenizer.LoadSentencePiece("../testdata/tokenizer/spm-nemotron-style.model")
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
	s := NewServer(eng, tok, opt)
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

func TestServerErrors(t *testing.T) {
	ts := startServer(t, ServerOptions{MaxTokens: 32, MaxPromptTokens: 20})
	long := strings.Repeat("func main() {} ", 20)
	cases := []struct {
		body string
		code int
		want string
	}{
		{`{"prompt": "x", "max_tokens": `, 400, "invalid JSON"},
		{`{"max_tokens": 3}`, 400, "prompt is required"},
		{`{"prompt": "x", "max_tokens": 33}`, 400, "max_tokens 33"},
		{`{"prompt": "` + long + `"}`, 400, "at most 20"},
		{`{"prompt": "x", "n": 2}`, 400, "n must be 1"},
		{`{"prompt": "x", "temperature": 3}`, 400, "temperature"},
		{`{"prompt": [1, 2, 99999]}`, 400, "outside the vocabulary"},
		{`{"prompt": {"a": 1}}`, 400, "prompt must be"},
	}
	for _, c := range cases {
		code, r := post(t, ts.url, c.body)
		if code != c.code || r.Error == nil || !strings.Contains(r.Error.Message, c.want) {
			t.Errorf("%s: status %d, error %+v; want %d and %q", c.body, code, r.Error, c.code, c.want)
		}
	}
	resp, _ := http.Get(ts.url + "/v1/completions")
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET completions: %d", resp.StatusCode)
	}
	resp, _ = http.Get(ts.url + "/v1/models")
	var models struct {
		Data []struct{ ID string } `json:"data"`
	}
	json.NewDecoder(resp.Body).Decode(&models)
	if len(models.Data) != 1 || models.Data[0].ID != "tiny" {
		t.Errorf("models %+v", models)
	}
	resp, _ = http.Get(ts.url + "/health")
	if resp.StatusCode != 200 {
		t.Errorf("health %d", resp.StatusCode)
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
	if code, c := post(t, ts.url, map[string]any{"prompt": "x"}); code != http.StatusTooManyRequests || c.Error == nil {
		t.Fatalf("over the limit: status %d", code)
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
