package generate

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/minitron/minitron/tokenizer"
)

// ServerOptions limit what clients may ask.
type ServerOptions struct {
	ModelName string
	// Aliases are further model names requests may use; any other name
	// gets 404 model_not_found.
	Aliases         []string
	MaxPromptTokens int // longest prompt accepted
	MaxTokens       int // largest max_tokens accepted
	MaxConcurrent   int // requests in flight; more get 429
	DefaultTokens   int // max_tokens of a completion request that omits it
	MaxChoices      int // prompts × n of one request
	MaxBodyBytes    int64
	// Stop lists the token ids that end a generation (EOS and the model's
	// end-of-turn tokens); the tokenizer's EOS is always one.
	Stop []int32
	// ChatTemplate is the Jinja source of the chat template
	// (tokenizer_config.json's chat_template); empty turns chat off.
	ChatTemplate string
	// SpecialTokens are the strings of added and control tokens (bos_token,
	// eos_token, ...): a chat template's output is split at them, and they
	// are the variables of the template.
	SpecialTokens map[string]string
}

// Server is an OpenAI-compatible completions and chat server over an Engine.
type Server struct {
	eng      *Engine
	tok      tokenizer.Tokenizer
	opt      ServerOptions
	chat     *chatTemplate
	specials []special // longest first
	inflight atomic.Int64
	created  int64
}

// special is a token whose text the tokenizer would not map to it.
type special struct {
	text string
	id   int32
}

// NewServer wraps an engine and its tokenizer; a chat template that does
// not compile is an error.
func NewServer(eng *Engine, tok tokenizer.Tokenizer, opt ServerOptions) (*Server, error) {
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
	if opt.MaxChoices == 0 {
		opt.MaxChoices = 128
	}
	if opt.MaxBodyBytes == 0 {
		opt.MaxBodyBytes = 8 << 20
	}
	if e := tok.EOS(); e >= 0 && !slices.Contains(opt.Stop, e) {
		opt.Stop = append([]int32{e}, opt.Stop...)
	}
	s := &Server{eng: eng, tok: tok, opt: opt, created: time.Now().Unix()}
	s.specials = specialTokens(tok, opt.SpecialTokens)
	if opt.ChatTemplate != "" {
		c, err := newChatTemplate(opt.ChatTemplate, opt.SpecialTokens)
		if err != nil {
			return nil, err
		}
		s.chat = c
	}
	return s, nil
}

// Handler routes the API. Unknown paths get 404 and wrong methods 405, as
// OpenAI error JSON.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/completions", s.limited(s.completions))
	mux.HandleFunc("/v1/chat/completions", s.limited(s.chatCompletions))
	mux.HandleFunc("/v1/models", s.get(s.models))
	mux.HandleFunc("/v1/models/{id...}", s.get(s.model))
	mux.HandleFunc("/health", s.get(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"status": "ok", "running": s.eng.Running()})
	}))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fail(w, &apiError{Status: http.StatusNotFound, Message: fmt.Sprintf("no such endpoint: %s %s", r.Method, r.URL.Path), Code: "not_found"})
	})
	return mux
}

// apiError is an error response in OpenAI's shape.
type apiError struct {
	Status  int
	Message string
	Type    string // default from Status
	Param   string
	Code    string
}

func (e *apiError) Error() string { return e.Message }

func badRequest(param, format string, a ...any) *apiError {
	return &apiError{Status: http.StatusBadRequest, Message: fmt.Sprintf(format, a...), Param: param}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func nullable(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// errorBody is OpenAI's error object.
func errorBody(e *apiError) map[string]any {
	typ := e.Type
	if typ == "" {
		switch {
		case e.Status == http.StatusTooManyRequests:
			typ = "rate_limit_exceeded"
		case e.Status >= 500:
			typ = "server_error"
		default:
			typ = "invalid_request_error"
		}
	}
	// Messages of the packages below carry their name first; a client
	// needs none of that.
	msg := strings.TrimPrefix(e.Message, "generate: ")
	return map[string]any{"error": map[string]any{"message": msg, "type": typ, "param": nullable(e.Param), "code": nullable(e.Code)}}
}

func fail(w http.ResponseWriter, e *apiError) { writeJSON(w, e.Status, errorBody(e)) }

// get allows GET (and HEAD) only.
func (s *Server) get(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET")
			fail(w, &apiError{Status: http.StatusMethodNotAllowed, Message: fmt.Sprintf("%s %s: use GET", r.Method, r.URL.Path), Code: "method_not_allowed"})
			return
		}
		h(w, r)
	}
}

