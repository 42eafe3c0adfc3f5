package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/minitron/minitron/generate"
	"github.com/minitron/minitron/tokenizer"
)

func newServe() *cobra.Command {
	var modelDir, tokPath, addr, dev string
	var slots, ctxLen int
	var opt generate.ServerOptions
	cmd := &cobra.Command{
		Use:   "serve --model DIR [--addr 127.0.0.1:8080]",
		Short: "Serve the model over an OpenAI-compatible HTTP API",
		Long: `serve answers OpenAI-style completion requests:

  POST /v1/completions   prompt, max_tokens, temperature, top_p, top_k, seed,
                         stop, stream (server-sent events)
  GET  /v1/models
  GET  /health

Concurrent requests are batched onto the model (continuous batching: each
decoding step runs every active request in one forward pass; --slots bounds
how many at once, further requests wait). Requests beyond --max-concurrent
get 429; prompts longer than --max-prompt-tokens and max_tokens above
--max-tokens get 400; a bad body gets 400 with a message. SIGINT or SIGTERM
stops accepting requests and lets the ones in flight finish.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			be, err := openBackend(dev)
			if err != nil {
				return err
			}
			src := modelDir
			if tokPath != "" {
				src = tokPath
			}
			tok, err := tokenizer.Open(src)
			if err != nil {
				return fmt.Errorf("serve needs the model's tokenizer: %w (or --tokenizer)", err)
			}
			m, err := loadModel(modelDir, be)
			if err != nil {
				return err
			}
			if tok.VocabSize() > m.Config.VocabSize {
				return fmt.Errorf("the tokenizer has %d tokens, the model's vocabulary %d", tok.VocabSize(), m.Config.VocabSize)
			}
			if ctxLen == 0 {
				ctxLen = min(m.Config.MaxPositions, 2048)
			}
			eng, err := generate.NewEngine(m, slots, ctxLen)
			if err != nil {
				return err
			}
			if opt.ModelName == "" {
				opt.ModelName = filepath.Base(filepath.Clean(modelDir))
			}
			s := generate.NewServer(eng, tok, opt)
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				return err
			}
			engCtx, stopEngine := context.WithCancel(context.Background())
			engDone := make(chan error, 1)
			go func() { engDone <- eng.Run(engCtx) }()
			srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
			served := make(chan error, 1)
			go func() { served <- srv.Serve(ln) }()
			fmt.Fprintf(os.Stderr, "serving %s on http://%s (%d slots of %d tokens; Ctrl-C to stop)\n", opt.ModelName, ln.Addr(), slots, ctxLen)
			select {
			case err := <-served:
				stopEngine()
				return err
			case <-cmd.Context().Done():
			}
			fmt.Fprintln(os.Stderr, "shutting down: finishing the requests in flight")
			sctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			err = srv.Shutdown(sctx)
			stopEngine()
			<-engDone
			if errors.Is(err, http.ErrServerClosed) {
				err = nil
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&modelDir, "model", "", "model directory (with its tokenizer)")
	f.StringVar(&tokPath, "tokenizer", "", "tokenizer file or directory, when the model directory has none")
	f.StringVar(&addr, "addr", "127.0.0.1:8080", "address to listen on")
	f.IntVar(&slots, "slots", 8, "requests decoded together (KV cache slots)")
	f.IntVar(&ctxLen, "context", 0, "tokens per request, prompt and completion (default: the model's, at most 2048)")
	f.IntVar(&opt.MaxPromptTokens, "max-prompt-tokens", 0, "longest prompt accepted (default: the context less one)")
	f.IntVar(&opt.MaxTokens, "max-tokens", 0, "largest max_tokens accepted (default: half the context)")
	f.IntVar(&opt.MaxConcurrent, "max-concurrent", 64, "requests in flight (running or waiting); more get 429")
	f.IntVar(&opt.DefaultTokens, "default-tokens", 16, "max_tokens when a request does not say")
	f.StringVar(&opt.ModelName, "name", "", "model name reported by /v1/models (default: the directory's name)")
	addDevice(cmd, &dev)
	cmd.MarkFlagRequired("model")
	return cmd
}

func newBenchServe() *cobra.Command {
	var url, prompt, levels string
	var requests, maxTokens int
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "serve --url http://127.0.0.1:8080",
		Short: "Load-test a running server: throughput and p50/p99 latency at several concurrency levels",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var out []map[string]any
			for _, l := range strings.Split(levels, ",") {
				c, err := strconv.Atoi(strings.TrimSpace(l))
				if err != nil || c < 1 {
					return fmt.Errorf("--concurrency: %q is not a positive number", l)
				}
				var mu sync.Mutex
				var lat []time.Duration
				tokens, failures := 0, 0
				next := 0
				start := time.Now()
				var wg sync.WaitGroup
				for range c {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for {
							mu.Lock()
							i := next
							next++
							mu.Unlock()
							if i >= requests {
								return
							}
							b, _ := json.Marshal(map[string]any{"prompt": prompt, "max_tokens": maxTokens, "temperature": 0.8, "seed": i})
							t0 := time.Now()
							resp, err := http.Post(url+"/v1/completions", "application/json", bytes.NewReader(b))
							var r struct {
								Usage struct {
									CompletionTokens int `json:"completion_tokens"`
								} `json:"usage"`
							}
							if err == nil {
								json.NewDecoder(resp.Body).Decode(&r)
								io.Copy(io.Discard, resp.Body)
								resp.Body.Close()
							}
							d := time.Since(t0)
							mu.Lock()
							if err != nil || resp.StatusCode != 200 {
								failures++
							} else {
								lat = append(lat, d)
								tokens += r.Usage.CompletionTokens
							}
							mu.Unlock()
						}
					}()
				}
				wg.Wait()
				wall := time.Since(start)
				if len(lat) == 0 {
					return fmt.Errorf("every request at concurrency %d failed; is the server at %s up?", c, url)
				}
				slices.Sort(lat)
				p := func(q float64) float64 { return lat[min(len(lat)-1, int(q*float64(len(lat))))].Seconds() * 1000 }
				res := map[string]any{"concurrency": c, "requests": len(lat), "failures": failures, "tokens_per_second": float64(tokens) / wall.Seconds(),
					"requests_per_second": float64(len(lat)) / wall.Seconds(), "p50_ms": p(0.5), "p99_ms": p(0.99)}
				out = append(out, res)
				if !asJSON {
					fmt.Fprintf(cmd.OutOrStdout(), "concurrency %3d: %6.1f tokens/s, %5.2f requests/s, latency p50 %7.1f ms, p99 %7.1f ms (%d requests, %d failed)\n",
						c, res["tokens_per_second"], res["requests_per_second"], res["p50_ms"], res["p99_ms"], len(lat), failures)
				}
			}
			if asJSON {
				b, _ := json.Marshal(out)
				fmt.Fprintln(cmd.OutOrStdout(), string(b))
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&url, "url", "http://127.0.0.1:8080", "server address")
	f.StringVar(&levels, "concurrency", "1,4,16", "comma-separated numbers of concurrent clients")
	f.IntVar(&requests, "requests", 32, "requests per concurrency level")
	f.IntVar(&maxTokens, "max-tokens", 32, "max_tokens of each request")
	f.StringVar(&prompt, "prompt", "func (s *Server) ", "prompt of each request")
	f.BoolVar(&asJSON, "json", false, "print one JSON array")
	return cmd
}
