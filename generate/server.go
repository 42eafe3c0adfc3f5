package generate

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/minitron/minitron/tokenizer"
)

// ServerOptions limit what clients may ask.
type ServerOptions struct {
	ModelName       string
	MaxPromptTokens int // longest prompt accepted
	MaxTokens       int // largest max_tokens accepted
	MaxConcurrent   int // requests in flight; more get 429
	DefaultTokens   int // max_tokens when a request omits it
}

// Server is an OpenAI-compatible completions server over an Engine.
type Server struct {
	eng      *Engine
	tok      tokenizer.Tokenizer
	opt      ServerOptions
	inflight atomic.Int64
	created  int64
}

// NewServer wraps an engine and its tokenizer.
func NewServer(eng *Engine, tok tokenizer.Tokenizer, opt ServerOptions) *Server {
	if opt.DefaultTokens == 0 {
		opt.DefaultTokens = 16
	}
	if opt.MaxTokens == 0 {
		opt.MaxTokens = eng.MaxT() / 2
	}
	if opt.MaxPromptTokens == 0 {
		opt.MaxPromptTokens = eng.MaxT() - 1
	}
	if opt.MaxConcurrent == 0 {
		opt.MaxConcurrent = 64
	}
	return &Server{eng: eng, tok: tok, opt: opt, created: time.Now().Unix()}
}

// Handler routes the API.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/completions", s.completions)
	mux.HandleFunc("/v1/models", s.models)
	mux.HandleFunc("/health", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"status": "ok", "running": s.eng.Running()})
	})
	return mux
}

type apiError struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func fail(w http.ResponseWriter, status int, format string, a ...any) {
	typ := "invalid_request_error"
	switch {
	case status == http.StatusTooManyRequests:
		typ = "rate_limit_error"
	case status >= 500:
		typ = "server_error"
	}
	writeJSON(w, status, map[string]any{"error": apiError{Message: fmt.Sprintf(format, a...), Type: typ}})
}

func (s *Server) models(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		fail(w, http.StatusMethodNotAllowed, "use GET")
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": []map[string]any{
		{"id": s.opt.ModelName, "object": "model", "created": s.created, "owned_by": "minitron"}}})
}

// completionRequest is the subset of OpenAI's request this server honours.
type completionRequest struct {
	Model       string          `json:"model"`
	Prompt      json.RawMessage `json:"prompt"`
	MaxTokens   *int            `json:"max_tokens"`
	Temperature *float64        `json:"temperature"`
	TopP        *float64        `json:"top_p"`
	TopK        int             `json:"top_k"`
	Seed        *uint64         `json:"seed"`
	Stop        json.RawMessage `json:"stop"`
	Stream      bool            `json:"stream"`
	N           *int            `json:"n"`
	Echo        bool            `json:"echo"`
	Logprobs    *int            `json:"logprobs"`
}