// limited allows POST only and at most MaxConcurrent requests at once.
func (s *Server) limited(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", "POST")
			fail(w, &apiError{Status: http.StatusMethodNotAllowed, Message: fmt.Sprintf("%s %s: use POST", r.Method, r.URL.Path), Code: "method_not_allowed"})
			return
		}
		if n := s.inflight.Add(1); n > int64(s.opt.MaxConcurrent) {
			s.inflight.Add(-1)
			w.Header().Set("Retry-After", "1")
			fail(w, &apiError{Status: http.StatusTooManyRequests, Message: fmt.Sprintf("the server is handling %d requests, its limit; retry later", s.opt.MaxConcurrent), Code: "rate_limit_exceeded"})
			return
		}
		defer s.inflight.Add(-1)
		h(w, r)
	}
}

func (s *Server) modelObject(id string) map[string]any {
	return map[string]any{"id": id, "object": "model", "created": s.created, "owned_by": "minitron"}
}

func (s *Server) models(w http.ResponseWriter, r *http.Request) {
	data := []map[string]any{s.modelObject(s.opt.ModelName)}
	for _, a := range s.opt.Aliases {
		data = append(data, s.modelObject(a))
	}
	writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": data})
}

func (s *Server) model(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if _, e := s.resolveModel(id); e != nil {
		fail(w, e)
		return
	}
	writeJSON(w, http.StatusOK, s.modelObject(id))
}

// resolveModel checks a request's model name; an empty one means the
// served model.
func (s *Server) resolveModel(name string) (string, *apiError) {
	if name == "" || name == s.opt.ModelName || slices.Contains(s.opt.Aliases, name) {
		return s.opt.ModelName, nil
	}
	return "", &apiError{Status: http.StatusNotFound, Message: fmt.Sprintf("the model %q does not exist; this server serves %q", name, strings.Join(append([]string{s.opt.ModelName}, s.opt.Aliases...), `", "`)),
		Param: "model", Code: "model_not_found"}
}

// decode reads a JSON body of at most MaxBodyBytes.
func (s *Server) decode(w http.ResponseWriter, r *http.Request, v any) *apiError {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, s.opt.MaxBodyBytes))
	if err := dec.Decode(v); err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return &apiError{Status: http.StatusRequestEntityTooLarge, Message: fmt.Sprintf("the request body is larger than %d bytes", s.opt.MaxBodyBytes)}
		}
		return badRequest("", "invalid JSON body: %v", err)
	}
	return nil
}

// sampling is what completion and chat requests share.
type sampling struct {
	Model            string          `json:"model"`
	MaxTokens        *int            `json:"max_tokens"`
	Temperature      *float64        `json:"temperature"`
	TopP             *float64        `json:"top_p"`
	TopK             int             `json:"top_k"`
	Seed             *int64          `json:"seed"`
	Stop             json.RawMessage `json:"stop"`
	Stream           bool            `json:"stream"`
	StreamOptions    *streamOptions  `json:"stream_options"`
	N                *int            `json:"n"`
	PresencePenalty  float64         `json:"presence_penalty"`
	FrequencyPenalty float64         `json:"frequency_penalty"`
	LogitBias        map[string]any  `json:"logit_bias"`
}

type streamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

// maxStops is the most stop strings a request may give. OpenAI allows 4;
// lm-evaluation-harness's local-completions sends a task's whole list.
const maxStops = 32

// settings are a request's validated generation settings.
type settings struct {
	model        string
	opt          Options // MaxNewTokens < 0: fill the context, at most MaxTokens
	n            int
	stops        []string
	includeUsage bool
}

