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
			if opt.Stop, err = generate.StopTokens(modelDir, m.Config.EOS); err != nil {
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
