package generate

import (
	"encoding/json"
	"net/http"
	"time"
	"unicode/utf8"

	"github.com/minitron/minitron/tokenizer"
)

// completionRequest is the subset of OpenAI's legacy completions request
// this server honours.
type completionRequest struct {
	sampling
	Prompt   json.RawMessage `json:"prompt"`
	Echo     bool            `json:"echo"`
	Logprobs *int            `json:"logprobs"`
	BestOf   *int            `json:"best_of"`
	Suffix   *string         `json:"suffix"`
}

// prompt is one prompt of a request: its ids, and the text echo returns.
type prompt struct {
	ids  []int32
	text string
}

// maxLogprobs is the most alternatives per token a request may ask for.
const maxLogprobs = 20

// prompts reads a prompt field: a string, a list of strings, a list of
// token ids, or a list of lists of token ids. Text gets BOS first when the
// tokenizer has one.
func (s *Server) prompts(raw json.RawMessage) ([]prompt, *apiError) {
	var texts []string
	var idLists [][]int32
	var out []prompt
	// Each form decodes into its own variable: a failed decode may leave
	// a partly filled one behind.
	var one string
	var strs []string
	var ids []int32
	var lists [][]int32
	switch {
	case len(raw) == 0 || string(raw) == "null":
		return nil, badRequest("prompt", "prompt is required")
	case json.Unmarshal(raw, &one) == nil:
		texts = []string{one}
	case json.Unmarshal(raw, &strs) == nil && len(strs) > 0:
		texts = strs
	case json.Unmarshal(raw, &ids) == nil && len(ids) > 0:
		idLists = [][]int32{ids}
	case json.Unmarshal(raw, &lists) == nil && len(lists) > 0:
		idLists = lists
	default:
		return nil, badRequest("prompt", "prompt must be a string, a list of strings, a list of token ids, or a list of lists of token ids")
	}
	for _, t := range texts {
		ids := tokenizer.EncodePrompt(s.tok, t)
		if len(ids) == 0 {
			return nil, badRequest("prompt", "the prompt %q encodes to no tokens", t)
		}
		out = append(out, prompt{ids: ids, text: t})
	}
	for _, ids := range idLists {
		if len(ids) == 0 {
			return nil, badRequest("prompt", "a prompt of token ids is empty")
		}
		if e := s.checkIDs(ids); e != nil {
			return nil, e
		}
		out = append(out, prompt{ids: ids, text: s.tok.Decode(ids)})
	}
	return out, nil
}