func (s *Server) settings(c *sampling) (*settings, *apiError) {
	model, e := s.resolveModel(c.Model)
	if e != nil {
		return nil, e
	}
	st := &settings{model: model, n: 1}
	if c.N != nil {
		if *c.N < 1 {
			return nil, badRequest("n", "n %d must be at least 1", *c.N)
		}
		st.n = *c.N
	}
	if c.PresencePenalty != 0 || c.FrequencyPenalty != 0 {
		return nil, badRequest("presence_penalty", "presence_penalty and frequency_penalty are not supported; leave them at 0")
	}
	if len(c.LogitBias) > 0 {
		return nil, badRequest("logit_bias", "logit_bias is not supported")
	}
	if c.StreamOptions != nil && !c.Stream {
		return nil, badRequest("stream_options", "stream_options is only allowed with stream: true")
	}
	st.includeUsage = c.StreamOptions != nil && c.StreamOptions.IncludeUsage
	opt := Options{MaxNewTokens: -1, Temperature: 1, TopP: 1, TopK: c.TopK, Stop: s.opt.Stop}
	if c.MaxTokens != nil {
		if *c.MaxTokens < 0 || *c.MaxTokens > s.opt.MaxTokens {
			return nil, badRequest("max_tokens", "max_tokens %d must be in [0, %d]", *c.MaxTokens, s.opt.MaxTokens)
		}
		opt.MaxNewTokens = *c.MaxTokens
	}
	if c.Temperature != nil {
		if *c.Temperature < 0 || *c.Temperature > 2 {
			return nil, badRequest("temperature", "temperature %v must be in [0, 2]", *c.Temperature)
		}
		opt.Temperature = *c.Temperature
	}
	if c.TopP != nil {
		if *c.TopP <= 0 || *c.TopP > 1 {
			return nil, badRequest("top_p", "top_p %v must be in (0, 1]", *c.TopP)
		}
		opt.TopP = *c.TopP
	}
	if c.TopK < 0 {
		return nil, badRequest("top_k", "top_k %d must be >= 0 (0 keeps every token)", c.TopK)
	}
	if c.Seed != nil {
		opt.Seed = uint64(*c.Seed)
	} else {
		var b [8]byte
		rand.Read(b[:])
		opt.Seed = binary.LittleEndian.Uint64(b[:])
	}
	if len(c.Stop) > 0 && string(c.Stop) != "null" {
		var one string
		if json.Unmarshal(c.Stop, &one) == nil {
			st.stops = []string{one}
		} else if err := json.Unmarshal(c.Stop, &st.stops); err != nil || len(st.stops) > maxStops {
			return nil, badRequest("stop", "stop must be a string or a list of up to %d strings", maxStops)
		}
		st.stops = slices.DeleteFunc(st.stops, func(s string) bool { return s == "" })
	}
	st.opt = opt
	return st, nil
}

// fit sets the completion length of one prompt: the request's max_tokens,
// or when it gave none, def (capped to what the context holds), and checks
// the context.
func (s *Server) fit(opt Options, promptLen, def int) (Options, *apiError) {
	ctx := s.eng.MaxT()
	if promptLen > s.opt.MaxPromptTokens {
		return opt, badRequest("prompt", "the prompt has %d tokens; this server accepts at most %d", promptLen, s.opt.MaxPromptTokens)
	}
	if opt.MaxNewTokens < 0 {
		opt.MaxNewTokens = max(0, min(def, ctx-promptLen))
		return opt, nil
	}
	if promptLen+opt.MaxNewTokens > ctx {
		return opt, &apiError{Status: http.StatusBadRequest, Param: "max_tokens", Code: "context_length_exceeded",
			Message: fmt.Sprintf("this model's context is %d tokens; the prompt's %d tokens plus max_tokens %d exceed it", ctx, promptLen, opt.MaxNewTokens)}
	}
	return opt, nil
}

// checkIDs rejects token ids outside the vocabulary.
func (s *Server) checkIDs(ids []int32) *apiError {
	V := s.eng.m.Config.VocabSize
	for _, id := range ids {
		if id < 0 || int(id) >= V {
			return badRequest("prompt", "token id %d is outside the vocabulary (size %d)", id, V)
		}
	}
	return nil
}

