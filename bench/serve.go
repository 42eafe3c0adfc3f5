package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"time"
)

// LoadOptions describe the requests of a server load test.
type LoadOptions struct {
	URL       string // the server, e.g. http://127.0.0.1:8080
	Prompt    string
	Requests  int // requests per concurrency level
	MaxTokens int // max_tokens of each request
}

// LoadResult is the load test of one concurrency level.
type LoadResult struct {
	Concurrency       int     `json:"concurrency"`
	Requests          int     `json:"requests"` // answered with 200
	Failures          int     `json:"failures"`
	TokensPerSecond   float64 `json:"tokens_per_second"`
	RequestsPerSecond float64 `json:"requests_per_second"`
	P50ms             float64 `json:"p50_ms"`
	P99ms             float64 `json:"p99_ms"`
}

// Load sends opt.Requests completion requests (temperature 0.8, seeds
// 0, 1, ...) to an OpenAI-compatible server from concurrency clients at
// once, and measures the completion tokens per second and the latency
// percentiles.
func Load(ctx context.Context, opt LoadOptions, concurrency int) (*LoadResult, error) {
	if concurrency < 1 {
		return nil, fmt.Errorf("bench: concurrency %d must be positive", concurrency)
	}
	var mu sync.Mutex
	var lat []time.Duration
	tokens, failures, next := 0, 0, 0
	start := time.Now()
	var wg sync.WaitGroup
	for range concurrency {
		wg.Go(func() {
			for ctx.Err() == nil {
				mu.Lock()
				i := next
				next++
				mu.Unlock()
				if i >= opt.Requests {
					return
				}
				t0 := time.Now()
				n, err := complete(ctx, opt, i)
				d := time.Since(t0)
				mu.Lock()
				if err != nil {
					failures++
				} else {
					lat = append(lat, d)
					tokens += n
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	wall := time.Since(start)
	if len(lat) == 0 {
		return nil, fmt.Errorf("bench: every request at concurrency %d failed; is the server at %s up?", concurrency, opt.URL)
	}
	slices.Sort(lat)
	p := func(q float64) float64 { return lat[min(len(lat)-1, int(q*float64(len(lat))))].Seconds() * 1000 }
	return &LoadResult{Concurrency: concurrency, Requests: len(lat), Failures: failures, TokensPerSecond: float64(tokens) / wall.Seconds(),
		RequestsPerSecond: float64(len(lat)) / wall.Seconds(), P50ms: p(0.5), P99ms: p(0.99)}, nil
}

// complete sends request i and returns its completion tokens.
func complete(ctx context.Context, opt LoadOptions, i int) (int, error) {
	b, _ := json.Marshal(map[string]any{"prompt": opt.Prompt, "max_tokens": opt.MaxTokens, "temperature": 0.8, "seed": i})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, opt.URL+"/v1/completions", bytes.NewReader(b))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var r struct {
		Usage struct {
			CompletionTokens int `json:"completion_tokens"`
		} `json:"usage"`
	}
	err = json.NewDecoder(resp.Body).Decode(&r)
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("status %d", resp.StatusCode)
	}
	return r.Usage.CompletionTokens, err
}