// parse validates a request and turns it into an engine request.
func (s *Server) parse(r *http.Request) (*completionRequest, Request, []string, string, error) {
	var c completionRequest
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, 8<<20))
	if err := dec.Decode(&c); err != nil {
		return nil, Request{}, nil, "", fmt.Errorf("invalid JSON body: %w", err)
	}
	if c.N != nil && *c.N != 1 {
		return nil, Request{}, nil, "", errors.New("n must be 1")
	}
	if c.Echo || c.Logprobs != nil {
		return nil, Request{}, nil, "", errors.New("echo and logprobs are not supported")
	}
	var ids []int32
	var text string
	var asString string
	var asStrings []string
	var asIDs []int32
	switch {
	case len(c.Prompt) == 0:
		return nil, Request{}, nil, "", errors.New("prompt is required")
	case json.Unmarshal(c.Prompt, &asString) == nil:
		text = asString
	case json.Unmarshal(c.Prompt, &asStrings) == nil && len(asStrings) == 1:
		text = asStrings[0]
	case json.Unmarshal(c.Prompt, &asIDs) == nil && len(asIDs) > 0:
		ids = asIDs
	default:
		return nil, Request{}, nil, "", errors.New("prompt must be a string, a list of one string, or a list of token ids")
	}
	if ids == nil {
		if ids = tokenizer.EncodePrompt(s.tok, text); len(ids) == 0 {
			return nil, Request{}, nil, "", errors.New("the prompt encodes to no tokens")
		}
	}
	if len(ids) > s.opt.MaxPromptTokens {
		return nil, Request{}, nil, "", fmt.Errorf("the prompt has %d tokens; this server accepts at most %d", len(ids), s.opt.MaxPromptTokens)
	}
	opt := Options{MaxNewTokens: s.opt.DefaultTokens, Temperature: 1, TopP: 1, TopK: c.TopK}
	if c.MaxTokens != nil {
		opt.MaxNewTokens = *c.MaxTokens
	}
	if opt.MaxNewTokens < 0 || opt.MaxNewTokens > s.opt.MaxTokens {
		return nil, Request{}, nil, "", fmt.Errorf("max_tokens %d must be in [0, %d]", opt.MaxNewTokens, s.opt.MaxTokens)
	}
	if c.Temperature != nil {
		if *c.Temperature < 0 || *c.Temperature > 2 {
			return nil, Request{}, nil, "", fmt.Errorf("temperature %v must be in [0, 2]", *c.Temperature)
		}
		opt.Temperature = *c.Temperature
	}
	if c.TopP != nil {
		if *c.TopP <= 0 || *c.TopP > 1 {
			return nil, Request{}, nil, "", fmt.Errorf("top_p %v must be in (0, 1]", *c.TopP)
		}
		opt.TopP = *c.TopP
	}
	if c.Seed != nil {
		opt.Seed = *c.Seed
	} else {
		var b [8]byte
		rand.Read(b[:])
		for _, x := range b {
			opt.Seed = opt.Seed<<8 | uint64(x)
		}
	}
	if e := s.tok.EOS(); e >= 0 {
		opt.Stop = []int32{e}
	}
	var stops []string
	if len(c.Stop) > 0 && string(c.Stop) != "null" {
		var one string
		if json.Unmarshal(c.Stop, &one) == nil {
			stops = []string{one}
		} else if err := json.Unmarshal(c.Stop, &stops); err != nil || len(stops) > 4 {
			return nil, Request{}, nil, "", errors.New("stop must be a string or a list of up to 4 strings")
		}
		stops = slicesDeleteEmpty(stops)
	}
	if err := opt.Validate(); err != nil {
		return nil, Request{}, nil, "", err
	}
	req := Request{Prompt: ids, Options: opt}
	if err := s.eng.Check(req); err != nil {
		return nil, Request{}, nil, "", err
	}
	return &c, req, stops, text, nil
}

func slicesDeleteEmpty(s []string) []string {
	out := s[:0]
	for _, x := range s {
		if x != "" {
			out = append(out, x)
		}
	}
	return out
}

// textState turns tokens into text, applying stop strings: text up to the
// first stop string is released, and while streaming, a tail that could
// still become a stop string (or an incomplete character) is held back.
type textState struct {
	tok      tokenizer.Tokenizer
	prompt   []int32
	gen      []int32
	base     string
	emitted  int
	stops    []string
	stopped  bool
	finalLen int
}

func newTextState(tok tokenizer.Tokenizer, prompt []int32, stops []string) *textState {
	return &textState{tok: tok, prompt: prompt, base: tok.Decode(prompt), stops: stops}
}

func (t *textState) text() string {
	return strings.TrimPrefix(t.tok.Decode(append(append([]int32(nil), t.prompt...), t.gen...)), t.base)
}

// add appends a token and returns the text that may be released now.
func (t *textState) add(tok int32) string {
	t.gen = append(t.gen, tok)
	full := t.text()
	for _, s := range t.stops {
		if i := strings.Index(full, s); i >= 0 && (!t.stopped || i < t.finalLen) {
			t.stopped, t.finalLen = true, i
		}
	}
	if t.stopped {
		out := ""
		if t.finalLen > t.emitted {
			out = full[t.emitted:t.finalLen]
		}
		t.emitted = max(t.emitted, t.finalLen)
		return out
	}
	// Hold back a suffix that is a prefix of a stop string, and a
	// trailing replacement character (a multi-byte character cut short).
	hold := 0
	for _, s := range t.stops {
		for k := min(len(s)-1, len(full)); k > hold; k-- {
			if strings.HasSuffix(full, s[:k]) {
				hold = k
				break
			}
		}
	}
	if strings.HasSuffix(full, "\uFFFD") {
		hold = max(hold, len("\uFFFD"))
	}
	end := len(full) - hold
	if end <= t.emitted {
		return ""
	}
	out := full[t.emitted:end]
	t.emitted = end
	return out
}