func newID(prefix string) string {
	var b [12]byte
	rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// choice is one generation of a request.
type choice struct {
	index int
	req   Request
	// results
	text      strings.Builder
	finish    string
	generated int
	ids       []int32   // the tokens the logprobs describe: prompt (echo), then generated
	lps       []Logprob // their log-probabilities; the first prompt token's is zero
	promptLPs int       // how many of lps belong to the prompt
}

// delta is what a choice released at one step while streaming.
type delta struct {
	text   string
	from   int // index into choice.ids of the first new logprob
	finish string
}

// run generates every choice concurrently on the engine. out, when set,
// receives each choice's new text as it is released (calls are serialized)
// and its finish reason last.
func (s *Server) run(ctx context.Context, choices []*choice, stops []string, out func(*choice, delta) error) *apiError {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var mu sync.Mutex
	var first *apiError
	var wg sync.WaitGroup
	for _, c := range choices {
		cctx, ccancel := context.WithCancel(ctx)
		events, err := s.eng.Submit(cctx, c.req)
		if err != nil {
			ccancel()
			cancel()
			mu.Lock()
			if first == nil {
				first = &apiError{Status: http.StatusServiceUnavailable, Message: err.Error()}
			}
			mu.Unlock()
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer ccancel()
			if e := s.follow(c, events, ccancel, stops, &mu, out); e != nil {
				mu.Lock()
				if first == nil {
					first = e
				}
				mu.Unlock()
				cancel()
			}
		}()
	}
	wg.Wait()
	return first
}

// follow reads one choice's events until it ends.
func (s *Server) follow(c *choice, events <-chan Event, cancel func(), stops []string, mu *sync.Mutex, out func(*choice, delta) error) *apiError {
	defer func() {
		cancel()
		for range events { // let the engine finish with this request
		}
	}()
	ts := NewTextStream(s.tok, c.req.Prompt, stops)
	send := func(d delta) *apiError {
		if out == nil {
			return nil
		}
		mu.Lock()
		defer mu.Unlock()
		if err := out(c, d); err != nil {
			return &apiError{Status: 499, Message: err.Error()}
		}
		return nil
	}
	for ev := range events {
		switch {
		case ev.Err != nil:
			if errors.Is(ev.Err, context.Canceled) {
				return &apiError{Status: 499, Message: "the request was cancelled"}
			}
			return &apiError{Status: http.StatusInternalServerError, Message: ev.Err.Error()}
		case ev.Prompt != nil:
			c.ids = append(c.ids, c.req.Prompt...)
			c.lps = append(c.lps, Logprob{Token: c.req.Prompt[0]})
			c.lps = append(c.lps, ev.Prompt...)
			c.promptLPs = len(c.lps)
			if e := send(delta{from: 0}); e != nil {
				return e
			}
			continue
		case ev.Finish != "":
			from := len(c.ids)
			if ev.Finish == FinishStop && ev.Logprob != nil {
				c.ids, c.lps = append(c.ids, ev.Token), append(c.lps, *ev.Logprob)
			}
			c.finish = ev.Finish
			rest := ts.Flush()
			c.text.WriteString(rest)
			return send(delta{text: rest, from: from, finish: c.finish})
		}
		from := len(c.ids)
		c.generated++
		if ev.Logprob != nil {
			c.ids, c.lps = append(c.ids, ev.Token), append(c.lps, *ev.Logprob)
		}
		piece := ts.Add(ev.Token)
		c.text.WriteString(piece)
		if ts.Stopped() {
			c.finish = FinishStop
			cancel() // the engine stops generating for this request
			c.text.WriteString(ts.Flush())
			return send(delta{text: piece, from: from, finish: c.finish})
		}
		if piece != "" || len(c.ids) > from {
			if e := send(delta{text: piece, from: from}); e != nil {
				return e
			}
		}
	}
	return &apiError{Status: http.StatusInternalServerError, Message: "the request ended without a finish reason"}
}

// sse writes server-sent events.
type sse struct {
	w       http.ResponseWriter
	flusher http.Flusher
	started bool
}

func newSSE(w http.ResponseWriter) *sse {
	f, _ := w.(http.Flusher)
	return &sse{w: w, flusher: f}
}

func (e *sse) start() {
	if e.started {
		return
	}
	e.started = true
	h := e.w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("Connection", "keep-alive")
	e.w.WriteHeader(http.StatusOK)
}

func (e *sse) send(v any) error {
	e.start()
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintf(e.w, "data: %s\n\n", b); err != nil {
		return err
	}
	if e.flusher != nil {
		e.flusher.Flush()
	}
	return nil
}

func (e *sse) done() {
	e.start()
	fmt.Fprint(e.w, "data: [DONE]\n\n")
	if e.flusher != nil {
		e.flusher.Flush()
	}
}

// finishError reports a failure: as a response before anything was
// streamed, as an error event after.
func finishError(w http.ResponseWriter, ev *sse, e *apiError) {
	if e.Status == 499 {
		return // the client went away
	}
	if ev != nil && ev.started {
		ev.send(errorBody(e))
		return
	}
	fail(w, e)
}

// respond runs a request's choices and answers: as a stream of the chunks
// streamed sends (then, when asked, the usage chunk usageChunk makes, then
// [DONE]), or as the one response whole makes of the finished choices.
func (s *Server) respond(w http.ResponseWriter, r *http.Request, st *settings, choices []*choice, stream bool,
	streamed func(ev *sse, ch *choice, d delta) error, usageChunk func() any, whole func() any) {
	if !stream {
		if err := s.run(r.Context(), choices, st.stops, nil); err != nil {
			finishError(w, nil, err)
			return
		}
		writeJSON(w, http.StatusOK, whole())
		return
	}
	ev := newSSE(w)
	err := s.run(r.Context(), choices, st.stops, func(ch *choice, d delta) error { return streamed(ev, ch, d) })
	if err != nil {
		finishError(w, ev, err)
		return
	}
	if st.includeUsage {
		ev.send(usageChunk())
	}
	ev.done()
}

func usage(prompt, completion int) map[string]int {
	return map[string]int{"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
}