func (s *Server) completions(w http.ResponseWriter, r *http.Request) {
	var c completionRequest
	if e := s.decode(w, r, &c); e != nil {
		fail(w, e)
		return
	}
	st, e := s.settings(&c.sampling)
	if e != nil {
		fail(w, e)
		return
	}
	switch {
	case c.BestOf != nil && *c.BestOf != st.n:
		e = badRequest("best_of", "best_of is not supported; leave it out or equal to n")
	case c.Suffix != nil && *c.Suffix != "":
		e = badRequest("suffix", "suffix is not supported")
	case c.Logprobs != nil && (*c.Logprobs < 0 || *c.Logprobs > maxLogprobs):
		e = badRequest("logprobs", "logprobs %d must be in [0, %d]", *c.Logprobs, maxLogprobs)
	}
	if e != nil {
		fail(w, e)
		return
	}
	prompts, e := s.prompts(c.Prompt)
	if e != nil {
		fail(w, e)
		return
	}
	if k := len(prompts) * st.n; k > s.opt.MaxChoices {
		fail(w, badRequest("n", "%d prompts × n %d = %d choices; this server makes at most %d per request", len(prompts), st.n, k, s.opt.MaxChoices))
		return
	}
	var choices []*choice
	promptTokens := 0
	for i, p := range prompts {
		opt, e := s.fit(st.opt, len(p.ids), s.opt.DefaultTokens)
		if e != nil {
			fail(w, e)
			return
		}
		promptTokens += len(p.ids)
		for j := range st.n {
			req := Request{Prompt: p.ids, Options: opt, Seq: uint64(j)}
			if c.Logprobs != nil {
				req.Logprobs, req.TopLogprobs, req.PromptLogprobs = true, *c.Logprobs, c.Echo
			}
			choices = append(choices, &choice{index: i*st.n + j, req: req})
		}
	}
	id, created := newID("cmpl-"), time.Now().Unix()
	type state struct {
		echoed bool
		offset int
	}
	states := make([]state, len(choices))
	// piece turns a step of a choice into its response object.
	n := st.n
	piece := func(ch *choice, d delta) map[string]any {
		text := d.text
		cs := &states[ch.index]
		if c.Echo && !cs.echoed {
			text, cs.echoed = prompts[ch.index/n].text+text, true
		}
		var lp any
		if c.Logprobs != nil {
			lp = s.legacyLogprobs(ch, d.from, &cs.offset)
		}
		return map[string]any{"text": text, "index": ch.index, "logprobs": lp, "finish_reason": nullable(d.finish)}
	}
	chunk := func(choices []map[string]any, u any) map[string]any {
		m := map[string]any{"id": id, "object": "text_completion", "created": created, "model": st.model, "choices": choices}
		if u != nil || st.includeUsage {
			m["usage"] = u
		}
		return m
	}
	s.respond(w, r, st, choices, c.Stream, func(ev *sse, ch *choice, d delta) error {
		return ev.send(chunk([]map[string]any{piece(ch, d)}, nil))
	}, func() any {
		return chunk([]map[string]any{}, usage(promptTokens, generated(choices)))
	}, func() any {
		var out []map[string]any
		for _, ch := range choices {
			out = append(out, piece(ch, delta{text: ch.text.String(), finish: ch.finish}))
		}
		return chunk(out, usage(promptTokens, generated(choices)))
	})
}

func generated(choices []*choice) int {
	n := 0
	for _, c := range choices {
		n += c.generated
	}
	return n
}

// tokenString is how a token is shown in logprobs: the text it adds, or
// its vocabulary entry for a special token (BOS, EOS, an end of turn),
// which decoding drops.
func (s *Server) tokenString(before []int32, id int32) (text, shown string) {
	text = pieceText(s.tok, before, id)
	if text == "" && s.tok.Decode([]int32{id}) == "" {
		return "", s.tok.Piece(id)
	}
	return text, text
}

// context returns the tokens before entry i of a choice's logprobs.
func (ch *choice) context(i int) []int32 {
	if ch.promptLPs > 0 {
		return ch.ids[:i]
	}
	return append(append([]int32(nil), ch.req.Prompt...), ch.ids[:i]...)
}

// legacyLogprobs is the completions API's logprobs object for a choice's
// entries from index from on: tokens, token_logprobs (null for the first
// prompt token), top_logprobs (token text to log-probability) and
// text_offset (characters from the start of the returned text), which
// advances *offset.
func (s *Server) legacyLogprobs(ch *choice, from int, offset *int) map[string]any {
	n := len(ch.ids) - from
	tokens := make([]string, 0, n)
	values := make([]*float32, 0, n)
	tops := make([]map[string]float32, 0, n)
	offsets := make([]int, 0, n)
	for i := from; i < len(ch.ids); i++ {
		before := ch.context(i)
		text, shown := s.tokenString(before, ch.ids[i])
		tokens = append(tokens, shown)
		offsets = append(offsets, *offset)
		*offset += utf8.RuneCountInString(text)
		if i == 0 && ch.promptLPs > 0 {
			values, tops = append(values, nil), append(tops, nil)
			continue
		}
		lp := ch.lps[i]
		v := lp.Logprob
		values = append(values, &v)
		top := make(map[string]float32, len(lp.Top))
		for _, t := range lp.Top {
			_, k := s.tokenString(before, t.Token)
			if _, dup := top[k]; !dup {
				top[k] = t.Logprob
			}
		}
		tops = append(tops, top)
	}
	return map[string]any{"tokens": tokens, "token_logprobs": values, "top_logprobs": tops, "text_offset": offsets}
}