// flush releases what is left at the end.
func (t *textState) flush() string {
	full := t.text()
	end := len(full)
	if t.stopped {
		end = t.finalLen
	}
	if end <= t.emitted {
		return ""
	}
	out := full[t.emitted:end]
	t.emitted = end
	return out
}

func newID() string {
	var b [12]byte
	rand.Read(b[:])
	return "cmpl-" + hex.EncodeToString(b[:])
}

func (s *Server) completions(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		fail(w, http.StatusMethodNotAllowed, "use POST")
		return
	}
	if n := s.inflight.Add(1); n > int64(s.opt.MaxConcurrent) {
		s.inflight.Add(-1)
		w.Header().Set("Retry-After", "1")
		fail(w, http.StatusTooManyRequests, "the server is handling %d requests, its limit; retry later", s.opt.MaxConcurrent)
		return
	}
	defer s.inflight.Add(-1)
	c, req, stops, _, err := s.parse(r)
	if err != nil {
		fail(w, http.StatusBadRequest, "%v", err)
		return
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	events, err := s.eng.Submit(ctx, req)
	if err != nil {
		fail(w, http.StatusServiceUnavailable, "%v", err)
		return
	}
	id, created := newID(), time.Now().Unix()
	model := s.opt.ModelName
	if c.Model != "" {
		model = c.Model
	}
	ts := newTextState(s.tok, req.Prompt, stops)
	var flusher http.Flusher
	if c.Stream {
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
		w.Header().Set("Connection", "keep-alive")
		w.WriteHeader(http.StatusOK)
		flusher, _ = w.(http.Flusher)
	}
	chunk := func(text string, finish *string) error {
		b, _ := json.Marshal(map[string]any{"id": id, "object": "text_completion", "created": created, "model": model,
			"choices": []map[string]any{{"text": text, "index": 0, "logprobs": nil, "finish_reason": finish}}})
		if _, err := fmt.Fprintf(w, "data: %s\n\n", b); err != nil {
			return err
		}
		if flusher != nil {
			flusher.Flush()
		}
		return nil
	}
	var body strings.Builder
	finish := ""
	generated := 0
	for ev := range events {
		if ev.Err != nil {
			if c.Stream {
				if errors.Is(ev.Err, context.Canceled) {
					return // the client went away
				}
				b, _ := json.Marshal(map[string]any{"error": apiError{Message: ev.Err.Error(), Type: "server_error"}})
				fmt.Fprintf(w, "data: %s\n\n", b)
				return
			}
			if r.Context().Err() != nil {
				return
			}
			fail(w, http.StatusInternalServerError, "%v", ev.Err)
			return
		}
		if ev.Finish != "" {
			finish = ev.Finish
			break
		}
		generated++
		piece := ts.add(ev.Token)
		if ts.stopped {
			finish = FinishStop
			cancel() // the engine stops generating for this request
		}
		if c.Stream && piece != "" {
			if err := chunk(piece, nil); err != nil {
				return
			}
		} else {
			body.WriteString(piece)
		}
		if ts.stopped {
			break
		}
	}
	rest := ts.flush()
	usage := map[string]int{"prompt_tokens": len(req.Prompt), "completion_tokens": generated, "total_tokens": len(req.Prompt) + generated}
	if c.Stream {
		if rest != "" {
			chunk(rest, nil)
		}
		f := finish
		chunk("", &f)
		fmt.Fprint(w, "data: [DONE]\n\n")
		if flusher != nil {
			flusher.Flush()
		}
		return
	}
	body.WriteString(rest)
	writeJSON(w, http.StatusOK, map[string]any{"id": id, "object": "text_completion", "created": created, "model": model,
		"choices": []map[string]any{{"text": body.String(), "index": 0, "logprobs": nil, "finish_reason": finish}}, "usage": usage})
}
