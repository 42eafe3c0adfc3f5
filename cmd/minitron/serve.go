package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
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
