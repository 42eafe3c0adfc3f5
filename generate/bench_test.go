package generate

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/minitron/minitron/internal/cputime"
)

// BenchmarkServer times one 32-token greedy request through the HTTP
// server (plain completion, streamed, with logprobs) against the same
// generation called directly, the anchor: compare each with "direct" in
// the same run. cpu-ns/op (the process's CPU time, server and client
// together) varies less than ns/op on a loaded machine.
//
//	go test ./generate -run '^$' -bench BenchmarkServer -count 5
func BenchmarkServer(b *testing.B) {
	ts := startServer(b, ServerOptions{MaxTokens: 64, ChatTemplate: chatMLish})
	prompt := "func (s *Server) Handler() http.Handler {"
	ids := append([]int32{ts.tok.BOS()}, ts.tok.Encode(prompt)...)
	want, err := Generate(context.Background(), ts.m, [][]int32{ids}, Options{MaxNewTokens: 32, Stop: []int32{ts.tok.EOS()}})
	if err != nil {
		b.Fatal(err)
	}
	if len(want.Tokens[0]) != 32 {
		b.Fatalf("the greedy continuation stops after %d tokens", len(want.Tokens[0]))
	}
	b.Run("direct", func(b *testing.B) {
		defer reportCPU(b, cputime.Now())
		for b.Loop() {
			if _, err := Generate(context.Background(), ts.m, [][]int32{ids}, Options{MaxNewTokens: 32, Stop: []int32{ts.tok.EOS()}}); err != nil {
				b.Fatal(err)
			}
		}
	})
	request := func(b *testing.B, path string, body map[string]any) {
		raw, _ := json.Marshal(body)
		defer reportCPU(b, cputime.Now())
		for b.Loop() {
			resp, err := http.Post(ts.url+path, "application/json", bytes.NewReader(raw))
			if err != nil {
				b.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Fatalf("status %d", resp.StatusCode)
			}
		}
	}
	b.Run("completion", func(b *testing.B) {
		request(b, "/v1/completions", map[string]any{"prompt": prompt, "max_tokens": 32, "temperature": 0})
	})
	b.Run("completion-stream", func(b *testing.B) {
		request(b, "/v1/completions", map[string]any{"prompt": prompt, "max_tokens": 32, "temperature": 0, "stream": true})
	})
	b.Run("completion-logprobs-5", func(b *testing.B) {
		request(b, "/v1/completions", map[string]any{"prompt": prompt, "max_tokens": 32, "temperature": 0, "logprobs": 5})
	})
	b.Run("completion-echo-logprobs", func(b *testing.B) {
		request(b, "/v1/completions", map[string]any{"prompt": prompt, "max_tokens": 32, "temperature": 0, "logprobs": 1, "echo": true})
	})
}

func reportCPU(b *testing.B, start time.Duration) {
	if d := cputime.Now() - start; d > 0 {
		b.ReportMetric(float64(d)/float64(b.N), "cpu-ns/op")
	}
}
