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
	"github.com/minitron/minitron/model"
	"github.com/minitron/minitron/tokenizer"
)

func newServe() *cobra.Command {
	var modelDir, tokPath, addr, dev, templatePath string
	var slots, ctxLen int
	var allowLong bool
	var bodyMB float64
	var opt generate.ServerOptions
	cmd := &cobra.Command{
		Use:   "serve --model DIR [--addr 127.0.0.1:8080]",
		Short: "Serve the model over an OpenAI-compatible HTTP API",
		Long: `serve answers OpenAI-style requests:

  POST /v1/completions       prompt (a string, a list of strings, token ids,
                             or a list of token id lists), max_tokens,
                             temperature, top_p, top_k, seed, stop, n,
                             echo, logprobs (OpenAI's legacy schema: tokens,
                             token_logprobs, top_logprobs, text_offset),
                             stream, stream_options.include_usage
  POST /v1/chat/completions  messages rendered with the model's chat
                             template (tokenizer_config.json's chat_template,
                             chat_template.jinja, or --chat-template FILE),
                             max_tokens / max_completion_tokens, logprobs,
                             top_logprobs, and the sampling fields above
  GET  /v1/models, /v1/models/{id}
  GET  /health

Log-probabilities are those of the model's own distribution (the softmax of
its logits, before temperature, top-k or top-p). A choice that ends on an
end-of-sequence token lists that token last in its logprobs, as lm-eval's
local-completions model expects; its text leaves it out.

Requests naming a model other than --name or an --alias get 404
model_not_found. Concurrent requests are batched onto the model (continuous
batching: each decoding step runs every active request in one forward pass;
--slots bounds how many at once, further requests wait). Requests beyond
--max-concurrent get 429; prompts longer than --max-prompt-tokens,
max_tokens above --max-tokens, and a prompt plus max_tokens beyond the
context get 400; a body over --max-body-mb gets 413. Every error is OpenAI's
error JSON. SIGINT or SIGTERM stops accepting requests and lets the ones in
flight finish.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if st, err := os.Stat(modelDir); err != nil || !st.IsDir() {
				return fmt.Errorf("--model %s: no such model directory", modelDir)
			}
			cfg, err := model.LoadConfig(filepath.Join(modelDir, "config.json"))
			if err != nil {
				return err
			}
			if ctxLen, err = contextLength(ctxLen, cfg.MaxPositions, allowLong); err != nil {
				return err
			}
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
				return fmt.Errorf("serve needs the model's tokenizer: %w", err)
			}
			m, err := loadModel(modelDir, be)
			if err != nil {
				return err
			}
			if tok.VocabSize() > m.Config.VocabSize {
				return fmt.Errorf("the tokenizer has %d tokens, the model's vocabulary %d", tok.VocabSize(), m.Config.VocabSize)
			}
			chat, err := generate.ReadChatConfig(modelDir, tok)
			if err != nil {
				return err
			}
			if templatePath != "" {
				b, err := os.ReadFile(templatePath)
				if err != nil {
					return fmt.Errorf("--chat-template: %w", err)
				}
				chat.Template, chat.Source = string(b), templatePath
			}
			opt.ChatTemplate, opt.SpecialTokens = chat.Template, chat.Specials
			if opt.Stop, err = stopTokens(modelDir, m.Config.EOS); err != nil {
				return err
			}
			opt.MaxBodyBytes = int64(bodyMB * (1 << 20))
			eng, err := generate.NewEngine(m, slots, ctxLen)
			if err != nil {
				return err
			}
			if opt.ModelName == "" {
				opt.ModelName = filepath.Base(filepath.Clean(modelDir))
			}
			s, err := generate.NewServer(eng, tok, opt)
			if err != nil {
				return fmt.Errorf("%s: %w", chat.Source, err)
			}
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
			chatNote := "chat: " + chat.Source
			if chat.Template == "" {
				chatNote = "no chat template"
			}
			fmt.Fprintf(os.Stderr, "serving %s on http://%s (%d slots of %d tokens; %s; Ctrl-C to stop)\n", opt.ModelName, ln.Addr(), slots, ctxLen, chatNote)
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
	f.IntVar(&ctxLen, "context", 0, "tokens per request, prompt and completion (default: the model's max_position_embeddings, at most 2048)")
	f.BoolVar(&allowLong, "allow-long-context", false, "accept a --context beyond the model's max_position_embeddings (quality past it is not what the model was trained for)")
	f.IntVar(&opt.MaxPromptTokens, "max-prompt-tokens", 0, "longest prompt accepted (default: the context less one)")
	f.IntVar(&opt.MaxTokens, "max-tokens", 0, "largest max_tokens accepted, and a chat request's default (default: half the context)")
	f.IntVar(&opt.MaxConcurrent, "max-concurrent", 64, "requests in flight (running or waiting); more get 429")
	f.IntVar(&opt.MaxChoices, "max-choices", 128, "choices (prompts × n) one request may ask for")
	f.IntVar(&opt.DefaultTokens, "default-tokens", 16, "max_tokens of a completion request that does not say")
	f.Float64Var(&bodyMB, "max-body-mb", 8, "largest request body in MiB; larger ones get 413")
	f.StringVar(&opt.ModelName, "name", "", "model name reported by /v1/models and required of requests (default: the directory's name)")
	f.StringSliceVar(&opt.Aliases, "alias", nil, "further model names requests may use (repeat or comma-separate)")
	f.StringVar(&templatePath, "chat-template", "", "Jinja chat template file, instead of the model's own")
	addDevice(cmd, &dev)
	cmd.MarkFlagRequired("model")
	return cmd
}

// contextLength checks a requested context against the model's trained
// one: 0 means the model's (at most 2048); beyond it needs allowLong.
func contextLength(asked, model int, allowLong bool) (int, error) {
	switch {
	case asked == 0:
		return min(model, 2048), nil
	case asked > model && !allowLong:
		return 0, fmt.Errorf("--context %d is beyond the model's context of %d tokens (max_position_embeddings); pass --allow-long-context to use it anyway", asked, model)
	}
	return asked, nil
}

// stopTokens are the model's end-of-sequence ids: config.json's and
// generation_config.json's eos_token_id (end-of-turn tokens of chat models
// are often only in the latter).
func stopTokens(dir string, eos []int) ([]int32, error) {
	var out []int32
	add := func(id int) {
		if !slices.Contains(out, int32(id)) {
			out = append(out, int32(id))
		}
	}
	for _, e := range eos {
		add(e)
	}
	p := filepath.Join(dir, "generation_config.json")
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return out, nil
	}
	if err != nil {
		return nil, err
	}
	var g struct {
		EOS json.RawMessage `json:"eos_token_id"`
	}
	if err := json.Unmarshal(b, &g); err != nil {
		return nil, fmt.Errorf("%s: invalid JSON: %v", p, err)
	}
	var one int
	var list []int
	switch {
	case len(g.EOS) == 0 || string(g.EOS) == "null":
	case json.Unmarshal(g.EOS, &one) == nil:
		add(one)
	case json.Unmarshal(g.EOS, &list) == nil:
		for _, e := range list {
			add(e)
		}
	default:
		return nil, fmt.Errorf("%s: eos_token_id must be a number or a list of numbers", p)
	}
	return out, nil
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
